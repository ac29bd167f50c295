"""Chat templates: turning a list of messages into the prompt text a model was trained on.

A GGUF's own ``tokenizer.chat_template`` (Jinja) is rendered in a sandboxed, immutable Jinja
environment, so a downloaded template cannot reach Python objects or the file system. Models
without a template (base models) get their family's turn format when the architecture or the
vocabulary says which family it is, and plain completion otherwise; ``ChatFormat.source`` says
which was used so the caller can tell the user.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.errors import EngineError

# Family turn formats. The markers are those documented on each family's model card
# (Gemma: <start_of_turn>/<end_of_turn>; Llama 3: header ids and <|eot_id|>; ChatML: <|im_start|>/<|im_end|>;
# Phi-3: <|user|>/<|assistant|>/<|end|>; Mistral: [INST]/[/INST]).
FAMILY_TEMPLATES: dict[str, str] = {
    "gemma": (
        "{{ bos_token }}"
        "{% set first_user_prefix = '' %}"
        "{% if messages and messages[0]['role'] == 'system' %}"
        "{% set first_user_prefix = messages[0]['content'] + '\n\n' %}{% set messages = messages[1:] %}"
        "{% endif %}"
        "{% for m in messages %}"
        "{% set role = 'model' if m['role'] == 'assistant' else 'user' %}"
        "<start_of_turn>{{ role }}\n{{ first_user_prefix if loop.first else '' }}{{ m['content'] | trim }}<end_of_turn>\n"
        "{% endfor %}"
        "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
    ),
    "llama3": (
        "{{ bos_token }}"
        "{% for m in messages %}"
        "<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>"
        "{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
    ),
    "chatml": (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    "phi3": (
        "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    ),
    "mistral": (
        "{{ bos_token }}"
        "{% set sys = messages[0]['content'] + '\n\n' if messages and messages[0]['role'] == 'system' else '' %}"
        "{% for m in messages if m['role'] != 'system' %}"
        "{% if m['role'] == 'user' %}[INST] {{ sys if loop.first else '' }}{{ m['content'] }} [/INST]"
        "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}"
        "{% endfor %}"
    ),
}

# Text that ends an assistant turn in each family, besides the model's end-of-generation tokens.
FAMILY_STOPS: dict[str, list[str]] = {
    "gemma": ["<end_of_turn>"],
    "llama3": ["<|eot_id|>"],
    "chatml": ["<|im_end|>"],
    "phi3": ["<|end|>"],
    "mistral": [],
}

# Special tokens whose presence in the vocabulary identifies a family.
FAMILY_MARKERS: list[tuple[str, str]] = [
    ("<start_of_turn>", "gemma"),
    ("<|start_header_id|>", "llama3"),
    ("<|im_start|>", "chatml"),
    ("<|assistant|>", "phi3"),
    ("[INST]", "mistral"),
]


@dataclass(frozen=True)
class ChatFormat:
    """How messages become a prompt for one model."""

    source: str  # "gguf" (the model's own template), "family", or "plain"
    name: str  # "gguf", a family name, or "plain"
    template: str | None
    stop: list[str] = field(default_factory=list)

    @property
    def description(self) -> str:
        if self.source == "gguf":
            return "the model's own chat template"
        if self.source == "family":
            return f"the {self.name} turn format (the model has no chat template; chosen from its family)"
        return "plain completion (the model has no chat template and no known family format)"


def _raise_exception(message: str) -> None:
    raise EngineError(f"The model's chat template refused the conversation: {message}")


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


def _environment() -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now

    def tojson(value: Any, indent: int | None = None, **_: Any) -> str:
        import json

        return json.dumps(value, indent=indent, ensure_ascii=False)

    env.filters["tojson"] = tojson
    return env


def choose_format(
    architecture: str,
    gguf_template: str | None,
    has_token: Callable[[str], bool] = lambda _text: False,
) -> ChatFormat:
    """The model's own template when it has one, else its family's, else plain completion."""
    if gguf_template:
        stops = [s for marker, fam in FAMILY_MARKERS if has_token(marker) for s in FAMILY_STOPS[fam]]
        return ChatFormat("gguf", "gguf", gguf_template, stops)
    family = None
    if architecture.startswith("gemma"):
        family = "gemma"
    else:
        for marker, fam in FAMILY_MARKERS:
            if has_token(marker):
                family = fam
                break
    if family:
        return ChatFormat("family", family, FAMILY_TEMPLATES[family], FAMILY_STOPS[family])
    return ChatFormat("plain", "plain", None, [])


def render(
    fmt: ChatFormat,
    messages: Sequence[dict[str, str]],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
) -> str:
    """The prompt text for ``messages`` (dicts with ``role`` and ``content``)."""
    if fmt.template is None:
        # Plain completion: the texts one after another; the model continues the last one.
        return "\n\n".join(m["content"] for m in messages if m["content"])
    from jinja2 import TemplateError

    try:
        template = _environment().from_string(fmt.template)
        return str(
            template.render(
                messages=list(messages),
                bos_token=bos_token,
                eos_token=eos_token,
                add_generation_prompt=add_generation_prompt,
            )
        )
    except EngineError:
        raise
    except TemplateError as exc:
        raise EngineError(
            f"The model's chat template could not be rendered ({exc}): the GGUF's template is broken or "
            "unsafe; re-download the model or use another one."
        ) from exc
