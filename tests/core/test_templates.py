"""Chat templates: the model's own in a sandbox, family formats, plain completion."""

from __future__ import annotations

from typing import Any

import pytest

from core.engine.templates import ChatFormat, choose_format, render
from core.errors import EngineError

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye"},
]


def test_gemma_family_format_folds_the_system_prompt_into_the_first_turn() -> None:
    fmt = choose_format("gemma3", None)
    assert (fmt.source, fmt.name) == ("family", "gemma")
    text = render(fmt, MESSAGES, bos_token="<bos>")
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    )
    assert fmt.stop == ["<end_of_turn>"]


def test_family_is_recognised_from_the_vocabulary() -> None:
    fmt = choose_format("qwen2", None, has_token=lambda t: t == "<|im_start|>")
    assert fmt.name == "chatml"
    text = render(fmt, MESSAGES[1:2])
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_unknown_family_uses_plain_completion_and_says_so() -> None:
    fmt = choose_format("llama", None)
    assert fmt.source == "plain" and "plain completion" in fmt.description
    assert render(fmt, [{"role": "user", "content": "Once upon a time"}]) == "Once upon a time"


def test_gguf_template_is_used_first() -> None:
    template = "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
    fmt = choose_format("llama", template)
    assert fmt.source == "gguf"
    assert render(fmt, MESSAGES[1:2]) == "[user]Hi[assistant]"


def test_template_cannot_escape_the_sandbox() -> None:
    evil = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(EngineError, match="could not be rendered"):
        render(ChatFormat("gguf", "gguf", evil), MESSAGES)
    evil2 = "{% set x = messages.append({'role': 'x'}) %}"
    with pytest.raises(EngineError):
        render(ChatFormat("gguf", "gguf", evil2), MESSAGES)


def test_raise_exception_in_a_template_is_a_clear_error() -> None:
    fmt = ChatFormat("gguf", "gguf", "{{ raise_exception('roles must alternate') }}")
    with pytest.raises(EngineError, match="roles must alternate"):
        render(fmt, MESSAGES)


def gguf(template: str) -> ChatFormat:
    return ChatFormat("gguf", "gguf", template)


CUSTOM_TURNS = (
    "{% for m in messages %}<|turn_start|>{{ m.role }}\n{{ m.content }}<|turn_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|turn_start|>assistant\n{% endif %}"
)


def test_a_template_s_own_turn_end_token_is_a_stop_string() -> None:
    tokens = {"<|turn_start|>", "<|turn_end|>"}
    fmt = choose_format("llama", CUSTOM_TURNS, has_token=lambda t: t in tokens)
    assert fmt.stop == ["<|turn_end|>"]


def test_the_turn_end_token_comes_first_and_family_markers_stay() -> None:
    tokens = {"<|im_start|>", "<|turn_end|>"}
    fmt = choose_format("qwen2", CUSTOM_TURNS, has_token=lambda t: t in tokens)
    assert fmt.stop == ["<|turn_end|>", "<|im_end|>"]


def test_no_stop_is_guessed_from_text_that_is_not_a_lone_control_token() -> None:
    has_token = {"<|close|>", "<|sep|>"}.__contains__
    words_after = "{% for m in messages %}{{ m.content }}\n### Next{% endfor %}"
    closes_a_section = "{% for m in messages %}<|open|>{{ m.content }}<|close|>response<|sep|>{% endfor %}"
    not_a_token = "{% for m in messages %}{{ m.content }}<|not_in_vocab|>{% endfor %}"
    for template in (words_after, closes_a_section, not_a_token):
        assert choose_format("llama", template, has_token).stop == []
    refuses = "{{ raise_exception('needs a system message') }}"
    assert choose_format("qwen2", refuses, lambda t: t == "<|im_start|>").stop == ["<|im_end|>"]


