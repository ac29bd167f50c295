"""A request that fails in the engine gets an error reply and the same worker serves the next one."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.engine import Engine, LoadOptions, SamplingParams
from core.engine.crash import describe_exit
from core.errors import EngineError, EngineInternalError
from tests.fixtures.tiny_models import write_tiny_llama

SHORT = SamplingParams(max_tokens=3, temperature=0)
SENTINEL_NAME = "hearth-template-escaped"

# One template, three ways to fail chosen by the last message's text; any other message renders.
TEMPLATE = (
    "{% set last = messages[-1]['content'] %}"
    "{% if last == 'escape' %}{{ cycler.__init__.__globals__.os.system('touch ' ~ sentinel) }}{% endif %}"
    "{% if last == 'refuse' %}{{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}"
    "{% if last == 'undefined' %}{{ messages[5]['content'].nope() }}{% endif %}"
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    folder = tmp_path_factory.mktemp("robust")
    template = TEMPLATE.replace("sentinel", repr(str(folder / SENTINEL_NAME)))
    path = write_tiny_llama(folder / "templated.gguf", chat_template=template)
    with Engine() as eng:
        eng.load(path, LoadOptions(n_ctx=128))
        yield eng


def _ask(engine: Engine, text: str) -> str:
    return engine.chat([{"role": "user", "content": text}], SHORT).text


def test_a_hostile_template_is_refused_and_the_worker_keeps_serving(engine: Engine, capfd: pytest.CaptureFixture[str]) -> None:
    pid = engine.pid
    with pytest.raises(EngineError, match=r"chat template could not be rendered.*unsafe"):
        _ask(engine, "escape")
    assert engine.pid == pid and engine.alive
    assert engine.chat([{"role": "user", "content": "hello"}], SHORT).stats.completion_tokens > 0
    assert engine.pid == pid
    assert "Traceback" not in capfd.readouterr().err


def test_the_payload_never_ran(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> None:
    with pytest.raises(EngineError):
        _ask(engine, "escape")
    assert not any(p.name == SENTINEL_NAME for p in tmp_path_factory.getbasetemp().rglob(SENTINEL_NAME))


def test_a_template_that_raises_is_a_clear_error(engine: Engine) -> None:
    pid = engine.pid
    with pytest.raises(EngineError, match="refused the conversation: Conversation roles must alternate"):
        _ask(engine, "refuse")
    assert engine.pid == pid
    assert engine.chat([{"role": "user", "content": "hello"}], SHORT).stats.completion_tokens > 0


def test_a_template_error_at_render_time_is_a_clear_error(engine: Engine) -> None:
    pid = engine.pid
    with pytest.raises(EngineError, match="could not be rendered"):
        _ask(engine, "undefined")
    assert engine.pid == pid
    assert engine.chat([{"role": "user", "content": "hello"}], SHORT).stats.completion_tokens > 0


def test_a_malformed_template_fails_each_chat_but_not_the_engine(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "broken.gguf", chat_template="{% for m in messages %}{{ m['content'] }")
    with Engine() as eng:
        eng.load(path, LoadOptions(n_ctx=128))
        pid = eng.pid
        for _ in range(2):
            with pytest.raises(EngineError, match="could not be rendered"):
                eng.chat([{"role": "user", "content": "hi"}], SHORT)
        assert eng.pid == pid
        assert eng.complete("the world", SHORT).stats.completion_tokens > 0  # completion needs no template
        assert eng.pid == pid


def test_an_unexpected_exception_is_an_internal_error_logged_not_printed(
    tiny_model: Path, hearth_home: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with Engine() as engine:  # started here, so its log goes to this test's HEARTH_HOME
        engine.load(tiny_model, LoadOptions(n_ctx=128))
        pid = engine.pid
        # A request the worker does not expect (no sampling parameters): a KeyError inside the op.
        with pytest.raises(EngineInternalError, match="Internal error in the engine: KeyError: 'params'") as info:
            engine._request({"op": "complete", "prompt": "hi"})
        assert engine.pid == pid and engine.alive
        log = hearth_home / "logs" / "engine.log"
        assert str(log) in str(info.value)
        text = log.read_text(encoding="utf-8")
        assert "Traceback" in text and "KeyError: 'params'" in text and "request 'complete' failed" in text
        assert "Traceback" not in capfd.readouterr().err
        assert engine.complete("the world", SHORT).stats.completion_tokens > 0
        assert engine.pid == pid


def test_ctrl_c_in_the_terminal_does_not_kill_the_worker(engine: Engine) -> None:
    pid = engine.pid
    assert pid is not None
    os.kill(pid, signal.SIGINT)  # what a terminal's Ctrl-C sends the whole process group
    assert engine.chat([{"role": "user", "content": "hello"}], SHORT).stats.completion_tokens > 0
    assert engine.pid == pid


@pytest.mark.parametrize(
    "code, words",
    [
        (-signal.SIGSEGV, "crashed in llama.cpp (SIGSEGV)"),
        (-signal.SIGABRT, "crashed in llama.cpp (SIGABRT)"),
        (-signal.SIGILL, "CPU instructions this processor lacks"),
        (-signal.SIGKILL, "killed (SIGKILL)"),
        (3, "exit code 3"),
    ],
)
def test_a_dead_worker_is_described_by_how_it_ended(code: int, words: str) -> None:
    assert words in describe_exit(code)


def test_a_native_crash_is_reported_as_such_and_the_engine_recovers(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "m.gguf")
    with Engine() as eng:
        eng.load(path, LoadOptions(n_ctx=128))
        assert eng.pid is not None
        os.kill(eng.pid, signal.SIGSEGV)
        with pytest.raises(EngineError, match=r"crashed in llama.cpp \(SIGSEGV\)"):
            eng.complete("the world", SHORT)
        eng.load(path, LoadOptions(n_ctx=128))
        assert eng.complete("the world", SHORT).stats.completion_tokens > 0
