"""Compare: one prompt, two set-ups, real models. Each side's greedy answer equals a plain chat's with that
set-up; the engines share one model (base vs tuned), keep two loaded, or reload; the group is saved, reopens,
lists once, and one side goes on alone as a normal chat; `hearth compare` prints both answers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.chats import ChatStore
from core.chats.compare import (
    CompareEngines,
    CompareItem,
    CompareSession,
    CompareSide,
    SideCommitted,
    SideFailed,
    SideLoading,
    SideReady,
    compare_sides,
    one_row_per_comparison,
)
from core.chats.session import ChatSession
from core.cli import main
from core.docs import DocsLibrary
from core.docs.context import read_docs_message
from core.engine import Completion, Engine, TextChunk
from core.settings import ChatParameters
from tests.fixtures.tiny_hf_export import build_tiny_hf_llama, make_lora

# Greedy, short, two threads on both sides and in the plain chats they are checked against.
PARAMS = ChatParameters(temperature=0, max_tokens=8, repeat_penalty=1.0, n_ctx=256, n_threads=2).to_dict()
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def tiny_lora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny random llama (GGUF) and a GGUF LoRA adapter for it (random, non-zero)."""
    from core.gguf_export.lora import export_lora_gguf

    root = tmp_path_factory.mktemp("compare-lora")
    hf = build_tiny_hf_llama(root)
    lora = export_lora_gguf(make_lora(hf.folder, root / "lora"), root / "lora.gguf", base=hf.gguf).path
    return {"model": hf.gguf, "lora": Path(lora)}


def _collect(stream: Iterator[CompareItem]) -> dict[int, list[Any]]:
    items: dict[int, list[Any]] = {0: [], 1: []}
    for event in stream:
        items[event.side].append(event.item)
    return items


def _completion(items: list[Any]) -> Completion:
    done = [i for i in items if isinstance(i, Completion)]
    assert len(done) == 1, items
    return done[0]


def _plain_answer(model: Path, side: CompareSide, text: str, lora: Path | None = None) -> str:
    """The answer of an ordinary chat with the same set-up, in its own engine (the adapter loaded with the model)."""
    params = side.parameters()
    options = params.load_options()
    if lora is not None:
        options.loras = [(str(lora), side.adapter_scale)]
    with Engine() as engine:
        engine.load(model, options)
        session = ChatSession.start(ChatStore(), engine, model=side.model)
        return _completion(list(session.send(text, params.sampling()))).text


def test_base_vs_tuned_share_one_engine_and_each_side_answers_as_a_plain_chat(tiny_lora: dict[str, Path]) -> None:
    model, lora = str(tiny_lora["model"]), str(tiny_lora["lora"])
    base = CompareSide(model, adapter=lora, adapter_scale=0.0, params=PARAMS)
    tuned = CompareSide(model, adapter=lora, adapter_scale=1.0, params=PARAMS)
    store = ChatStore()
    with CompareEngines() as engines:
        session = CompareSession.start(store, engines, base, tuned)
        items = _collect(session.send("hello world"))
        assert engines.plan == "shared" and engines.second is None
        status = engines.primary.status
        for side in (0, 1):
            kinds = [type(i) for i in items[side]]
            assert SideReady in kinds and SideCommitted in kinds and TextChunk in kinds, items[side]
        assert SideLoading in [type(i) for i in items[0]] and SideLoading not in [type(i) for i in items[1]]
        left, right = _completion(items[0]), _completion(items[1])
        assert left.text and right.text and left.text != right.text  # the adapter changes the answer
        # A second prompt: still the same load (no reload), only the adapter's scale switches.
        again = _collect(session.send("once more"))
        assert engines.primary.status is status and not any(isinstance(i, SideLoading) for i in again[0] + again[1])
    assert left.text == _plain_answer(tiny_lora["model"], base, "hello world", tiny_lora["lora"])
    assert right.text == _plain_answer(tiny_lora["model"], tuned, "hello world", tiny_lora["lora"])
    for side, done in ((0, left), (1, right)):  # each side's stats, and saved with its answer
        assert done.stats.completion_tokens > 0 and done.stats.tokens_per_second > 0
        conv = session.conversations[side]
        stored = store.messages(conv.id)
        assert [m.role for m in stored] == ["user", "assistant"] * 2
        assert stored[1].content == done.text and stored[1].tokens_per_second and stored[1].tokens_per_second > 0
        assert (conv.adapter, conv.adapter_scale) == (lora, float(side))


