"""Adapter export and merge + quantize on the starter model (Gemma 3 270M Q4_K_M), and a merge's memory.

A rank-16 LoRA on every projection of all 18 layers is written directly as a PEFT folder (random
A and B with the base's shapes: no torch model is needed to time the export). Timed, medians:
  * export to a GGUF LoRA (f16);
  * merge into the base + quantize to Q4_K_M, against plain quantization of the base to Q4_K_M
    (llama.cpp's quantizer alone: the baseline the merge adds its work to), side by side.
Memory: the merge (tensor rewrite) runs in a child process that samples its own resident memory;
the growth over the child's starting RSS is printed next to the size of the largest tensor as
float32 (the floor of a tensor-by-tensor merge) and the size of the whole model as float32.

    .venv/bin/python -m bench.export [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import median, starter_model_path

TARGETS = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
           "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
           "ffn_down": "mlp.down_proj"}


def write_adapter(base: Path, folder: Path, rank: int = 16) -> Path:
    from safetensors.numpy import save_file

    from core.gguf_export.gguf_stream import GGUFSource

    rng = np.random.default_rng(0)
    tensors: dict[str, np.ndarray] = {}
    with GGUFSource(base) as src:
        for name, t in src.tensors.items():
            parts = name.split(".")
            if parts[0] != "blk" or parts[2] not in TARGETS:
                continue
            module = f"base_model.model.model.layers.{parts[1]}.{TARGETS[parts[2]]}"
            out_dim, in_dim = t.shape
            tensors[f"{module}.lora_A.weight"] = (rng.standard_normal((rank, in_dim)) * 0.02).astype(np.float32)
            tensors[f"{module}.lora_B.weight"] = (rng.standard_normal((out_dim, rank)) * 0.02).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 32, "target_modules": list(TARGETS.values()),
              "base_model_name_or_path": str(base)}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _merge_child(base: str, adapter: str, out: str, conn: Any) -> None:
    from core.gguf_export.adapter import load_lora_adapter
    from core.gguf_export.gguf_stream import GGUFSource
    from core.gguf_export.merge import rewrite_gguf

    lora, _ = load_lora_adapter(adapter, base=base)  # the adapter itself is held in memory, as in a merge
    pairs = {p.gguf_name: p for p in lora.pairs}
    start = _rss()
    peak = [start]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with GGUFSource(base) as src:
        rewrite_gguf(src, Path(out), {n: (lambda w, n=n: w + pairs[n].delta()) for n in pairs})
    done.set()
    sampler.join()
    conn.send({"start": start, "peak": max(peak[0], _rss())})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    from core.gguf_export.gguf_stream import GGUFSource
    from core.gguf_export.lora import export_lora_gguf
    from core.gguf_export.merge import merge_adapter_gguf
    from core.gguf_export.quantize import quantize_gguf

    base = starter_model_path()
    with tempfile.TemporaryDirectory(prefix="hearth-bench-export-") as tmp_name:
        tmp = Path(tmp_name)
        adapter = write_adapter(base, tmp / "adapter")
        export_t, merge_t, quant_t = [], [], []
        for rep in range(args.reps):
            t = time.perf_counter()
            export_lora_gguf(adapter, tmp / "lora.gguf", out_type="f16", base=base)
            export_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            quantize_gguf(base, tmp / f"requant-{rep}.gguf", "Q4_K_M")
            quant_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            merge_adapter_gguf(base, adapter, tmp / f"merged-{rep}.gguf", quant="Q4_K_M")
            merge_t.append(time.perf_counter() - t)
            (tmp / f"requant-{rep}.gguf").unlink()
            (tmp / f"merged-{rep}.gguf").unlink()
        print(f"starter model: {base.name} ({base.stat().st_size / 1e6:.0f} MB); LoRA rank 16 on 7 x 18 projections")
        print(f"export adapter → GGUF LoRA (f16):       median {median(export_t):6.2f} s  ({args.reps} runs)")
        print(f"quantize base → Q4_K_M (baseline):      median {median(quant_t):6.2f} s")
        print(f"merge + quantize → Q4_K_M:              median {median(merge_t):6.2f} s  "
              f"(ratio to baseline {median(merge_t) / median(quant_t):.2f}x)")

        with GGUFSource(base) as src:
            largest = max(src.tensors.values(), key=lambda t: t.n_elements)
            total_f32 = sum(t.n_elements for t in src.tensors.values()) * 4
            changed_f32 = max(t.n_elements for n, t in src.tensors.items() if n.split(".")[-2] in TARGETS) * 4
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_merge_child, args=(str(base), str(adapter), str(tmp / "mem.gguf"), child))
        proc.start()
        result = parent.recv()
        proc.join()
        growth = result["peak"] - result["start"]
        print(f"merge peak RSS growth (child process):  {growth / 1e6:7.1f} MB")
        print(f"largest tensor as f32 ({largest.name}): {largest.n_elements * 4 / 1e6:7.1f} MB "
              f"(stored {largest.nbytes / 1e6:.1f} MB, copied as stored)")
        print(f"largest adapted tensor as f32:          {changed_f32 / 1e6:7.1f} MB")
        print(f"whole model as f32:                     {total_f32 / 1e6:7.1f} MB "
              f"(growth / whole model = {growth / total_f32:.3f})")


if __name__ == "__main__":
    main()
