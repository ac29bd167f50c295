"""Ternary quants (TQ1_0, TQ2_0): listed, quantized for real by llama.cpp, run by the engine, sized by the fit.

The tiny model is 256 wide: llama.cpp's quantizer stores a tensor in a 256-weight block type only
when its rows are a multiple of 256; narrower rows silently fall back to Q4_0 (llama-quant.cpp), so a
64-wide model would not contain one ternary tensor.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from core.engine import Completion, Engine, LoadOptions, SamplingParams, TextChunk
from core.fit import ModelShape, estimate_memory, read_remote_shape
from core.gguf_export.quantize import normalize_quant, quant_types, quantize_gguf
from core.hub.quants import bits_per_weight, parse_quant
from tests.fixtures.fakehub import FakeHub
from tests.fixtures.tiny_models import write_tiny_llama

# Bytes per 256-weight block (ggml-common.h: block_tq1_0 = 2 + 4*13 bytes of 5-trit groups and a
# scale, block_tq2_0 = 64 bytes of 2-bit codes and a 2-byte scale).
BLOCK_BYTES = {"TQ1_0": 54, "TQ2_0": 66}
BLOCK_TENSORS = 14  # 2 layers x (q, k, v, output, gate, up, down)


@pytest.fixture(scope="module")
def wide_f32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("ternary") / "wide.gguf", n_embd=256, n_ff=512)


@pytest.fixture(scope="module", params=list(BLOCK_BYTES))
def ternary(request: pytest.FixtureRequest, wide_f32: Path) -> tuple[str, Path]:
    quant = str(request.param)
    return quant, quantize_gguf(wide_f32, wide_f32.with_name(f"wide-{quant}.gguf"), quant.lower())


def test_quants_lists_the_ternary_types_with_their_bits() -> None:
    types = {t.name: t for t in quant_types()}
    assert types["TQ1_0"].bits_per_weight == pytest.approx(54 * 8 / 256) == 1.6875
    assert types["TQ2_0"].bits_per_weight == pytest.approx(66 * 8 / 256) == 2.0625
    assert normalize_quant("tq2_0") == "TQ2_0"
    assert parse_quant("bitnet-b1.58-2B-4T-TQ2_0.gguf") == "TQ2_0" and parse_quant("Model.TQ1_0.gguf") == "TQ1_0"
    assert bits_per_weight("TQ1_0") == pytest.approx(1.69, abs=0.01)
    assert bits_per_weight("TQ2_0") == pytest.approx(2.06, abs=0.01)


def test_llama_cpp_writes_real_ternary_tensors(ternary: tuple[str, Path]) -> None:
    import gguf

    quant, path = ternary
    reader = gguf.GGUFReader(str(path))
    types = Counter(t.tensor_type.name for t in reader.tensors)
    assert types[quant] == BLOCK_TENSORS, types
    for t in reader.tensors:
        if t.tensor_type.name == quant:
            assert int(t.n_bytes) == int(t.n_elements) // 256 * BLOCK_BYTES[quant]
    file_type = reader.get_field("general.file_type")
    assert file_type is not None and int(file_type.parts[-1][0]) == gguf.LlamaFileType[f"MOSTLY_{quant}"]


def test_the_engine_loads_and_generates(ternary: tuple[str, Path]) -> None:
    _quant, path = ternary
    with Engine() as engine:
        status = engine.load(path, LoadOptions(n_ctx=256, n_threads=2))
        assert status.path == str(path) and status.n_layer == 2
        chunks: list[TextChunk] = []
        done: Completion | None = None
        for item in engine.stream_complete("hello world", SamplingParams(temperature=0, max_tokens=8, repeat_penalty=1.0)):
            if isinstance(item, TextChunk):
                chunks.append(item)
            else:
                done = item
    assert done is not None and done.stats.completion_tokens >= 1
    assert "".join(c.text for c in chunks) == done.text


def test_the_fit_sizes_ternary_weights(ternary: tuple[str, Path], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import gguf

    quant, path = ternary
    reader = gguf.GGUFReader(str(path))
    data_start = min(int(t.data_offset) for t in reader.tensors)
    local = ModelShape.from_gguf(path)
    assert local.file_type == quant
    assert local.weight_bytes is not None
    # The tensor data is the file after the header, less the alignment padding between tensors.
    padding = path.stat().st_size - data_start - local.weight_bytes
    assert 0 <= padding <= 32 * len(reader.tensors)
    estimate = estimate_memory(local, n_ctx=256)
    assert estimate.weights_cpu + estimate.weights_gpu == local.weight_bytes

    with FakeHub() as hub:  # the Hub path reads the header only, with its own tensor-size code
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        hub.add_repo("acme/Wide-GGUF", {f"Wide-{quant}.gguf": path})
        remote = read_remote_shape("acme/Wide-GGUF", f"Wide-{quant}.gguf")
    assert remote.weight_bytes == local.weight_bytes and remote.layer_bytes == local.layer_bytes