def test_two_models_that_fit_stay_loaded_and_switching_sides_reloads_nothing(
    starter_model: Path, tiny_model: Path
) -> None:
    starter = CompareSide(str(starter_model), params=PARAMS)
    tiny = CompareSide(str(tiny_model), params=PARAMS)
    with CompareEngines() as engines:
        session = CompareSession.start(ChatStore(), engines, starter, tiny)
        first = _collect(session.send(PROMPT))
        assert engines.plan == "both" and engines.second is not None
        statuses = [e.status for e in engines.engines()]
        pids = [e.pid for e in engines.engines()]
        assert all(pids) and pids[0] != pids[1]
        second = _collect(session.send("And of Spain?"))
        assert [e.status for e in engines.engines()] == statuses and all(s is not None for s in statuses)
        assert engines.primary.status is statuses[0]
        assert not any(isinstance(i, SideLoading) for i in second[0] + second[1])
        assert "both" in engines.describe().lower() or "loaded" in engines.describe()
    assert _completion(first[0]).text == _plain_answer(starter_model, starter, PROMPT)
    assert _completion(first[1]).text == _plain_answer(tiny_model, tiny, PROMPT)


def test_models_that_do_not_fit_together_reload_between_sides(starter_model: Path, tiny_model: Path) -> None:
    starter = CompareSide(str(starter_model), params=PARAMS)
    tiny = CompareSide(str(tiny_model), params=PARAMS)
    with CompareEngines(fits=lambda keys: False) as engines:
        session = CompareSession.start(ChatStore(), engines, starter, tiny)
        items = _collect(session.send(PROMPT))
        assert engines.plan == "reload" and engines.second is None
        again = _collect(session.send(PROMPT))
        assert all(any(isinstance(i, SideLoading) for i in again[s]) for s in (0, 1))  # each side loads in turn
        assert "do not fit" in engines.describe()
    assert _completion(items[0]).text == _plain_answer(starter_model, starter, PROMPT)
    assert _completion(items[1]).text == _plain_answer(tiny_model, tiny, PROMPT)
    assert _completion(again[0]).text and _completion(again[1]).text


def test_the_comparison_is_saved_lists_once_reopens_and_one_side_goes_on_as_a_normal_chat(
    tiny_model: Path, tiny_lora: dict[str, Path], hearth_home: Path
) -> None:
    a = CompareSide(str(tiny_model), params=PARAMS)
    b = CompareSide(str(tiny_lora["model"]), params={**PARAMS, "max_tokens": 4})
    store = ChatStore()
    other = store.create(title="an ordinary chat")
    with CompareEngines() as engines:
        session = CompareSession.start(store, engines, a, b, system_prompt="Be brief.")
        first = _collect(session.send("hello"))
    group = session.group
    store.close()

    reopened = ChatStore()  # as after a restart
    left, right = compare_sides(reopened, group)
    assert (left.compare_side, right.compare_side) == (0, 1) and left.compare_group == right.compare_group == group
    assert left.title == right.title == "hello" and left.system_prompt == right.system_prompt == "Be brief."
    assert [r.id for r in one_row_per_comparison(reopened, reopened.list())] == [left.id, other.id]
    assert [r.id for r in one_row_per_comparison(reopened, reopened.list(search="hello"))] == [left.id]
    with CompareEngines() as engines:
        again = CompareSession(reopened, engines, group)
        assert again.sides == (a, b)
        assert reopened.messages(right.id)[-1].content == _completion(first[1]).text
        assert _completion(first[1]).stats.completion_tokens <= 4  # each side keeps its own parameters
        _collect(again.send("and then"))
        assert [len(reopened.messages(c.id)) for c in (left, right)] == [4, 4]

        alone = again.continue_side(1)
        assert alone.compare_group == 0 and alone.model == b.model and alone.params == b.params
        assert [m.content for m in reopened.messages(alone.id)] == [m.content for m in reopened.messages(right.id)]
        engine = engines.primary
        engine.load(b.model, b.parameters().load_options())
        chat = ChatSession(reopened, engine, alone.id)
        _completion(list(chat.send("go on", b.parameters().sampling())))
    assert len(reopened.messages(alone.id)) == 6 and len(reopened.messages(right.id)) == 4  # the comparison stays
    rows = one_row_per_comparison(reopened, reopened.list())
    assert {r.id for r in rows} == {alone.id, left.id, other.id}


