"""Real models' chat templates render in Hearth exactly as transformers renders them.

Every template in ``tests/fixtures/chat_templates/`` (see the README there) is rendered for
several conversations by Hearth (``core.engine.templates.render``) and by transformers
(``transformers.utils.chat_template_utils.render_jinja_template``, what ``apply_chat_template``
calls), and the two texts must be equal byte for byte. A conversation the reference itself
refuses (a template that raises) is skipped for that template, after checking that Hearth
refuses it too; every template must render at least one conversation.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest

from core.engine.templates import ChatFormat, render
from core.errors import EngineError

chat_template_utils = pytest.importorskip("transformers.utils.chat_template_utils")

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "chat_templates"
TEMPLATES = sorted(TEMPLATES_DIR.glob("*.jinja"))

# strftime_now reads the clock on both sides; both read this one.
FIXED_NOW = datetime.datetime(2026, 3, 14, 9, 26, 53)

# Each family's own start and end tokens; other models get Llama 2's.
SPECIAL_TOKENS: dict[str, tuple[str, str]] = {
    "meta-llama": ("<|begin_of_text|>", "<|eot_id|>"),
    "NousResearch": ("<|begin_of_text|>", "<|im_end|>"),
    "meetkai": ("<|begin_of_text|>", "<|eot_id|>"),
    "Qwen": ("", "<|im_end|>"),
    "HuggingFaceTB": ("", "<|im_end|>"),
    "google": ("<bos>", "<eos>"),
    "deepseek-ai": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "CohereForAI": ("<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>"),
    "moonshotai": ("[BOS]", "[EOS]"),
    "LiquidAI": ("<|startoftext|>", "<|im_end|>"),
    "ibm-granite": ("", "<|end_of_text|>"),
    "openai": ("<|startoftext|>", "<|return|>"),
    "zai-org": ("", "<|endoftext|>"),
    "microsoft": ("<s>", "<|endoftext|>"),
}

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "The city, e.g. Paris"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    }
]

# Mistral's templates want tool-call ids of exactly nine letters or digits.
TOOL_CALL = {
    "id": "call00001",
    "type": "function",
    "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}},
}

CONVERSATIONS: dict[str, dict[str, Any]] = {
    "turns": {
        "messages": [
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And of Italy?"},
        ],
        "add_generation_prompt": True,
    },
    "system_first": {
        "messages": [
            {"role": "system", "content": "You are a terse geography tutor."},
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": 'And of Italy? Answer with <b>one</b> word & "quotes".'},
        ],
        "add_generation_prompt": True,
    },
    "ends_with_assistant": {
        "messages": [
            {"role": "system", "content": "You are a terse geography tutor."},
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And of Italy?"},
            {"role": "assistant", "content": "Rome — «Roma»."},
        ],
        "add_generation_prompt": False,
    },
    "tool_use": {
        "messages": [
            {"role": "system", "content": "You can look up the weather."},
            {"role": "user", "content": "How warm is it in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [TOOL_CALL]},
            {
                "role": "tool",
                "tool_call_id": "call00001",
                "name": "get_weather",
                "content": '{"temperature": 21, "unit": "celsius"}',
            },
        ],
        "tools": TOOLS,
        "add_generation_prompt": True,
    },
    "content_parts": {
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "You are a terse geography tutor."}]},
            {"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]},
        ],
        "add_generation_prompt": True,
    },
    "documents_thinking_off": {
        "messages": [{"role": "user", "content": "Summarise the report."}],
        "documents": [{"title": "Report", "text": "Sales rose 4% in March."}],
        "add_generation_prompt": True,
        "enable_thinking": False,
    },
}


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    class FixedDatetime(datetime.datetime):
        @classmethod
        def now(cls, tz: datetime.tzinfo | None = None) -> FixedDatetime:
            return cls.fromtimestamp(FIXED_NOW.timestamp(), tz)

    # transformers' strftime_now calls datetime.now() from its module; Hearth's calls _now().
    monkeypatch.setattr(chat_template_utils, "datetime", FixedDatetime)
    monkeypatch.setattr("core.engine.templates._now", lambda: FIXED_NOW)


def special_tokens(path: Path) -> tuple[str, str]:
    org = next((org for org in SPECIAL_TOKENS if path.stem.startswith(org + "-")), None)
    return SPECIAL_TOKENS[org] if org else ("<s>", "</s>")


def render_reference(template: str, bos: str, eos: str, conversation: dict[str, Any]) -> str:
    args = dict(conversation)
    rendered, _indices = chat_template_utils.render_jinja_template(
        conversations=[args.pop("messages")], chat_template=template, bos_token=bos, eos_token=eos, **args
    )
    return str(rendered[0])


def render_hearth(template: str, bos: str, eos: str, conversation: dict[str, Any]) -> str:
    args = dict(conversation)
    return render(
        ChatFormat("gguf", "gguf", template), args.pop("messages"), bos_token=bos, eos_token=eos, **args
    )


@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
@pytest.mark.parametrize("path", TEMPLATES, ids=[p.stem for p in TEMPLATES])
def test_template_renders_as_transformers_renders_it(path: Path, conversation: str) -> None:
    template = path.read_text(encoding="utf-8")
    bos, eos = special_tokens(path)
    try:
        expected = render_reference(template, bos, eos, CONVERSATIONS[conversation])
    except Exception as exc:
        with pytest.raises(EngineError):
            render_hearth(template, bos, eos, CONVERSATIONS[conversation])
        pytest.skip(f"transformers refuses it too: {type(exc).__name__}: {exc}")
    assert render_hearth(template, bos, eos, CONVERSATIONS[conversation]) == expected


@pytest.mark.parametrize("path", TEMPLATES, ids=[p.stem for p in TEMPLATES])
def test_every_template_renders_some_conversation(path: Path) -> None:
    template = path.read_text(encoding="utf-8")
    bos, eos = special_tokens(path)
    rendered = []
    for name, conversation in CONVERSATIONS.items():
        try:
            render_reference(template, bos, eos, conversation)
        except Exception:
            continue
        rendered.append(name)
    assert rendered, f"{path.name}: transformers refuses every conversation, so nothing of it is compared"


def test_the_set_covers_many_models_and_every_template_feature() -> None:
    texts = {p.stem: p.read_text(encoding="utf-8") for p in TEMPLATES}
    assert len(texts) >= 20
    assert any("{%- break -%}" in t or "{% break %}" in t or "{%- continue -%}" in t for t in texts.values())
    assert any("{%- generation -%}" in t or "{% generation %}" in t for t in texts.values())
    assert any("strftime_now" in t for t in texts.values())
    readme = (TEMPLATES_DIR / "README.md").read_text(encoding="utf-8")
    assert all(f"{stem}.jinja" in readme for stem in texts), "every fixture says where it comes from"
