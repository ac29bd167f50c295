"""Does the all-variants build lose speed? Hearth's llama.cpp against a GGML_NATIVE=ON build, side by side.

    .venv/bin/python -m bench.cpu_variants [--rounds 5] [--prompt 256] [--decode 64]

Hearth builds llama.cpp with every CPU variant as a loadable backend (GGML_BACKEND_DL +
GGML_CPU_ALL_VARIANTS) so one installer runs at full speed on every CPU. The baseline is what a
competent user compiles for their own machine: the same llama-cpp-python (same llama.cpp) with
``-DGGML_NATIVE=ON`` (``-march=native``), its backends linked in. The native wheel is compiled once
(several minutes) and kept in ~/.cache/hearth/wheels. Both run the starter model in separate
processes with the same threads, context and tokens, in A/B/B/A order, ``--rounds`` times; the
figures are medians of prompt (prefill) and decode tokens/s, and the ratio is Hearth / native.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from bench.common import ROOT, median, starter_model_path

VERSION = "0.3.36"
NATIVE_WHEELS = Path.home() / ".cache" / "hearth" / "wheels" / f"llama-cpp-python-{VERSION}-native"

MEASURE = r"""
import json, sys, time
import numpy as np
from core.engine.backends import load_backends
loaded = load_backends()
import llama_cpp
model, threads, n_prompt, n_decode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
llm = llama_cpp.Llama(model_path=model, n_ctx=2048, n_batch=512, n_threads=threads, n_threads_batch=threads,
                      verbose=False, seed=0)
text = "The history of bread begins with wild grains ground between stones. " * 64
tokens = llm.tokenize(text.encode())[:n_prompt]
llm.eval(tokens[:16]); llm.reset()  # warm the caches and the thread pool
start = time.perf_counter(); llm.eval(tokens); prompt_s = time.perf_counter() - start
start = time.perf_counter()
for _ in range(n_decode):
    token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    llm.eval([token])
decode_s = time.perf_counter() - start
print(json.dumps({"prompt_tps": len(tokens) / prompt_s, "decode_tps": n_decode / decode_s,
                  "variant": loaded.cpu_variant or "built in", "module": llama_cpp.__file__}))
"""


def native_site() -> Path:
    """A folder holding llama_cpp compiled with GGML_NATIVE=ON (built once, then kept)."""
    site = NATIVE_WHEELS / "site"
    if (site / "llama_cpp").is_dir():
        return site
    NATIVE_WHEELS.mkdir(parents=True, exist_ok=True)
    print(f"Compiling llama-cpp-python {VERSION} with GGML_NATIVE=ON (once; several minutes)...", flush=True)
    env = {**os.environ, "CMAKE_ARGS": "-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF",
           "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-cache-dir", "--no-deps", "-w",
                    str(NATIVE_WHEELS), f"llama-cpp-python=={VERSION}"], check=True, env=env)
    wheel = next(NATIVE_WHEELS.glob("llama_cpp_python-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True)
    return site


def run_once(site: Path | None, model: Path, threads: int, n_prompt: int, n_decode: int) -> dict[str, float | str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)] if site else [str(ROOT)])
    done = subprocess.run([sys.executable, "-c", MEASURE, str(model), str(threads), str(n_prompt), str(n_decode)],
                          capture_output=True, text=True, env=env, check=True, cwd=ROOT)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prompt", type=int, default=256)
    parser.add_argument("--decode", type=int, default=64)
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2)))
    args = parser.parse_args()
    model = starter_model_path()
    native = native_site()
    runs: dict[str, list[dict[str, float | str]]] = {"hearth": [], "native": []}
    for _ in range(args.rounds):
        for name in ("hearth", "native", "native", "hearth"):
            runs[name].append(run_once(None if name == "hearth" else native, model, args.threads, args.prompt, args.decode))
    print(f"model {model.name}, {args.threads} threads, prompt {args.prompt} tokens, decode {args.decode} tokens, "
          f"{2 * args.rounds} runs each (A/B/B/A)")
    print(f"Hearth build: CPU variant picked: {runs['hearth'][0]['variant']}")
    print(f"native build: {runs['native'][0]['variant']} ({runs['native'][0]['module']})")
    for key, label in (("prompt_tps", "prompt tokens/s"), ("decode_tps", "decode tokens/s")):
        ours = median([float(r[key]) for r in runs["hearth"]])
        base = median([float(r[key]) for r in runs["native"]])
        print(f"{label:<16} Hearth {ours:8.1f}   native {base:8.1f}   ratio {ours / base:.3f}")


if __name__ == "__main__":
    main()