def test_a_side_that_cannot_answer_says_why_and_the_other_still_answers(tiny_model: Path) -> None:
    store = ChatStore()
    with CompareEngines() as engines:
        session = CompareSession.start(store, engines, CompareSide("no-such-model", params=PARAMS),
                                       CompareSide(str(tiny_model), params=PARAMS))
        items = _collect(session.send("hello"))
    (failed,) = items[0]
    assert isinstance(failed, SideFailed) and "No model called 'no-such-model'" in failed.message
    assert _completion(items[1]).text


def test_a_side_with_documents_retrieves_passages_and_the_other_does_not(
    starter_model: Path, tiny_model: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "kettle.md").write_text("The blue kettle whistles when the water boils at dawn.", encoding="utf-8")
    with DocsLibrary().create("kitchen") as collection:
        collection.add([folder])
    store = ChatStore()
    with CompareEngines() as engines:
        session = CompareSession.start(store, engines, CompareSide(str(starter_model), docs="kitchen",
                                                   params={**PARAMS, "n_ctx": 1024, "max_tokens": 4}),
                                       CompareSide(str(tiny_model), params=PARAMS))
        assert session.sides[0].label().endswith("· kitchen")
        items = _collect(session.send("When does the kettle whistle?"))
    turns = [i for i in items[0] if hasattr(i, "context")]
    assert len(turns) == 1 and turns[0].context.passages
    left, right = session.conversations
    asked = read_docs_message(store.messages(left.id)[0].content)
    assert asked is not None and asked.question == "When does the kettle whistle?"
    assert store.messages(right.id)[0].content == "When does the kettle whistle?"
    assert left.title == "When does the kettle whistle?"


def test_hearth_compare_prints_both_answers_with_their_speed(
    starter_in_library: Path, tiny_lora: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model, lora = tiny_lora["model"], tiny_lora["lora"]
    argv = ["compare", f"{model}+{lora}@0", f"{model}+{lora}@1", "hello world", "--temperature", "0",
            "--max-tokens", "8", "--repeat-penalty", "1", "--ctx", "256", "--threads", "2"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    base = _plain_answer(model, CompareSide(str(model), adapter=str(lora), adapter_scale=0.0, params=PARAMS),
                         "hello world", lora)
    assert base in out and "×0" in out and "×1" in out
    assert err.count("tok/s") == 2 and "only the adapter changes" in err
    assert main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["sides"][0]["text"] == base and data["plan"] == "shared"
    assert all(s["stats"]["tokens_per_second"] > 0 for s in data["sides"])
    left, right = compare_sides(ChatStore(), data["group"])
    assert (left.adapter_scale, right.adapter_scale) == (0.0, 1.0)
    assert main(["compare", "no-such-model", str(model), "hi"]) == 1
    assert "No model called 'no-such-model'" in capsys.readouterr().err


def test_stop_keeps_what_side_a_wrote_and_side_b_does_not_start(starter_model: Path, tiny_model: Path) -> None:
    store = ChatStore()
    with CompareEngines() as engines:
        session = CompareSession.start(store, engines, CompareSide(str(starter_model), params={**PARAMS, "max_tokens": 200}),
                                       CompareSide(str(tiny_model), params=PARAMS))
        items: dict[int, list[Any]] = {0: [], 1: []}
        for event in session.send("Tell me a long story about a lighthouse."):
            items[event.side].append(event.item)
            if isinstance(event.item, TextChunk):
                session.stop()
    assert _completion(items[0]).finish_reason == "cancelled" and items[1] == []
    left, right = session.conversations
    assert store.messages(left.id)[-1].finish_reason == "cancelled" and store.messages(right.id) == []
