"""``hearth hw`` (this machine's hardware) and ``hearth fit`` (will a model fit, and how)."""

from __future__ import annotations

import argparse
from typing import Any

from core.cli.output import print_json, print_kv, print_table
from core.errors import HearthError
from core.units import human_count, human_size


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("hw", help="show RAM, CPU features, GPUs and llama.cpp's backends")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_hw)

    p = sub.add_parser(
        "fit",
        help="estimate a model's memory and whether it runs on the GPU, split, or on the CPU",
        description="MODEL_OR_FILE: a library name, a .gguf path, or a Hub file as hf://OWNER/REPO/FILE.gguf "
        "(only its header is downloaded).",
    )
    p.add_argument("model", metavar="MODEL_OR_FILE")
    p.add_argument(
        "--ctx", type=int, default=4096, help="context length in tokens (default 4096; 0 = the model's)"
    )
    p.add_argument("--gpu-layers", type=int, default=None, help="layers to offload (default: as many as fit)")
    p.add_argument("--cache-type", default="f16", help="KV cache type: f16 (default), q8_0, q4_0")
    p.add_argument("--no-workers", action="store_true",
                   help="judge this machine alone (default: count the enabled other machines, see 'hearth workers')")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_fit)


def run_hw(args: argparse.Namespace) -> int:
    from core.hardware import detect_hardware

    hw = detect_hardware()
    if args.json:
        print_json(hw.to_dict())
        return 0
    llama = hw.llama
    pairs: list[tuple[str, Any]] = [
        ("OS", hw.os),
        ("RAM", f"{human_size(hw.ram_total_bytes)} total, {human_size(hw.ram_available_bytes)} available"),
        (
            "CPU",
            f"{hw.cpu.model} ({hw.cpu.physical_cores} cores, {hw.cpu.logical_cores} threads, {hw.cpu.arch})",
        ),
        ("CPU features", " ".join(hw.cpu.features) or "-"),
        (
            "llama.cpp",
            (", ".join(llama.backends) or "no backend listed")
            + ("; GPU offload supported" if llama.gpu_offload else "; CPU only")
            if llama.available
            else f"not available ({llama.error})",
        ),
    ]
    if llama.available:
        pairs.append(("CPU backend", llama.cpu_backend))
    print_kv(pairs)
    if hw.gpus:
        print()
        used = {g.index for g in hw.usable_gpus}
        rows = [
            [
                g.index,
                g.name,
                g.vendor,
                (f"{g.device} ({g.backend})" if g.device else "-") + (f", also {', '.join(g.also)}" if g.also else ""),
                human_size(g.total_bytes),
                human_size(g.free_bytes),
                "unified" if g.unified else "",
                "yes" if g.index in used else "no",
                g.source,
            ]
            for g in hw.gpus
        ]
        print_table(rows, ["#", "GPU", "vendor", "llama.cpp device", "memory", "free", "", "used", "from"])
    print(f"Models run on: {hw.runs_on}")
    for note in hw.notes:
        print(f"note: {note}")
    return 0


def run_fit(args: argparse.Namespace) -> int:
    from core.fit import assess, shape_for
    from core.fit.estimate import MARGIN_FRACTION
    from core.hardware import detect_hardware

    if args.ctx < 0:
        raise HearthError("--ctx must be 0 (the model's own context) or a positive number of tokens.")
    from core.workers import machines_for_fit

    shape, label = shape_for(args.model)
    machines = None if args.no_workers else machines_for_fit()  # the enabled workers, probed
    verdict = assess(
        shape,
        detect_hardware(),
        n_ctx=args.ctx,
        gpu_layers=args.gpu_layers,
        cache_type_k=args.cache_type,
        cache_type_v=args.cache_type,
        workers=machines.answering if machines else (),
        worker_names=machines.names if machines else None,
    )
    e = verdict.estimate
    if args.json:
        workers = {"workers": [w.to_dict() for w in machines.answering], "workers_left_out": machines.left_out} \
            if machines else {}
        print_json({"model": label, "shape": shape.to_dict(), "verdict": verdict.to_dict(), **workers})
        return 0
    print_kv(
        [
            ("Model", label),
            (
                "Architecture",
                f"{shape.architecture}, {human_count(shape.parameter_count)} parameters, "
                f"{shape.n_layer} layers{', ' + shape.file_type if shape.file_type else ''}",
            ),
            (
                "Context",
                f"{e.n_ctx} tokens (KV cache {e.cache_type_k}, {'full-size' if e.swa_full else 'windowed'} "
                "sliding-window cache)",
            ),
        ]
    )
    print()
    rows = [
        ["weights", human_size(e.weights_gpu), human_size(e.weights_cpu)],
        ["KV cache", human_size(e.kv_gpu), human_size(e.kv_cpu)],
        ["compute buffers", human_size(e.compute_gpu), human_size(e.compute_cpu)],
        ["logits, vocabulary", "", human_size(e.output + e.vocab)],
        ["process / driver", human_size(e.gpu_runtime), human_size(e.baseline)],
        *([["vision projector", human_size(e.projector_gpu), human_size(e.projector_cpu)]] if e.projector_bytes else []),
        [f"margin ({MARGIN_FRACTION:.0%})", human_size(e.margin_gpu), human_size(e.margin_cpu)],
        ["total", human_size(e.gpu_bytes), human_size(e.cpu_bytes)],
    ]
    print_table(rows, ["part", "GPU", "RAM"])
    print()
    print(
        f"Verdict: {verdict.kind.replace('_', ' ')}"
        + (f" ({verdict.gpu_layers} layers offloaded)" if verdict.gpu_layers else "")
    )
    print(verdict.reason)
    for note in e.notes:
        print(f"note: {note}")
    for note in machines.left_out if machines else []:
        print(f"note: {note}")
    return 0
