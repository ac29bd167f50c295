"""A fine-tune packed to run on another machine: a multi-GPU box or several nodes, with ``accelerate``.

``export_launch`` writes a folder that holds everything the other box needs besides Hearth itself:
``spec.json`` (the job, its paths relative to the folder), ``data/`` (the documents or dataset, copied),
``accelerate.yaml`` (DDP when the model and its training state fit one GPU, FSDP when they do not, as the
memory plan of ``core.finetune.resources`` says), ``launch.sh`` (the one command each node runs) and
``README.txt`` (what to install, what to fill in, how to bring the adapter home with
``hearth adapters import``). ``spec_from_file`` reads such a spec back, checked, with its paths made
absolute against its folder. Nothing here imports torch: the CLI calls it.

The accelerate config follows accelerate's own templates (``examples/config_yaml_templates/multi_gpu.yaml``,
``fsdp.yaml``, ``multi_node.yaml`` in the accelerate repository) and the fields of
``accelerate.commands.config.config_args.ClusterConfig``; the per-node command follows accelerate's
multi-node launch (``accelerate launch --config_file ... --machine_rank N``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import DiskFullError, NotFoundError, TrainingError
from core.finetune.launch_files import ASSUMED_GPUS_PER_NODE, accelerate_yaml, launch_script, readme_text
from core.finetune.resources import GB, estimate_bytes
from core.finetune.spec import FinetuneSpec

SPEC_FILE = "spec.json"
CONFIG_FILE = "accelerate.yaml"
SCRIPT_FILE = "launch.sh"
README_FILE = "README.txt"
DATA_DIR = "data"
MODELS_DIR = "models"
# The module each process runs: one rank of the job (``core.finetune.rank``), which reads RANK/WORLD_SIZE as torchrun
# and ``accelerate launch`` set them (core.finetune.distributed).
RANK_ENTRY = ("core.finetune.rank",)
# Planned when the GPU's memory is not given and none is found here: a 24 GB card (RTX 3090/4090, A10,
# L4) is the smallest common training GPU; bigger GPUs only make DDP fit more often.
DEFAULT_GPU_MEMORY = 24 * GB
MEMORY_BUDGET = 0.85  # the share of a GPU a plan may use (as core.finetune.resources.plan)
ADAPTER_FRACTION = 0.02  # the trainable share of an adapter method (as the job's _plan)
DEFAULT_PORT = 29500  # torch.distributed's usual rendezvous port (torchrun's default)
# Whether core.finetune.job shards the model when accelerate asks for FSDP (core.finetune.sharding:
# shard_model after the method's prepare, the adapter gathered whole to save, every rank in evaluation).
JOB_SHARDS = True


@dataclass(frozen=True)
class MemoryPlan:
    """Per-GPU memory of one job on the target box, and the strategy it needs."""

    strategy: str  # "ddp" (a whole copy per GPU) or "fsdp" (weights and training state sharded)
    gpu_memory: int  # bytes of one GPU
    whole_bytes: int  # the whole job on one GPU (DDP's need per GPU)
    sharded_bytes: int  # per GPU when sharded over ``world`` GPUs
    world: int  # GPUs the sharding estimate assumed
    seq_len: int
    batch: int
    gradient_checkpointing: bool
    four_bit: bool
    layer_class: str | None  # the decoder layer class FSDP wraps, when known
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ExportedLaunch:
    """What ``export_launch`` wrote: the folder, its files, the per-node command and the strategy."""

    folder: Path
    files: list[Path]
    command: str  # what each node runs (from the folder): bash launch.sh
    strategy: str  # "ddp" or "fsdp"
    notes: list[str] = field(default_factory=list)  # what the user must do or know, in words
    plan: MemoryPlan | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "files": [str(f) for f in self.files], "command": self.command,
                "strategy": self.strategy, "notes": list(self.notes),
                "plan": self.plan.to_dict() if self.plan else None}


# -- the memory plan ------------------------------------------------------------------------------------
def plan_memory(spec: FinetuneSpec, *, gpu_memory: int, world: int) -> MemoryPlan:
    """DDP when the job fits one GPU of ``gpu_memory`` bytes; FSDP over ``world`` GPUs when only sharded fits.

    The figures are ``core.finetune.resources.estimate_bytes`` (the formula the job plans with) for a GPU
    with bf16: weights, trained state (fp32 copy, gradient, Adam's moments), activations and the output
    layer. Sharded, weights and trained state divide by ``world``; one layer's weights are gathered at a
    time (two, with prefetch). ``TrainingError`` when even that does not fit, or for QLoRA that would need
    FSDP (see ``check_qlora_fsdp``).
    """
    from core.finetune.base_model import resolve_base
    from core.finetune.job import _shape
    from core.finetune.methods import get_method

    method = get_method(spec.method)
    base = resolve_base(spec.base)
    hidden, layers, vocab = _shape(base)
    four_bit = bool(method.wants_4bit)
    full_weights = method.output == "model" or method.name == "delta-lora"
    weight_bytes = 1 if four_bit else 4 if full_weights else 2
    trainable = int(base.parameters * (1.0 if method.output == "model" else ADAPTER_FRACTION))
    budget = int(gpu_memory * MEMORY_BUDGET)
    max_len = min(2048, base.context_length or 2048)
    seqs = [spec.seq_len] if spec.seq_len else [s for s in (1024, 512, 256, 128) if s <= max_len] or [max_len]
    batches = [spec.batch] if spec.batch else [4, 2, 1]
    ckpts = [spec.gradient_checkpointing] if spec.gradient_checkpointing is not None else [False, True]
    weights = base.parameters * weight_bytes
    state = trainable * 16

    def whole(s: int, b: int, c: bool) -> int:
        return estimate_bytes(parameters=base.parameters, trainable=trainable, hidden=hidden, layers=layers,
                              vocab=vocab, seq_len=s, batch=b, checkpointing=c, weight_bytes=weight_bytes, act_bytes=2)

    def sharded(s: int, b: int, c: bool) -> int:
        gathered = 2 * weights // max(1, layers)  # the layer being computed and the one prefetched
        return whole(s, b, c) - weights - state + (weights + state) // max(1, world) + gathered

    options = [(s, c, b) for s in seqs for c in ckpts for b in batches]
    layer_class = decoder_layer_class(base.architecture, base.kind)
    for s, c, b in options:
        need = whole(s, b, c)
        if need <= budget:
            return MemoryPlan("ddp", gpu_memory, need, sharded(s, b, c), world, s, b, c, four_bit, layer_class, [
                f"DDP: the job needs about {need / GB:.1f} GB per GPU (rows of {s} tokens, {b} per batch"
                f"{', gradient checkpointing' if c else ''}), within {gpu_memory / GB:.3g} GB: each GPU holds the "
                "whole model"])
    smallest = whole(*_last(options))
    for s, c, b in options:
        need = sharded(s, b, c)
        if need <= budget:
            check_qlora_fsdp(spec.method, four_bit)
            return MemoryPlan("fsdp", gpu_memory, whole(s, b, c), need, world, s, b, c, four_bit, layer_class, [
                f"FSDP: the whole job needs about {smallest / GB:.1f} GB, more than one {gpu_memory / GB:.3g} GB "
                f"GPU; sharded over {world} GPUs about {need / GB:.1f} GB each (rows of {s} tokens, {b} per batch"
                f"{', gradient checkpointing' if c else ''})"])
    check_qlora_fsdp(spec.method, four_bit)
    raise TrainingError(
        f"{base.name} does not fit even sharded over {world} GPUs of {gpu_memory / GB:.3g} GB (about "
        f"{sharded(*_last(options)) / GB:.1f} GB each): use more GPUs or nodes, GPUs with more memory, or a smaller "
        "model.")


def _last(options: list[tuple[int, bool, int]]) -> tuple[int, int, bool]:
    s, c, b = options[-1]
    return s, b, c


def check_qlora_fsdp(method: str, four_bit: bool) -> None:
    """QLoRA cannot be sharded with FSDP by this job: ``TrainingError`` saying why and what to do instead.

    FSDP-QLoRA needs the 4-bit weights stored in the compute dtype (``bnb_4bit_quant_storage=bfloat16``)
    so FSDP can flatten and shard them, the model loaded without a device map on every rank
    (``fsdp_cpu_ram_efficient_loading``), and bitsandbytes' Params4bit kept whole through sharding
    (peft's and accelerate's FSDP-QLoRA recipe). Hearth's loader places the 4-bit model on one device
    (``core.finetune.base_model.load_for_training``) and none of it can be tested without a GPU here, so
    the export refuses rather than writing a config that fails on the rented box.
    """
    if four_bit:
        raise TrainingError(
            f"The {method} model does not fit one GPU, and QLoRA's 4-bit weights cannot be sharded with FSDP by "
            "Hearth: use --method lora (FSDP shards its 16-bit weights), or GPUs where the 4-bit model fits one "
            "GPU (then each GPU trains a copy with DDP).")


def decoder_layer_class(architecture: str, kind: str) -> str | None:
    """The transformers class name of one decoder layer (what FSDP wraps), read without importing torch.

    The modeling file of the architecture lists it in ``_no_split_modules`` (e.g. ``LlamaDecoderLayer``);
    the file is read as text, from this Python's transformers or the training pack's.
    """
    import importlib.util

    from core import trainpack
    from core.finetune.base_model import _GGUF_ARCH_OF_KEY

    model_type = architecture
    if kind == "gguf":
        model_type = next((k for k, arch in _GGUF_ARCH_OF_KEY.items() if arch == architecture), architecture)
    model_type = model_type.removesuffix("_text").replace("-", "_")
    try:
        trainpack.activate()
        found = importlib.util.find_spec("transformers")
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    root = Path(next(iter(found.submodule_search_locations))) / "models" / model_type
    try:
        text = (root / f"modeling_{model_type}.py").read_text(encoding="utf-8")
    except OSError:
        return None
    names = [n for group in re.findall(r"_no_split_modules\s*=\s*\[([^\]]*)\]", text)
             for n in re.findall(r"[\"']([A-Za-z0-9_]+)[\"']", group)]
    layers = [n for n in names if n.endswith("DecoderLayer")]
    chosen = layers or names
    return chosen[0] if chosen else None


# -- the export -----------------------------------------------------------------------------------------
def export_launch(spec: FinetuneSpec, folder: Path, *, gpus_per_node: int | None = None, nodes: int = 1,
                  gpu_memory: int | None = None, copy_base: bool = False) -> ExportedLaunch:
    """Write ``folder`` with the job, its data, an accelerate config and the per-node command.

    ``gpus_per_node`` (None: counted with ``nvidia-smi`` when ``launch.sh`` runs), ``nodes`` machines,
    ``gpu_memory`` bytes per GPU (None: this machine's NVIDIA GPU, else 24 GB assumed) decide DDP or FSDP.
    The base model stays a Hugging Face repo id when it is one; a file or folder goes to ``models/``
    (copied with ``copy_base``, else README.txt says what to copy there).
    """
    spec.check()
    if nodes < 1:
        raise TrainingError(f"--nodes must be at least 1, not {nodes}.")
    if gpus_per_node is not None and gpus_per_node < 1:
        raise TrainingError(f"--gpus-per-node must be at least 1, not {gpus_per_node}.")
    folder = Path(folder).expanduser().resolve()
    _check_folder(folder)
    notes: list[str] = []
    memory, memory_note = _gpu_memory(gpu_memory)
    if memory_note:
        notes.append(memory_note)
    world = (gpus_per_node or ASSUMED_GPUS_PER_NODE) * nodes
    plan = plan_memory(spec, gpu_memory=memory, world=world)
    notes.extend(plan.reasons)

    # Sizes first: nothing is written when the copies cannot fit.
    copies = _data_copies(spec) + _model_copies(spec, copy_base)
    total = sum(size for _src, _dst, size in copies)
    free = _free_bytes(folder)
    if total + 64 * 1024 * 1024 > free:
        raise DiskFullError(f"Exporting needs about {total / GB:.2f} GB in {folder} but {free / GB:.2f} GB is free: "
                            "free some space or pick another folder.")
    folder.mkdir(parents=True, exist_ok=True)
    for sub in (DATA_DIR, MODELS_DIR):
        shutil.rmtree(folder / sub, ignore_errors=True)  # an earlier export's copies
    for src, dst, _size in copies:
        _copy(src, folder / dst)

    exported = _exported_spec(spec, gpus_per_node)
    to_copy = _models_to_copy(spec, copy_base)
    if to_copy:
        notes.append("Copy " + " and ".join(f"{src} to {folder / dst}" for src, dst in to_copy)
                     + " on every machine before launching.")
    if plan.strategy == "fsdp" and JOB_SHARDS:
        notes.append("Hearth's job shards the model with FSDP2 under this config: each GPU holds its share of the "
                     "weights and training state, and the adapter is gathered whole on the main machine to be saved. "
                     "Every process loads the model into the machine's RAM before sharding it: each machine needs "
                     "about its GPUs' count times the model's size in free RAM while loading.")
    elif plan.strategy == "fsdp":
        notes.append("This Hearth's training job does not shard with FSDP yet: each GPU would load the whole model "
                     "and run out of memory. Until it does, train on GPUs the job fits (see the plan), or export again "
                     "with more GPU memory per GPU.")
    if plan.strategy == "fsdp" and plan.layer_class is None:
        notes.append("The model's decoder layer class is unknown here: the config shards by size "
                     "(SIZE_BASED_WRAP) instead of by layer.")
    files = [folder / name for name in (SPEC_FILE, CONFIG_FILE, SCRIPT_FILE, README_FILE)]
    _write(files[0], json.dumps(exported, indent=1) + "\n")
    _write(files[1], accelerate_yaml(plan, gpus_per_node=gpus_per_node, nodes=nodes, port=DEFAULT_PORT))
    _write(files[2], launch_script(spec.name, RANK_ENTRY, SPEC_FILE, CONFIG_FILE,
                                   count_gpus=gpus_per_node is None))
    os.chmod(files[2], 0o755)
    _write(files[3], readme_text(spec.name, plan, exported=exported, gpus_per_node=gpus_per_node, nodes=nodes,
                                 hf_repo=_hf_repo(spec.base), to_copy=[(str(s), d) for s, d in to_copy],
                                 data_bytes=total, notes=notes))
    return ExportedLaunch(folder, files + [folder / dst for _s, dst, _z in copies], f"bash {SCRIPT_FILE}",
                          plan.strategy, notes, plan)


def _check_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise TrainingError(f"{folder} is a file: give a folder to export the launch into.")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / SPEC_FILE).exists():
        raise TrainingError(f"{folder} is not empty: export into a new folder (or one an earlier export wrote).")


def _gpu_memory(given: int | None) -> tuple[int, str | None]:
    if given is not None:
        if given < GB:
            raise TrainingError(f"The GPU memory must be at least 1 GB, not {given / GB:.2f} GB.")
        return int(given), None
    try:
        from core.hardware import detect_hardware

        gpus = [g for g in detect_hardware(with_llama=False).gpus if g.vendor == "nvidia" and not g.unified]
    except Exception:  # the plan only needs a number; an unreadable driver is not the user's problem here
        gpus = []
    if gpus:
        return int(max(g.total_bytes for g in gpus)), None
    return DEFAULT_GPU_MEMORY, (f"Planned for GPUs of {DEFAULT_GPU_MEMORY / GB:.0f} GB each (no NVIDIA GPU here to "
                                "measure): GPUs with less memory may not fit this plan.")


def _hf_repo(base: str) -> str | None:
    """``base`` when it is a Hugging Face repo id (not a file or folder here), else None."""
    path = Path(base).expanduser()
    if path.exists() or base.lower().endswith(".gguf") or base.count("/") != 1:
        return None
    return base if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", base) else None


def _model_source(name: str) -> Path | None:
    """The file or folder of a library name or path (None for a Hugging Face repo id)."""
    if _hf_repo(name):
        return None
    path = Path(name).expanduser()
    if path.exists():
        return path.resolve()
    from core.library import Library

    return Path(Library().get(name).path)


def _models_to_copy(spec: FinetuneSpec, copy_base: bool) -> list[tuple[Path, str]]:
    """(source, relative target) of the models the user must copy into the folder (none when copied)."""
    if copy_base:
        return []
    found = []
    for name in filter(None, (spec.base, spec.qa_model)):
        src = _model_source(name)
        if src is not None:
            found.append((src, f"{MODELS_DIR}/{src.name}"))
    return found


def _model_copies(spec: FinetuneSpec, copy_base: bool) -> list[tuple[Path, str, int]]:
    if not copy_base:
        return []
    out = []
    for name in filter(None, (spec.base, spec.qa_model)):
        src = _model_source(name)
        if src is not None:
            out.append((src, f"{MODELS_DIR}/{src.name}", _size(src)))
    return out


def _data_copies(spec: FinetuneSpec) -> list[tuple[Path, str, int]]:
    """(source, relative target, bytes) of the documents or dataset: the folder carries its own data."""
    out: list[tuple[Path, str, int]] = []
    if spec.data:
        src = Path(spec.data).expanduser()
        if not src.is_file():
            raise NotFoundError(f"The dataset {src} does not exist: give an existing --data file.")
        out.append((src, f"{DATA_DIR}/{src.name}", src.stat().st_size))
    used: set[str] = set()
    for i, item in enumerate(spec.docs):
        src = Path(item).expanduser()
        if not src.exists():
            raise NotFoundError(f"The documents {src} do not exist: give existing files or folders with --docs.")
        name = src.name if src.name not in used else f"{i + 1}-{src.name}"
        used.add(name)
        out.append((src, f"{DATA_DIR}/docs/{name}", _size(src)))
    return out


def _exported_spec(spec: FinetuneSpec, gpus_per_node: int | None) -> dict[str, Any]:
    """The spec as the other box reads it: paths relative to the folder, a fresh (not resumed) run."""
    data = spec.to_dict()
    copies = {str(Path(src).expanduser()): dst for src, dst, _s in _data_copies(spec)}
    if spec.data:
        data["data"] = copies[str(Path(spec.data).expanduser())]
    data["docs"] = [copies[str(Path(d).expanduser())] for d in spec.docs]
    for key in ("base", "qa_model"):
        value = data.get(key)
        if value and (src := _model_source(str(value))) is not None:
            data[key] = f"{MODELS_DIR}/{src.name}"
    data["resume"] = False
    if "nproc" in data and gpus_per_node:
        data["nproc"] = gpus_per_node  # `hearth finetune --from-spec` on one node starts one process per GPU
    return data


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    from core.finetune.adapters import folder_size

    return folder_size(path)


def _free_bytes(folder: Path) -> int:
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return int(shutil.disk_usage(probe).free)


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        # Hidden files stay behind, as training skips them (core.finetune.data.documents.find_files).
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".*"))
    else:
        shutil.copy2(src, dst)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8", newline="\n")
    os.replace(tmp, path)


# -- reading a spec back --------------------------------------------------------------------------------
def spec_from_file(path: Path) -> dict[str, Any]:
    """The checked job of a ``spec.json`` (or a folder holding one), its relative paths made absolute.

    Relative paths (``data/...``, ``models/...``) are taken from the spec's folder. ``TrainingError`` or
    ``NotFoundError`` in one sentence when the file is missing, is not a job spec, or names missing data.
    """
    path = Path(path).expanduser()
    file = path / SPEC_FILE if path.is_dir() else path
    if not file.is_file():
        raise NotFoundError(f"No job spec at {file}: give the spec.json that --export-launch wrote, or its folder.")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise TrainingError(f"{file} is not a job spec (not text): give the spec.json that --export-launch wrote.") \
            from None
    except ValueError as exc:
        line = getattr(exc, "lineno", None)
        raise TrainingError(f"{file} is not valid JSON" + (f" (line {line})" if line else "")
                            + ": fix it or export the launch again.") from None
    if not isinstance(raw, dict):
        raise TrainingError(f"{file} is not a job spec (not a JSON object): give the spec.json --export-launch wrote.")
    known = set(FinetuneSpec.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise TrainingError(f"{file} has settings this Hearth does not know ({', '.join(unknown)}): update Hearth "
                            "here, or remove them.")
    missing = [k for k in ("base", "name") if not raw.get(k)]
    if missing:
        raise TrainingError(f"{file} names no {' and no '.join(missing)}: export the launch again.")
    root = file.resolve().parent
    data = dict(raw)
    for key in ("base", "qa_model"):
        value = data.get(key)
        if isinstance(value, str) and value and _looks_local(value, root):
            target = root / value
            if not target.exists():
                raise NotFoundError(f"{value} is not in {root}: copy the model there first (README.txt says which "
                                    "file).")
            data[key] = str(target.resolve())
    if isinstance(data.get("data"), str):
        data["data"] = _local(root, data["data"], "The dataset")
    if isinstance(data.get("docs"), list):
        data["docs"] = [_local(root, str(d), "The documents") for d in data["docs"]]
    try:
        spec = FinetuneSpec.from_dict(data)
        spec.check()
    except TypeError as exc:
        raise TrainingError(f"{file} is not a valid job spec ({exc}): export the launch again.") from None
    return spec.to_dict()


def _looks_local(value: str, root: Path) -> bool:
    """A path relative to the spec's folder (``models/x.gguf``), not a repo id or library name."""
    if Path(value).is_absolute():
        return False
    first = Path(value).parts[0] if Path(value).parts else ""
    return (root / value).exists() or first in (MODELS_DIR, DATA_DIR, ".", "..") or value.lower().endswith(".gguf")


def _local(root: Path, value: str, what: str) -> str:
    target = Path(value).expanduser()
    if not target.is_absolute():
        target = root / target
    if not target.exists():
        raise NotFoundError(f"{what} {value} is missing from {root}: copy the whole exported folder.")
    return str(target.resolve())
