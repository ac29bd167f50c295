"""Chat templates: the model's own in a sandbox, family formats, plain completion."""

from __future__ import annotations

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
