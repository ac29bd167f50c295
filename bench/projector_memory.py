"""The vision projector's compute buffer: what clip.cpp reserves against what ``core.fit.projector`` estimates.

Each case writes a random-weight LLaVA-style projector (tests/fixtures/tiny_vision.py's writer, with the
encoder's width, feed-forward, image and patch size changed), loads it with llama.cpp's mtmd beside the tiny
text model, and reads the ``reserve_compute_meta: CPU compute buffer size`` line clip.cpp logs at warm-up
(flash attention on, as mtmd's AUTO resolves on the CPU). Run: ``python -m bench.projector_memory``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (encoder width, feed-forward, image side, patch side); the last is SigLIP-So400m's width at 448 px.
CASES = [(256, 1024, 224, 14), (512, 2048, 448, 14), (128, 512, 896, 28), (1152, 4304, 448, 14)]
_BUFFER = re.compile(r"reserve_compute_meta:\s+CPU compute buffer size =\s+([\d.]+) MiB")

CHILD = r"""
import sys
from pathlib import Path
import tests.fixtures.tiny_vision as tv
embd, ff, size, patch = (int(x) for x in sys.argv[1:5])
folder = Path(sys.argv[5])
tv.VISION_EMBD, tv.VISION_FF = embd, ff
proj = tv.write_tiny_projector(folder / f"mmproj-{embd}-{size}.gguf", image_size=size, patch_size=patch)
model, _ = tv.write_tiny_vision_model(folder / "text")
from core.engine.backends import load_backends
load_backends()
import llama_cpp
from llama_cpp import mtmd_cpp as M
llm = llama_cpp.Llama(str(model), n_ctx=256, verbose=True)
params = M.mtmd_context_params_default()
params.use_gpu = False
ctx = M.mtmd_init_from_file(str(proj).encode(), llm.model, params)
assert ctx, "mtmd could not load the projector"
from core.fit.projector import read_projector_shape
print("ESTIMATE", read_projector_shape(proj).compute_bytes, flush=True)
"""


def main() -> int:
    print(f"{'width':>6} {'ff':>6} {'image':>6} {'patches':>8} {'clip.cpp MiB':>13} {'estimate MiB':>13} {'ratio':>6}")
    with tempfile.TemporaryDirectory(prefix="hearth-projector-") as tmp:
        for embd, ff, size, patch in CASES:
            run = subprocess.run(
                [sys.executable, "-c", CHILD, str(embd), str(ff), str(size), str(patch), tmp],
                cwd=ROOT, capture_output=True, text=True, check=False,
            )
            text = run.stdout + run.stderr
            measured = _BUFFER.search(text)
            estimate = re.search(r"ESTIMATE (\d+)", text)
            if run.returncode != 0 or measured is None or estimate is None:
                print(f"case {embd}/{ff}/{size}/{patch} failed:\n{text[-2000:]}")
                return 1
            got, est = float(measured[1]), int(estimate[1]) / 2**20
            patches = (size // patch) ** 2
            print(f"{embd:>6} {ff:>6} {size:>6} {patches:>8} {got:>13.2f} {est:>13.2f} {est / got:>6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
