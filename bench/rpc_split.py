"""The cost of splitting a model across machines (llama.cpp's RPC backend), measured on loopback, in one run.

Two `hearth rpc-worker` processes on 127.0.0.1, and the starter model loaded four ways: on this process
alone (as Hearth loads it: repacked CPU weights), on this process alone without repacking (what a split
load computes with, core.engine.ops.rpc_split), split across this process and one worker, and across this
process and two workers (equal shares). Each way answers the same prompt (fresh cache) and decodes the same
greedy tokens; the figures are medians over the reps, with ratios against both local loads. On loopback
nothing crosses a wire: what the split adds is the RPC protocol's round trips per token (a worker's
hidden state, and the logits from the last worker, come back with a GET_TENSOR that waits for its
graph; ggml/src/ggml-rpc/ggml-rpc.cpp) and the processes sharing this machine's cores.

    .venv/bin/python -m bench.rpc_split [--reps 3] [--tokens 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import RIVER_PROMPT, ROOT, median, starter_model_path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_worker(folder: Path, threads: int) -> tuple[subprocess.Popen[bytes], str]:
    from core.engine.rpc import tcp_check

    port = _free_port()
    log = open(folder / f"worker-{port}.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen([sys.executable, "-m", "core", "rpc-worker", "--port", str(port), "--threads",
                                str(threads)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"127.0.0.1:{port}"
    while tcp_check(endpoint, 1.0):
        try:
            process.wait(0.1)
        except subprocess.TimeoutExpired:
            continue
        raise SystemExit(f"the worker did not start: {(folder / f'worker-{port}.log').read_text()}")
    return process, endpoint


def _measure(engine: object, tokens: int) -> tuple[float, float]:
    """(prompt tokens/s, decode tokens/s) of one answer from an empty cache."""
    from core.engine import SamplingParams

    engine.complete("Clear the cache.", SamplingParams(max_tokens=1))  # type: ignore[attr-defined]
    done = engine.complete(RIVER_PROMPT, SamplingParams(temperature=0.0, ignore_eos=True,  # type: ignore[attr-defined]
                                                  max_tokens=tokens))
    # The engine waits for the workers' share of the prompt before timing it (llama_synchronize: an RPC
    # GRAPH_COMPUTE expects no answer, so llama_decode returns before they finish).
    return done.stats.prompt_tokens_per_second, done.stats.tokens_per_second


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads of this process and of each worker (default 1: on a busy 2-core machine, "
                        "ggml's spinning thread pools make 2-thread figures swing tenfold)")
    args = parser.parse_args()
    os.environ.setdefault("HEARTH_HOME", tempfile.mkdtemp(prefix="hearth-bench-rpc-"))
    from core.engine import Engine, LoadOptions
    threads = max(1, args.threads)
    folder = Path(tempfile.mkdtemp(prefix="hearth-bench-rpc-logs-"))
    started = [_start_worker(folder, threads) for _ in range(2)]
    one, two = started[0][1], started[1][1]
    model = starter_model_path()
    ways = {
        "local": LoadOptions(n_ctx=1024, n_threads=threads),
        "local, no repack": LoadOptions(n_ctx=1024, n_threads=threads, cpu_repack=False),
        "1 worker": LoadOptions(n_ctx=1024, n_threads=threads, rpc_workers=[one], tensor_split=[1, 1]),
        "2 workers": LoadOptions(n_ctx=1024, n_threads=threads, rpc_workers=[one, two], tensor_split=[1, 1, 1]),
    }
    prompt: dict[str, list[float]] = {name: [] for name in ways}
    decode: dict[str, list[float]] = {name: [] for name in ways}
    splits: dict[str, str] = {}
    try:
        with Engine() as engine:
            for _rep in range(args.reps):
                for name, options in ways.items():  # in turn, so a busy spell of the machine hits every way
                    status = engine.load(model, options)
                    splits[name] = ", ".join(f"{place} {n}" for place, n in status.split) or "all here"
                    p, d = _measure(engine, args.tokens)
                    prompt[name].append(p)
                    decode[name].append(d)
    finally:
        for process, _endpoint in started:
            process.kill()
            process.wait()
    print(f"starter model, {args.tokens} greedy tokens after a {RIVER_PROMPT.count(' ') + 1}-word prompt, {threads} "
          f"thread(s) per process, medians of {args.reps}")
    base, plain = median(decode["local"]), median(decode["local, no repack"])
    pbase, pplain = median(prompt["local"]), median(prompt["local, no repack"])
    print(f"{'way':18} {'prompt t/s':>11} {'decode t/s':>11} {'decode vs local':>16} {'vs no-repack':>13}  layers")
    for name in ways:
        p, d = median(prompt[name]), median(decode[name])
        print(f"{name:18} {p:11.1f} {d:11.1f} {d / base:15.2f}x {d / plain:12.2f}x  {splits[name]}")
    print("prompt ratios vs local: " + ", ".join(
        f"{n} {median(prompt[n]) / pbase:.2f}x" for n in ways if n != "local")
        + "; vs no-repack: " + ", ".join(f"{n} {median(prompt[n]) / pplain:.2f}x" for n in ("1 worker", "2 workers")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
