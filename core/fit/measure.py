"""Measure the memory llama.cpp really uses for a model, to check ``estimate_memory`` against.

One child process loads the model once with the engine's settings (``swa_full``, ``n_batch`` =
``n_ubatch`` = 512, flash attention "auto"), then for each context size creates a context, decodes
one full prompt batch (``n_ubatch`` tokens, logits for the last one, as the engine does) and
records the process's resident memory (RSS), then frees the context. Weights are read with
``use_mmap=False`` so that they count as the process's own resident memory, which is what the
estimate calls "memory used" (with mmap the same pages sit in the page cache instead).

llama.cpp's CPU "extra buffer types" (AMX and weight repacking) are turned off: with them, the
bundled build crashes in decode on CPUs that report AMX but cannot use it (seen in VMs), and they
may hold a second copy of a tied output matrix, which the estimate does not model.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.runtime import module_command


@dataclass(frozen=True)
class Measurement:
    n_ctx: int
    rss_bytes: int  # the whole worker process after one full prompt batch
    baseline_bytes: int  # the process before loading the model (interpreter + llama_cpp)
    decode_seconds: float
    # llama.cpp's own log of the buffers it allocated for this context, in bytes
    kv_buffer_bytes: int = 0
    compute_buffer_bytes: int = 0
    output_buffer_bytes: int = 0


def measure_memory(
    path: str | Path, contexts: Sequence[int], *, n_batch: int = 512, timeout: float = 600
) -> list[Measurement]:
    """Resident memory of a worker process running ``path`` at each of ``contexts`` tokens."""
    from core.errors import HearthError

    args = module_command("core.fit.measure", str(path), str(n_batch), *map(str, contexts))
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise HearthError(f"Measuring {Path(path).name} failed (exit {done.returncode}): {tail}")
    return [Measurement(**json.loads(line)) for line in lines]


_BUFFER_RE = re.compile(r"CPU\s+(KV|compute|output) buffer size =\s+([0-9.]+) MiB")


def _logged_buffers(text: str) -> dict[str, int]:
    """Sum llama.cpp's "CPU KV/compute/output buffer size = N MiB" log lines (llama-context.cpp)."""
    sums = {"kv_buffer_bytes": 0, "compute_buffer_bytes": 0, "output_buffer_bytes": 0}
    for kind, mib in _BUFFER_RE.findall(text):
        sums[f"{kind.lower()}_buffer_bytes"] += int(float(mib) * (1 << 20))
    return sums


def _child(path: str, n_batch: int, contexts: list[int]) -> None:  # pragma: no cover - runs in the child
    import time

    import llama_cpp as L
    import psutil

    from core.engine.backends import load_backends
    from core.engine.llama_flags import use_extra_buffers

    process = psutil.Process()
    log: list[str] = []

    def collect(level: int, text: bytes, data: object) -> None:
        log.append(text.decode("utf-8", errors="replace"))

    callback = L.llama_log_callback(collect)  # kept referenced while llama.cpp may call it
    L.llama_log_set(callback, None)
    load_backends()
    baseline = process.memory_info().rss
    mparams = L.llama_model_default_params()
    mparams.n_gpu_layers = 0
    mparams.use_mmap = False
    mparams.use_extra_bufts = use_extra_buffers()  # as the engine loads it
    model = L.llama_model_load_from_file(path.encode(), mparams)
    if not model:
        raise SystemExit(f"llama.cpp could not load {path}")
    vocab = L.llama_model_get_vocab(model)
    n_vocab = int(L.llama_vocab_n_tokens(vocab))
    for n_ctx in contexts:
        cparams = L.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.swa_full = True
        cparams.n_threads = cparams.n_threads_batch = max(1, psutil.cpu_count(logical=False) or 1)
        log.clear()
        ctx = L.llama_init_from_model(model, cparams)
        buffers = _logged_buffers("".join(log))
        if not ctx:
            raise SystemExit(f"llama.cpp could not create a context of {n_ctx} tokens")
        n = min(n_batch, n_ctx)
        batch = L.llama_batch_init(n, 0, 1)
        for i in range(n):
            batch.token[i] = (i * 7919 + 11) % n_vocab
            batch.pos[i] = i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = i == n - 1
        batch.n_tokens = n
        started = time.perf_counter()
        if L.llama_decode(ctx, batch) != 0:
            raise SystemExit("llama_decode failed")
        seconds = time.perf_counter() - started
        rss = process.memory_info().rss
        L.llama_batch_free(batch)
        L.llama_free(ctx)
        record = {"n_ctx": n_ctx, "rss_bytes": rss, "baseline_bytes": baseline, "decode_seconds": seconds}
        print(json.dumps({**record, **buffers}), flush=True)
    L.llama_model_free(model)


if __name__ == "__main__":  # pragma: no cover
    _child(sys.argv[1], int(sys.argv[2]), [int(c) for c in sys.argv[3:]])
