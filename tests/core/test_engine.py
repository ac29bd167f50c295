"""The chat engine on real llama.cpp: streaming, cancel, prefix reuse, context overflow, crashes."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.engine import Completion, Engine, LoadOptions, SamplingParams, TextChunk
from core.errors import ContextOverflowError, EngineCrashedError, EngineError, InvalidModelError
from tests.fixtures.tiny_models import write_fake_arch, write_tiny_llama

GREEDY = SamplingParams(temperature=0, max_tokens=24, repeat_penalty=1.0)


@pytest.fixture(scope="module")
def engine(starter_model: Path) -> Iterator[Engine]:
    with Engine() as eng:
        eng.load(starter_model, LoadOptions(n_ctx=1024, n_threads=2))
        yield eng


def _collect(stream: Iterator[TextChunk | Completion]) -> tuple[list[TextChunk], Completion]:
    chunks, done = [], None
    for item in stream:
        if isinstance(item, TextChunk):
            chunks.append(item)
        else:
            done = item
    assert done is not None
    return chunks, done


def test_streams_an_answer_in_the_family_format(engine: Engine) -> None:
    assert engine.status is not None and engine.status.chat_format == "gemma"
    assert engine.status.chat_format_source == "family"
    chunks, done = _collect(engine.stream_chat([{"role": "user", "content": "Name a colour."}], GREEDY))
    assert chunks and "".join(c.text for c in chunks) == done.text
    assert done.stats.completion_tokens >= 1 and done.finish_reason in ("stop", "length")
    assert done.stats.tokens_per_second > 0 and done.stats.prompt_tokens > 5
    assert "<end_of_turn>" not in done.text


def test_greedy_generation_is_reproducible_and_seeded_sampling_too(engine: Engine) -> None:
    prompt = "The capital of France is"
    a = engine.complete(prompt, GREEDY).text
    b = engine.complete(prompt, GREEDY).text
    assert a == b and a.strip()
    seeded = SamplingParams(temperature=1.0, seed=7, max_tokens=16)
    assert engine.complete(prompt, seeded).text == engine.complete(prompt, seeded).text


def test_stop_strings_end_the_answer_and_are_not_shown(engine: Engine) -> None:
    full = engine.complete("1, 2, 3, 4, 5,", SamplingParams(temperature=0, max_tokens=30, repeat_penalty=1.0)).text
    assert " 8" in full, full  # the model counts on
    cut = engine.complete("1, 2, 3, 4, 5,", SamplingParams(temperature=0, max_tokens=30, stop=[" 8"], repeat_penalty=1.0))
    assert cut.finish_reason == "stop" and " 8" not in cut.text and cut.text == full[: full.index(" 8")]


def test_cancel_stops_at_the_next_token(engine: Engine) -> None:
    params = SamplingParams(max_tokens=4000, ignore_eos=True, seed=1)
    first = threading.Event()
    stream = engine.stream_complete("Write a very long story about a lighthouse.", params)
    seen = 0

    def cancel_soon() -> None:
        first.wait(30)
        engine.cancel()

    threading.Thread(target=cancel_soon, daemon=True).start()
    done = None
    for item in stream:
        if isinstance(item, TextChunk):
            seen += item.n_tokens
            first.set()
        else:
            done = item
    assert done is not None and done.finish_reason == "cancelled"
    assert done.stats.completion_tokens < 200  # far from max_tokens: it stopped at once
    # the engine is immediately usable again
    assert engine.complete("Hello", GREEDY).finish_reason in ("stop", "length")


def test_abandoning_a_stream_cancels_it(engine: Engine) -> None:
    stream = engine.stream_complete("Tell me everything.", SamplingParams(max_tokens=3000, ignore_eos=True))
    next(iter(stream))
    started = time.perf_counter()
    stream.close()  # type: ignore[attr-defined]
    assert time.perf_counter() - started < 10
    assert engine.complete("Hi", GREEDY).text is not None


def test_follow_up_turns_reuse_the_cached_prefix(engine: Engine) -> None:
    history = [{"role": "user", "content": "Tell me about the sea in two sentences."}]
    first = engine.chat(history, GREEDY)
    history += [{"role": "assistant", "content": first.text}, {"role": "user", "content": "And the sky?"}]
    second = engine.chat(history, GREEDY)
    assert second.stats.cached_tokens >= first.stats.prompt_tokens - 1
    assert second.stats.prompt_tokens - second.stats.cached_tokens < 40  # only the new turn is evaluated


def test_changed_history_still_answers_correctly(engine: Engine) -> None:
    """Editing an earlier message invalidates the cache from that point; the answer equals a fresh one."""
    a = [{"role": "user", "content": "Count: 1, 2, 3"}]
    engine.chat(a, GREEDY)
    b = [{"role": "user", "content": "List three fruits"}]
    reused = engine.chat(b, GREEDY)
    with Engine() as fresh:
        assert engine.status is not None
        fresh.load(engine.status.path, LoadOptions(n_ctx=1024, n_threads=2))
        assert fresh.chat(b, GREEDY).text == reused.text


def test_context_overflow_drops_oldest_turns_or_says_it_cannot_fit(starter_model: Path) -> None:
    with Engine() as eng:
        eng.load(starter_model, LoadOptions(n_ctx=256, n_threads=2))
        long_turns = []
        for i in range(8):
            long_turns += [{"role": "user", "content": f"Question {i}: " + "tell me more " * 10},
                           {"role": "assistant", "content": "Sure. " * 10}]
        long_turns.append({"role": "user", "content": "Last question?"})
        done = eng.chat([{"role": "system", "content": "Be kind."}, *long_turns], SamplingParams(max_tokens=16))
        assert done.stats.dropped_messages > 0 and done.stats.prompt_tokens + 16 <= 256
        with pytest.raises(ContextOverflowError, match="more than the 256-token context"):
            eng.chat([{"role": "user", "content": "word " * 400}], SamplingParams(max_tokens=16))
        assert eng.chat([{"role": "user", "content": "ok?"}], SamplingParams(max_tokens=4)).stats.completion_tokens > 0


def test_generation_stops_visibly_when_the_context_is_full(starter_model: Path) -> None:
    with Engine() as eng:
        eng.load(starter_model, LoadOptions(n_ctx=128, n_threads=2))
        done = eng.complete("Once upon a time", SamplingParams(max_tokens=1000, ignore_eos=True))
        assert done.finish_reason == "context" and done.stats.context_used == done.stats.n_ctx == eng.status.n_ctx  # type: ignore[union-attr]


def test_loading_reports_rising_progress_to_the_end(starter_model: Path) -> None:
    fractions: list[float] = []
    with Engine() as eng:
        status = eng.load(starter_model, LoadOptions(n_ctx=256, n_threads=2), progress=fractions.append)
        assert status.n_ctx == 256
    assert len(fractions) >= 3 and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert all(0.0 <= f <= 1.0 for f in fractions)


def test_a_killed_worker_is_reported_and_the_engine_recovers(starter_model: Path) -> None:
    with Engine() as eng:
        eng.load(starter_model, LoadOptions(n_ctx=512, n_threads=2))
        stream = eng.stream_complete("A story:", SamplingParams(max_tokens=5000, ignore_eos=True))
        with pytest.raises(EngineCrashedError, match=r"killed \(SIGKILL\)"):
            for item in stream:
                if isinstance(item, TextChunk) and eng.pid:
                    os.kill(eng.pid, signal.SIGKILL)
        with pytest.raises(EngineError, match="No model is loaded"):
            eng.complete("x")
        eng.load(starter_model, LoadOptions(n_ctx=512, n_threads=2))
        assert eng.complete("Hi", GREEDY).stats.completion_tokens > 0


@pytest.mark.parametrize(
    "kind, message",
    [
        ("not_gguf", "is not a GGUF model"),
        ("truncated", "truncated"),
        ("unknown_arch", "'notanarch' model, an architecture this version of llama.cpp does not know"),
        ("missing", "does not exist"),
        # a well-formed header llama.cpp still refuses (tensors missing): the worker's own error
        ("incomplete", "Could not load bad.gguf: .*key not found in model: llama.context_length"),
    ],
)
def test_bad_models_give_clear_errors_and_the_engine_survives(
    kind: str, message: str, tmp_path: Path, tiny_model: Path
) -> None:
    path = tmp_path / "bad.gguf"
    if kind == "not_gguf":
        path.write_text("hello, I am a text file")
    elif kind == "truncated":
        path.write_bytes(tiny_model.read_bytes()[:5000])
    elif kind == "unknown_arch":
        write_fake_arch(path)
    elif kind == "incomplete":
        write_fake_arch(path, architecture="llama")
    with Engine() as eng:
        with pytest.raises(InvalidModelError, match=message):
            eng.load(path)
        status = eng.load(tiny_model, LoadOptions(n_ctx=128))
        assert status.n_layer == 2


def test_gguf_chat_template_is_rendered(tmp_path: Path) -> None:
    template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    path = write_tiny_llama(tmp_path / "templated.gguf", chat_template=template)
    with Engine() as eng:
        status = eng.load(path, LoadOptions(n_ctx=128))
        assert status.chat_format_source == "gguf"
        done = eng.chat([{"role": "user", "content": "hello"}], SamplingParams(max_tokens=4, temperature=0))
        assert done.stats.prompt_tokens == len(eng.tokenize("user: hello\nassistant:", add_bos=True))


def test_scoring_ranks_the_likely_continuation_and_adds_up(engine: Engine) -> None:
    (paris, berlin) = engine.score("The capital of France is", [" Paris", " Berlin"])
    assert paris["logprob"] > berlin["logprob"] and paris["tokens"] >= 1
    assert paris["logprob"] < 0
    whole = engine.score("The capital of France is", [" Paris, a city"])[0]
    first = engine.score("The capital of France is", [" Paris,"])[0]
    rest = engine.score("The capital of France is Paris,", [" a city"])[0]
    assert whole["tokens"] == first["tokens"] + rest["tokens"]
    assert whole["logprob"] == pytest.approx(first["logprob"] + rest["logprob"], abs=1e-2)
    # The generation cache still works after scoring.
    assert engine.complete("The capital of France is", GREEDY).stats.completion_tokens > 0
