"""The same fine-tune on two processes (torchrun, gloo on the CPU) as on one, on a tiny random llama.

Real processes throughout: ``core.jobs`` starts torchrun, torchrun starts two ``core.finetune.rank``
processes that train together over gloo on 127.0.0.1. What is checked: the loss curve does not depend on
the number of processes, the adapter exports to a GGUF LoRA that llama.cpp runs with the effect torch
computes, a job killed after a checkpoint resumes from it (and its orphaned ranks end themselves), and a
rank killed mid-run ends the job with one sentence naming it and its log.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from core.errors import TrainingError
from core.finetune.adapters import list_adapters, partial_folder
from core.finetune.distributed import Dist
from core.finetune.spec import FinetuneSpec
from tests.fixtures.tiny_hf import write_tiny_chat_llama, write_tiny_hf

# Each rank takes a contiguous share of the step's rows and cuts it into micro-batches of --batch rows, so
# when the ranks' shares are whole micro-batches (here) both runs compute the same micro-batches and only sum
# them in another order, on 1 thread per rank instead of 2 threads, under the bf16 autocast this CPU gets.
# Measured: equal to the 5 decimals the events carry at most steps, at worst 0.14% apart (step 7 of 8);
# hence rtol 5e-3 on the losses. (Shares that cut micro-batches differently are the same maths with other
# bf16 rounding: about 1-2% apart after a few steps of this tiny random model, which learns fast.) The trained
# adapters are compared as well (relative L2 distance, ADAPTER_RTOL): a gradient that was not summed over
# the ranks, or a loss normalised per rank, moves them far more.
ROOT = Path(__file__).resolve().parents[2]
RTOL = 5e-3
ATOL = 1e-4
ADAPTER_RTOL = 2e-2


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(GGUF file, Hugging Face folder) of the same tiny random chat llama."""
    folder = tmp_path_factory.mktemp("tiny-ddp")
    gguf = write_tiny_chat_llama(folder / "tiny-chat.gguf")
    return gguf, write_tiny_hf(folder / "hf", gguf)


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return path


def _chat(path: Path, n: int = 24) -> Path:
    colors = ["blue", "red"]
    return _jsonl(path, [{"messages": [{"role": "user", "content": f"what color is the {'sky' if i % 2 else 'dog'}"},
                                       {"role": "assistant", "content": colors[i % 2]}]} for i in range(n)])


def _job(spec: dict[str, Any], log: Path) -> tuple[int, list[dict[str, Any]]]:
    from core.jobs import JobProcess

    job = JobProcess("finetune", spec, log_path=log)
    events = list(job.events())
    return job.wait(timeout=120), events


def _why(events: list[dict[str, Any]], log: Path) -> str:
    """A failed job's error events (a bug's traceback rides in ``detail``), then its log's tail."""
    errors = [f"{e.get('kind')}: {e.get('message')}\n{e.get('detail', '')}" for e in events if e["event"] == "error"]
    return "\n".join(errors) + "\n--- log ---\n" + log.read_text(errors="replace")[-3000:]


def _losses(events: list[dict[str, Any]]) -> list[float]:
    return [float(e["loss"]) for e in events if e["event"] == "step"]


def _rank_processes(job_pid: int) -> list[Any]:
    """The job's torchrun and rank processes (``core.finetune.rank`` in their command line)."""
    import psutil

    return [p for p in psutil.Process(job_pid).children(recursive=True)
            if any("core.finetune.rank" in part for part in p.cmdline())]


def _rank_env(proc: Any) -> str | None:
    import psutil

    try:
        return proc.environ().get("RANK")  # type: ignore[no-any-return]
    except psutil.Error:
        return None


# -- without training --------------------------------------------------------------------------------------
def test_the_number_of_processes_is_checked_in_words() -> None:
    with pytest.raises(TrainingError, match="at least 1"):
        FinetuneSpec(base="b", name="n", data="d.jsonl", nproc=0).check()
    with pytest.raises(TrainingError, match="CPU cores: use --nproc"):
        FinetuneSpec(base="b", name="n", data="d.jsonl", nproc=(os.cpu_count() or 1) + 1, device="cpu").check()
    with pytest.raises(TrainingError, match="MPS"):
        FinetuneSpec(base="b", name="n", data="d.jsonl", nproc=2, device="mps").check()
    FinetuneSpec(base="b", name="n", data="d.jsonl", nproc=2, device="cpu").check()


