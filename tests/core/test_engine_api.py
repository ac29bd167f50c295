"""The engine features the local API server needs: grammars, logprobs, penalties, tools, embeddings."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.engine import Completion, EmbedResult, Engine, LoadOptions, SamplingParams, TextChunk
from core.engine.ops.tokens import template_message as _template_message
from core.errors import ContextOverflowError, EngineError
from tests.fixtures.scripted_model import write_scripted_chat_llama
from tests.fixtures.tiny_embed import write_tiny_bert
from tests.fixtures.tiny_models import write_tiny_llama

GREEDY = SamplingParams(temperature=0, max_tokens=16, repeat_penalty=1.0)
SCRIPT = ["Hello", " there", " friend", "."]

# ChatML that lists the tools in a system turn and writes tool calls and results as Qwen 2.5's template does.
# It reads the arguments with .items(): a JSON string instead of a dict would fail to render.
TOOLS_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n# Tools\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}<|im_end|>\n"
    "{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m.get('content', '') }}"
    "{% for c in m.get('tool_calls', []) %}<tool_call>{{ c.function.name }}("
    "{% for k, v in c.function.arguments.items() %}{{ k }}={{ v | tojson }}{% endfor %})</tool_call>{% endfor %}"
    "<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("api-models")
    return {
        "tiny": write_tiny_llama(root / "tiny.gguf", output_scale=20.0),
        "scripted": write_scripted_chat_llama(root / "scripted.gguf", SCRIPT),
        "tools": write_tiny_llama(
            root / "tools.gguf", chat_template=TOOLS_TEMPLATE, controls=["<|im_start|>", "<|im_end|>"], n_ctx=2048
        ),
        "bert": write_tiny_bert(root / "bert.gguf"),
    }


@pytest.fixture(scope="module")
def engine(models: dict[str, Path]) -> Iterator[Engine]:
    with Engine() as eng:
        yield eng


def _load(engine: Engine, path: Path, **options: object) -> None:
    if engine.status is None or engine.status.path != str(path) or engine.status.embedding != bool(
        options.get("embedding", False)
    ):
        engine.load(path, LoadOptions(n_ctx=1024, n_threads=1, **options))  # type: ignore[arg-type]


def _collect(stream: Iterator[TextChunk | Completion]) -> tuple[list[TextChunk], Completion]:
    chunks: list[TextChunk] = []
    done = None
    for item in stream:
        if isinstance(item, TextChunk):
            chunks.append(item)
        else:
            done = item
    assert done is not None
    return chunks, done


# -- grammar ---------------------------------------------------------------------------------------
def test_a_json_schema_grammar_forces_matching_output(engine: Engine, models: dict[str, Path]) -> None:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    _load(engine, models["tiny"])
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["ok", "n"],
        "additionalProperties": False,
    }
    grammar = json_schema_to_gbnf(json.dumps(schema))
    free = engine.complete("hello world", SamplingParams(temperature=0, max_tokens=30, repeat_penalty=1.0))
    with pytest.raises(json.JSONDecodeError):
        json.loads(free.text)  # the random model alone writes no JSON
    for seed in (1, 2, 3):
        params = SamplingParams(temperature=1.0, seed=seed, max_tokens=120, grammar=grammar)
        done = engine.complete("hello world", params)
        value = json.loads(done.text)
        assert set(value) == {"ok", "n"} and isinstance(value["ok"], bool) and 0 <= value["n"] <= 9
        assert done.finish_reason == "stop"  # the grammar ended: only end-of-generation was left


def test_a_bad_grammar_is_refused_and_the_engine_keeps_serving(engine: Engine, models: dict[str, Path]) -> None:
    _load(engine, models["tiny"])
    with pytest.raises(EngineError, match="grammar"):
        engine.complete("hello", SamplingParams(max_tokens=4, grammar="root ::= ( unclosed"))
    with pytest.raises(EngineError, match="grammar"):
        engine.complete("hello", SamplingParams(max_tokens=4, grammar='start ::= "x"'))  # no root rule
    assert engine.complete("hello", GREEDY).stats.completion_tokens > 0


def test_a_grammar_constrains_a_chat_answer(engine: Engine, models: dict[str, Path]) -> None:
    _load(engine, models["scripted"])
    done = engine.chat([{"role": "user", "content": "hi"}], SamplingParams(temperature=0, grammar='root ::= "yes" | "no"'))
    assert done.text in ("yes", "no")


# -- logprobs --------------------------------------------------------------------------------------
def test_logprobs_have_openai_shape_and_sorted_alternatives(engine: Engine, models: dict[str, Path]) -> None:
    _load(engine, models["scripted"])
    params = SamplingParams(temperature=0, max_tokens=6, repeat_penalty=1.0, logprobs=True, top_logprobs=5)
    chunks, done = _collect(engine.stream_chat([{"role": "user", "content": "hi"}], params))
    assert done.logprobs is not None and len(done.logprobs) == done.stats.completion_tokens == 6
    streamed = [entry for c in chunks for entry in (c.logprobs or [])]
    assert streamed == done.logprobs
    assert "".join(bytes(e["bytes"]).decode() for e in done.logprobs) == done.text
    for entry in done.logprobs:
        assert set(entry) == {"token", "logprob", "bytes", "top_logprobs"}
        assert entry["logprob"] <= 0 and isinstance(entry["token"], str)
        tops = entry["top_logprobs"]
        assert len(tops) == 5 and all(set(t) == {"token", "logprob", "bytes"} for t in tops)
        values = [t["logprob"] for t in tops]
        assert values == sorted(values, reverse=True) and all(v <= 0 for v in values)
        # Greedy: the token written is the most likely one.
        assert tops[0]["token"] == entry["token"] and math.isclose(tops[0]["logprob"], entry["logprob"])
    assert done.logprobs[0]["logprob"] > -0.01  # the scripted model is sure of its script
    assert engine.chat([{"role": "user", "content": "hi"}], GREEDY).logprobs is None  # only when asked


def test_logprobs_leave_out_the_stop_string(engine: Engine, models: dict[str, Path]) -> None:
    _load(engine, models["scripted"])
    params = SamplingParams(temperature=0, max_tokens=12, repeat_penalty=1.0, logprobs=True, stop=[" friend"])
    done = engine.chat([{"role": "user", "content": "hi"}], params)
    assert done.text == "Hello there" and done.logprobs is not None
    assert [e["token"] for e in done.logprobs] == ["Hello", " there"]


def test_top_logprobs_out_of_range_is_refused(engine: Engine, models: dict[str, Path]) -> None:
    _load(engine, models["tiny"])
    with pytest.raises(EngineError, match="top_logprobs"):
        engine.complete("hello", SamplingParams(max_tokens=2, logprobs=True, top_logprobs=21))


# -- penalties -------------------------------------------------------------------------------------
def test_presence_and_frequency_penalties_change_a_repetitive_answer(engine: Engine, models: dict[str, Path]) -> None:
    _load(engine, models["tiny"])
    plain = engine.complete("the", SamplingParams(temperature=0, max_tokens=40, repeat_penalty=1.0))
    penalised = engine.complete(
        "the", SamplingParams(temperature=0, max_tokens=40, repeat_penalty=1.0, presence_penalty=2.0,
                              frequency_penalty=2.0, repeat_last_n=0)
    )
    assert penalised.stats.completion_tokens > 0 and plain.stats.completion_tokens > 0
    assert penalised.text != plain.text


# -- tools -----------------------------------------------------------------------------------------
def test_tools_and_tool_calls_render_into_the_prompt(engine: Engine, models: dict[str, Path]) -> None:
    _load(engine, models["tools"])
    assert engine.status is not None and engine.status.supports_tools
    messages = [{"role": "user", "content": "weather in paris?"}]
    without = engine.chat(messages, GREEDY)
    with_tools = engine.chat(messages, GREEDY, tools=[WEATHER_TOOL])
    assert with_tools.stats.prompt_tokens > without.stats.prompt_tokens + 20
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}
    history: list[dict[str, Any]] = [
        *messages,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "sunny"},
    ]
    done = engine.chat(history, GREEDY, tools=[WEATHER_TOOL])  # the template reads arguments.items()
    assert done.stats.prompt_tokens > with_tools.stats.prompt_tokens


def test_tool_call_arguments_become_a_dict_for_templates() -> None:
    message: dict[str, Any] = {"role": "assistant", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
        {"id": "b", "type": "function", "function": {"name": "g", "arguments": {"y": 2}}},
        {"id": "c", "type": "function", "function": {"name": "h", "arguments": "not json"}},
    ]}
    fixed = _template_message(message)
    assert [c["function"]["arguments"] for c in fixed["tool_calls"]] == [{"x": 1}, {"y": 2}, "not json"]
    assert message["tool_calls"][0]["function"]["arguments"] == '{"x": 1}'  # the caller's message is untouched


def test_models_without_a_tools_template_say_so(engine: Engine, models: dict[str, Path]) -> None:
    _load(engine, models["scripted"])
    assert engine.status is not None and not engine.status.supports_tools


# -- embeddings ------------------------------------------------------------------------------------
def test_an_embedding_model_gives_normalised_deterministic_vectors(engine: Engine, models: dict[str, Path]) -> None:
    _load(engine, models["bert"], embedding=True)
    status = engine.status
    assert status is not None and status.embedding and status.n_embd == 32 and not status.has_decoder
    texts = ["the cat sat on the mat", "hello world", "the cat sat on the mat"]
    result = engine.embed(texts)
    assert isinstance(result, EmbedResult) and len(result.vectors) == 3
    assert all(len(v) == 32 for v in result.vectors)
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-5) for v in result.vectors)
    assert result.vectors[0] == result.vectors[2] and result.vectors[0] != result.vectors[1]
    assert result.prompt_tokens == 2 * 8 + 4  # [CLS] ... [SEP] around each text
    assert engine.embed(["hello world"]).vectors[0] == result.vectors[1]  # alone or in a batch, the same
    assert engine.embed([]) == EmbedResult([], 0)


def test_an_embedding_model_refuses_to_chat_and_long_texts(engine: Engine, models: dict[str, Path]) -> None:
    _load(engine, models["bert"], embedding=True)
    with pytest.raises(EngineError, match="embedding model"):
        engine.chat([{"role": "user", "content": "hi"}], GREEDY)
    with pytest.raises(EngineError, match="embedding model"):
        engine.complete("hi", GREEDY)
    with pytest.raises(ContextOverflowError, match="tokens"):
        engine.embed(["the cat " * 200])
    # Past the model's 128 trained positions but inside llama.cpp's padded 256-token context: refused too
    # (this length aborted the worker in ggml once).
    with pytest.raises(ContextOverflowError, match="more than the 128"):
        engine.embed(["the cat " * 80])
    assert len(engine.embed(["dog"]).vectors) == 1  # still serving


def test_a_causal_model_embeds_by_mean_and_still_chats(engine: Engine, models: dict[str, Path]) -> None:
    _load(engine, models["scripted"], embedding=True)
    assert engine.status is not None and engine.status.embedding and engine.status.has_decoder
    result = engine.embed(["hello world", "the answer"])
    assert len(result.vectors) == 2 and all(len(v) == engine.status.n_embd for v in result.vectors)
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-5) for v in result.vectors)
    assert engine.chat([{"role": "user", "content": "hi"}], GREEDY).text.startswith("Hello there")
    assert engine.embed(["hello world"]).vectors[0] == pytest.approx(result.vectors[0], abs=1e-6)
    with pytest.raises(ContextOverflowError):
        engine.embed(["the " * 1100])


def test_embedding_needs_a_model_loaded_for_it(engine: Engine, models: dict[str, Path]) -> None:
    _load(engine, models["tiny"])
    with pytest.raises(EngineError, match="embedding=True"):
        engine.embed(["hello"])


# -- streams ---------------------------------------------------------------------------------------
def test_closing_a_stream_early_cancels_it(engine: Engine, models: dict[str, Path]) -> None:
    _load(engine, models["scripted"])
    stream = engine.stream_chat([{"role": "user", "content": "hi"}], SamplingParams(temperature=0, max_tokens=400))
    first = next(stream)
    assert isinstance(first, TextChunk)
    stream.close()  # type: ignore[attr-defined]
    assert engine.chat([{"role": "user", "content": "hi"}], GREEDY).text.startswith("Hello there")
