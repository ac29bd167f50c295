"""Chat templates: turning a list of messages into the prompt text a model was trained on.

A GGUF's own ``tokenizer.chat_template`` (Jinja) is rendered the way Hugging Face transformers
renders it (``transformers/utils/chat_template_utils.py``: ``_compile_jinja_template`` and
``render_jinja_template``), so a model sees the prompt it was trained on: the same Jinja settings,
extensions (``{% break %}``/``{% continue %}`` and ``{% generation %}``), globals, ``tojson``
filter and render arguments (``tools``, ``documents``, ``add_generation_prompt`` and any extra
keyword such as ``enable_thinking``). The environment is sandboxed and immutable, so a downloaded
template cannot reach Python objects, the file system, or the caller's messages.

Models without a template (base models) get their family's turn format when the architecture or
the vocabulary says which family it is, and plain completion otherwise; ``ChatFormat.source`` says
which was used so the caller can tell the user.
"""

from __future__ import annotations

import datetime
import functools
import json
from collections.abc import Callable, Mapping, Sequence
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

# The probe conversation whose rendering shows what a template writes after an assistant reply.
_PROBE_QUESTION = "Hearth probe question"
_PROBE_REPLY = "Hearth probe reply"
# Control tokens are short (DeepSeek's <｜end▁of▁sentence｜> is 19 characters); longer texts are not tried.
_MAX_TOKEN_CHARS = 48


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


def choose_format(
    architecture: str,
    gguf_template: str | None,
    has_token: Callable[[str], bool] = lambda _text: False,
) -> ChatFormat:
    """The model's own template when it has one, else its family's, else plain completion.

    ``has_token(text)`` says whether ``text`` is a single control token of the model's vocabulary.
    A GGUF template's stop strings are the control token it writes right after an assistant reply
    (when there is one) and the turn-end markers of the families whose tokens the vocabulary has.
    """
    if gguf_template:
        stops = [s for marker, fam in FAMILY_MARKERS if has_token(marker) for s in FAMILY_STOPS[fam]]
        turn_end = _turn_end_token(gguf_template, has_token)
        if turn_end is not None and turn_end not in stops:
            stops.insert(0, turn_end)
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


def _turn_end_token(template: str, has_token: Callable[[str], bool]) -> str | None:
    """The control token ``template`` writes right after an assistant's reply, e.g. ``<|im_end|>``.

    It is the first thing after the reply (past any whitespace), and what follows it is whitespace,
    the end, or another control token: a token followed by a word (Kimi K3's ``<|close|>response``)
    also closes other sections and would cut a reply short. Anything else (no text, a word, a
    template that refuses the probe) gives None and the caller keeps the family markers.
    """
    probe = [{"role": "user", "content": _PROBE_QUESTION}, {"role": "assistant", "content": _PROBE_REPLY}]
    try:
        text = render(ChatFormat("gguf", "gguf", template), probe, add_generation_prompt=False)
    except EngineError:
        return None
    at = text.rfind(_PROBE_REPLY)
    if at < 0:
        return None
    run = text[at + len(_PROBE_REPLY) :].split(maxsplit=1)
    token = _control_token_prefix(run[0], has_token) if run else ""
    if not token:
        return None
    rest = run[0][len(token) :]
    return token if not rest or _control_token_prefix(rest, has_token) else None


def _control_token_prefix(text: str, has_token: Callable[[str], bool]) -> str:
    """The longest start of ``text`` that is one control token, or ``""``."""
    for end in range(min(len(text), _MAX_TOKEN_CHARS), 0, -1):
        if has_token(text[:end]):
            return text[:end]
    return ""


def render(
    fmt: ChatFormat,
    messages: Sequence[Mapping[str, Any]],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    tools: Sequence[Mapping[str, Any]] | None = None,
    documents: Sequence[Mapping[str, Any]] | None = None,
    **extra: Any,
) -> str:
    """The prompt text for ``messages``, as transformers' ``apply_chat_template`` renders it.

    Messages are dicts with ``role`` and ``content`` (a string or a list of parts such as
    ``{"type": "text", "text": ...}``), plus whatever the template reads: ``tool_calls`` on an
    assistant message, ``tool_call_id``/``name`` on a ``tool`` message, ``reasoning_content``.
    ``tools`` are OpenAI-style function schemas, ``documents`` dicts with ``title`` and ``text``;
    ``extra`` keywords (``enable_thinking``, ``reasoning_effort``, …) reach the template as variables.
    """
    if fmt.template is None:
        # Plain completion: the texts one after another; the model continues the last one.
        return "\n\n".join(text for m in messages if (text := _content_text(m.get("content"))))
    try:
        template = _compiled(fmt.template)
        return str(
            template.render(
                messages=_template_messages(messages),
                tools=_plain(tools),
                documents=_plain(documents),
                add_generation_prompt=add_generation_prompt,
                bos_token=bos_token,
                eos_token=eos_token,
                **_plain(extra),
            )
        )
    except EngineError:
        raise
    # Whatever a template's own code raises (a TypeError from 'text' + none too) is the template's fault.
    except Exception as exc:
        raise EngineError(
            f"The model's chat template could not be rendered ({type(exc).__name__}: {exc}): the GGUF's template "
            "is broken or unsafe; re-download the model or use another one."
        ) from exc


