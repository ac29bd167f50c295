"""Speculative decoding on real llama.cpp: the same answers with drafting, through the engine, a chat session
and the API server; a draft model with another vocabulary is refused; stops and lengths stay exact."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from core.chats import ChatStore
from core.chats.session import ChatSession
from core.engine import Completion, Engine, LoadOptions, SamplingParams
from core.errors import EngineError, InvalidModelError
from core.library import Library
from core.settings import ChatParameters, Settings, save_settings
from tests.core.test_server_support import start_server
from tests.fixtures.tiny_models import write_tiny_llama

PARAGRAPH = (
    "The lighthouse keeper climbed the narrow stairs every evening at dusk. He trimmed the wick, polished the "
    "great lens and wrote the weather in his logbook. Ships passed far out at sea, and none of them knew his name."
)
REWRITE = "Copy this paragraph exactly:\n\n" + PARAGRAPH + "\n\nCopy:\n"
MODES = ("off", "lookup", "model")


def greedy(draft: str, max_tokens: int = 40, **more: object) -> SamplingParams:
    return SamplingParams(temperature=0, max_tokens=max_tokens, repeat_penalty=1.0, draft=draft, **more)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def engine(starter_model: Path) -> Iterator[Engine]:
    """The starter model with itself as the draft model (same vocabulary: a check of the plumbing)."""
    with Engine() as eng:
        eng.load(starter_model, LoadOptions(n_ctx=1024, n_threads=2, draft_model=str(starter_model)))
        yield eng


def test_the_draft_model_is_reported_as_loaded(engine: Engine, starter_model: Path) -> None:
    assert engine.status is not None and engine.status.draft_model == str(starter_model)


# Answers the model is sure about at every token (the copied paragraph is 44 tokens). A batch of positions is
# computed by other kernels than one position at a time (on x86 CPUs a logit can move by ~0.5), so at a
# near-tie a drafted greedy answer may take the other token; these have none.
@pytest.mark.parametrize("prompt", [REWRITE, "1, 2, 3, 4, 5, 6,"])
def test_greedy_answers_are_the_same_with_every_drafter(engine: Engine, prompt: str) -> None:
    answers = {mode: engine.complete(prompt, greedy(mode, max_tokens=40)) for mode in MODES}
    plain = answers["off"]
    assert plain.text.strip() and plain.stats.drafted_tokens == 0 and plain.stats.accepted_tokens == 0
    for mode in ("lookup", "model"):
        done = answers[mode]
        assert done.text == plain.text, mode
        assert done.finish_reason == plain.finish_reason
        assert done.stats.completion_tokens == plain.stats.completion_tokens
        assert 0 <= done.stats.accepted_tokens <= done.stats.drafted_tokens and done.stats.drafted_tokens > 0, mode
    # Greedy drafting by the model itself proposes exactly what the model writes: every draft is taken.
    assert answers["model"].stats.accepted_tokens == answers["model"].stats.drafted_tokens
    if prompt == REWRITE:  # a copy is what prompt lookup is for
        assert answers["lookup"].stats.accepted_tokens >= answers["lookup"].stats.drafted_tokens // 2


def test_prompt_lookup_accepts_most_of_a_copied_paragraph(engine: Engine) -> None:
    done = engine.complete(REWRITE, greedy("lookup", max_tokens=48))
    assert PARAGRAPH[:60] in done.text  # the starter copies it
    assert done.stats.accepted_tokens >= done.stats.drafted_tokens // 2 > 0


def test_chats_are_the_same_and_sampled_answers_are_drafted_too(engine: Engine) -> None:
    messages = [{"role": "user", "content": REWRITE}]
    plain = engine.chat(messages, greedy("off"))
    for mode in ("lookup", "model"):
        assert engine.chat(messages, greedy(mode)).text == plain.text
    # Sampling (temperature 0.8): each position goes through the request's own chain; copying a paragraph
    # the model is sure enough that drafts are still taken.
    for mode in ("lookup", "model"):
        sampled = engine.complete(REWRITE, SamplingParams(seed=3, max_tokens=24, ignore_eos=True, draft=mode))
        assert sampled.stats.completion_tokens == 24 and sampled.finish_reason == "length"
        assert 0 < sampled.stats.accepted_tokens <= sampled.stats.drafted_tokens, mode


def test_stop_strings_and_max_tokens_stay_exact(engine: Engine) -> None:
    count = "1, 2, 3, 4, 5,"
    full = engine.complete(count, greedy("off", max_tokens=30)).text
    assert " 8" in full, full
    for mode in MODES:
        cut = engine.complete(count, greedy(mode, max_tokens=30, stop=[" 8"]))
        assert cut.finish_reason == "stop" and cut.text == full[: full.index(" 8")], mode
        short = engine.complete(count, greedy(mode, max_tokens=7))
        assert short.finish_reason == "length" and short.stats.completion_tokens == 7, mode
        assert short.text == engine.complete(count, greedy("off", max_tokens=7)).text
        # A paragraph copied token by token: a long accepted draft must still stop at max_tokens,
        # and at a stop string in its middle.
        copied = engine.complete(REWRITE, greedy(mode, max_tokens=21))
        assert copied.stats.completion_tokens == 21 and copied.finish_reason == "length"
        stopped = engine.complete(REWRITE, greedy(mode, stop=[" stairs"]))
        assert stopped.text == "The lighthouse keeper climbed the narrow" and stopped.finish_reason == "stop", mode


def test_streamed_chunks_add_up_and_cancel_stops(engine: Engine) -> None:
    chunks, done = [], None
    for item in engine.stream_complete(REWRITE, greedy("lookup", max_tokens=48)):
        if isinstance(item, Completion):
            done = item
        else:
            chunks.append(item)
    assert done is not None and "".join(c.text for c in chunks) == done.text
    assert sum(c.n_tokens for c in chunks) == done.stats.completion_tokens
    stream = engine.stream_complete(REWRITE, SamplingParams(max_tokens=4000, ignore_eos=True, draft="lookup"))
    for item in stream:
        if not isinstance(item, Completion):
            engine.cancel()
        else:
            assert item.finish_reason == "cancelled" and item.stats.completion_tokens < 4000


def test_logprobs_and_grammars_answer_without_drafting(engine: Engine) -> None:
    plain = engine.complete(REWRITE, greedy("off", max_tokens=12, logprobs=True))
    drafted = engine.complete(REWRITE, greedy("lookup", max_tokens=12, logprobs=True))
    assert drafted.text == plain.text and drafted.logprobs == plain.logprobs and drafted.stats.drafted_tokens == 0
    answer = engine.complete("Is the sky blue? Answer:", greedy("lookup", grammar='root ::= " yes" | " no"'))
    assert answer.text in (" yes", " no") and answer.stats.drafted_tokens == 0


def test_bad_drafting_settings_are_refused(engine: Engine) -> None:
    with pytest.raises(EngineError, match="draft must be one of off, lookup, model"):
        engine.complete("Hi", greedy("fast"))
    with pytest.raises(EngineError, match="draft_max must be between 1 and 64"):
        engine.complete("Hi", greedy("lookup", draft_max=0))
    assert engine.complete("Hi", greedy("off", max_tokens=2)).stats.completion_tokens == 2  # still serving


def test_draft_model_without_one_loaded_answers_plainly(starter_model: Path) -> None:
    with Engine() as eng:
        eng.load(starter_model, LoadOptions(n_ctx=512, n_threads=2))
        assert eng.status is not None and eng.status.draft_model is None
        done = eng.complete(REWRITE, greedy("model", max_tokens=8))
        assert done.stats.completion_tokens == 8 and done.stats.drafted_tokens == 0


def test_a_draft_model_with_another_vocabulary_is_refused(starter_model: Path, tmp_path: Path) -> None:
    tiny = write_tiny_llama(tmp_path / "tiny-llama.gguf")
    with Engine() as eng:
        with pytest.raises(InvalidModelError, match=r"The draft model tiny-llama.gguf has a different vocabulary "
                                                    r"\(.* tokens, the model 262,144\): pick a draft model of the "
                                                    r"same family"):
            eng.load(starter_model, LoadOptions(n_ctx=512, n_threads=2, draft_model=str(tiny)))
        assert eng.status is None  # all or nothing: the model is not left loaded without what was asked
        status = eng.load(starter_model, LoadOptions(n_ctx=512, n_threads=2))  # the engine is fine
        assert status.draft_model is None


def test_a_chat_session_keeps_the_drafting_stats(engine: Engine) -> None:
    store = ChatStore()
    plain = ChatSession.start(store, engine, model="starter")
    drafted = ChatSession.start(store, engine, model="starter")
    for _ in plain.send(REWRITE, greedy("off")):
        pass
    for _ in drafted.send(REWRITE, greedy("lookup")):
        pass
    a, b = store.messages(plain.conversation_id)[-1], store.messages(drafted.conversation_id)[-1]
    assert a.content == b.content and a.content
    assert "drafted_tokens" not in a.meta
    assert 0 < b.meta["accepted_tokens"] <= b.meta["drafted_tokens"]


def test_the_server_drafts_as_the_settings_say(starter_in_library: Path, tmp_path: Path) -> None:
    library = Library()
    library.register(starter_in_library, name="starter", source="copy")
    tiny = write_tiny_llama(tmp_path / "tiny-llama.gguf")

    def drafting(mode: str, draft_model: Path | None = None) -> None:
        params = ChatParameters(n_ctx=1024, n_threads=2, draft=mode, draft_model=str(draft_model or ""))
        save_settings(Settings(defaults=params))

    served = start_server(starter_in_library.parent.parent.parent)
    try:
        client = openai.OpenAI(base_url=served.url, api_key="unused", max_retries=0, timeout=120)

        def ask() -> str:
            reply = client.chat.completions.create(model="starter", messages=[{"role": "user", "content": REWRITE}],
                                                   temperature=0, max_tokens=40)
            return reply.choices[0].message.content or ""

        drafting("off")
        plain = ask()
        assert plain.strip()
        drafting("lookup")
        assert ask() == plain
        drafting("model", starter_in_library)
        served.host.unload_if_ours()  # the next request loads the model as the settings now say
        assert ask() == plain
        assert served.host.engine.status is not None
        assert served.host.engine.status.draft_model == str(starter_in_library)
        drafting("model", tiny)
        served.host.unload_if_ours()
        with pytest.raises(openai.APIError, match="different vocabulary"):
            ask()
    finally:
        served.server.stop()
        served.host.close()


def test_hearth_chat_draft_option(starter_in_library: Path, tmp_path: Path) -> None:
    from tests.core.test_cli import hearth

    def chat(*more: str) -> subprocess.CompletedProcess[str]:
        return hearth("chat", "gemma-3-270m-q4_k_m", "-p", REWRITE, "--temperature", "0", "--repeat-penalty", "1",
                      "--max-tokens", "24", "--ctx", "1024", "--threads", "2", "--json", *more)

    plain = json.loads(chat("--draft", "off").stdout)
    for choice in ("lookup", "gemma-3-270m-q4_k_m", str(starter_in_library)):
        result = chat("--draft", choice)
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        assert data["text"] == plain["text"] and 0 < data["stats"]["accepted_tokens"] <= data["stats"]["drafted_tokens"]
    shown = hearth("chat", "gemma-3-270m-q4_k_m", "-p", REWRITE, "--max-tokens", "16", "--draft", "lookup",
                   "--temperature", "0")
    assert shown.returncode == 0 and "drafted " in shown.stderr and ", accepted " in shown.stderr
    tiny = write_tiny_llama(tmp_path / "tiny-llama.gguf")
    refused = chat("--draft", str(tiny))
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "The draft model tiny-llama.gguf has a different vocabulary" in refused.stderr
    missing = chat("--draft", "no-such-model")
    assert missing.returncode != 0 and "no-such-model" in missing.stderr and "Traceback" not in missing.stderr
