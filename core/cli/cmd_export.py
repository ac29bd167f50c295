"""``hearth export | merge | quantize | quants | merge-models | merge-adapters | export-ollama``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.cli.output import print_json, print_table, status_line
from core.errors import ExportError
from core.events import Progress
from core.units import human_size


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("export", help="convert a LoRA adapter to a llama.cpp GGUF LoRA")
    p.add_argument("adapter", help="adapter name in the library, or a PEFT adapter folder")
    p.add_argument("--out", help="output .gguf file (default: beside the adapter)")
    p.add_argument("--type", default="f32", choices=["f32", "f16", "bf16", "q8_0"], help="tensor type")
    p.add_argument("--base", help="the base model (library name, .gguf or HF folder) when the adapter does not say")
    p.set_defaults(func=run_export)

    p = sub.add_parser("merge", help="merge an adapter into its base model and quantize")
    p.add_argument("base", help="base model: library name, .gguf, or a Hugging Face safetensors folder")
    p.add_argument("adapter", help="adapter name in the library, or a PEFT adapter folder")
    p.add_argument("--quant", default="Q4_K_M", help="output type (see 'hearth quants'); default Q4_K_M")
    p.add_argument("--out", help="library name of the result, or a path ending in .gguf")
    p.add_argument("--tokenizer-from", help="a GGUF with the same vocabulary (safetensors bases only)")
    p.add_argument("--no-register", action="store_true", help="do not add the result to the library")
    p.set_defaults(func=run_merge)

    p = sub.add_parser("quantize", help="quantize a GGUF model with llama.cpp")
    p.add_argument("input", help="input model (library name or .gguf)")
    p.add_argument("output", help="output .gguf file")
    p.add_argument("--type", default="Q4_K_M", help="quantization type (see 'hearth quants')")
    p.set_defaults(func=run_quantize)

    p = sub.add_parser("quants", help="list the quantization types with bits per weight")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_quants)

    p = sub.add_parser("merge-models", help="merge models of the same architecture (linear, slerp, ties, ...)")
    p.add_argument("models", nargs="*", help="models to merge (library names or .gguf files)")
    p.add_argument("--method", default="linear", help="linear, slerp, task-arithmetic, ties, dare-ties, dare-linear")
    p.add_argument("--weights", type=float, nargs="+", help="one weight per model")
    p.add_argument("--base", help="base model for task-vector methods")
    p.add_argument("--density", type=float, help="fraction of each task vector kept (ties, dare)")
    p.add_argument("--t", type=float, help="slerp position (0 = first model, 1 = second)")
    p.add_argument("--lambda", dest="lam", type=float, help="scale of the merged task vector")
    p.add_argument("--seed", type=int, default=0, help="random seed (dare)")
    p.add_argument("--quant", default="Q8_0", help="output type (see 'hearth quants')")
    p.add_argument("--out", help="library name of the result, or a path ending in .gguf")
    p.add_argument("--no-register", action="store_true", help="do not add the result to the library")
    p.add_argument("--list", action="store_true", help="list the merge methods and their parameters")
    p.set_defaults(func=run_merge_models)

    p = sub.add_parser("merge-adapters", help="combine LoRA adapters of one base into a new adapter")
    p.add_argument("adapters", nargs="+", help="adapter names or PEFT folders")
    p.add_argument("--out", required=True, help="output adapter folder")
    p.add_argument("--weights", type=float, nargs="+", help="one weight per adapter")
    p.add_argument("--combination", default="cat", help="cat, linear, svd, ties, dare_ties, dare_linear, ...")
    p.add_argument("--density", type=float, help="density for ties/dare combinations")
    p.add_argument("--base", help="base model (HF folder or .gguf) when the adapters do not say")
    p.set_defaults(func=run_merge_adapters)

    p = sub.add_parser("export-ollama", help="write an Ollama Modelfile beside a GGUF model")
    p.add_argument("model", help="library name or .gguf")
    p.add_argument("--out", help="Modelfile path (default: MODEL.Modelfile beside the model)")
    p.set_defaults(func=run_export_ollama)


def _progress(p: Progress) -> None:
    """One line rewritten in place on a terminal (stage, count, tensor); each stage's start otherwise."""
    if sys.stderr.isatty() and p.total:
        status_line(f"{p.stage} {p.done:.0f}/{p.total:.0f} {p.message}")
    elif p.done == 0:
        print(f"{p.message or p.stage} ...", file=sys.stderr, flush=True)


def _progress_done() -> None:
    if sys.stderr.isatty():
        status_line()


