"""Other machines (core.workers, ``hearth workers``): the registry in the settings file, the load options every
chat load gets, the CLI against a real ``hearth rpc-worker`` on 127.0.0.1, and fit verdicts that count what a
real worker reports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from core.engine.params import LoadOptions
from core.engine.rpc import WorkerDevice, WorkerInfo
from core.errors import NotFoundError, WorkerError
from core.fit import assess, recommend
from core.library import Library, load_options_for
from core.paths import get_paths
from core.settings import Settings, load_settings, save_settings
from core.workers import (
    WorkerEntry,
    add_worker,
    describe_split,
    enabled_workers,
    find_worker,
    fits_here,
    list_workers,
    probe_enabled,
    remove_worker,
    set_enabled,
    with_workers,
)
from tests.core.test_fit_recommend import LLAMA8B_QUANTS, LLAMA_8B, machine

ROOT = Path(__file__).resolve().parents[2]
GB = 10**9
START = 120  # seconds a worker may take to listen on a busy machine (a bound, not a measurement)


def hearth(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def worker() -> Iterator[str]:
    """A real ``hearth rpc-worker`` on 127.0.0.1 (llama.cpp's RPC server, this machine's CPU)."""
    import time

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "core", "rpc-worker", "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + START
        while not _listening(port):
            if proc.poll() is not None:
                raise AssertionError(f"hearth rpc-worker exited: {proc.stdout.read() if proc.stdout else ''}")
            if time.monotonic() > deadline:
                raise AssertionError("hearth rpc-worker did not listen")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


# -- the registry -------------------------------------------------------------------------------------
def test_the_registry_round_trips_through_the_settings_file() -> None:
    settings = Settings(workers=[WorkerEntry("192.168.1.20:50052", "studio-pc"),
                                 WorkerEntry("10.0.0.7:6000", "", enabled=False)])
    save_settings(settings)
    again = load_settings()
    assert again.workers == settings.workers
    assert Settings.from_dict(json.loads(json.dumps(settings.to_dict()))).workers == settings.workers


def test_damaged_worker_entries_are_dropped_and_the_rest_kept() -> None:
    path = get_paths().settings_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"theme": "dark", "workers": [
        7, "host:1", {"name": "no address"}, {"endpoint": 5}, {"endpoint": "bad host:x"},
        {"endpoint": "10.0.0.2:99999"},
        {"endpoint": "10.0.0.2", "name": " lab ", "enabled": "yes"},
        {"endpoint": "10.0.0.2:50052", "name": "again"},  # the same address once more
        {"endpoint": "[::1]:7000", "enabled": False},
    ]}), encoding="utf-8")
    settings = load_settings()
    assert settings.theme == "dark"
    assert settings.workers == [WorkerEntry("10.0.0.2:50052", "lab", True), WorkerEntry("[::1]:7000", "", False)]
    path.write_text(json.dumps({"workers": {"not": "a list"}}), encoding="utf-8")
    assert load_settings().workers == []


def test_add_remove_enable_and_the_load_options_every_chat_load_gets(
    starter_in_library: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_worker("10.0.0.5", "studio-pc", check=False)
    add_worker("10.0.0.6:6000", check=False)
    assert [(w.endpoint, w.label) for w in list_workers()] == [("10.0.0.5:50052", "studio-pc"),
                                                              ("10.0.0.6:6000", "10.0.0.6:6000")]
    with pytest.raises(WorkerError, match="taken"):
        add_worker("10.0.0.9", "studio-pc", check=False)
    with pytest.raises(WorkerError):
        add_worker("not a host:port:at all", check=False)
    entry = Library().get(str(starter_in_library))
    # By default a model that fits in this computer's free memory (the starter does) loads here alone.
    assert load_settings().workers_use == "needed" and fits_here(entry.path, LoadOptions(n_ctx=2048))
    assert load_options_for(entry, LoadOptions(n_ctx=2048)).rpc_workers == []
    # On a computer with less free memory than the model needs (the OS's answer is what cannot be had
    # here), the same load goes across the workers.
    import psutil

    real = psutil.virtual_memory
    monkeypatch.setattr(psutil, "virtual_memory", lambda: real()._replace(available=64 << 20))
    assert load_options_for(entry, LoadOptions(n_ctx=2048)).rpc_workers == ["10.0.0.5:50052", "10.0.0.6:6000"]
    monkeypatch.setattr(psutil, "virtual_memory", real)
    settings = load_settings()
    settings.workers_use = "always"
    save_settings(settings)
    options = load_options_for(entry, LoadOptions(n_ctx=2048))
    assert options.rpc_workers == ["10.0.0.5:50052", "10.0.0.6:6000"] and options.n_ctx == 2048

    set_enabled("10.0.0.6:6000", False)
    assert [w.endpoint for w in enabled_workers()] == ["10.0.0.5:50052"]
    assert load_options_for(entry, LoadOptions()).rpc_workers == ["10.0.0.5:50052"]
    # Options that name their workers keep them; HEARTH_WORKERS=off loads here alone.
    assert with_workers(LoadOptions(rpc_workers=["127.0.0.1:1"])).rpc_workers == ["127.0.0.1:1"]
    monkeypatch.setenv("HEARTH_WORKERS", "off")
    assert load_options_for(entry, LoadOptions()).rpc_workers == []
    monkeypatch.delenv("HEARTH_WORKERS")

    assert find_worker("studio-pc").endpoint == "10.0.0.5:50052"
    assert remove_worker("studio-pc").endpoint == "10.0.0.5:50052"
    with pytest.raises(NotFoundError, match=r"10\.0\.0\.6:6000"):
        remove_worker("studio-pc")
    assert load_options_for(entry, LoadOptions()).rpc_workers == []  # the one left is off

    # The window's own settings object is changed in place and not written (the window saves it).
    mine = Settings()
    add_worker("10.0.0.8", "lab", check=False, settings=mine)
    assert [w.endpoint for w in mine.workers] == ["10.0.0.8:50052"]
    assert [w.endpoint for w in list_workers()] == ["10.0.0.6:6000"]


def test_the_split_in_words_names_the_workers() -> None:
    split = [("this computer", 10), ("192.168.1.20:50052", 8), ("10.0.0.6:6000", 1)]
    assert describe_split(split, {"192.168.1.20:50052": "studio-pc"}) == (
        "split: this computer 10 layers + studio-pc 8 layers + 10.0.0.6:6000 1 layer")
    assert describe_split([]) == ""


# -- the command line against a real worker ----------------------------------------------------------
def test_cli_adds_lists_and_removes_a_real_worker(worker: str) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = hearth("workers")
    assert result.returncode == 0 and "hearth rpc-worker" in result.stdout and "SSH" in result.stdout

    result = hearth("workers", "add", worker, "--name", "studio-pc")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Added studio-pc ({worker}):") and "free of" in result.stdout

    result = hearth("workers", "add", dead)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "does not answer" in result.stderr and "Traceback" not in result.stderr
    assert hearth("workers", "add", dead, "--no-check", "--name", "gone").returncode == 0

    result = hearth("workers")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    mine = next(line for line in lines if line.startswith("studio-pc"))
    assert worker in mine and " yes " in mine and mine.rstrip().endswith("on")
    gone = next(line for line in lines if line.startswith("gone"))
    assert dead in gone and " no " in gone and "gone: Nothing listens" in result.stdout

    data = json.loads(hearth("workers", "--json").stdout)
    rows = {w["name"]: w for w in data["workers"]}
    assert rows["studio-pc"]["answers"] is True and rows["studio-pc"]["endpoint"] == worker
    assert rows["studio-pc"]["devices"] and 0 < rows["studio-pc"]["free_bytes"] <= rows["studio-pc"]["total_bytes"]
    assert rows["gone"]["answers"] is False and rows["gone"]["error"]

    assert "Models too large for this computer load split" in result.stdout
    result = hearth("workers", "use", "always")
    assert result.returncode == 0 and result.stdout.startswith("Every model loads split")
    assert load_settings().workers_use == "always"
    assert hearth("workers", "use", "sometimes").returncode == 2

    result = hearth("workers", "disable", "gone")
    assert result.returncode == 0 and "off" in result.stdout
    assert [w.endpoint for w in enabled_workers()] == [worker]
    result = hearth("workers", "remove", "nobody")
    assert result.returncode == 2 and "No worker" in result.stderr
    assert hearth("workers", "remove", "gone").returncode == 0
    assert hearth("workers", "remove", worker).returncode == 0
    assert list_workers() == []


def test_fit_counts_what_a_real_worker_reports(worker: str, starter_model: Path) -> None:
    from core.fit import shape_for

    add_worker(worker, "studio-pc")
    probed = probe_enabled(max_age=0)
    assert [w.endpoint for w in probed.answering] == [worker] and probed.left_out == []
    reported = probed.answering[0].free_bytes
    shape, _label = shape_for(str(starter_model))
    # This machine described with too little free RAM for the model alone; the worker's free memory is real.
    here = machine(400 * 10**6)  # room for the embeddings and vocabulary, not for the layers
    alone = assess(shape, here, n_ctx=4096)
    assert alone.kind == "too_large"
    verdict = assess(shape, here, n_ctx=4096, workers=probed.answering, worker_names=probed.names)
    assert verdict.kind == "across_machines" and verdict.fits
    assert verdict.reason.startswith(f"Fits across 2 machines (this one 0.4 GB + studio-pc {reported / GB:.1f} GB)")

    # `hearth fit` asks the enabled workers; one that does not answer is left out and said so.
    add_worker(f"127.0.0.1:{free_port()}", "gone", check=False)
    result = hearth("fit", str(starter_model), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [w["endpoint"] for w in data["workers"]] == [worker]
    assert len(data["workers_left_out"]) == 1 and "gone" in data["workers_left_out"][0]
    result = hearth("fit", str(starter_model))
    assert result.returncode == 0 and "note: gone (" in result.stdout and "is left out: it does not answer" in result.stdout


# -- verdicts on described machines (WorkerInfo values) ------------------------------------------------
def _worker(endpoint: str, free: int) -> WorkerInfo:
    return WorkerInfo(endpoint, True, [WorkerDevice("RPC0", endpoint, free, free + GB)])


def test_a_model_too_large_here_fits_across_machines_with_enough_free_memory() -> None:
    here = machine(3 * GB)
    assert assess(LLAMA_8B, here).kind == "too_large"
    studio = _worker("192.168.1.20:50052", 16 * GB)
    verdict = assess(LLAMA_8B, here, workers=[studio], worker_names={"192.168.1.20:50052": "studio-pc"})
    assert verdict.kind == "across_machines" and verdict.gpu_layers == 0
    assert verdict.reason.startswith("Fits across 2 machines (this one 3.0 GB + studio-pc 16.0 GB)")
    # Too little on the worker, or a worker that did not answer: still too large, and said why.
    small = assess(LLAMA_8B, here, workers=[_worker("10.0.0.2:50052", GB // 2)])
    assert small.kind == "too_large" and "other machines' free memory is not enough" in small.reason
    down = replace(studio, ok=False, devices=[], error="connection refused")
    assert assess(LLAMA_8B, here, workers=[down]).kind == "too_large"
    # A model that fits here alone is judged for here alone: a worker only helps when it must.
    assert assess(LLAMA_8B, machine(32 * GB), workers=[studio]).kind == "cpu"


def test_three_machines_and_the_recommended_quant_counts_the_workers() -> None:
    here = machine(2 * GB)
    workers = [_worker("10.0.0.2:50052", 4 * GB), _worker("10.0.0.3:50052", 4 * GB)]
    verdict = assess(LLAMA_8B, here, workers=workers)
    assert verdict.kind == "across_machines" and verdict.reason.startswith("Fits across 3 machines (this one")
    alone = recommend(LLAMA8B_QUANTS, LLAMA_8B, hardware=here)
    assert alone.quant is None
    rec = recommend(LLAMA8B_QUANTS, LLAMA_8B, hardware=here, workers=workers)
    assert rec.quant == "Q4_K_M" and rec.verdicts["Q4_K_M"].kind == "across_machines"
    assert "split across this computer and your other machines" in rec.reason
    assert rec.verdicts["F16"].kind == "too_large"