def test_tools_documents_and_extra_keywords_reach_the_template() -> None:
    template = (
        "{% for t in tools %}{{ t.function.name }};{% endfor %}"
        "{% for d in documents %}{{ d.title }};{% endfor %}"
        "{{ enable_thinking }};{{ bos_token }}{{ eos_token }}"
    )
    tools = [{"type": "function", "function": {"name": "get_weather"}}]
    text = render(
        gguf(template),
        [],
        tools=tools,
        documents=[{"title": "Report", "text": "."}],
        enable_thinking=False,
        bos_token="<s>",
        eos_token="</s>",
    )
    assert text == "get_weather;Report;False;<s></s>"
    assert render(gguf("{{ tools is none }} {{ documents is none }}"), []) == "True True"


def test_loop_controls_and_the_generation_block_render() -> None:
    template = (
        "{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}"
        "{% if m.role == 'tool' %}{% break %}{% endif %}"
        "{% if m.role == 'assistant' %}{% generation %}{% set m2 = 'inner' %}{{ m.content }}{% endgeneration %}"
        "{% else %}{{ m.content }}{% endif %}|{% endfor %}{{ m2 is defined }}"
    )
    messages = [*MESSAGES, {"role": "tool", "content": "never shown"}]
    # The generation block is a scope of its own, as transformers' call block is.
    assert render(gguf(template), messages) == "Hi|Hello!|Bye|False"


def test_tojson_takes_transformers_arguments_and_escapes_nothing() -> None:
    template = (
        "{{ v | tojson }}\n{{ v | tojson(indent=2) }}\n{{ v | tojson(separators=(',', ':'), sort_keys=true) }}\n"
        "{{ v | tojson(ensure_ascii=true) }}"
    )
    text = render(gguf(template), [], v={"b": "<é>", "a": 1})
    assert text.split("\n", 1)[0] == '{"b": "<é>", "a": 1}'
    assert '{\n  "b": "<é>",\n  "a": 1\n}' in text
    assert '{"a":1,"b":"<é>"}' in text
    assert text.endswith('{"b": "<\\u00e9>", "a": 1}')


def test_messages_reach_the_template_as_transformers_hands_them_over() -> None:
    template = (
        "{% for m in messages %}{{ m.role }}:{{ 'content' in m }}:{{ m.reasoning_content }}:{{ m.thinking }}"
        "{% for c in m.tool_calls or [] %}:{{ c.function.name }}{% endfor %};{% endfor %}"
    )
    messages: list[dict[str, Any]] = [
        {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": {}}}]},
        {"role": "assistant", "content": "x", "reasoning_content": "because"},
    ]
    # A None value is a missing key; reasoning is given under both names.
    assert render(gguf(template), messages) == "assistant:False:::f;assistant:True:because:because;"
    # The final newline of a template is dropped, as transformers drops it.
    assert render(gguf("{{ messages | length }}\n"), messages) == "2"


def test_plain_completion_reads_text_parts() -> None:
    fmt = choose_format("llama", None)
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Once upon"}, {"type": "text", "text": " a time"}],
        }
    ]
    assert render(fmt, messages) == "Once upon a time"


def test_a_template_s_own_errors_and_escapes_are_engine_errors() -> None:
    with pytest.raises(EngineError, match="could not be rendered"):
        render(gguf("{{ 'text' + messages[0].content }}"), [{"role": "user", "content": None}])
    with pytest.raises(EngineError, match="could not be rendered"):
        render(gguf("{% set ns = namespace(_secret=1) %}"), MESSAGES)
    with pytest.raises(EngineError, match="could not be rendered"):
        render(gguf("{{ dict.__class__ }}{{ dict.mro() }}"), MESSAGES)
    assert render(gguf("{{ dict(a=1) }}{{ dict.fromkeys(['b']) }}"), []) == "{'a': 1}{'b': None}"
    with pytest.raises(EngineError, match="could not be rendered"):
        render(gguf("{% if %}"), MESSAGES)


def test_a_template_is_compiled_once() -> None:
    from core.engine import templates

    template = "{{ messages | length }} compiled once"
    render(gguf(template), MESSAGES)
    hits = templates._compiled.cache_info().hits
    render(gguf(template), MESSAGES)
    assert templates._compiled.cache_info().hits == hits + 1
