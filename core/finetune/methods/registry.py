"""The registry of fine-tuning methods: one ``Method`` per technique, each with its config dataclass.

A method's config is a dataclass whose fields carry ``metadata={"help", "min", "max", "choices"}``;
the CLI and the desktop build their options from it, so nothing describes an option twice.
This module imports no torch: listing methods and their options stays cheap.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.errors import TrainingError


@dataclass(frozen=True)
class Method:
    """One fine-tuning technique.

    ``prepare(model, config, context)`` runs in the training process: it wraps or freezes the model
    and returns a ``core.finetune.methods.base.Prepared`` telling the trainer what to optimise.
    """

    name: str
    title: str
    summary: str
    reference: str
    config_cls: type[Any]
    prepare: Callable[..., Any]
    packing: bool = True  # False when the method adds tokens per sequence (prompt tuning)
    output: str = "adapter"  # "adapter" (a PEFT adapter folder) or "model" (full weights)
    wants_4bit: bool = False  # load the frozen base in 4-bit NF4 where bitsandbytes supports it
    order: int = 50  # position in lists (the usual choices first)
    default_lr: float = 2e-4


@dataclass(frozen=True)
class OptionSpec:
    """One option of a method's config, as a form or a command line shows it."""

    name: str
    type: str
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None


_METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add a method to the registry (each method module calls this once)."""
    if method.name in _METHODS and _METHODS[method.name] is not method:
        raise ValueError(f"fine-tuning method {method.name!r} is registered twice")
    if not dataclasses.is_dataclass(method.config_cls):
        raise TypeError(f"{method.name}: config_cls must be a dataclass")
    _METHODS[method.name] = method
    return method


def all_methods() -> list[Method]:
    """Every registered method, in registration order."""
    _ensure_loaded()
    return sorted(_METHODS.values(), key=lambda m: (m.order, m.name))


def get_method(name: str) -> Method:
    """The method called ``name``; a ``TrainingError`` naming the known ones otherwise."""
    _ensure_loaded()
    key = name.strip().lower().replace("_", "-")
    for method in _METHODS.values():
        if method.name == key:
            return method
    known = ", ".join(_METHODS)
    raise TrainingError(f"Unknown fine-tuning method '{name}': choose one of {known}.")


def options(config_cls: type[Any]) -> list[OptionSpec]:
    """The options of a config dataclass, with their help text and limits."""
    specs = []
    for f in dataclasses.fields(config_cls):
        meta = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else None
        type_name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        choices = meta.get("choices")
        specs.append(
            OptionSpec(
                name=f.name,
                type=str(type_name),
                default=default,
                help=str(meta.get("help", "")),
                min=meta.get("min"),
                max=meta.get("max"),
                choices=tuple(choices) if choices else None,
            )
        )
    return specs


def build_config(method: Method, values: dict[str, Any]) -> Any:
    """A method's config from user values (strings are converted), checked against the limits."""
    known = {o.name: o for o in options(method.config_cls)}
    kwargs: dict[str, Any] = {}
    for key, raw in values.items():
        name = key.replace("-", "_")
        if name not in known:
            raise TrainingError(
                f"Method '{method.name}' has no option '{key}': its options are {', '.join(known) or 'none'}."
            )
        spec = known[name]
        kwargs[name] = _convert(method.name, spec, raw)
    return method.config_cls(**kwargs)


def _convert(method: str, spec: OptionSpec, raw: Any) -> Any:
    value: Any = raw
    try:
        if spec.type == "int":
            value = int(raw)
        elif spec.type == "float":
            value = float(raw)
        elif spec.type == "bool":
            value = raw if isinstance(raw, bool) else str(raw).strip().lower() in ("1", "true", "yes", "on")
        else:
            value = str(raw)
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"Option '{spec.name}' of '{method}' must be a {spec.type}, not {raw!r}.") from exc
    if (spec.min is not None and value < spec.min) or (spec.max is not None and value > spec.max):
        raise TrainingError(
            f"Option '{spec.name}' of '{method}' must be between {spec.min} and {spec.max}, not {value}."
        )
    if spec.choices and value not in spec.choices:
        raise TrainingError(
            f"Option '{spec.name}' of '{method}' must be one of {', '.join(map(str, spec.choices))}."
        )
    return value


def opt(default: Any, help: str, *, min: float | None = None, max: float | None = None,
        choices: tuple[Any, ...] | None = None, **more: Any) -> Any:
    """A config field with the metadata forms and the command line read (``more``: e.g. label, group)."""
    meta: dict[str, Any] = {"help": help, **more}
    if min is not None:
        meta["min"] = min
    if max is not None:
        meta["max"] = max
    if choices is not None:
        meta["choices"] = choices
    return field(default=default, metadata=meta)


def _ensure_loaded() -> None:
    # The method modules register themselves when the package is imported; importing it here
    # makes the registry complete whichever module the caller imported first.
    import core.finetune.methods  # noqa: F401
