"""Tokens/s of the starter model on each device ggml lists, and what the Vulkan library costs the CPU, in one run.

Three ways, each its own engine process started with its own environment (ggml reads it when the backends load):

- "CPU, Vulkan loaded": ``HEARTH_GPU=on``: the Vulkan backend library and the Vulkan drivers are loaded and find
  no GPU (lavapipe, a Vulkan device of the CPU type, is passed over unless named), as on a machine with a GPU
  device node but no GPU Vulkan can use. The model runs on the CPU.
- "CPU, no Vulkan": ``HEARTH_GPU=off``: only the CPU variant and RPC are loaded (core.engine.backends), as a
  build without the Vulkan backend, and as Hearth runs by default on a machine without any GPU device node
  (core.engine.backends.gpu_device_present). The ratio of the two is the cost of shipping Vulkan: target >= 0.98x.
- "lavapipe": ``GGML_VK_VISIBLE_DEVICES=0`` names Mesa's CPU-implemented Vulkan device, and every layer goes to it
  (slower than the CPU backend, as expected: the point is that it runs, through the same code as a Radeon).

Each engine answers the same prompt from an empty cache and decodes the same greedy tokens; ways take turns
within each round so a busy spell of this shared machine hits all of them; medians over the rounds. The engine's
start (process, backends, model load) is timed as well.

    .venv/bin/python -m bench.gpu_backends [--reps 3] [--tokens 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time

from bench.common import RIVER_PROMPT, median, starter_model_path

LAVAPIPE = sorted(glob.glob("/usr/share/vulkan/icd.d/lvp_icd*.json"))
ENV_KEYS = ("HEARTH_GPU", "GGML_VK_VISIBLE_DEVICES", "VK_DRIVER_FILES", "VK_ICD_FILENAMES")


def _ways() -> dict[str, tuple[dict[str, str], int]]:
    """name -> (environment of its engine process, GPU layers)."""
    ways: dict[str, tuple[dict[str, str], int]] = {
        "CPU, Vulkan loaded": ({"HEARTH_GPU": "on"}, 0),
        "CPU, no Vulkan": ({"HEARTH_GPU": "off"}, 0),
    }
    if LAVAPIPE:
        ways["lavapipe"] = ({"GGML_VK_VISIBLE_DEVICES": "0", "VK_DRIVER_FILES": LAVAPIPE[0],
                             "VK_ICD_FILENAMES": LAVAPIPE[0]}, -1)
    return ways


def _with_env(env: dict[str, str]) -> dict[str, str | None]:
    saved = {k: os.environ.get(k) for k in ENV_KEYS}
    for key in ENV_KEYS:
        os.environ.pop(key, None)
    os.environ.update(env)
    return saved


def _restore(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("HEARTH_HOME", tempfile.mkdtemp(prefix="hearth-bench-gpu-"))
    import psutil

    from core.engine import Engine, LoadOptions, SamplingParams

    model = starter_model_path()
    ways = _ways()
    results: dict[str, dict[str, list[float]]] = {n: {"start": [], "rss": [], "prompt": [], "decode": []} for n in ways}
    where: dict[str, str] = {}
    for _rep in range(args.reps):
        for name, (env, layers) in ways.items():  # in turn: a busy spell of the machine hits every way
            saved = _with_env(env)
            try:
                started = time.perf_counter()
                with Engine() as engine:  # a fresh process: it loads the backends its environment allows
                    status = engine.load(model, LoadOptions(n_ctx=1024, n_threads=args.threads, n_gpu_layers=layers))
                    results[name]["start"].append(time.perf_counter() - started)
                    where[name] = status.where or "CPU"
                    engine.complete("Warm up.", SamplingParams(max_tokens=4))
                    engine.complete("Clear the cache.", SamplingParams(max_tokens=1))
                    done = engine.complete(RIVER_PROMPT, SamplingParams(temperature=0.0, ignore_eos=True,
                                                                  max_tokens=args.tokens))
                    results[name]["prompt"].append(done.stats.prompt_tokens_per_second)
                    results[name]["decode"].append(done.stats.tokens_per_second)
                    results[name]["rss"].append(psutil.Process(engine.pid).memory_info().rss / 2**20)
            finally:
                _restore(saved)
    print(f"starter model, {args.tokens} greedy tokens after a {RIVER_PROMPT.count(' ') + 1}-word prompt, "
          f"{args.threads} thread(s), medians of {args.reps}")
    base = "CPU, no Vulkan"
    print(f"{'way':20} {'start s':>8} {'RSS MiB':>8} {'prompt t/s':>11} {'decode t/s':>11} {'decode vs no Vulkan':>20}"
          "  runs on")
    for name in ways:
        r = results[name]
        ratio = median(r["decode"]) / median(results[base]["decode"])
        print(f"{name:20} {median(r['start']):8.2f} {median(r['rss']):8.0f} {median(r['prompt']):11.1f} "
              f"{median(r['decode']):11.1f} "
              f"{ratio:19.3f}x  {where[name]}")
    loaded = results["CPU, Vulkan loaded"]
    print(f"the Vulkan library's cost to the CPU path: decode {median(loaded['decode']) / median(results[base]['decode']):.3f}x, "
          f"prompt {median(loaded['prompt']) / median(results[base]['prompt']):.3f}x, "
          f"engine start {median(loaded['start']) - median(results[base]['start']):+.2f} s, "
          f"memory {median(loaded['rss']) - median(results[base]['rss']):+.0f} MiB (target: decode >= 0.98x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
