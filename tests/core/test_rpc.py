"""Other machines for inference: real `hearth rpc-worker` processes on loopback, llama.cpp's RPC backend,
the starter model split across them and this process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.engine import Engine, LoadOptions, SamplingParams, TextChunk
from core.engine.ops.rpc_split import THIS_MACHINE, Place, assign_layers, plan_split
from core.engine.rpc import DEFAULT_PORT, parse_endpoint, probe, probe_many, tcp_check
from core.errors import WorkerError, WorkerLostError

ROOT = Path(__file__).resolve().parents[2]
GREEDY = SamplingParams(temperature=0.0, ignore_eos=True, max_tokens=64, logprobs=True)
PROMPT = "The three most important rivers of Europe are"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RpcWorker:
    """A `hearth rpc-worker` child process; its output goes to files (no pipe to fill up)."""

    def __init__(self, folder: Path, port: int, host: str = "127.0.0.1") -> None:
        self.port = port
        self.endpoint = f"127.0.0.1:{port}"
        self.out, self.err = folder / f"worker-{port}.out", folder / f"worker-{port}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "core", "rpc-worker", "--host", host, "--port", str(port), "--threads", "1"],
                cwd=ROOT, stdout=out, stderr=err, env={**os.environ, "GGML_NO_BACKTRACE": "1"},
            )

    def wait_listening(self) -> None:
        """Until something accepts connections on the port (the process exiting fails the test)."""
        while tcp_check(self.endpoint, 1.0):
            try:
                self.process.wait(0.1)  # a pause that also notices the process ending
            except subprocess.TimeoutExpired:
                continue
            raise AssertionError(f"the worker ended: {self.err.read_text()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[RpcWorker]]:
    started = [RpcWorker(tmp_path, free_port()), RpcWorker(tmp_path, free_port())]
    try:
        for worker in started:
            worker.wait_listening()
        yield started
    finally:
        for worker in started:
            worker.kill()


def tokens_of(engine: Engine) -> list[str]:
    completion = engine.complete(PROMPT, GREEDY)
    assert completion.logprobs is not None
    return [entry["token"] for entry in completion.logprobs]


# -- addresses and layer plans (no processes) ------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("studio-pc", f"studio-pc:{DEFAULT_PORT}"),
    (" 192.168.1.20:50061 ", "192.168.1.20:50061"),
    ("localhost:1", "localhost:1"),
    ("[::1]:5000", "[::1]:5000"),
    ("::1", f"[::1]:{DEFAULT_PORT}"),
    ("[fe80::1]", f"[fe80::1]:{DEFAULT_PORT}"),
])
def test_parse_endpoint(text: str, expected: str) -> None:
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "a b:1", "host:0", "host:65536", "host:port", "[::1", "[::1]x",
                                  "http://host:1", "-bad:1", "host:"])
def test_parse_endpoint_refuses_malformed(text: str) -> None:
    with pytest.raises(WorkerError) as caught:
        parse_endpoint(text)
    message = str(caught.value)
    assert message.startswith(f"'{text}' is not a worker address") and message.endswith(".") and "\n" not in message


def test_layers_are_assigned_as_llama_cpp_does() -> None:
    # 18 layers, 12 remote + the output layer over two equal devices: llama.cpp's cut at 0.5 of 13.
    assert assign_layers(18, 13, [1.0, 1.0]) == (6, [7, 5])
    assert assign_layers(18, 0, [1.0]) == (18, [0])
    assert assign_layers(18, 19, [1.0, 0.0, 3.0]) == (0, [5, 0, 13])
    plan = plan_split(18, Place(THIS_MACHINE, [], [8]), [Place("a:1", [11], [8]), Place("b:2", [22], [16])])
    assert plan.devices == [11, 22] and plan.n_gpu_layers == 18 - 4 + 1
    assert plan.split == [(THIS_MACHINE, 4), ("a:1", 5), ("b:2", 9)]
    assert sum(n for _, n in plan.split) == 18
    # a worker asked for gets a layer even when its share rounds to none
    tiny = plan_split(18, Place(THIS_MACHINE, [], [1]), [Place("a:1", [11], [1])], [1000.0, 1.0])
    assert tiny.split == [(THIS_MACHINE, 17), ("a:1", 1)]
    # this machine's GPU takes its share among the devices: everything is offloaded
    gpu = plan_split(10, Place(THIS_MACHINE, [7], [4]), [Place("a:1", [11], [4])])
    assert gpu.devices == [7, 11] and gpu.n_gpu_layers == 11 and sum(n for _, n in gpu.split) == 10


def test_probe_where_nothing_listens() -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    info = probe(endpoint, timeout=2.0)
    assert not info.ok and info.devices == [] and info.free_bytes == 0
    assert info.error.startswith("Nothing listens on " + endpoint) and info.error.endswith(".")
    assert "hearth rpc-worker" in info.error
    assert info.to_dict()["ok"] is False


def test_load_with_a_worker_that_does_not_answer(tiny_model: Path) -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    with Engine() as engine:
        with pytest.raises(WorkerError) as caught:
            engine.load(tiny_model, LoadOptions(n_ctx=256, rpc_workers=[endpoint]))
        assert str(caught.value).startswith(f"Cannot use the worker {endpoint}: Nothing listens")
        assert engine.load(tiny_model, LoadOptions(n_ctx=256)).split == []  # the engine keeps serving


# -- real workers ----------------------------------------------------------------------------------
def test_workers_report_their_device_and_memory(workers: list[RpcWorker]) -> None:
    infos = probe_many([w.endpoint for w in workers])
    assert [i.endpoint for i in infos] == [w.endpoint for w in workers]
    for info in infos:
        assert info.ok, info.error
        assert len(info.devices) == 1 and info.devices[0].name.startswith("RPC")
        assert 0 < info.free_bytes <= info.total_bytes
        assert info.to_dict()["free_bytes"] == info.free_bytes
    printed = workers[0].out.read_text()
    assert f"on 127.0.0.1:{workers[0].port}" in printed and "device: CPU" in printed and "free of" in printed
    assert workers[0].err.read_text().count("Warning") == 0  # loopback: no warning


def test_port_in_use_is_one_line(workers: list[RpcWorker]) -> None:
    done = subprocess.run([sys.executable, "-m", "core", "rpc-worker", "--port", str(workers[0].port)], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("hearth:")]
    assert errors == [f"hearth: error: Port {workers[0].port} on 127.0.0.1 is in use (another `hearth rpc-worker`?): "
                      "pick another with --port."]
    assert "Traceback" not in done.stderr


def test_non_loopback_host_prints_one_warning(tmp_path: Path) -> None:
    worker = RpcWorker(tmp_path, free_port(), host="0.0.0.0")
    try:
        worker.wait_listening()
        warnings = [line for line in worker.err.read_text().splitlines() if "Warning" in line]
        assert len(warnings) == 1
        assert "no authentication or encryption" in warnings[0]
        assert f"ssh -L {worker.port}:127.0.0.1:{worker.port}" in warnings[0] and "trusted network" in warnings[0]
    finally:
        worker.kill()


@pytest.mark.slow
def test_split_across_two_workers_writes_what_a_local_load_writes(
    starter_model: Path, workers: list[RpcWorker]
) -> None:
    first, second = workers
    with Engine() as engine:
        # A split load runs without llama.cpp's repacked CPU weights (the workers cannot repack them).
        local = engine.load(starter_model, LoadOptions(n_ctx=512, cpu_repack=False))
        assert local.split == []
        expected = tokens_of(engine)
        assert len(expected) == 64

        status = engine.load(starter_model, LoadOptions(
            n_ctx=512, rpc_workers=[first.endpoint, second.endpoint], tensor_split=[1.0, 1.0, 1.0]))
        assert [place for place, _ in status.split] == [THIS_MACHINE, first.endpoint, second.endpoint]
        assert all(layers > 0 for _, layers in status.split)
        assert sum(layers for _, layers in status.split) == status.n_layer
        assert tokens_of(engine) == expected

        # llama.cpp's RPC server serves one client at a time: a probe now waits, then says so.
        busy = probe(first.endpoint, timeout=2.0)
        assert not busy.ok and "busy: serving a model" in busy.error

        # One worker killed mid-answer: the answer ends with a sentence naming it.
        chunks = 0
        with pytest.raises(WorkerLostError) as caught:
            for item in engine.stream_chat([{"role": "user", "content": "Tell me about rivers."}],
                                           SamplingParams(temperature=0.0, ignore_eos=True, max_tokens=400)):
                if isinstance(item, TextChunk):
                    chunks += 1
                    if chunks == 2:
                        second.kill()
        assert caught.value.endpoints == [second.endpoint]
        message = str(caught.value)
        assert message.startswith(f"The answer stopped: the other machine {second.endpoint} stopped answering.")
        assert "hearth rpc-worker" in message and "\n" not in message

        # The next request is served, on what is left.
        answer = engine.complete(PROMPT, GREEDY)
        assert answer.stats.completion_tokens == 64
        assert engine.status is not None
        assert [place for place, _ in engine.status.split] == [THIS_MACHINE, first.endpoint]

        # A caller that loads the model again itself (the window, the server) with both workers gets the same.
        again = engine.load(starter_model, LoadOptions(
            n_ctx=512, rpc_workers=[first.endpoint, second.endpoint], tensor_split=[1.0, 1.0, 1.0]))
        assert [place for place, _ in again.split] == [THIS_MACHINE, first.endpoint]
        assert engine.complete(PROMPT, GREEDY).stats.completion_tokens == 64

        # A local load after the split: a fresh engine process, with no worker in ggml's registry.
        assert engine.load(starter_model, LoadOptions(n_ctx=512, cpu_repack=False)).split == []
        assert tokens_of(engine) == expected
