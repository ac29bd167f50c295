"""Fine-tune jobs that outlive the window: detached, recorded, found again, followed, resumed, one at a time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from core import jobs
from core.errors import TrainingError
from core.finetune.adapters import list_adapters, partial_folder, running_jobs
from core.finetune.launch import (
    cancel_run,
    follow_events,
    get_run,
    list_runs,
    read_events,
    spec_from_inputs,
    start_finetune,
)
from tests.fixtures.tiny_hf import write_tiny_chat_llama, write_tiny_hf

ROOT = Path(__file__).resolve().parents[2]
# Starts a detached job and exits at once: the job's JobProcess object and its end of the pipes go with it.
LAUNCHER = (
    "import json, sys\n"
    "from core.finetune.launch import start_finetune\n"
    "from core.finetune.spec import FinetuneSpec\n"
    "job = start_finetune(FinetuneSpec.from_dict(json.loads(sys.argv[1])), detached=True)\n"
    "print(job.pid, flush=True)\n"
)
QUICK = {"seq_len": 64, "batch": 1, "grad_accum": 1, "samples": 0, "lr": 5e-3}


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-attach")
    return write_tiny_hf(folder / "hf", write_tiny_chat_llama(folder / "tiny-chat.gguf"))


def _data(tmp_path: Path) -> Path:
    colors = ["blue", "red"]
    rows = [{"messages": [{"role": "user", "content": f"what color is the {'sky' if i % 2 else 'dog'}"},
                          {"role": "assistant", "content": colors[i % 2]}]} for i in range(24)]
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return path


def _gone(pid: int, timeout: float = 60) -> None:
    """Make sure a job this test started is not left running."""
    try:
        proc = psutil.Process(pid)
        if any("core.jobs" in part for part in proc.cmdline()):
            proc.kill()
            proc.wait(timeout)
    except psutil.Error:
        pass


def test_a_detached_job_outlives_its_launcher_and_is_found_and_followed_again(tiny_hf: Path, tmp_path: Path) -> None:
    data = _data(tmp_path)
    spec = spec_from_inputs(str(tiny_hf), data=str(data), name="away", max_steps=12, save_every=0, **QUICK)
    jobs.job_folder("away").mkdir(parents=True)
    (jobs.job_folder("away") / jobs.STOP_FILE).write_text("left by an earlier run")  # must not stop this one
    launched = subprocess.run([sys.executable, "-c", LAUNCHER, json.dumps(spec.to_dict())], cwd=ROOT,
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert launched.returncode == 0, launched.stderr
    pid = int(launched.stdout.strip())
    try:
        # The launcher is gone; the job (still loading torch) is running, and found from its record.
        runs = list_runs()
        assert [(r.name, r.state, r.pid) for r in runs] == [("away", "running", pid)]
        assert runs[0].spec == spec.to_dict() and runs[0].started_at and runs[0].started_at <= time.time()
        assert running_jobs("away") == [pid]
        # One training at a time, from whichever front end.
        other = spec_from_inputs(str(tiny_hf), data=str(data), name="second", max_steps=2, **QUICK)
        with pytest.raises(TrainingError, match=r"^A fine-tune is already running \('away', started \d\d:\d\d\): "
                                                r"wait for it to finish or cancel it first\.$"):
            start_finetune(other, detached=True)
        cli = subprocess.run([sys.executable, "-m", "core", "finetune", str(tiny_hf), "--data", str(data), "--out",
                              "second", "--max-steps", "2"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert cli.returncode == 1 and "A fine-tune is already running ('away', started " in cli.stderr
        assert get_run("second", missing_ok=True) is None
        # A fresh reader replays the log from the start and follows it to the end.
        deadline = time.monotonic() + 300
        events = list(follow_events("away", stop=lambda: time.monotonic() > deadline))
    finally:
        _gone(pid)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "job_did_start" and events[0]["pid"] == pid and events[0]["resumed"] is False
    assert [e["step"] for e in events if e["event"] == "step"] == list(range(1, 13))
    assert "done" in kinds and kinds[-1] == "job_did_end" and events[-1]["code"] == 0
    assert read_events("away") == events
    run = get_run("away")
    assert run is not None and run.state == "finished" and run.exit_code == 0 and run.step == 12
    assert run.last_event == events[-1] and run.log_path is not None and run.log_path.exists()
    assert [a.name for a in list_adapters()] == ["away"]
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    with pytest.raises(TrainingError, match="No fine-tune called 'away' is running"):
        cancel_run("away")


def test_a_killed_job_is_interrupted_and_resumes_to_finished(tiny_hf: Path, tmp_path: Path) -> None:
    data = _data(tmp_path)
    spec = spec_from_inputs(str(tiny_hf), data=str(data), name="crash", max_steps=24, save_every=2, save_minutes=0,
                            **QUICK)
    job = start_finetune(spec, detached=False)  # attached, as the CLI runs it
    checkpoints: list[int] = []
    try:
        for event in job.events():
            if event["event"] == "checkpoint":
                checkpoints.append(event["step"])
            if event["event"] == "step" and event["step"] >= 5 and checkpoints:
                os.kill(job.pid, signal.SIGKILL)  # a crash: the record never hears of its end
                break
    finally:
        job.kill()
    assert job.wait(timeout=60) == -signal.SIGKILL
    run = get_run("crash")
    assert run is not None and run.state == "interrupted" and run.resumable and run.exit_code is None
    assert (partial_folder("crash") / "checkpoint" / "state.pt").exists()
    assert running_jobs("crash") == []
    with pytest.raises(TrainingError, match="No fine-tune called 'crash' is running"):
        cancel_run("crash")
    first_run = read_events("crash")
    assert first_run[0]["event"] == "job_did_start" and first_run[-1]["event"] != jobs.FINAL_EVENT

    again = spec_from_inputs(str(tiny_hf), data=str(data), name="crash", resume=True, max_steps=24, save_every=2,
                             **QUICK)
    job = start_finetune(again, detached=True)
    try:
        live = list(job.events())  # detached: read from the log, starting where the resumed run begins
        assert job.wait(timeout=120) == 0
    finally:
        job.kill()
    assert live[0]["event"] == "job_did_start" and live[0]["resumed"] is True
    resumed = next(e for e in live if e["event"] == "resumed")["step"]
    # From the last checkpoint it wrote (one more may have landed between the event read and the kill).
    assert resumed in (checkpoints[-1], checkpoints[-1] + 2)
    assert [e["step"] for e in live if e["event"] == "step"] == list(range(resumed + 1, 25))
    # The log holds both runs, the marker between them; the record says the run finished.
    everything = list(follow_events("crash"))
    assert everything == read_events("crash") == first_run + live
    run = get_run("crash")
    assert run is not None and run.state == "finished" and run.exit_code == 0 and run.step == 24
    assert [a.name for a in list_adapters()] == ["crash"] and not partial_folder("crash").exists()


def test_cancel_run_asks_the_job_to_checkpoint_and_stop(tiny_hf: Path, tmp_path: Path) -> None:
    spec = spec_from_inputs(str(tiny_hf), data=str(_data(tmp_path)), name="stopme", max_steps=2000, save_every=0,
                            **QUICK)
    job = start_finetune(spec, detached=True)
    try:
        seen: list[dict[str, Any]] = []
        for event in job.events():
            seen.append(event)
            if event["event"] == "step" and event["step"] == 2:
                assert get_run("stopme").state == "running"  # type: ignore[union-attr]
                cancel_run("stopme")
                assert (jobs.job_folder("stopme") / jobs.STOP_FILE).exists()  # the way in on Windows
                # A terminal's Ctrl-C reaches the job and the CLI, which passes it on: one request, not two.
                os.kill(job.pid, signal.SIGINT)
        assert job.wait(timeout=120) == 130
    finally:
        job.kill()
    cancelled = next(e for e in seen if e["event"] == "cancelled")
    assert "--resume" in cancelled["message"]  # stopped at a safe point with a checkpoint, not "at once"
    assert seen[-1] == {"event": "job_did_end", "code": 130}
    run = get_run("stopme")
    assert run is not None and run.state == "cancelled" and run.resumable


def test_a_reused_pid_or_another_program_is_not_taken_for_the_job(hearth_home: Path) -> None:
    me = psutil.Process()
    record = {"name": "ghost", "kind": "finetune", "pid": me.pid, "create_time": me.create_time(), "spec": {},
              "started_at": time.time(), "exit_code": None}
    assert not jobs.record_is_live(record)  # alive, but not a ``core.jobs`` process
    folder = jobs.job_folder("ghost")
    folder.mkdir(parents=True)
    (folder / jobs.JOB_RECORD).write_text(json.dumps({**record, "create_time": me.create_time() - 1000}))
    assert not jobs.record_is_live(jobs.read_record("ghost") or {})  # same pid, another start time
    run = get_run("ghost")
    assert run is not None and run.state == "failed"  # never recorded an end, no checkpoint to resume
    with pytest.raises(TrainingError, match="No fine-tune called 'ghost' is running"):
        cancel_run("ghost")
    assert list(follow_events("ghost")) == []  # nothing logged, nothing running: ends at once


def test_the_cli_runs_its_job_attached_and_records_it_too(tiny_hf: Path, tmp_path: Path) -> None:
    cli = subprocess.run([sys.executable, "-m", "core", "finetune", str(tiny_hf), "--data", str(_data(tmp_path)),
                          "--out", "from-cli", "--max-steps", "3", "--seq-len", "64", "--batch", "1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=240)
    assert cli.returncode == 0, cli.stderr
    assert "Adapter 'from-cli' saved" in cli.stdout
    run = get_run("from-cli")
    assert run is not None and run.state == "finished" and run.step == 3 and run.spec["max_steps"] == 3
    assert [e["event"] for e in read_events("from-cli")][-2:] == ["done", "job_did_end"]
