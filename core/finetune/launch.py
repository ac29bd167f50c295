"""Starting a fine-tune from what a person chose: the one door the window and the CLI both use.

``spec_from_inputs`` turns inputs into a checked ``FinetuneSpec``; ``scan_documents`` shows which files
will train and how much text they hold; ``estimate_cost`` says what the run will need before it starts;
``start_finetune`` starts it (one at a time). The runs it starts are found again with ``list_runs``,
``follow_events`` and ``cancel_run`` (``core.finetune.runs``). Nothing here imports torch or Qt.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import AlreadyExistsError, DatasetError, TrainingError
from core.finetune import adapters
from core.finetune.cost import CostEstimate, estimate_cost
from core.finetune.data.documents import MIN_CHARS, SUFFIXES, clean_text, extract_text, find_files
from core.finetune.methods import build_config, get_method
from core.finetune.planner import estimate_tokens
from core.finetune.runs import (
    RunInfo,
    cancel_run,
    follow_events,
    get_run,
    list_runs,
    read_events,
    running_run,
)
from core.finetune.spec import FinetuneSpec, SpecOption, spec_options

if TYPE_CHECKING:
    from core.jobs import JobProcess

__all__ = [
    "CostEstimate", "DocumentFile", "DocumentScan", "RunInfo", "cancel_run", "estimate_cost", "follow_events",
    "get_run", "list_runs", "read_events", "scan_documents", "spec_from_inputs", "start_finetune", "suggest_name",
]


# -- inputs -> spec -------------------------------------------------------------------------------------
def spec_from_inputs(
    base: str, *, docs: Sequence[str] = (), data: str | None = None, name: str | None = None,
    method: str = "lora", method_options: Mapping[str, Any] | None = None, resume: bool = False,
    **job_options: Any,
) -> FinetuneSpec:
    """The checked job description for these choices (``TrainingError`` saying what to change otherwise).

    Paths become absolute; method options are checked against the method's config (strings from a
    form or a command line are converted); the adapter name is checked, and must be free unless
    ``resume`` continues the run of that name (a fresh start is refused over an interrupted run's
    checkpoint, which it would delete). ``job_options`` are ``FinetuneSpec``'s job fields
    (``spec_options()``); ``None`` keeps a field's automatic choice.
    """
    chosen = get_method(method)
    given = {str(k).strip().replace("-", "_"): v for k, v in (method_options or {}).items()}
    config = build_config(chosen, given)  # fail here, not in the child
    checked_options = {key: getattr(config, key) for key in given}
    if resume and not name:
        raise TrainingError("--resume needs --out NAME: the name of the run to continue.")
    name = name or suggest_name(base, docs, chosen.name)
    adapters.check_name(name)
    if not resume:
        adapters.ensure_free(name)
        if (adapters.partial_folder(name) / "checkpoint" / "state.pt").exists():
            # A fresh start would delete that run's checkpoint (the job clears its work folder).
            raise AlreadyExistsError(
                f"'{name}' is an interrupted fine-tune that can be continued: resume it (--resume --out {name}), "
                f"pick another name, or remove it first ('hearth adapters rm {name}')."
            )
    spec = FinetuneSpec(
        base=_absolute_if_exists(base), name=name, docs=[_absolute(d) for d in docs],
        data=_absolute(data) if data else None, method=chosen.name, method_options=checked_options, resume=resume,
        **_job_fields(job_options),
    )
    spec.check()
    _check_limits(spec)
    return spec


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def _absolute_if_exists(base: str) -> str:
    # A library name or a Hugging Face repo id stays as written; a file or folder becomes absolute.
    return _absolute(base) if Path(base).expanduser().exists() else base


def _job_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    known = {o.name: o for o in spec_options()}
    fields: dict[str, Any] = {}
    for key, value in values.items():
        option = known.get(key.replace("-", "_"))
        if option is None:
            raise TrainingError(f"Unknown job setting '{key}': the settings are {', '.join(known)}.")
        fields[option.name] = _convert(option, value)
    return fields


def _convert(option: SpecOption, value: Any) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        if option.optional:
            return None  # the automatic choice
        raise TrainingError(f"{option.label} needs a value.")
    try:
        if option.type == "bool":
            return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")
        if option.type == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if option.type == "float":
            return float(value)
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"{option.label} must be a {'whole ' if option.type == 'int' else ''}number, "
                            f"not {value!r}.") from exc
    return str(value)


def _check_limits(spec: FinetuneSpec) -> None:
    for option in spec_options():
        value = getattr(spec, option.name)
        if value is None or isinstance(value, bool):
            continue
        if option.choices and value not in option.choices:
            raise TrainingError(f"{option.label} must be one of {', '.join(map(str, option.choices))}, not {value!r}.")
        if (option.min is not None and value < option.min) or (option.max is not None and value > option.max):
            raise TrainingError(f"{option.label} must be between {_number(option.min)} and {_number(option.max)}, "
                                f"not {value}.")


def _number(value: float | None) -> str:
    return "-" if value is None else str(int(value)) if float(value).is_integer() else f"{value:g}"


def suggest_name(base: str, docs: Sequence[str], method: str) -> str:
    """A free adapter name: the documents' folder name ("my-notes"), else the base and method ("gemma-lora").

    Made unique against adapters and interrupted runs with -2, -3...
    """
    if not docs:
        return adapters.default_name(Path(base).name, method)
    first = Path(docs[0]).expanduser()
    if len(docs) == 1:
        source = first.name if first.is_dir() else first.stem
    else:
        parents = {Path(d).expanduser().resolve().parent for d in docs}
        source = parents.pop().name if len(parents) == 1 else first.stem
    stem = re.sub(r"[^A-Za-z0-9._+-]+", "-", source).strip("-.").lower()[:90] or "documents"
    n = 1
    while True:
        candidate = stem if n == 1 else f"{stem}-{n}"
        if not adapters.adapter_folder(candidate).exists() and not adapters.partial_folder(candidate).exists():
            return candidate
        n += 1


# -- documents ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DocumentFile:
    """One file of a document set: usable (``tokens`` set) or skipped (``reason`` set)."""

    path: str
    type: str  # the suffix without its dot, lower case ("pdf"); "" when the file has none
    size: int  # bytes on disk
    chars: int = 0  # characters of cleaned text
    tokens: int | None = None  # estimated: characters / 4 (core.finetune.planner.estimate_tokens)
    reason: str | None = None  # why it is skipped

    @property
    def skipped(self) -> bool:
        return self.reason is not None


@dataclass(frozen=True)
class DocumentScan:
    """What a set of documents holds for training, file by file."""

    files: list[DocumentFile] = field(default_factory=list)
    usable: bool = False
    why_not: str | None = None  # when not usable: what to do, in words

    @property
    def usable_files(self) -> list[DocumentFile]:
        return [f for f in self.files if not f.skipped]

    @property
    def skipped_files(self) -> list[DocumentFile]:
        return [f for f in self.files if f.skipped]

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def total_chars(self) -> int:
        return sum(f.chars for f in self.files)

    @property
    def total_tokens(self) -> int:
        return sum(f.tokens or 0 for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {"files": [dataclasses.asdict(f) for f in self.files], "usable": self.usable, "why_not": self.why_not,
                "total_size": self.total_size, "total_chars": self.total_chars, "total_tokens": self.total_tokens}


def scan_documents(paths: Sequence[str]) -> DocumentScan:
    """Each document file under ``paths`` (files, or folders searched as training searches them).

    Uses the readers training uses (``core.finetune.data.documents``), extracting text only: a file
    is skipped here exactly when training would skip it. A path that does not exist is listed as skipped.
    """
    files: list[DocumentFile] = []
    for item in paths:
        try:
            found = find_files([item])
        except DatasetError:
            files.append(DocumentFile(str(Path(item).expanduser()), _kind(Path(item)), 0, reason="does not exist"))
            continue
        files.extend(_scan_file(path) for path in found)
    usable = any(not f.skipped for f in files)
    return DocumentScan(files, usable, None if usable else _why_not(files))


def _kind(path: Path) -> str:
    return path.suffix.lower().lstrip(".")


def _scan_file(path: Path) -> DocumentFile:
    try:
        size = path.stat().st_size
    except OSError as exc:
        return DocumentFile(str(path), _kind(path), 0, reason=f"cannot be read ({exc.strerror or exc})")
    if path.suffix.lower() not in SUFFIXES:
        return DocumentFile(str(path), _kind(path), size,
                            reason=f"unsupported type '{path.suffix or 'none'}' (use {', '.join(SUFFIXES)})")
    try:
        text = clean_text(extract_text(path))
    except DatasetError as exc:
        return DocumentFile(str(path), _kind(path), size, reason=str(exc))
    if len(text) < MIN_CHARS:
        return DocumentFile(str(path), _kind(path), size, len(text),
                            reason="no text (empty, or a scanned image without a text layer)")
    return DocumentFile(str(path), _kind(path), size, len(text), estimate_tokens(len(text)))


def _why_not(files: list[DocumentFile]) -> str:
    if not files:
        return "No files found: add .txt, .md, .pdf, .docx or .html files with text."
    if all(f.reason == "does not exist" for f in files):
        return "None of these files or folders exists any more: add them again."
    readable = [f for f in files if f.type in {s.lstrip(".") for s in SUFFIXES}]
    if readable and all(f.reason and f.reason.startswith("no text") for f in readable):
        if any(f.type == "pdf" for f in readable):
            return "None of these files has text: scanned PDFs need OCR first (a PDF reader's 'recognise text')."
        return "None of these files has text: they are empty."
    if not readable:
        return "None of these files is a document Hearth reads: use .txt, .md, .pdf, .docx or .html files."
    first = next(f for f in files if f.reason)
    return f"None of these files can be used ({Path(first.path).name}: {first.reason})."


# -- starting -------------------------------------------------------------------------------------------
def start_finetune(spec: FinetuneSpec, *, detached: bool) -> JobProcess:
    """Start the job in its own process (its stderr to ``logs/finetune-NAME.log``).

    ``detached=True`` (the window) lets the job outlive the caller; the CLI starts it attached so
    Ctrl-C reaches it. Only one fine-tune runs at a time: ``TrainingError`` while another runs.
    """
    from core.finetune.runs import log_path
    from core.jobs import JobProcess
    from core.paths import get_paths

    spec.check()
    current = running_run()
    if current is not None:
        started = time.strftime("%H:%M", time.localtime(current.started_at or time.time()))
        raise TrainingError(f"A fine-tune is already running ('{current.name}', started {started}): "
                            "wait for it to finish or cancel it first.")
    get_paths().ensure().logs.mkdir(parents=True, exist_ok=True)
    return JobProcess("finetune", spec.to_dict(), log_path=log_path(spec.name), detached=detached)