def test_the_job_refuses_more_processes_than_this_machine_can_run() -> None:
    import torch

    from core.finetune.torchrun import check_capacity

    if torch.cuda.is_available():
        with pytest.raises(TrainingError, match="GPUs \\(one per process\\)"):
            check_capacity(torch.cuda.device_count() + 1, "auto")
    else:
        with pytest.raises(TrainingError, match="CPU cores: use --nproc"):
            check_capacity((os.cpu_count() or 1) + 1, "auto")
        with pytest.raises(TrainingError, match="No CUDA GPU"):
            check_capacity(2, "cuda")
    check_capacity(1, "cpu")


def test_each_rank_takes_a_contiguous_share_and_alone_everything() -> None:
    rows = list(range(7))
    shares = [Dist(rank=r, world=3).share(rows) for r in range(3)]
    assert shares == [[0, 1, 2], [3, 4], [5, 6]]
    assert [Dist(rank=r, world=4).share([9, 8]) for r in range(4)] == [[9], [8], [], []]
    assert Dist().share(rows) == rows and not Dist().enabled and Dist().main


def test_a_launchers_environment_names_the_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(key, value)
    dist = Dist.from_env()
    assert (dist.rank, dist.world, dist.local_rank, dist.local_world, dist.main) == (3, 4, 1, 2, False)
    assert dist.describe() == "process 4 of 4 (rank 3)"
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not Dist.from_env().enabled


