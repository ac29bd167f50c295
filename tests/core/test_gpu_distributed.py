"""The many-process paths on NVIDIA GPUs (NCCL): skipped where torch sees no CUDA GPU, run by bench/gpu_check.sh.

Hearth's data parallel ranks on NCCL (``core.finetune.distributed``), ``hearth finetune --nproc`` on the
GPUs, the exported launch (``launch.sh``: accelerate launch) on every GPU of the machine, and the exported
FSDP config sharding a LoRA run over the GPUs with the same losses as plain data parallel.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU with CUDA (NCCL)")
ROOT = Path(__file__).resolve().parents[2]
GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
two_gpus = pytest.mark.skipif(GPUS < 2, reason="needs an NVIDIA GPU with CUDA (NCCL)" if not GPUS else
                              f"NCCL between processes needs 2 GPUs ({GPUS} found)")


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "TOKENIZERS_PARALLELISM": "false", **extra,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.fixtures.tiny_hf import write_tiny_chat_llama, write_tiny_hf

    folder = tmp_path_factory.mktemp("tiny-gpu")
    return write_tiny_hf(folder / "hf", write_tiny_chat_llama(folder / "tiny-chat.gguf"))


def _dataset(tmp_path: Path) -> Path:
    rows = [{"messages": [{"role": "user", "content": f"what color is the {'sky' if i % 2 else 'dog'}"},
                          {"role": "assistant", "content": ["blue", "red"][i % 2]}]} for i in range(32)]
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return path


def _events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


_COLLECTIVES = """
import json, torch
from core.finetune.distributed import Dist
dist = Dist.from_env().init("cuda")
param = torch.nn.Parameter(torch.zeros(3, device=dist.device("cuda")))
param.grad = torch.full((3,), float(dist.rank + 1), device=param.device)
loss, = dist.all_reduce_grads([param], [float(dist.rank)])
if dist.main:
    print(json.dumps({"backend": dist.backend, "grad": param.grad.tolist(), "loss": loss, "world": dist.world}))
dist.barrier()
dist.close()
"""


@two_gpus
def test_nccl_ranks_sum_gradients_over_every_gpu(tmp_path: Path) -> None:
    script = tmp_path / "collectives.py"
    script.write_text(_COLLECTIVES)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                           str(GPUS), str(script)], cwd=ROOT, env=_env(), capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["backend"] == "nccl" and seen["world"] == GPUS
    assert seen["grad"] == [float(sum(range(1, GPUS + 1)))] * 3  # 1 + 2 + ... from each GPU's rank
    assert seen["loss"] == float(sum(range(GPUS)))  # the extras ride along in the same collective


@two_gpus
def test_hearth_finetune_nproc_trains_on_every_gpu(tiny_hf: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "core", "finetune", str(tiny_hf), "--data", str(_dataset(tmp_path)),
                           "--max-steps", "20", "--seq-len", "128", "--batch", str(GPUS), "--grad-accum", "1",
                           "--save-every", "0", "--device", "cuda", "--nproc", str(GPUS), "--out", "gpu-ddp",
                           "--json"], cwd=ROOT, env=_env(), capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    events = _events(done.stdout)
    settings = next(e for e in events if e["event"] == "settings")
    assert settings["processes"] == GPUS and settings["device"] == "cuda"
    losses = [e["loss"] for e in events if e["event"] == "step"]
    assert len(losses) == 20 and losses[-1] < losses[0]
    assert any(e["event"] == "done" for e in events)


def test_the_exported_launch_trains_on_every_gpu_of_this_machine(tiny_hf: Path, tmp_path: Path) -> None:
    from core.finetune.launch import spec_from_inputs
    from core.finetune.launchers import export_launch

    spec = spec_from_inputs(str(tiny_hf), data=str(_dataset(tmp_path)), name="gpu-box", max_steps=20, seq_len=128,
                            batch=max(2, GPUS), grad_accum=1, samples=1, sample_tokens=4, save_every=0, device="cuda")
    out = export_launch(spec, tmp_path / "box", gpus_per_node=GPUS, copy_base=True)
    assert out.strategy == "ddp"
    config = out.folder / "accelerate.yaml"
    config.write_text(re.sub(r"main_process_port: \d+", "main_process_port: 0", config.read_text()))  # a free port
    done = subprocess.run(["bash", str(out.folder / "launch.sh")], cwd=tmp_path, capture_output=True, text=True,
                          env=_env(HEARTH_HOME=str(tmp_path / "box-home"), PYTHON=sys.executable), check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    events = _events(done.stdout)
    settings = next(e for e in events if e["event"] == "settings")
    assert settings["device"] == "cuda" and settings["processes"] == GPUS
    assert next(e for e in events if e["event"] == "done")["name"] == "gpu-box"


@two_gpus
def test_the_exported_fsdp_config_shards_over_the_gpus_like_data_parallel(tiny_hf: Path, tmp_path: Path) -> None:
    from core.finetune.launch import spec_from_inputs
    from core.finetune.launchers import export_launch
    from core.finetune.resources import GB

    big = tmp_path / "llama-8b"  # a pretend 8B llama (sparse weights): its config shards LlamaDecoderLayer
    big.mkdir()
    (big / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32,
                                                 "vocab_size": 128256, "max_position_embeddings": 8192,
                                                 "torch_dtype": "bfloat16"}))
    with open(big / "model.safetensors", "wb") as handle:
        handle.truncate(16 * 10**9)
    data = _dataset(tmp_path)
    reports = {}
    for label, memory in (("fsdp", 16 * GB), ("ddp", 80 * GB)):
        out = export_launch(spec_from_inputs(str(big), data=str(data), name=label), tmp_path / label,
                            gpus_per_node=GPUS, gpu_memory=memory)
        assert out.strategy == label
        config = out.folder / "accelerate.yaml"
        config.write_text(re.sub(r"main_process_port: \d+", "main_process_port: 0", config.read_text()))
        report = tmp_path / f"{label}.json"
        done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "-m",
                               "tests.fixtures.fsdp_rank", str(tiny_hf), str(report), "5", "cuda"],
                              cwd=ROOT, env=_env(), capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        reports[label] = json.loads(report.read_text())
    sharded, plain = reports["fsdp"], reports["ddp"]
    assert sharded["sharded"] and sharded["fsdp_units"] == 3 and sharded["world"] == GPUS
    assert sharded["losses"] == pytest.approx(plain["losses"], abs=2e-3)
    assert sharded["losses"][-1] < sharded["losses"][0]
    for name, value in plain["sums"].items():
        assert sharded["sums"][name] == pytest.approx(value, abs=5e-2), name
