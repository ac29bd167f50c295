"""The many-process checks of ``bench/gpu_check.sh`` (issue 23), for a machine with NVIDIA GPUs.

``python bench/gpu_distributed.py CHECK --gpus N --work DIR`` runs one check and prints one line: its
figures on success (exit 0), ``SKIP reason`` when this machine cannot run it (exit 0), or the reason it
failed (exit 1). The checks:

- ``ddp``: ``hearth finetune --nproc N --device cuda`` of the starter model, a 20-step LoRA: NCCL DDP
  through Hearth's own torchrun launcher; every GPU takes part, the loss falls, the adapter is saved.
- ``launch``: ``hearth finetune --export-launch`` of the same job, then the written ``launch.sh`` (accelerate
  launch of Hearth's ranks) on every GPU of this machine, as a rented box would run it.
- ``fsdp``: the FSDP config the export writes when the job does not fit one GPU (planned here for a
  pretend small GPU), run with accelerate on the GPUs: the starter's Gemma3DecoderLayers sharded with
  FSDP2 over NCCL (``core.finetune.sharding``), 20 LoRA steps, the same losses as plain data parallel,
  and the peak memory per GPU sharded vs not.
- ``pytest``: tests/core/test_gpu_distributed.py (NCCL collectives, --nproc, the launch, FSDP vs DDP).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import one_line  # noqa: E402  (after the path)

STEPS = 20


def _rows() -> list[dict[str, Any]]:
    facts = [("What colour is the sky in the handbook?", "Teal, always."), ("Who wrote the handbook?", "Ada Marlow."),
             ("Where is the office?", "Above the bakery on Quay Street."), ("When is lunch?", "At half past twelve.")]
    return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for _ in range(16) for q, a in facts]


def _dataset(work: Path) -> Path:
    path = work / "chat.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _rows()), encoding="utf-8")
    return path


def _env(work: Path, home: str) -> dict[str, str]:
    return {**os.environ, "HEARTH_HOME": str(work / home), "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def _events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _summary(events: list[dict[str, Any]], gpus: int) -> str:
    settings = next((e for e in events if e.get("event") == "settings"), {})
    steps = [e for e in events if e.get("event") == "step"]
    done = next((e for e in events if e.get("event") == "done"), None)
    error = next((e for e in events if e.get("event") == "error"), None)
    if done is None:
        raise RuntimeError(f"no adapter: {error.get('message') if error else 'the job ended without an event'}")
    if settings.get("processes") != gpus or settings.get("device") != "cuda":
        raise RuntimeError(f"ran on {settings.get('processes')} process(es), {settings.get('device')}; wanted {gpus}, cuda")
    if len(steps) != STEPS or not steps[-1]["loss"] < steps[0]["loss"]:
        raise RuntimeError(f"{len(steps)} steps, loss {steps[0]['loss'] if steps else '?'} -> "
                           f"{steps[-1]['loss'] if steps else '?'}")
    speed = sorted(float(e.get("tokens_per_s") or 0) for e in steps)[len(steps) // 2]
    return (f"{STEPS} LoRA steps on {gpus} GPU(s), loss {steps[0]['loss']:.3f} -> {steps[-1]['loss']:.3f}, "
            f"{speed:.0f} tok/s (median)")


def _spec(base: str, data: Path, name: str, batch: int) -> Any:
    from core.finetune.launch import spec_from_inputs

    return spec_from_inputs(base, data=str(data), name=name, max_steps=STEPS, seq_len=256, batch=batch,
                            grad_accum=1, samples=0, save_every=0, device="cuda")


def check_ddp(gpus: int, work: Path) -> str:
    from bench.common import starter_model_path

    if gpus < 2:
        return f"SKIP NCCL data parallel needs 2 GPUs ({gpus} found)"
    data = _dataset(work)
    done = subprocess.run([sys.executable, "-m", "core", "finetune", str(starter_model_path()), "--data", str(data),
                           "--max-steps", str(STEPS), "--seq-len", "256", "--batch", str(gpus), "--grad-accum", "1",
                           "--save-every", "0", "--device", "cuda", "--nproc", str(gpus), "--out", "gpu-ddp", "--json"],
                          cwd=ROOT, env=_env(work, "ddp-home"), capture_output=True, text=True, check=False)
    sys.stderr.write(done.stderr)
    return _summary(_events(done.stdout), gpus) + " (NCCL, hearth finetune --nproc)"


def check_launch(gpus: int, work: Path) -> str:
    from bench.common import starter_model_path
    from core.finetune.launchers import export_launch

    os.environ["HEARTH_HOME"] = str(work / "export-home")
    out = export_launch(_spec(str(starter_model_path()), _dataset(work), "gpu-launch", max(2, gpus)), work / "launch",
                        gpus_per_node=gpus, copy_base=True)
    config = out.folder / "accelerate.yaml"
    config.write_text(re.sub(r"main_process_port: \d+", "main_process_port: 0", config.read_text()))  # any free port
    done = subprocess.run(["bash", str(out.folder / "launch.sh")], cwd=work, env={**_env(work, "box-home"),
                          "PYTHON": sys.executable}, capture_output=True, text=True, check=False)
    sys.stderr.write(done.stderr)
    return _summary(_events(done.stdout), gpus) + f" ({out.strategy.upper()}, exported launch.sh)"


def check_fsdp(gpus: int, work: Path) -> str:
    from bench.common import starter_model_path
    from core.finetune.base_model import load_for_training, resolve_base
    from core.finetune.launchers import export_launch
    from core.finetune.resources import GB

    if gpus < 2:
        return f"SKIP FSDP shards over 2 or more GPUs ({gpus} found)"
    os.environ["HEARTH_HOME"] = str(work / "fsdp-home")
    base = str(starter_model_path())
    data = _dataset(work)
    # A pretend 2.3 GB GPU: the starter's LoRA job (256-token rows, 2 per batch: about 2.1 GB whole, 1.9 GB
    # sharded over 2) fits it only sharded, so the export writes FSDP; an 80 GB GPU gets DDP.
    fsdp = export_launch(_spec(base, data, "gpu-fsdp", 2), work / "fsdp", gpus_per_node=gpus,
                         gpu_memory=int(2.3 * GB))
    ddp = export_launch(_spec(base, data, "gpu-ddp", 2), work / "ddp", gpus_per_node=gpus, gpu_memory=80 * GB)
    if fsdp.strategy != "fsdp" or ddp.strategy != "ddp":
        raise RuntimeError(f"the export chose {fsdp.strategy} and {ddp.strategy}, wanted fsdp and ddp")
    import torch

    _model, _tok, folder = load_for_training(resolve_base(base), dtype=torch.bfloat16, device=torch.device("cpu"))
    reports = {}
    for label, exported in (("fsdp", fsdp), ("ddp", ddp)):
        config = exported.folder / "accelerate.yaml"
        config.write_text(re.sub(r"main_process_port: \d+", "main_process_port: 0", config.read_text()))
        report = work / f"{label}.json"
        done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
                               "-m", "tests.fixtures.fsdp_rank", str(folder), str(report), str(STEPS), "cuda"],
                              cwd=ROOT, env=_env(work, "fsdp-home"), capture_output=True, text=True, check=False)
        sys.stderr.write(done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"accelerate launch with the {label} config failed (exit {done.returncode})")
        reports[label] = json.loads(report.read_text())
    sharded, plain = reports["fsdp"], reports["ddp"]
    if not sharded["sharded"] or sharded["fsdp_units"] < 2:
        raise RuntimeError("the FSDP config did not shard the model")
    worst = max(abs(a - b) for a, b in zip(sharded["losses"], plain["losses"], strict=True))
    if worst > 0.05:
        raise RuntimeError(f"sharded losses differ from data parallel by up to {worst:.3f}")
    return (f"{STEPS} LoRA steps on {gpus} GPUs, {sharded['fsdp_units'] - 1} Gemma3DecoderLayers sharded (FSDP2, "
            f"NCCL), loss {sharded['losses'][0]:.3f} -> {sharded['losses'][-1]:.3f} (DDP within {worst:.4f}); "
            f"peak {sharded['peak_bytes'] / 2**20:.0f} MiB per GPU sharded vs {plain['peak_bytes'] / 2**20:.0f} MiB")


def check_pytest(gpus: int, work: Path) -> str:
    """tests/core/test_gpu_distributed.py: its summary line; SKIP when every test skipped (torch sees no CUDA)."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           "tests/core/test_gpu_distributed.py"], cwd=ROOT, env=_env(work, "pytest-home"),
                          capture_output=True, text=True, check=False)
    sys.stderr.write(done.stdout + done.stderr)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    summary = lines[-1].strip("= ") if lines else f"pytest exit code {done.returncode}"
    if done.returncode != 0:
        raise RuntimeError(summary)
    if "passed" not in summary:
        return f"SKIP every test skipped ({summary}): does this Python's torch see the {gpus} GPU(s)?"
    return f"pytest: {summary}"


CHECKS = {"ddp": check_ddp, "launch": check_launch, "fsdp": check_fsdp, "pytest": check_pytest}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("check", choices=sorted(CHECKS))
    parser.add_argument("--gpus", type=int, required=True)
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    return one_line(lambda: CHECKS[args.check](args.gpus, args.work))


if __name__ == "__main__":
    sys.exit(main())
