"""The Fine-tune page's one door into the core's fine-tune API.

Every call the page makes about documents, estimates and runs goes through here (``core.finetune.launch``,
``core.finetune.data.scan``, ``core.finetune.cost``, ``core.finetune.runs``), so a renamed core call is
fixed in one place. Nothing here imports Qt; torch is only ever imported by the job's own process.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from core.finetune import adapters
from core.finetune.cost import CostEstimate
from core.finetune.data.scan import DocumentScan, scan_documents
from core.finetune.launch import spec_from_inputs, suggest_name
from core.finetune.runs import RunInfo, cancel_run, has_checkpoint, list_runs
from core.finetune.spec import FinetuneSpec

if TYPE_CHECKING:
    from core.gguf_export.merge import MergeResult

TERMINAL = ("done", "error", "cancelled")
__all__ = ["CostEstimate", "DocumentScan", "FinetuneSpec", "RunInfo", "cancel_run", "check_base", "estimate_cost",
           "follow_events", "has_checkpoint", "list_runs", "make_standalone", "name_taken", "scan_documents",
           "spec_from_inputs", "start_finetune", "suggest_name"]


def name_taken(name: str) -> bool:
    return adapters.adapter_folder(name).exists()


def check_name(name: str) -> None:
    adapters.check_name(name)


def estimate_cost(inputs: dict[str, Any], scan: DocumentScan | None) -> CostEstimate:
    """Memory, time and disk for the run ``inputs`` describe (``spec_from_inputs``'s arguments).

    The name is left out: an estimate does not depend on it, and a name already taken must not stop it.
    """
    from core.finetune.cost import estimate_cost as estimate

    spec = spec_from_inputs(**{**inputs, "name": None})
    return estimate(spec, scan)


def check_base(path: str) -> None:
    """Raises with the reason when ``path`` cannot be trained (imports transformers: call off the GUI thread)."""
    from core.finetune.base_model import check_trainable, resolve_base

    check_trainable(resolve_base(path))


def start_finetune(spec: FinetuneSpec) -> RunInfo:
    """Start the job detached in its own process; ``TrainingError`` when another one runs."""
    from core.finetune.launch import start_finetune as start
    from core.finetune.runs import get_run

    job = start(spec, detached=True)
    if hasattr(os, "setpriority"):
        # Below the window's priority, so training on every core never makes the window stutter. Set
        # before the child starts its threads (torch's are created later and inherit it).
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, job.pid, 10)
    # The page follows the run's events log (``follow_events``); a thread only reaps the process.
    threading.Thread(target=job.wait, name=f"finetune-reap-{spec.name}", daemon=True).start()
    info = get_run(spec.name, missing_ok=True)
    assert info is not None
    return info


def follow_events(name: str, stop: Callable[[], bool]) -> Iterator[dict[str, Any]]:
    """The run's events from the start of its log, then live, until it ends or ``stop()``."""
    from core.finetune.runs import follow_events as follow

    return follow(name, stop=stop)


def log_path(info: RunInfo | None) -> str:
    return str(info.log_path) if info is not None and info.log_path else ""


def resumable(info: RunInfo) -> bool:
    return info.state in ("interrupted", "cancelled", "failed") and has_checkpoint(info.name)


# -- after training -------------------------------------------------------------------------------
def make_standalone(base: str, adapter: str, *, ollama: bool = False, progress: Callable[[Any], None] | None = None,
                    cancel: Any = None) -> str:
    """Merge ``adapter`` into its GGUF ``base`` as a new library model (and a Modelfile for Ollama); says what it did."""
    result = standalone_model(base, adapter, progress=progress, cancel=cancel)
    text = f"Added “{result.name}” to My Models ({result.path})."
    if ollama:
        from core.gguf_export.ollama import write_modelfile

        export = write_modelfile(result.name or str(result.path))
        text += f" Ollama: ollama create {result.name} -f {export.modelfile}"
    return text


def standalone_model(base: str, adapter: str, *, progress: Callable[[Any], None] | None = None,
                     cancel: Any = None) -> MergeResult:
    """``adapter`` (or a full fine-tune's weights) written into its GGUF ``base``: a new model of the library, in
    the base's own quantization (Q8_0 when it has none that can be made again)."""
    from core.gguf_export.merge import merge_adapter_gguf, output_path
    from core.gguf_export.quantize import normalize_quant
    from core.library import Library

    library = Library()
    entry = library.get(base)
    try:
        quant = normalize_quant(entry.file_type or "Q8_0")
    except Exception:
        quant = "Q8_0"
    out, name = output_path(None, None, f"{entry.name}-{adapter}", quant)
    name = library.unique_name(name)
    return merge_adapter_gguf(entry.path, adapters.adapter_folder(adapter), out, quant=quant, register=True,
                              name=name, progress=progress, cancel=cancel)
