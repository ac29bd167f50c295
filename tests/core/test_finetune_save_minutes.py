"""Checkpoints by training time as well as by steps: a crash (``kill -9``) costs minutes, not the run.

Real processes on a tiny random llama: ``hearth finetune --json`` started in its own process group and
killed with SIGKILL (the command and its job, nothing saved on the way out), then ``--resume``. The step
interval is far beyond the run, so every checkpoint here is one the clock asked for (``--save-minutes``
tiny). Nothing asserts a duration: the test waits for events, not for time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from core.finetune.adapters import list_adapters, partial_folder
from tests.fixtures.tiny_hf import write_tiny_chat_llama, write_tiny_hf

ROOT = Path(__file__).resolve().parents[2]
TOTAL = 24  # steps of the run
KILL_AFTER = 4  # the first checkpoint at or after this step is followed by the kill
TINY = "0.0001"  # minutes (6 ms): about one checkpoint per step, by the clock alone
HEARTH = "import sys\nfrom core.cli import main\nsys.exit(main())"  # the `hearth` command


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-save-minutes")
    return write_tiny_hf(folder / "hf", write_tiny_chat_llama(folder / "tiny-chat.gguf"))


def _chat(path: Path, n: int = 24) -> Path:
    colors = ["blue", "red"]
    rows = [{"messages": [{"role": "user", "content": f"what color is the {'sky' if i % 2 else 'dog'}"},
                          {"role": "assistant", "content": colors[i % 2]}]} for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return path


def _hearth(*args: str) -> subprocess.Popen[str]:
    """``hearth ARGS`` in a process group of its own (its job process joins it), events on stdout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", HEARTH, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env,
                            start_new_session=True)


def _events(lines: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_a_killed_run_resumes_from_its_last_timed_checkpoint(tiny_hf: Path, tmp_path: Path) -> None:
    import torch

    data = _chat(tmp_path / "chat.jsonl")
    common = ["finetune", str(tiny_hf), "--data", str(data), "--out", "timed", "--max-steps", str(TOTAL),
              "--seq-len", "64", "--batch", "1", "--grad-accum", "1", "--json"]
    first = _hearth(*common, "--save-every", "100000", "--save-minutes", TINY)
    assert first.stdout is not None
    seen: list[dict[str, Any]] = []
    killed_after: int | None = None
    for line in first.stdout:
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        seen.append(event)
        if event["event"] == "checkpoint" and event["step"] >= KILL_AFTER:
            killed_after = event["step"]
            os.killpg(first.pid, signal.SIGKILL)  # the command and its job at once: nothing saved on the way out
            break
    _out, err = first.communicate(timeout=120)
    assert killed_after is not None, (seen[-5:], err[-2000:])
    assert first.returncode == -signal.SIGKILL
    assert killed_after < TOTAL and not any(e["event"] == "done" for e in seen)
    # The step interval (100000) never came: every checkpoint was the clock's.
    checkpoints = [e["step"] for e in seen if e["event"] == "checkpoint"]
    assert checkpoints == sorted(set(checkpoints)) and all(0 < s < TOTAL for s in checkpoints)
    assert not list_adapters()
    saved_file = partial_folder("timed") / "checkpoint" / "state.pt"
    # The kill may land in the next save: its half-written temporary file never replaces the last whole one.
    saved = int(torch.load(saved_file, weights_only=False)["step"])
    assert saved >= killed_after

    again = _hearth(*common, "--resume")
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-2000:]
    events = _events(out.splitlines())
    resumed = next(e for e in events if e["event"] == "resumed")
    assert resumed["step"] == saved >= KILL_AFTER  # not from step 1
    steps = [e["step"] for e in events if e["event"] == "step"]
    assert steps == list(range(saved + 1, TOTAL + 1))
    done = next(e for e in events if e["event"] == "done")
    assert (Path(done["path"]) / "adapter_model.safetensors").stat().st_size > 0
    assert [a.name for a in list_adapters()] == ["timed"]
    assert not partial_folder("timed").exists()


def test_two_processes_save_by_the_clock_of_rank_0_at_the_same_steps(tiny_hf: Path, tmp_path: Path) -> None:
    """Rank 0's clock decides and its answer travels with the step's gradient sum: were the ranks to decide
    apart, one would wait in the checkpoint's barrier while the other sums the next step's gradients."""
    from core.jobs import JobProcess

    spec = {"base": str(tiny_hf), "name": "timed-ddp", "data": str(_chat(tmp_path / "chat.jsonl")), "max_steps": 8,
            "seq_len": 64, "batch": 1, "grad_accum": 2, "save_every": 0, "save_minutes": float(TINY), "samples": 0,
            "device": "cpu", "nproc": 2}
    job = JobProcess("finetune", spec, log_path=tmp_path / "job.log")
    events = list(job.events())
    assert job.wait(timeout=120) == 0, (tmp_path / "job.log").read_text()[-3000:]
    checkpoints = [e["step"] for e in events if e["event"] == "checkpoint"]
    assert checkpoints and checkpoints == sorted(set(checkpoints)) and all(0 < s < 8 for s in checkpoints)
    assert [e["step"] for e in events if e["event"] == "step"] == list(range(1, 9))
    assert [a.name for a in list_adapters()] == ["timed-ddp"]
