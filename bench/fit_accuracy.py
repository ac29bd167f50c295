"""Memory estimate vs measurement for the starter model at 512, 2048 and 8192 tokens of context.

"Measured" is the resident memory (RSS) of one worker process after it loaded the model
(use_mmap=False, so the weights are its own pages) and decoded one full 512-token prompt batch at
that context, with the engine's settings (see core/fit/measure.py). "Estimate" is
``estimate_memory(...).cpu_parts_without_margin``: the same process's parts, margin left out.
Run: .venv/bin/python bench/fit_accuracy.py [MODEL.gguf]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import starter_model_path  # noqa: E402
from core.fit import ModelShape, estimate_memory  # noqa: E402
from core.fit.measure import measure_memory  # noqa: E402

CONTEXTS = [512, 2048, 8192]
MIB = 1 << 20


def main() -> int:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else starter_model_path()
    shape = ModelShape.from_gguf(path)
    measured = measure_memory(path, CONTEXTS)
    print(f"{path.name}: estimate vs measured resident memory of the worker process (MiB)")
    print(
        f"{'n_ctx':>6}  {'estimate':>9}  {'measured':>9}  {'error':>7}  {'KV est/llama.cpp':>18}  {'compute reserve est/llama.cpp':>30}"
    )
    worst = 0.0
    for m in measured:
        e = estimate_memory(shape, n_ctx=m.n_ctx)
        est = e.cpu_parts_without_margin
        error = (est - m.rss_bytes) / m.rss_bytes
        worst = max(worst, abs(error))
        kv = f"{(e.kv_cpu) / MIB:.2f}/{m.kv_buffer_bytes / MIB:.2f}"
        comp = f"{e.compute_cpu_reserved / MIB:.1f}/{m.compute_buffer_bytes / MIB:.1f}"
        print(
            f"{m.n_ctx:>6}  {est / MIB:>9.1f}  {m.rss_bytes / MIB:>9.1f}  {error:>+7.1%}  {kv:>18}  {comp:>30}"
        )
    print(f"worst relative error: {worst:.1%} (target: within 15%)")
    return 0 if worst <= 0.15 else 1


if __name__ == "__main__":
    sys.exit(main())
