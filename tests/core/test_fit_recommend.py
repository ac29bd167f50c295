"""Verdicts and the quant recommendation on described machines (Hardware values, not drivers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.fit import ModelShape, assess, estimate_memory, quant_bits, recommend
from core.hardware import detect_hardware
from core.hardware.info import GPU, CPUInfo, Hardware, LlamaBackends

GB = 10**9
GIB = 1 << 30
# Llama 3.1 8B Instruct's GGUF file sizes (bartowski's repository), bytes.
LLAMA8B_QUANTS = [
    ("Q2_K", 3_179_000_000),
    ("Q3_K_M", 4_019_000_000),
    ("Q4_K_M", 4_921_000_000),
    ("Q5_K_M", 5_733_000_000),
    ("Q6_K", 6_596_000_000),
    ("Q8_0", 8_541_000_000),
    ("F16", 16_068_000_000),
]


def shape_of(
    arch: str = "llama", *, layers: int, embd: int, ff: int, heads: int, kv: int, vocab: int
) -> ModelShape:
    meta: dict[str, Any] = {
        "general.architecture": arch,
        f"{arch}.block_count": layers,
        f"{arch}.embedding_length": embd,
        f"{arch}.feed_forward_length": ff,
        f"{arch}.attention.head_count": heads,
        f"{arch}.attention.head_count_kv": kv,
        f"{arch}.context_length": 131072,
        "tokenizer.ggml.tokens": vocab,
    }
    return ModelShape.from_metadata(meta, weight_bytes=4_921_000_000)


LLAMA_8B = shape_of(layers=32, embd=4096, ff=14336, heads=32, kv=8, vocab=128256)
LLAMA_3B = shape_of(layers=28, embd=3072, ff=8192, heads=24, kv=8, vocab=128256)


def machine(ram_available: int, gpus: list[GPU] | None = None, *, offload: bool = True) -> Hardware:
    return Hardware(
        ram_total_bytes=max(ram_available, 16 * GB),
        ram_available_bytes=ram_available,
        cpu=CPUInfo("Test CPU", "x86_64", 8, 16, ["AVX2"]),
        gpus=gpus or [],
        llama=LlamaBackends(available=True, gpu_offload=offload, backends=["CPU", "CUDA"]),
        os="Linux",
    )


def nvidia(free: int, name: str = "NVIDIA RTX") -> GPU:
    return GPU(0, name, "nvidia", total_bytes=free + GIB, free_bytes=free, source="nvml")


def test_full_gpu_when_everything_fits() -> None:
    verdict = assess(LLAMA_8B, machine(32 * GB, [nvidia(22 * GB, "RTX 4090")]), n_ctx=8192)
    assert verdict.kind == "full_gpu" and verdict.gpu_layers == 33
    assert "All 32 layers fit on the RTX 4090" in verdict.reason
    assert verdict.total_bytes == verdict.estimate.total_bytes
    assert verdict.estimate.gpu_bytes <= 22 * GB


def test_partial_offload_takes_the_most_layers_that_fit() -> None:
    free = 4 * GB
    verdict = assess(LLAMA_8B, machine(32 * GB, [nvidia(free)]), n_ctx=4096)
    assert verdict.kind == "partial_gpu"
    k = verdict.gpu_layers
    assert 0 < k < 32
    common: dict[str, Any] = {"n_ctx": 4096, "gpu_vendor": "nvidia"}
    assert estimate_memory(LLAMA_8B, n_gpu_layers=k, **common).gpu_bytes <= free
    assert estimate_memory(LLAMA_8B, n_gpu_layers=k + 1, **common).gpu_bytes > free
    assert f"{k} of 33 layers" in verdict.reason  # llama.cpp's count: the output layer is one of them


def test_cpu_when_no_gpu_or_a_cpu_only_llama_build() -> None:
    verdict = assess(LLAMA_8B, machine(32 * GB), n_ctx=4096)
    assert verdict.kind == "cpu" and verdict.gpu_layers == 0 and "No GPU" in verdict.reason
    cpu_build = assess(LLAMA_8B, machine(32 * GB, [nvidia(22 * GB)], offload=False), n_ctx=4096)
    assert cpu_build.kind == "cpu" and "built for the CPU only" in cpu_build.reason
    tiny_gpu = assess(LLAMA_8B, machine(32 * GB, [nvidia(100_000_000)]), n_ctx=4096)
    assert tiny_gpu.kind == "cpu" and "Not even one layer" in tiny_gpu.reason


def test_too_large() -> None:
    verdict = assess(LLAMA_8B, machine(3 * GB), n_ctx=4096)
    assert verdict.kind == "too_large" and not verdict.fits
    assert "Does not fit" in verdict.reason and "3.0 GB" in verdict.reason


def test_fixed_gpu_layers() -> None:
    hw = machine(32 * GB, [nvidia(3 * GB)])
    too_many = assess(LLAMA_8B, hw, n_ctx=4096, gpu_layers=33)
    assert too_many.kind == "too_large" and "offload fewer layers" in too_many.reason
    some = assess(LLAMA_8B, hw, n_ctx=4096, gpu_layers=4)
    assert some.kind == "partial_gpu" and some.gpu_layers == 4


def test_unified_memory_counts_gpu_part_in_ram() -> None:
    apple = GPU(0, "Apple M2 GPU", "apple", total_bytes=10 * GB, free_bytes=10 * GB, unified=True)
    roomy = assess(LLAMA_8B, machine(15 * GB, [apple]), n_ctx=4096)
    assert roomy.kind == "full_gpu" and roomy.estimate.gpu_runtime == 0
    assert roomy.estimate.ram_bytes == roomy.estimate.cpu_bytes + roomy.estimate.gpu_bytes
    # The GPU budget has room but RAM does not once the GPU part is counted in it.
    tight = assess(LLAMA_8B, machine(roomy.estimate.cpu_bytes + GB, [apple]), n_ctx=4096)
    assert tight.kind != "full_gpu"


def test_this_machine_runs_the_starter_model(starter_model: Path) -> None:
    verdict = assess(ModelShape.from_gguf(starter_model), detect_hardware(), n_ctx=4096)
    assert verdict.kind in ("cpu", "full_gpu") and verdict.reason


def test_quant_bits() -> None:
    assert [
        quant_bits(q) for q in ("Q4_K_M", "IQ2_XS", "Q8_0", "F16", "BF16", "UD-Q3_K_XL", "MXFP4_MOE")
    ] == [
        4,
        2,
        8,
        16,
        16,
        3,
        4,
    ]
    assert quant_bits("weird") is None


def test_q4_k_m_is_the_default_for_an_8b_model() -> None:
    rec = recommend(LLAMA8B_QUANTS, LLAMA_8B, n_ctx=8192, hardware=machine(64 * GB, [nvidia(14 * GB)]))
    assert rec.quant == "Q4_K_M"
    assert "balanced default" in rec.reason and "fully on the GPU" in rec.reason
    assert set(rec.verdicts) == {q for q, _ in LLAMA8B_QUANTS}
    assert rec.verdicts["F16"].kind == "partial_gpu"


def test_small_models_get_q5_or_better() -> None:
    rec = recommend(
        [
            ("Q4_K_M", 2_020_000_000),
            ("Q5_K_M", 2_320_000_000),
            ("Q6_K", 2_640_000_000),
            ("Q8_0", 3_420_000_000),
        ],
        LLAMA_3B,
        n_ctx=8192,
        hardware=machine(32 * GB, [nvidia(12 * GB)]),
    )
    assert rec.quant == "Q6_K" and "under ~8B" in rec.reason


def test_tiny_models_get_q8(starter_model: Path) -> None:
    shape = ModelShape.from_gguf(starter_model)
    rec = recommend(
        [("Q4_K_M", 253_000_000), ("Q8_0", 292_000_000), ("F16", 543_000_000)], shape, 4096, machine(8 * GB)
    )
    assert rec.quant == "Q8_0" and "runs on the CPU" in rec.reason


def test_speed_never_buys_a_3_bit_quant_for_an_8b_model() -> None:
    hw = machine(32 * GB, [nvidia(5_600_000_000)])
    rec = recommend(LLAMA8B_QUANTS, LLAMA_8B, n_ctx=4096, hardware=hw)
    assert rec.verdicts["Q3_K_M"].kind == "full_gpu"  # would run fully on the GPU …
    assert rec.verdicts["Q4_K_M"].kind == "partial_gpu"
    assert rec.quant == "Q4_K_M"  # … but 3 bits costs an 8B model too much


def test_prefers_full_offload_among_good_quants() -> None:
    hw = machine(32 * GB, [nvidia(6_500_000_000)])
    rec = recommend(LLAMA8B_QUANTS, LLAMA_8B, n_ctx=4096, hardware=hw)
    assert rec.verdicts["Q4_K_M"].kind == "full_gpu" and rec.verdicts["Q6_K"].kind == "partial_gpu"
    assert rec.quant == "Q4_K_M" and "would not run as fast" in rec.reason


def test_two_bit_only_when_nothing_else_fits() -> None:
    q2 = estimate_memory(LLAMA_8B, n_ctx=4096, weight_bytes=3_179_000_000).ram_bytes
    rec = recommend(LLAMA8B_QUANTS, LLAMA_8B, n_ctx=4096, hardware=machine(q2 + 50_000_000))
    assert rec.quant == "Q2_K"
    assert "only kind of quant that fits" in rec.reason and "loses much quality" in rec.reason


def test_nothing_fits() -> None:
    rec = recommend(LLAMA8B_QUANTS, LLAMA_8B, n_ctx=4096, hardware=machine(2 * GB))
    assert rec.quant is None and "None of the quants fits" in rec.reason
    assert all(v.kind == "too_large" for v in rec.verdicts.values())
    assert recommend([], LLAMA_8B, hardware=machine(2 * GB)).quant is None


@pytest.mark.parametrize("params_b", [40, 80])
def test_large_models_tolerate_lower_bits(params_b: int) -> None:
    layers = 60 if params_b == 40 else 80
    shape = shape_of(
        layers=layers,
        embd=8192 if params_b == 80 else 6144,
        ff=28672 if params_b == 80 else 24576,
        heads=64 if params_b == 80 else 48,
        kv=8,
        vocab=128256,
    )
    assert shape.parameter_count > 30e9  # 3-bit quants become acceptable from ~30B
    q3 = int(shape.parameter_count * 3.9 / 8)
    q2 = int(shape.parameter_count * 2.96 / 8)
    q4 = int(shape.parameter_count * 4.85 / 8)
    ram = estimate_memory(shape, n_ctx=4096, weight_bytes=q3).ram_bytes + GB
    rec = recommend([("Q2_K", q2), ("Q3_K_M", q3), ("Q4_K_M", q4)], shape, 4096, machine(ram))
    assert rec.verdicts["Q4_K_M"].kind == "too_large"
    assert rec.quant == "Q3_K_M"
