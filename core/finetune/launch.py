"""Starting a fine-tune from what a person chose: the one door the window and the CLI both use.

``spec_from_inputs`` turns inputs into a checked ``FinetuneSpec``; ``start_finetune`` starts it (one at a
time). Which files will train is ``core.finetune.data.scan.scan_documents``; what the run will need before it
starts is ``core.finetune.cost.estimate_cost`` (it depends on this module's spec, not the other way round). The runs it starts are found again with ``list_runs``,
``follow_events`` and ``cancel_run`` (``core.finetune.runs``). Nothing here imports torch or Qt.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import AlreadyExistsError, TrainingError
from core.finetune import adapters
from core.finetune.methods import build_config, get_method
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
    "RunInfo", "cancel_run", "follow_events", "get_run", "list_runs", "read_events", "spec_from_inputs",
    "start_finetune", "suggest_name",
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
