"""Device choice and memory planning for a training job, before any weight is loaded.

The estimate is deliberately simple (weights + trained state + activations + output-layer chunk +
overhead) and errs high; it picks defaults that fit and refuses settings that cannot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.errors import TrainingError

GB = 1024**3


@dataclass(frozen=True)
class Plan:
    device: str
    bf16: bool
    weight_bytes_per_param: int
    seq_len: int
    batch: int
    grad_accum: int
    gradient_checkpointing: bool
    predicted_bytes: int
    available_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def pick_device(requested: str = "auto") -> tuple[str, bool]:
    """The torch device type to train on and whether bf16 autocast pays off there."""
    import torch

    if requested not in ("auto", "cpu", "cuda", "mps"):
        raise TrainingError(f"Unknown device '{requested}': use auto, cpu, cuda or mps.")
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return "cuda", bool(torch.cuda.is_bf16_supported())
    if requested == "cuda":
        raise TrainingError("No CUDA GPU is available: use --device cpu (or auto).")
    if requested in ("auto", "mps") and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps", False
    if requested == "mps":
        raise TrainingError("Apple's MPS backend is not available here: use --device cpu (or auto).")
    # bf16 on CPU is only faster with native bf16 instructions (AVX512-BF16 / AMX); otherwise it is emulated.
    return "cpu", bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def available_memory(device: str) -> int:
    if device == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info()
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def estimate_bytes(
    *, parameters: int, trainable: int, hidden: int, layers: int, vocab: int, seq_len: int, batch: int,
    checkpointing: bool, weight_bytes: int, act_bytes: int,
) -> int:
    weights = parameters * weight_bytes
    trained_state = trainable * 16  # fp32 weight copy, gradient, Adam's two moments
    tokens = seq_len * batch
    # Per layer and token, a transformer block keeps roughly 16 hidden-sized tensors for backward
    # (attention and MLP inputs/outputs, norms; the MLP is ~4x wide); checkpointing keeps one per layer.
    per_layer = (hidden * 2 if checkpointing else hidden * 16) * act_bytes
    activations = tokens * layers * per_layer + (tokens * hidden * 16 * act_bytes if checkpointing else 0)
    attention = batch * seq_len * seq_len * 2 * (1 if checkpointing else layers)  # packed masks and scores
    head = min(tokens, max(16, 64 * 1024 * 1024 // max(1, vocab))) * vocab * 4 * 3
    return int(weights + trained_state + activations + attention + head + 0.6 * GB)


def plan(
    *, device: str, bf16: bool, parameters: int, trainable_fraction: float, hidden: int, layers: int, vocab: int,
    context: int | None, seq_len: int | None, batch: int | None, grad_accum: int | None,
    checkpointing: bool | None, full_weights: bool, four_bit: bool = False, prefer_seq_len: int | None = None,
    rows_per_step: int | None = None, shards: int = 1, copies: int = 1,
) -> Plan:
    """Settings that fit in memory, keeping every value the user fixed; ``TrainingError`` when they cannot fit.

    ``prefer_seq_len`` caps the row length the data calls for, ``rows_per_step`` the rows per optimizer
    step (micro-batch times accumulation) it wants; both yield to what the user set. ``shards``: the
    weights and trained state are sharded over that many devices (FSDP; one layer's weights gathered at a
    time, two with prefetch); ``copies``: that many processes each hold the whole job in this memory (several
    processes on one machine's CPU).
    """
    weight_bytes = 4 if full_weights or not bf16 else 2
    if four_bit:
        weight_bytes = 1
    act_bytes = 2 if bf16 else 4
    available = available_memory(device)
    budget = int(available * 0.85)
    trainable = int(parameters * trainable_fraction)
    max_len = min(2048, context or 2048, prefer_seq_len or 2048)
    seq_options = [seq_len] if seq_len else [s for s in (1024, 512, 256, 128) if s <= max_len] or [max_len]
    batch_options = [batch] if batch else [b for b in (8, 4, 2, 1) if b <= (rows_per_step or 8)]
    ckpt_options = [checkpointing] if checkpointing is not None else [False, True]

    def cost(s: int, b: int, c: bool) -> int:
        need = estimate_bytes(parameters=parameters, trainable=trainable, hidden=hidden, layers=layers, vocab=vocab,
                              seq_len=s, batch=b, checkpointing=c, weight_bytes=weight_bytes, act_bytes=act_bytes)
        if shards > 1:  # as core.finetune.launchers.plan_memory counts a sharded GPU
            owned = parameters * weight_bytes + trainable * 16
            need += owned // shards - owned + 2 * parameters * weight_bytes // max(1, layers)
        return need * max(1, copies)

    for s in seq_options:
        for c in ckpt_options:
            for b in batch_options:
                if b * s > 8192 and not batch:
                    continue  # beyond this a bigger micro-batch brings no speed, only memory
                need = cost(s, b, c)
                if need <= budget:
                    accum = grad_accum or max(1, (rows_per_step or 8) // b)
                    return Plan(device, bf16, weight_bytes, s, b, accum, c, need, available)
    s, b, c = seq_options[-1], batch_options[-1], ckpt_options[-1]
    need = cost(s, b, c)
    if copies > 1:
        raise TrainingError(
            f"Not enough memory for {copies} processes: each holds its own copy of the model (about "
            f"{need / copies / GB:.1f} GB each, {need / GB:.1f} GB together) but {available / GB:.1f} GB is free: use "
            "fewer processes (--nproc), a smaller model, or lower --seq-len or --batch.")
    fixed = ", ".join(n for n, v in (("--seq-len", seq_len), ("--batch", batch)) if v) or "the smallest settings"
    raise TrainingError(
        f"Not enough memory: training {parameters / 1e6:.0f}M parameters with {fixed} needs about "
        f"{need / GB:.1f} GB but {available / GB:.1f} GB is free. Close other programs, lower --seq-len or "
        "--batch, use --gradient-checkpointing, or pick a smaller model or a 4-bit method (qlora on a GPU)."
    )
