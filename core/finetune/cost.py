"""What a fine-tune will need before it starts — memory, time, disk — judged without torch.

The figures are those the job itself will use: the memory formula and search of
``core.finetune.resources`` (over the memory free now, found with ``core.hardware`` and psutil rather
than torch), the data-dependent schedule and the calibrated speed of ``core.finetune.planner``. They are
estimates that err high; the job measures the real speed as it runs.
"""

from __future__ import annotations

import math
import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import DatasetError
from core.finetune import planner
from core.finetune.data.scan import DocumentScan, scan_documents
from core.finetune.data.views import parse_views, view_size
from core.finetune.resources import GB, estimate_bytes
from core.finetune.spec import FinetuneSpec

METHOD_OF_ESTIMATE = "calibrated formula"
# Time outside the training steps, whatever the data: starting the process and loading the model and
# tokenizer, measuring the base and the tuned model (loss, knowledge check, sample answers), saving the
# adapter and hashing the base. Measured at 20-50 s for Gemma 3 270M on 2 cores; rounded up.
OVERHEAD_S = 60.0
# The first fine-tune of a GGUF base dequantizes it into the cache: 75-95 s for the 270M starter.
CONVERSION_S = 80.0
MEMORY_BUDGET = 0.85  # the share of the free memory a plan may use (as resources.plan)
ADAPTER_FRACTION = 0.02  # the trainable share an adapter method is planned with (as the job's _plan)
GPU_CORES = 64  # what the planner's CPU speed formula is given for a GPU (as the job does)


@dataclass(frozen=True)
class TrainingDevice:
    """Where the job will most likely train, and the memory free there now."""

    device: str  # "cpu", "cuda" or "mps"
    bf16: bool
    available_memory: int  # bytes
    note: str | None = None  # a problem with the requested device, in words
    remark: str = ""  # why a GPU of this machine does not train (a Vulkan-only GPU), in one line


@dataclass(frozen=True)
class CostEstimate:
    """Memory, time and disk a fine-tune needs (bytes and seconds), and whether it fits now."""

    device: str
    peak_memory: int
    available_memory: int
    train_seconds: float
    overhead_seconds: float  # loading, evaluation, saving (OVERHEAD_S), plus the GGUF conversion when due
    disk_needed: int  # adapter checkpoint and optimizer, prepared data, the converted base when not cached
    disk_free: int
    seq_len: int
    batch: int
    grad_accum: int
    gradient_checkpointing: bool
    epochs: float
    total_steps: int
    rows: int  # training rows of seq_len tokens (estimated from characters before the tokenizer)
    tokens: int  # estimated tokens of training text
    tokens_to_train: int  # tokens seen over all epochs
    parameters: int
    trainable_parameters: int
    adapter_bytes: int
    conversion_bytes: int
    fits: bool
    problems: list[str] = field(default_factory=list)  # what to change, in words; empty when it fits
    device_note: str = ""  # TrainingDevice.remark: why this machine's GPU does not train
    reasons: list[str] = field(default_factory=list)  # why the planner chose its defaults
    method_of_estimate: str = METHOD_OF_ESTIMATE
    # Knowledge views: training may stop before the planned steps (the questions asked in other words decide),
    # so the time is the most it takes.
    stops_early: bool = False

    @property
    def total_seconds(self) -> float:
        return self.train_seconds + self.overhead_seconds

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "total_seconds": self.total_seconds}


def training_device(requested: str = "auto") -> TrainingDevice:
    """The device ``resources.pick_device`` will most likely pick, judged from the hardware (no torch).

    Whether the training environment's torch can use a CUDA GPU is not known without importing it; an
    NVIDIA GPU is taken as usable. bf16 is assumed on such a GPU, and on a CPU with native bf16 instructions.
    """
    from core.hardware import detect_hardware

    hardware = detect_hardware(with_llama=False)
    nvidia = [g for g in hardware.gpus if g.vendor == "nvidia" and not g.unified]
    if requested in ("auto", "cuda") and nvidia:
        best = max(nvidia, key=lambda g: g.free_bytes)
        return TrainingDevice("cuda", True, int(best.free_bytes))
    note = None
    if requested == "cuda":
        note = "No NVIDIA GPU was found to train on: choose 'auto' or 'cpu' as the device."
    apple = platform.system() == "Darwin" and any(g.vendor == "apple" for g in hardware.gpus)
    if requested in ("auto", "mps") and apple:
        return TrainingDevice("mps", False, int(hardware.ram_available_bytes))
    if requested == "mps":
        note = "Apple's GPU (MPS) is not available here: choose 'auto' or 'cpu' as the device."
    bf16 = bool({"AVX512_BF16", "AMX_BF16"} & set(hardware.cpu.features))
    return TrainingDevice("cpu", bf16, int(hardware.ram_available_bytes), note, vulkan_remark())


