"""Hearth's download throughput against ``huggingface_hub.hf_hub_download``, side by side, in one run.

Both fetch the same ~253 MB GGUF (the Gemma 3 270M starter model) from the same local fake Hub
(tests/fixtures/fakehub.py), running in its own process so the server does not share the clients'
interpreter. Repetitions alternate Hearth / baseline; medians and their ratio are printed
(target: Hearth ≥ 0.95 × baseline). Then a Hearth download is cut at 50 % by the server and the
bytes fetched twice are reported (target: < 1 % of the file).

    .venv/bin/python -m bench.download [--reps 7] [--file PATH]

Hearth is timed twice per run: until the file is fetched and its SHA-256 checked (the download the
target is about; the baseline checks no checksum), and the whole pull, which also reads the GGUF
header and registers the model in the library. Both include listing the repo's files; the
baseline's time includes its HEAD request and cache bookkeeping.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import starter_model_path  # noqa: E402  (after the sys.path line for direct runs)

REPO = "bench/Starter-GGUF"


def _serve(file: str, conn: Connection) -> None:
    """Child process: the fake Hub serving one file; answers ``fault`` and ``served`` commands."""
    from tests.fixtures.fakehub import FakeHub

    with FakeHub() as hub:
        hub.add_repo(REPO, {Path(file).name: Path(file)})
        conn.send(hub.url)
        while True:
            cmd, arg = conn.recv()
            if cmd == "stop":
                break
            if cmd == "fault":
                hub.add_fault(**arg)
                conn.send(True)
            elif cmd == "served":
                conn.send(hub.served(arg))
            elif cmd == "sha256":
                conn.send(hub.repos[REPO].files[arg].sha256)


def hearth_pull(home: Path, filename: str, **manager_args: Any) -> tuple[float, float]:
    """Seconds until the file is fetched and its SHA-256 checked, and until it is registered."""
    from core.hub import DownloadManager, DownloadProgress, pull
    from core.library import Library
    from core.paths import get_paths

    os.environ["HEARTH_HOME"] = str(home)
    verified: list[float] = []

    def on_progress(p: DownloadProgress) -> None:
        if p.state == "verifying" and not verified:
            verified.append(time.perf_counter())

    manager = DownloadManager(Library(get_paths(), discover_hf_cache=False), **manager_args)
    start = time.perf_counter()
    pull(REPO, filename=filename, manager=manager, on_progress=on_progress)
    end = time.perf_counter()
    return verified[0] - start, end - start


def baseline_pull(cache: Path, filename: str, endpoint: str) -> float:
    from huggingface_hub import hf_hub_download

    start = time.perf_counter()
    hf_hub_download(REPO, filename, cache_dir=str(cache), endpoint=endpoint, token=False)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--file", type=Path, help="file to serve (default: the assembled starter model)")
    args = parser.parse_args()
    file = args.file or starter_model_path()
    size = file.stat().st_size
    parent, child = mp.Pipe()
    server = mp.get_context("spawn").Process(target=_serve, args=(str(file), child), daemon=True)
    server.start()
    endpoint = parent.recv()
    os.environ["HF_ENDPOINT"] = endpoint
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ.pop("HF_HUB_OFFLINE", None)
    work = Path(tempfile.mkdtemp(prefix="hearth-bench-"))
    fetch_times: list[float] = []
    pull_times: list[float] = []
    base_times: list[float] = []
    try:
        print(
            f"file: {file.name} ({size / 1e6:.1f} MB), server {endpoint}, {args.reps} alternating repetitions"
        )
        # One unmeasured round first, so neither side pays for first imports and cold caches.
        hearth_pull(work / "warm-home", file.name)
        baseline_pull(work / "warm-cache", file.name, endpoint)
        shutil.rmtree(work / "warm-home")
        shutil.rmtree(work / "warm-cache")
        for rep in range(args.reps):
            home, cache = work / f"home{rep}", work / f"cache{rep}"
            first, second = (("hearth", "hf"), ("hf", "hearth"))[rep % 2]
            for who in (first, second):
                if who == "hearth":
                    fetched, pulled = hearth_pull(home, file.name)
                    fetch_times.append(fetched)
                    pull_times.append(pulled)
                    shutil.rmtree(home)
                else:
                    base_times.append(baseline_pull(cache, file.name, endpoint))
                    shutil.rmtree(cache)
            print(
                f"  rep {rep + 1}: hearth fetch+sha256 {size / fetch_times[-1] / 1e6:7.1f} MB/s "
                f"(+register {pull_times[-1] - fetch_times[-1]:.2f} s)   "
                f"hf_hub_download {size / base_times[-1] / 1e6:7.1f} MB/s"
            )
        f, p, b = (statistics.median(x) for x in (fetch_times, pull_times, base_times))
        print(f"median hearth fetch + SHA-256 check: {f:.3f} s  {size / f / 1e6:.1f} MB/s")
        print(f"median hearth whole pull (+ register): {p:.3f} s  {size / p / 1e6:.1f} MB/s")
        print(f"median hf_hub_download:                {b:.3f} s  {size / b / 1e6:.1f} MB/s")
        print(f"throughput ratio hearth/hf_hub_download, download + verify = {b / f:.3f}  (target >= 0.95)")
        print(f"throughput ratio hearth/hf_hub_download, whole pull        = {b / p:.3f}")

        # Interrupted at 50 %: the server drops the connection; Hearth resumes with a range request.
        before = _ask(parent, "served", file.name)
        _ask(parent, "fault", {"kind": "drop", "after": size // 2})
        from core.hub import RetryPolicy

        hearth_pull(work / "home-drop", file.name, retry=RetryPolicy(base_delay=0.05))
        fetched = _ask(parent, "served", file.name) - before
        extra = fetched - size
        print(
            f"interrupted at 50%: fetched {fetched:,} bytes for a {size:,}-byte file; "
            f"re-fetched {extra:,} bytes = {100 * extra / size:.4f}% (target < 1%)"
        )
    finally:
        parent.send(("stop", None))
        server.join(5)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _ask(conn: Connection, cmd: str, arg: Any) -> Any:
    conn.send((cmd, arg))
    return conn.recv()


if __name__ == "__main__":
    sys.exit(main())