def test_the_cli_takes_nproc_and_needs_a_base_without_a_spec_file(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    from core.cli import cmd_finetune

    parser = argparse.ArgumentParser()
    cmd_finetune.register(parser.add_subparsers())
    _gguf, hf = tiny_pair
    data = _chat(tmp_path / "chat.jsonl", 4)
    args = parser.parse_args(["finetune", str(hf), "--data", str(data), "--nproc", "2", "--device", "cpu"])
    assert cmd_finetune.build_spec(args)["nproc"] == 2
    args = parser.parse_args(["finetune", "--data", str(data)])
    with pytest.raises(TrainingError, match="base model to tune"):
        cmd_finetune.build_spec(args)


def test_the_window_shows_the_number_of_processes() -> None:
    from core.finetune.run_state import RunState

    state = RunState("x")
    state.apply({"event": "settings", "total_steps": 4, "processes": 2})
    assert state.processes == 2
    assert RunState("y").processes == 1


# -- training for real -------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(("objective", "batch", "grad_accum"), [("sft", 2, 2), ("sft", 1, 3), ("dpo", 2, 2)])
def test_two_processes_give_the_loss_curve_of_one(objective: str, batch: int, grad_accum: int,
                                                  tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    _gguf, hf = tiny_pair
    if objective == "dpo":
        data = _jsonl(tmp_path / "pref.jsonl", [{"prompt": f"what color is the sky {i}", "chosen": "blue",
                                                 "rejected": "red dog"} for i in range(16)])
        extra: dict[str, Any] = {"dpo_beta": 0.5, "lr": 1e-2, "seq_len": 128}  # the pair shares one row
    else:
        data, extra = _chat(tmp_path / "chat.jsonl"), {"lr": 2e-3}
    # batch x grad_accum rows per update, shared out between the ranks (1 x 3: two rows for rank 0, one for
    # rank 1); dropout off, as each process draws its own masks.
    spec = {"base": str(hf), "data": str(data), "max_steps": 8, "seq_len": 64, "batch": batch, "grad_accum": grad_accum,
            "save_every": 0, "samples": 0, "device": "cpu", "method_options": {"dropout": 0.0}, **extra}
    code_one, one = _job({**spec, "name": f"one-{objective}"}, tmp_path / "one.log")
    code_two, two = _job({**spec, "name": f"two-{objective}", "nproc": 2}, tmp_path / "two.log")
    assert code_one == 0, _why(one, tmp_path / "one.log")
    assert code_two == 0, _why(two, tmp_path / "two.log")
    assert len(_losses(one)) == len(_losses(two)) == 8
    assert _losses(two) == pytest.approx(_losses(one), rel=RTOL, abs=ATOL)
    assert _losses(two)[-1] < _losses(two)[0]  # it learned something, on both
    settings = [next(e for e in run if e["event"] == "settings") for run in (one, two)]
    assert [s["processes"] for s in settings] == [1, 2]
    assert settings[0]["total_steps"] == settings[1]["total_steps"]
    # Rank 0 alone spoke: one "done", one before/after measurement, no event twice.
    assert sum(e["event"] == "done" for e in two) == 1
    assert sum(e["event"] == "settings" for e in two) == 1
    manifests = {a.name: a.manifest for a in list_adapters()}
    assert manifests[f"two-{objective}"]["hyperparameters"]["processes"] == 2
    assert manifests[f"one-{objective}"]["hyperparameters"]["processes"] == 1
    assert _adapter_distance(f"one-{objective}", f"two-{objective}") < ADAPTER_RTOL


def _adapter_distance(a: str, b: str) -> float:
    """Relative L2 distance between two saved adapters' weights (all tensors together)."""
    import torch
    from safetensors.torch import load_file

    folders = {x.name: Path(x.path) for x in list_adapters()}
    one, two = (load_file(str(folders[n] / "adapter_model.safetensors")) for n in (a, b))
    assert one.keys() == two.keys() and one
    diff = sum(float(torch.sum((one[k].float() - two[k].float()) ** 2)) for k in one)
    norm = sum(float(torch.sum(one[k].float() ** 2)) for k in one)
    return (diff / max(norm, 1e-30)) ** 0.5


@pytest.mark.slow
def test_the_adapter_of_two_processes_runs_in_llama_cpp(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    from peft import PeftModel

    from core.gguf_export.lora import export_lora_gguf
    from tests.fixtures.tiny_hf_export import cosine, llama_logits, load_hf, torch_logits

    gguf, hf = tiny_pair
    code, events = _job({"base": str(hf), "name": "ddp-colors", "data": str(_chat(tmp_path / "chat.jsonl")),
                         "max_steps": 12, "lr": 1e-2, "seq_len": 64, "batch": 2, "grad_accum": 2, "save_every": 0,
                         "samples": 0, "device": "cpu", "nproc": 2, "method_options": {"rank": 4, "alpha": 8}},
                        tmp_path / "job.log")
    assert code == 0, _why(events, tmp_path / "job.log")
    folder = Path(next(e for e in events if e["event"] == "done")["path"])
    exported = export_lora_gguf(folder, tmp_path / "ddp-colors.gguf", base=gguf)
    tokens = [1, *range(262, 280)]
    base_t = torch_logits(load_hf(hf), tokens)
    adapted_t = torch_logits(PeftModel.from_pretrained(load_hf(hf), str(folder)), tokens)
    base_c = llama_logits(gguf, tokens)
    adapted_c = llama_logits(gguf, tokens, lora=exported.path)
    effect_t, effect_c = adapted_t - base_t, adapted_c - base_c
    assert abs(effect_c).max() > 1e-3  # the adapter changes what llama.cpp computes...
    assert cosine(effect_c, effect_t) >= 0.97  # ...the way torch says it should (as tests/core/test_export_lora.py)


@pytest.mark.slow
def test_a_killed_job_of_two_processes_resumes_from_its_checkpoint(tiny_pair: tuple[Path, Path],
                                                                   tmp_path: Path) -> None:
    import psutil
    import torch

    from core.jobs import JobProcess

    _gguf, hf = tiny_pair
    spec = {"base": str(hf), "name": "ddp-resume", "data": str(_chat(tmp_path / "chat.jsonl")), "max_steps": 14,
            "lr": 5e-3, "seq_len": 64, "batch": 1, "grad_accum": 2, "save_every": 4, "save_minutes": 0, "samples": 0,
            "device": "cpu",
            "nproc": 2}
    job = JobProcess("finetune", spec, log_path=tmp_path / "job.log")
    checkpoints: list[int] = []
    ranks: list[Any] = []
    rank_names: list[str] = []
    for event in job.events():
        if event["event"] == "checkpoint":
            checkpoints.append(event["step"])
        if event["event"] == "step" and event["step"] >= 6 and checkpoints:
            ranks = _rank_processes(job.pid)
            rank_names = sorted(filter(None, map(_rank_env, ranks)))  # torchrun has none
            os.kill(job.pid, signal.SIGKILL)  # a crash of the job process: no chance to save anything more
            break
    assert job.wait(timeout=60) == -signal.SIGKILL
    assert checkpoints == [4] and rank_names == ["0", "1"]
    # The ranks see their job gone and end themselves, and torchrun with them (this only waits; a process
    # left running fails the test).
    _gone, alive = psutil.wait_procs(ranks, timeout=60)
    assert not alive
    assert (partial_folder("ddp-resume") / "checkpoint" / "state.pt").exists()

    # Rank 0 may have saved one more checkpoint (step 8) in the second before it noticed: either is a resume.
    saved = int(torch.load(partial_folder("ddp-resume") / "checkpoint" / "state.pt", weights_only=False)["step"])
    assert saved in (4, 8)

    code, events = _job({**spec, "resume": True}, tmp_path / "job.log")
    assert code == 0, _why(events, tmp_path / "job.log")
    assert next(e for e in events if e["event"] == "resumed")["step"] == saved
    steps = [e["step"] for e in events if e["event"] == "step"]
    assert steps == list(range(saved + 1, 15))
    assert [a.name for a in list_adapters()] == ["ddp-resume"]
    assert list_adapters()[0].manifest["hyperparameters"]["processes"] == 2
    assert not partial_folder("ddp-resume").exists()


@pytest.mark.slow
def test_cancel_stops_every_rank_at_one_step_with_a_checkpoint(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    import torch

    from core.jobs import JobProcess

    _gguf, hf = tiny_pair
    job = JobProcess("finetune", {"base": str(hf), "name": "ddp-stopped", "data": str(_chat(tmp_path / "chat.jsonl")),
                                  "max_steps": 500, "seq_len": 64, "batch": 1, "grad_accum": 2, "save_every": 0,
                                  "save_minutes": 0,
                                  "samples": 0, "device": "cpu", "nproc": 2}, log_path=tmp_path / "job.log")
    events = []
    for event in job.events():
        events.append(event)
        if event["event"] == "step" and event["step"] == 3:
            job.cancel()  # what the window's Cancel and a terminal's Ctrl-C do: the job passes it to rank 0
    assert job.wait(timeout=120) == 130
    cancelled = next(e for e in events if e["event"] == "cancelled")
    assert "--resume" in cancelled["message"]
    checkpoint = next(e for e in events if e["event"] == "checkpoint")["step"]
    assert checkpoint == cancelled["step"] == max(e["step"] for e in events if e["event"] == "step")
    saved = torch.load(partial_folder("ddp-stopped") / "checkpoint" / "state.pt", weights_only=False)
    assert saved["step"] == checkpoint


@pytest.mark.slow
def test_a_rank_that_dies_ends_the_job_with_a_sentence_naming_it(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    from core.jobs import JobProcess

    _gguf, hf = tiny_pair
    job = JobProcess("finetune", {"base": str(hf), "name": "ddp-lost", "data": str(_chat(tmp_path / "chat.jsonl")),
                                  "max_steps": 400, "seq_len": 64, "batch": 1, "save_every": 0, "samples": 0,
                                  "device": "cpu", "nproc": 2}, log_path=tmp_path / "job.log")
    events = []
    for event in job.events():
        events.append(event)
        if event["event"] == "step" and event["step"] == 3:
            victim = next(p for p in _rank_processes(job.pid) if _rank_env(p) == "1")
            victim.kill()  # as the out-of-memory killer would
    assert job.wait(timeout=120) == 1
    error = next(e for e in events if e["event"] == "error")
    assert "training process 2 of 2 (rank 1" in error["message"]
    assert "finetune-ddp-lost.rank1.log" in error["message"] and "--resume --out ddp-lost" in error["message"]
    assert not any(e["event"] == "done" for e in events)


def _hearth(*args: str, launcher: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, *(launcher or []), "-m", "core", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=os.environ.copy())


@pytest.mark.slow
def test_an_exported_launch_trains_with_from_spec_alone_and_under_torchrun(tiny_pair: tuple[Path, Path],
                                                                           tmp_path: Path) -> None:
    _gguf, hf = tiny_pair
    data = _chat(tmp_path / "chat.jsonl", 12)
    folder = tmp_path / "launch"
    exported = _hearth("finetune", str(hf), "--data", str(data), "--max-steps", "3", "--seq-len", "64", "--batch", "1",
                       "--grad-accum", "2", "--device", "cpu", "--out", "exported", "--copy-base",
                       "--export-launch", str(folder))
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert "bash launch.sh" in exported.stdout and (folder / "spec.json").exists()
    assert not list_adapters()  # --export-launch does not train

    # On the box, without a launcher: Hearth starts torchrun itself (--nproc 2).
    alone = _hearth("finetune", "--from-spec", str(folder / "spec.json"), "--nproc", "2", "--out", "from-spec")
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert "Adapter 'from-spec' saved" in alone.stdout and "2 processes" in alone.stderr

    # Under a launcher (as `accelerate launch` / torchrun run it): each process is one rank, rank 0 speaks.
    launched = _hearth("finetune", "--from-spec", str(folder), "--out", "launched",
                       launcher=["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"])
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert launched.stdout.count("Adapter 'launched' saved") == 1
    manifests = {a.name: a.manifest for a in list_adapters()}
    assert manifests["launched"]["hyperparameters"]["processes"] == 2
    assert manifests["from-spec"]["hyperparameters"]["processes"] == 2