def vulkan_remark() -> str:
    """On a machine whose GPUs llama.cpp runs through Vulkan only (AMD, Intel): why training uses the CPU."""
    from core.hardware import detect_hardware

    vulkan = [g for g in detect_hardware().usable_gpus if g.backend == "Vulkan"]
    if not vulkan:
        return ""
    return (f"Training runs on the CPU: PyTorch has no Vulkan backend, so the {vulkan[0].name} runs your chats "
            "but not fine-tuning (that needs an NVIDIA GPU or a Mac).")


def estimate_cost(spec: FinetuneSpec, scan: DocumentScan | None = None) -> CostEstimate:
    """What ``spec`` needs on this machine now, and whether it fits (``problems`` says what to change).

    ``scan`` is the documents' scan when the caller has one (``scan_documents(spec.docs)`` otherwise).
    A base that cannot be found raises its ``NotFoundError``.
    """
    from core.finetune.base_model import _conversion_folder, resolve_base
    from core.finetune.job import _shape
    from core.finetune.methods import get_method

    method = get_method(spec.method)
    base = resolve_base(spec.base)
    hidden, layers, vocab = _shape(base)
    target = training_device(spec.device)
    problems = [target.note] if target.note else []
    documents = bool(spec.docs)
    if documents:
        if scan is None:
            scan = scan_documents(spec.docs)
        tokens = scan.total_tokens
        if not scan.usable:
            problems.append(scan.why_not or "None of these documents can be used.")
    else:
        tokens = _dataset_tokens(spec.data)

    four_bit = method.wants_4bit and target.device == "cuda"
    full_weights = method.output == "model" or method.name == "delta-lora"
    fraction = 1.0 if method.output == "model" else ADAPTER_FRACTION
    weight_bytes = 1 if four_bit else 4 if full_weights or not target.bf16 else 2
    prefer = planner.before_data(documents=documents, est_tokens=tokens, seq_len=spec.seq_len)
    wanted_rows = (planner.documents_rows_per_step(max(1, tokens // max(1, (prefer or 1024) - 64)))
                   if documents and not (spec.batch or spec.grad_accum) else None)
    trainable = int(base.parameters * fraction)
    seq, batch, accum, ckpt, need = _fit(
        spec, available=target.available_memory, parameters=base.parameters, trainable=trainable, hidden=hidden,
        layers=layers, vocab=vocab, context=base.context_length, weight_bytes=weight_bytes,
        act_bytes=2 if target.bf16 else 4, prefer=prefer, rows_per_step=wanted_rows)
    if need > target.available_memory * MEMORY_BUDGET:
        where = "GPU memory" if target.device == "cuda" else "memory"
        problems.append(f"Needs about {need / GB:.1f} GB of {where} but {target.available_memory / GB:.1f} GB is "
                        "free: close other programs or pick a smaller model"
                        + (" (or a shorter row length)" if spec.seq_len else "") + ".")

    views = _views(spec)
    if views:
        # The job trains on the documents rewritten into knowledge views, packed into rows of ``seq`` tokens.
        row_tokens = view_size(views, tokens)
        rows = max(1, math.ceil(row_tokens / seq))
    else:
        rows, row_tokens = _rows(spec, method.packing, tokens, seq, documents)
    sched = planner.schedule(documents=documents, rows=rows, tokens=row_tokens, rows_per_step=batch * accum,
                             method_lr=method.default_lr, parameters=base.parameters,
                             cores=_cores(target.device), epochs=spec.epochs, max_steps=spec.max_steps, lr=spec.lr,
                             views=bool(views), held_out=bool(views) and spec.nproc == 1)
    steps, rows_seen = _steps(rows, sched.epochs, sched.max_steps, batch, accum)
    tokens_seen = int(row_tokens / max(1, rows) * rows_seen)
    train_s = planner.estimated_seconds(total_tokens=tokens_seen, parameters=base.parameters,
                                        cores=_cores(target.device), documents=documents)

    adapter_bytes = trainable * 4 * 3  # the weights, and the checkpoint's copy with Adam's state
    conversion_bytes = 0
    overhead = OVERHEAD_S
    if base.kind == "gguf":
        dtype_name = "float32" if weight_bytes == 4 else "bfloat16"
        if not (_conversion_folder(base, dtype_name) / "hearth-complete").exists():
            conversion_bytes = base.parameters * 4  # f32: the larger of the two training dtypes
            overhead += CONVERSION_S
    data_bytes = row_tokens * 16  # the prepared rows (token ids and labels, int64) kept for resuming
    disk_needed = adapter_bytes + conversion_bytes + data_bytes
    folder, disk_free = _free_disk()
    if disk_needed > disk_free:
        problems.append(f"Needs about {disk_needed / GB:.1f} GB of disk space in {folder} but "
                        f"{disk_free / GB:.1f} GB is free: free some space first.")
    return CostEstimate(
        device=target.device, peak_memory=need, available_memory=target.available_memory, train_seconds=train_s,
        overhead_seconds=overhead, disk_needed=disk_needed, disk_free=disk_free, seq_len=seq, batch=batch,
        grad_accum=accum, gradient_checkpointing=ckpt, epochs=sched.epochs, total_steps=steps, rows=rows,
        tokens=tokens, tokens_to_train=tokens_seen, parameters=base.parameters, trainable_parameters=trainable,
        adapter_bytes=adapter_bytes, conversion_bytes=conversion_bytes, fits=not problems, problems=problems,
        device_note=target.remark, stops_early=sched.stop_checks_from is not None,
        reasons=sched.reasons + ([] if not (documents and spec.qa_model) else
                                 ["the question-answer pairs the question writer adds are not counted"]),
    )


def _views(spec: FinetuneSpec) -> list[str]:
    """The knowledge views a documents job will train on (none for a dataset, or with --views none)."""
    if not spec.docs:
        return []
    try:
        return parse_views(spec.views)
    except DatasetError:
        return []  # the spec's own check says what is wrong with the names


def _dataset_tokens(data: str | None) -> int:
    # JSON syntax and field names count as text here: the estimate errs high, as planned.
    try:
        return planner.estimate_tokens(Path(data).stat().st_size) if data else 0
    except OSError:
        return 0


def _fit(spec: FinetuneSpec, *, available: int, parameters: int, trainable: int, hidden: int, layers: int,
         vocab: int, context: int | None, weight_bytes: int, act_bytes: int, prefer: int | None,
         rows_per_step: int | None) -> tuple[int, int, int, bool, int]:
    """(seq_len, batch, grad_accum, checkpointing, bytes): the search ``resources.plan`` runs, over ``available``.

    Where nothing fits, the smallest settings and what they would need.
    """
    budget = int(available * MEMORY_BUDGET)
    max_len = min(2048, context or 2048, prefer or 2048)
    seq_options = [spec.seq_len] if spec.seq_len else [s for s in (1024, 512, 256, 128) if s <= max_len] or [max_len]
    batch_options = [spec.batch] if spec.batch else [b for b in (8, 4, 2, 1) if b <= (rows_per_step or 8)]
    ckpt_options = [spec.gradient_checkpointing] if spec.gradient_checkpointing is not None else [False, True]

    def cost(s: int, b: int, c: bool) -> int:
        return estimate_bytes(parameters=parameters, trainable=trainable, hidden=hidden, layers=layers, vocab=vocab,
                              seq_len=s, batch=b, checkpointing=c, weight_bytes=weight_bytes, act_bytes=act_bytes)

    def accum(b: int) -> int:
        return spec.grad_accum or max(1, (rows_per_step or 8) // b)

    for s in seq_options:
        for c in ckpt_options:
            for b in batch_options:
                if b * s > 8192 and not spec.batch:
                    continue
                need = cost(s, b, c)
                if need <= budget:
                    return s, b, accum(b), c, need
    s, b, c = seq_options[-1], batch_options[-1], ckpt_options[-1]
    return s, b, accum(b), c, cost(s, b, c)


def _rows(spec: FinetuneSpec, packing: bool, tokens: int, seq: int, documents: bool) -> tuple[int, int]:
    """(training rows, tokens in them): documents are cut in overlapping windows, datasets packed."""
    if tokens <= 0:
        return 1, 1
    if documents:
        step = max(1, seq - min(spec.chunk_overlap, seq // 2))
        rows = max(1, math.ceil(max(0, tokens - seq) / step) + 1)
        return rows, tokens + (rows - 1) * (seq - step)
    train_tokens = max(1, int(tokens * (1 - spec.eval_fraction)))
    rows = max(1, math.ceil(train_tokens / seq)) if packing else max(1, train_tokens // 64)
    return rows, train_tokens


def _steps(rows: int, epochs: float, max_steps: int | None, batch: int, accum: int) -> tuple[int, int]:
    """(optimizer steps, rows seen): the trainer's schedule, counted (core.finetune.trainer)."""
    steps = seen = 0
    whole = max(1, math.ceil(epochs))
    for epoch in range(whole):
        n = rows if not (epoch == whole - 1 and epochs < whole) else max(1, round(rows * (epochs - epoch)))
        steps += math.ceil(math.ceil(n / batch) / accum)
        seen += n
    if max_steps:
        seen = round(seen * max_steps / max(1, steps))
        steps = max_steps
    return steps, seen


def _cores(device: str) -> int:
    return (os.cpu_count() or 1) if device == "cpu" else GPU_CORES


def _free_disk() -> tuple[Path, int]:
    from core.paths import get_paths

    folder = get_paths().data
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return folder, int(shutil.disk_usage(probe).free)