def run_export(args: argparse.Namespace) -> int:
    from core.gguf_export.lora import export_lora_gguf

    result = export_lora_gguf(args.adapter, args.out, out_type=args.type, base=args.base)
    print(f"Wrote {result.path} ({result.architecture} LoRA, {result.n_pairs} tensor pairs, alpha "
          f"{result.alpha:g}, {human_size(result.size_bytes)})")
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from core.gguf_export.merge import merge_adapter_gguf, merge_adapter_safetensors, output_path
    from core.gguf_export.quantize import normalize_quant

    quant = normalize_quant(args.quant)
    base_dir = Path(args.base).expanduser()
    register = not args.no_register
    if base_dir.is_dir() and (base_dir / "config.json").is_file():
        if not args.tokenizer_from:
            raise ExportError("A safetensors base needs --tokenizer-from GGUF (a GGUF of the same model) for "
                              "its vocabulary.")
        out, name = output_path(None, args.out, base_dir.name + "-merged", quant)
        result = merge_adapter_safetensors(base_dir, args.adapter, out, tokenizer_from=args.tokenizer_from,
                                           quant=quant, register=register, name=name, progress=_progress)
    else:
        from core.library import Library

        entry = Library().get(args.base)
        out, name = output_path(None, args.out, f"{entry.name}-{Path(str(args.adapter)).name}", quant)
        result = merge_adapter_gguf(entry.path, args.adapter, out, quant=quant, register=register, name=name,
                                    progress=_progress)
    where = f" as '{result.name}'" if result.name else ""
    _progress_done()
    print(f"Wrote {result.path} ({quant}){where}")
    return 0


def run_quantize(args: argparse.Namespace) -> int:
    from core.gguf_export.quantize import quantize_gguf
    from core.library import Library

    src = Library().get(args.input).path
    out = quantize_gguf(src, Path(args.output).expanduser(), args.type, progress=_progress)
    _progress_done()
    print(f"Wrote {out} ({args.type.upper()}, {human_size(out.stat().st_size)})")
    return 0


def run_quants(args: argparse.Namespace) -> int:
    from core.gguf_export.quantize import quant_types

    types = quant_types()
    if args.json:
        print_json([t.__dict__ for t in types])
    else:
        print_table([(t.name, f"{t.bits_per_weight:.2f}", t.description) for t in types],
                    ["TYPE", "BITS/WEIGHT", "DESCRIPTION"])
    return 0


def run_merge_models(args: argparse.Namespace) -> int:
    from core.gguf_export.merge import output_path
    from core.gguf_export.merge_methods import get_method, merge_methods
    from core.gguf_export.model_merge import merge_models_gguf
    from core.gguf_export.quantize import normalize_quant

    if args.list:
        print_table([(m.name, m.pretty_name, ", ".join(f"{p.name}={p.default:g}" for p in m.parameters),
                      m.reference_url) for m in merge_methods()], ["METHOD", "NAME", "PARAMETERS", "REFERENCE"])
        return 0
    if not args.models:
        raise ExportError("Name the models to merge (library names or .gguf files).")
    method = get_method(args.method)
    given = {"density": args.density, "t": args.t, "lambda": args.lam}
    accepted = {p.name for p in method.parameters}
    for key, value in given.items():
        if value is not None and key not in accepted:
            raise ExportError(f"{method.pretty_name} does not take --{key}.")
    params = {k: v for k, v in given.items() if v is not None}
    quant = normalize_quant(args.quant)
    out, name = output_path(None, args.out, f"{method.name}-merge", quant)
    result = merge_models_gguf(args.models, out, method=method, weights=args.weights, base=args.base,
                               params=params, quant=quant, seed=args.seed, register=not args.no_register,
                               name=name, progress=_progress)
    where = f" as '{result.name}'" if result.name else ""
    _progress_done()
    print(f"Wrote {result.path} ({method.pretty_name}, {result.n_tensors} tensors, {quant}){where}")
    return 0


def run_merge_adapters(args: argparse.Namespace) -> int:
    from core.gguf_export.adapter_merge import merge_adapters

    out = merge_adapters(args.adapters, args.out, weights=args.weights, combination=args.combination,
                         density=args.density, base=args.base)
    print(f"Wrote adapter {out}")
    return 0


def run_export_ollama(args: argparse.Namespace) -> int:
    from core.gguf_export.ollama import write_modelfile

    result = write_modelfile(args.model, args.out)
    print(f"Wrote {result.modelfile} ({result.family} template); create it with: "
          f"ollama create NAME -f {result.modelfile}")
    return 0
