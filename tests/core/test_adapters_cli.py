"""``hearth adapters``, ``adapters show`` and ``adapters rm`` on real adapter folders, and a real running job."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from core.errors import NotFoundError, TrainingError
from core.finetune.adapters import list_adapters, partial_folder, remove_adapter, running_jobs
from core.paths import get_paths
from core.units import human_size

ROOT = Path(__file__).resolve().parents[2]


def hearth(*args: str, stdin: Any = subprocess.DEVNULL, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True,
                          stdin=stdin, timeout=timeout, env=os.environ.copy())


def _manifest(**extra: Any) -> dict[str, Any]:
    return {
        "format": 1, "kind": "adapter", "created_at": time.mktime((2025, 3, 14, 9, 26, 0, 0, 0, -1)),
        "base": {"kind": "gguf", "name": "tiny-chat", "architecture": "llama", "parameters": 1_234_567},
        "method": {"name": "lora", "options": {"rank": 8, "alpha": 16.0, "dropout": 0.0}},
        "objective": "pretrain",
        "data": {"objective": "pretrain", "documents": ["/notes/a.md", "/notes/b.md", "/notes/c.txt", "/notes/d.md"],
                 "chunks": 40, "train_examples": 40, "held_out_examples": 0, "train_tokens": 12_345},
        "hyperparameters": {"epochs": 3.0, "total_steps": 60},
        "metrics": {"before": {"eval_loss": 4.5678, "perplexity": 96.34},
                    "after": {"eval_loss": 2.125, "perplexity": 8.37}, **extra},
    }


def make_adapter(name: str, manifest: dict[str, Any], weights: int = 300_000) -> Path:
    folder = get_paths().ensure().adapters / name
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (folder / "adapter_model.safetensors").write_bytes(os.urandom(weights))
    (folder / "sub").mkdir()
    (folder / "sub" / "adapter.gguf").write_bytes(b"GGUF" + bytes(1000))
    return folder


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_show_says_the_manifest_in_plain_words() -> None:
    folder = make_adapter("notes", _manifest(knowledge={"before": 3, "after": 8, "total": 10}))
    result = hearth("adapters", "show", "notes")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "tiny-chat (llama, 1.2M parameters)" in out
    assert "lora (rank 8, alpha 16.0)" in out and "pretrain" in out
    assert "4 document(s): a.md, b.md, c.txt and 1 more" in out
    assert "40 training examples, 12,345 tokens" in out
    assert "60 (3 epochs planned)" in out
    assert "4.568 before, 2.125 after" in out and "96.34 before, 8.37 after" in out
    assert "From your sentences: 8 of 10 (3 before)" in out and "Asked in other words" not in out
    assert "2025-03-14 09:26" in out
    assert human_size(_size(folder)) in out and str(folder) in out

    data = json.loads(hearth("adapters", "show", "notes", "--json").stdout)
    assert data["size_bytes"] == _size(folder) and data["metrics"]["knowledge"]["after"] == 8
    assert data["name"] == "notes" and data["path"] == str(folder)


def test_show_without_a_knowledge_check_says_nothing_of_it() -> None:
    make_adapter("plain", _manifest())
    out = hearth("adapters", "show", "plain").stdout
    assert "Knowledge" not in out and "Eval loss" in out


def test_listing_still_works() -> None:
    make_adapter("one", _manifest())
    result = hearth("adapters")
    assert result.returncode == 0 and "one" in result.stdout and "2.125" in result.stdout
    assert [r["name"] for r in json.loads(hearth("adapters", "--json").stdout)] == ["one"]


def test_rm_yes_deletes_the_adapter_and_its_interrupted_run() -> None:
    folder = make_adapter("gone", _manifest())
    work = partial_folder("gone")
    (work / "checkpoint").mkdir(parents=True)
    (work / "checkpoint" / "state.pt").write_bytes(bytes(5000))
    expected = _size(folder) + _size(work)
    keep = make_adapter("kept", _manifest())
    result = hearth("adapters", "rm", "gone", "--yes")
    assert result.returncode == 0, result.stderr
    assert "Removed adapter and interrupted run 'gone'" in result.stdout and human_size(expected) in result.stdout
    assert not folder.exists() and not work.exists() and keep.exists()
    assert [p.name for p in get_paths().adapters.iterdir()] == ["kept"]  # no trash left behind
    assert [a.name for a in list_adapters()] == ["kept"]


def test_rm_of_an_interrupted_run_only() -> None:
    work = partial_folder("halfway")
    work.mkdir(parents=True)
    (work / "spec.json").write_text("{}")
    removed = remove_adapter("halfway")
    assert removed.had_interrupted_run and not removed.had_adapter and not work.exists()


def test_a_stale_trash_folder_is_swept_by_the_next_removal() -> None:
    root = get_paths().ensure().adapters
    stale = root / ".old.trash-123-abcd"
    (stale / "deep").mkdir(parents=True)
    (stale / "deep" / "file").write_bytes(b"x")
    make_adapter("next", _manifest())
    remove_adapter("next")
    assert list(root.iterdir()) == []


def test_rm_without_a_terminal_needs_yes() -> None:
    folder = make_adapter("guarded", _manifest())
    result = hearth("adapters", "rm", "guarded")
    assert result.returncode == 1
    assert result.stderr.strip() == "hearth: error: Removing 'guarded' needs a yes: run it on a terminal, or add --yes."
    assert folder.exists()


@pytest.mark.parametrize("answer, removed", [("n", False), ("", False), ("y", True), ("yes", True)])
def test_rm_asks_on_a_terminal(answer: str, removed: bool) -> None:
    folder = make_adapter("asked", _manifest())
    master, slave = pty.openpty()
    try:
        os.write(master, (answer + "\n").encode())
        result = hearth("adapters", "rm", "asked", stdin=slave)
    finally:
        os.close(slave)
        os.close(master)
    assert "Delete the adapter 'asked' for good? [y/N]" in result.stdout
    assert folder.exists() is not removed
    assert result.returncode == (0 if removed else 1)
    assert ("Removed adapter 'asked'" in result.stdout) is removed


def test_rm_of_an_unknown_adapter_is_one_line() -> None:
    make_adapter("real", _manifest())
    result = hearth("adapters", "rm", "nope", "--yes")
    assert result.returncode == 1
    assert result.stderr.strip() == ("hearth: error: No adapter called 'nope' (adapters: real). "
                                     "'hearth adapters' lists them.")
    with pytest.raises(NotFoundError):
        remove_adapter("nope")


@pytest.mark.slow
def test_rm_is_refused_while_a_job_writes_that_name(tmp_path: Path) -> None:
    from core.jobs import JobProcess
    from tests.fixtures.tiny_hf import write_tiny_chat_llama, write_tiny_hf

    hf = write_tiny_hf(tmp_path / "hf", write_tiny_chat_llama(tmp_path / "tiny-chat.gguf"))
    rows = [{"messages": [{"role": "user", "content": "what color is the sky"},
                          {"role": "assistant", "content": "blue"}]}] * 12
    data = tmp_path / "chat.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    make_adapter("other", _manifest())
    job = JobProcess("finetune", {"base": str(hf), "name": "busy", "data": str(data), "max_steps": 2000,
                                  "seq_len": 64, "batch": 1, "save_every": 0, "samples": 0},
                     log_path=tmp_path / "job.log")
    try:
        for event in job.events():
            if event["event"] == "step":
                break
        assert running_jobs("busy") == [job.pid] and running_jobs("other") == []
        with pytest.raises(TrainingError, match=f"process {job.pid}"):
            remove_adapter("busy")
        result = hearth("adapters", "rm", "busy", "--yes")
        assert result.returncode == 1 and f"A fine-tuning job (process {job.pid}) is writing 'busy'" in result.stderr
        assert partial_folder("busy").is_dir()
        remove_adapter("other")  # another name is not held up by the job
        job.cancel()
        for _event in job.events():
            pass
    finally:
        job.kill()
        job.wait(timeout=60)
    assert running_jobs("busy") == []
    removed = remove_adapter("busy")  # the cancelled run's checkpoint
    assert removed.had_interrupted_run and not partial_folder("busy").exists()