def _content_text(content: Any) -> str:
    """A message's text: its string content, or its text parts one after another."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


# Names a message's reasoning comes under; templates read the first, gpt-oss's reads "thinking".
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def _template_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Messages as transformers hands them to a template.

    As ``apply_chat_template`` does, keys whose value is None are dropped (OpenAI clients send
    ``content: null`` beside ``tool_calls``; templates test for a missing key), and a message's
    reasoning is given under both ``reasoning_content`` and ``thinking``.
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        plain = {str(k): _plain(v) for k, v in message.items() if v is not None}
        reasoning = next((plain[k] for k in _REASONING_FIELDS if plain.get(k) is not None), None)
        if reasoning is not None:
            plain = {"thinking": reasoning, **plain, "reasoning_content": reasoning}
        out.append(plain)
    return out


def _plain(value: Any) -> Any:
    """A fresh copy of ``value`` made of JSON types (tuples kept); any other object becomes ``"<TypeName>"``.

    What a template sees is rebuilt this way so it can call no method of a caller's object
    (transformers' ``_plain_template_data`` does the same for the same reason).
    """
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return f"<{type(value).__name__}>"


@functools.lru_cache(maxsize=32)
def _compiled(template: str) -> Any:
    """``template`` compiled once: rendering is on the chat hot path."""
    return _environment().from_string(template)


def _now() -> datetime.datetime:
    return datetime.datetime.now()


def _raise_exception(message: str) -> None:
    raise EngineError(f"The model's chat template refused the conversation: {message}")


def _strftime_now(fmt: str) -> str:
    return _now().strftime(fmt)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson escapes HTML characters (<, >, &, ') and takes only indent; templates are
    # written for transformers' filter, which is plain json.dumps with these arguments.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


class _TemplateDict:
    """The ``dict`` a template sees: building a dict, and ``dict.fromkeys``, nothing else of the type."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict.fromkeys(*args, **kwargs)


@functools.cache
def _environment() -> Any:
    """The one sandboxed environment every template is compiled in, set up as transformers sets up its own."""
    from jinja2 import nodes
    from jinja2.exceptions import SecurityError
    from jinja2.ext import Extension, loopcontrols
    from jinja2.parser import Parser
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from jinja2.utils import Namespace

    class GenerationTag(Extension):
        """``{% generation %}…{% endgeneration %}``: transformers' mark of the assistant's own text.

        transformers uses it to find the tokens to train on; to render, the body is output as it is.
        It is a call block there, so the body is a scope of its own (a ``set`` inside stays inside),
        and a call block here too.
        """

        tags = {"generation"}  # noqa: RUF012 - declared as an instance variable on Extension

        def parse(self, parser: Parser) -> nodes.Node:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Callable[[], str]) -> str:
            return caller()

    class TemplateNamespace(Namespace):
        """``namespace()`` that refuses underscore names, which could reach CPython internals."""

        # No named self, as in Namespace itself: a template may call namespace(self=...).
        def __init__(*args: Any, **kwargs: Any) -> None:
            self, attrs = args[0], dict(*args[1:], **kwargs)
            for name in attrs:
                TemplateNamespace.check_name(name)
            Namespace.__init__(self, attrs)

        def __setitem__(self, name: str, value: Any) -> None:
            TemplateNamespace.check_name(name)
            Namespace.__setitem__(self, name, value)

        @staticmethod
        def check_name(name: object) -> None:
            if isinstance(name, str) and name.startswith("_"):
                raise SecurityError(
                    f"a chat template cannot store {name!r} (an underscore name) on a namespace"
                )

    # No keep_trailing_newline: transformers drops a template's final newline, so Hearth does too.
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = TemplateNamespace
    return env
