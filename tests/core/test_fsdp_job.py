"""Hearth's own job sharded with FSDP: the exported FSDP launch run with ``accelerate launch`` on 2 CPU processes.

The accelerate config is the one ``--export-launch`` writes when the model does not fit one GPU (a pretend 8B
llama on 16 GB GPUs, as tests/core/test_launch_export.py forces it); the job it runs is the tiny random chat
llama's, through ``core.finetune.rank`` and ``core.finetune.job`` as on a rented box: every decoder layer
sharded (FSDP2 over gloo), evaluation, samples and checkpoints with both ranks, the adapter gathered whole and
saved by rank 0. It must train as one process does with the same global batch, and its adapter must load back
in peft and run in llama.cpp.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from core.errors import TrainingError
from core.finetune.launch import spec_from_inputs
from core.finetune.launchers import export_launch
from core.finetune.resources import GB, available_memory, plan

ROOT = Path(__file__).resolve().parents[2]
# One process runs the fast loss path (decoder, then the output layer in chunks); sharded, the model's own
# forward computes the logits (FSDP2 gathers the output layer in the root's hooks), with positions restarting
# per packed example as the fast path gives them. The same maths in another order under this CPU's bf16
# autocast, on rows shared out between the ranks: measured at most 0.3% apart over 6 steps of this tiny random
# model (which learns fast); a gradient not summed over the ranks, or a rank's rows lost, moves it by 10% and more.
RTOL = 2e-2
ADAPTER_RTOL = 5e-2


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(GGUF file, Hugging Face folder) of the same tiny random chat llama."""
    from tests.fixtures.tiny_hf import write_tiny_chat_llama, write_tiny_hf

    folder = tmp_path_factory.mktemp("tiny-fsdp")
    gguf = write_tiny_chat_llama(folder / "tiny-chat.gguf")
    return gguf, write_tiny_hf(folder / "hf", gguf)


def _pretend_llama_8b(folder: Path) -> Path:
    """A Hugging Face llama folder whose bf16 weights are a sparse file the size of an 8B model."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "num_hidden_layers": 32,
        "vocab_size": 128256, "max_position_embeddings": 8192, "torch_dtype": "bfloat16"}))
    with open(folder / "model.safetensors", "wb") as handle:
        handle.truncate(int(8e9 * 2))
    return folder


def _chat(path: Path, n: int = 24) -> Path:
    colors = ["blue", "red"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps({"messages": [
        {"role": "user", "content": f"what color is the {'sky' if i % 2 else 'dog'}"},
        {"role": "assistant", "content": colors[i % 2]}]}) for i in range(n)), encoding="utf-8")
    return path


def _events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _losses(events: list[dict[str, Any]]) -> list[float]:
    return [float(e["loss"]) for e in events if e["event"] == "step"]


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "HEARTH_HOME": str(home), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


# -- the memory plan -------------------------------------------------------------------------------------------
def test_the_plan_counts_every_process_copy_on_the_cpu_and_divides_what_is_sharded() -> None:
    free = available_memory("cpu")
    # fp32 weights of about 40% of the free memory: one copy fits, two do not.
    common: dict[str, Any] = {"device": "cpu", "bf16": False, "trainable_fraction": 0.0, "hidden": 64, "layers": 4,
                              "vocab": 256, "context": 128, "seq_len": 128, "batch": 1, "grad_accum": 1,
                              "checkpointing": False, "full_weights": True}
    parameters = int(free * 0.4 / 4)
    assert plan(parameters=parameters, **common).predicted_bytes <= free
    with pytest.raises(TrainingError, match=r"^Not enough memory for 2 processes: each holds its own copy") as caught:
        plan(parameters=parameters, copies=2, **common)
    assert "--nproc" in str(caught.value) and str(caught.value).count(". ") == 0  # one sentence
    # Weights of twice the free memory fit when sharded over 8 (a quarter of it each, plus two of 32 layers gathered).
    too_big = int(free * 2 / 4)
    with pytest.raises(TrainingError, match="Not enough memory: training"):
        plan(parameters=too_big, **{**common, "layers": 32})
    sharded = plan(parameters=too_big, shards=8, **{**common, "layers": 32})
    assert sharded.predicted_bytes < free * 0.85


def test_qlora_and_delta_lora_are_refused_when_the_launcher_asks_to_shard(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.finetune.distributed import Dist
    from core.finetune.job import _shard_settings
    from core.finetune.methods import get_method

    pair = Dist(rank=0, world=2)
    assert _shard_settings(pair, get_method("qlora")) is None  # no FSDP asked: DDP, which QLoRA supports
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "LlamaDecoderLayer")
    with pytest.raises(TrainingError, match="QLoRA's 4-bit weights cannot be sharded with FSDP"):
        _shard_settings(pair, get_method("qlora"))
    with pytest.raises(TrainingError, match="delta-lora cannot be sharded with FSDP"):
        _shard_settings(pair, get_method("delta-lora"))
    assert _shard_settings(pair, get_method("lora")).layer_classes == ("LlamaDecoderLayer",)
    assert _shard_settings(Dist(), get_method("lora")) is None  # one process has nothing to shard over


# -- the exported FSDP launch, for real -------------------------------------------------------------------------
def _export_sharded(spec: Any, tmp_path: Path, data: Path) -> Path:
    """Export ``spec`` and give its folder the FSDP config --export-launch writes for a model that does not fit one
    GPU (a pretend 8B llama on 16 GB GPUs), with what only this test machine needs: the CPU, any free port."""
    job = export_launch(spec, tmp_path / "box", gpus_per_node=2, gpu_memory=24 * GB, copy_base=True)
    big = export_launch(spec_from_inputs(str(_pretend_llama_8b(tmp_path / "llama-8b")), data=str(data), name="big"),
                        tmp_path / "big", gpus_per_node=2, gpu_memory=16 * GB)
    assert (job.strategy, big.strategy) == ("ddp", "fsdp")  # the tiny model fits any GPU: FSDP is forced
    commands = [[line for line in (f / "launch.sh").read_text().splitlines() if "accelerate.commands.launch" in line]
                for f in (job.folder, big.folder)]
    assert commands[0] == commands[1] and len(commands[0]) == 1  # the same command runs either config
    config = (big.folder / "accelerate.yaml").read_text()
    assert "distributed_type: FSDP" in config and "fsdp_transformer_layer_cls_to_wrap: LlamaDecoderLayer" in config
    config = config.replace("use_cpu: false", "use_cpu: true").replace("main_process_port: 29500",
                                                                         "main_process_port: 0")
    (job.folder / "accelerate.yaml").write_text(config)
    return job.folder


def _launch_and_alone(folder: Path, tmp_path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The events of launch.sh (2 ranks, sharded) and of the same spec in one process, each in its own Hearth home."""
    done = subprocess.run(["bash", str(folder / "launch.sh")], cwd=tmp_path, env=_env(tmp_path / "box-home"),
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    alone = subprocess.run([sys.executable, "-m", "core.finetune.rank", str(folder / "spec.json")], cwd=tmp_path,
                           env=_env(tmp_path / "one-home"), capture_output=True, text=True, check=False)
    assert alone.returncode == 0, alone.stderr[-4000:]
    return _events(done.stdout), _events(alone.stdout)


@pytest.mark.slow
def test_the_exported_fsdp_launch_trains_hearths_job_like_one_process(tiny_pair: tuple[Path, Path],
                                                                       tmp_path: Path) -> None:
    from peft import PeftModel
    from safetensors.torch import load_file

    from core.gguf_export.lora import export_lora_gguf
    from tests.fixtures.tiny_hf_export import cosine, llama_logits, load_hf, torch_logits

    gguf, hf = tiny_pair
    data = _chat(tmp_path / "source" / "chat.jsonl")
    # 2 x 3 rows per step: shares of 3 rows cut into micro-batches of 2 and 1 on each rank; the 25 rows of
    # held-out loss, the sample and the checkpoint at step 3 are all sharded forwards both ranks run.
    spec = spec_from_inputs(str(hf), data=str(data), name="sharded", max_steps=6, seq_len=64, batch=2, grad_accum=3,
                            samples=1, sample_tokens=6, save_every=3, save_minutes=0, eval_every=3, lr=2e-3, device="cpu",
                            method_options={"dropout": 0.0, "rank": 4, "alpha": 8})
    folder = _export_sharded(spec, tmp_path, data)
    two, one = _launch_and_alone(folder, tmp_path)

    settings = [next(e for e in run if e["event"] == "settings") for run in (one, two)]
    assert [(s["processes"], s["sharded"]) for s in settings] == [(1, False), (2, True)]
    assert settings[0]["total_steps"] == settings[1]["total_steps"] == 6
    assert len(_losses(two)) == 6
    assert _losses(two) == pytest.approx(_losses(one), rel=RTOL)
    assert _losses(two)[-1] < _losses(two)[0]
    kinds = [e["event"] for e in two]  # rank 0 alone speaks
    assert kinds.count("done") == 1 and kinds.count("settings") == 1 and kinds.count("checkpoint") == 1
    evals = [[e["eval_loss"] for e in run if e["event"] == "eval"] for run in (one, two)]
    assert len(evals[1]) == 2 and evals[1] == pytest.approx(evals[0], rel=RTOL)

    trained = Path(next(e for e in two if e["event"] == "done")["path"])
    reference = Path(next(e for e in one if e["event"] == "done")["path"])
    assert trained == tmp_path / "box-home" / "data" / "adapters" / "sharded"
    manifest = json.loads((trained / "manifest.json").read_text())
    assert manifest["hyperparameters"]["processes"] == 2
    samples = manifest["metrics"]["samples"]
    assert len(samples) == 1 and samples[0]["after"]  # generated by both ranks together, written by rank 0
    # The adapter gathered whole: every LoRA weight of the one-process run, and close to its values.
    mine, theirs = (load_file(str(f / "adapter_model.safetensors")) for f in (trained, reference))
    assert mine.keys() == theirs.keys() and len(mine) == 28  # A and B of 7 projections x 2 layers
    assert all(mine[k].shape == theirs[k].shape for k in mine)
    diff = sum(float(((mine[k].float() - theirs[k].float()) ** 2).sum()) for k in mine)
    norm = sum(float((theirs[k].float() ** 2).sum()) for k in mine)
    assert (diff / norm) ** 0.5 < ADAPTER_RTOL

    # Stopped at the first step (the stop file of Hearth's rank control, there from the start), then resumed with
    # the same launch: the sharded checkpoint (gathered whole) puts the same weights and Adam state back.
    home, control = tmp_path / "resume-home", tmp_path / "control"
    control.mkdir()
    (control / "stop").write_text("")
    stopped = subprocess.run(["bash", str(folder / "launch.sh")], cwd=tmp_path,
                             env={**_env(home), "HEARTH_RANK_CONTROL": str(control)}, capture_output=True, text=True,
                             check=False)
    assert stopped.returncode == 0, stopped.stderr[-4000:]
    first = _events(stopped.stdout)
    assert [e["step"] for e in first if e["event"] == "checkpoint"] == [1]
    assert any(e["event"] == "cancelled" for e in first)
    spec_file = folder / "spec.json"
    spec_file.write_text(json.dumps({**json.loads(spec_file.read_text()), "resume": True}))
    resumed = subprocess.run(["bash", str(folder / "launch.sh")], cwd=tmp_path, env=_env(home),
                             capture_output=True, text=True, check=False)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    second = _events(resumed.stdout)
    assert next(e for e in second if e["event"] == "resumed")["step"] == 1
    assert [e["step"] for e in second if e["event"] == "step"] == [2, 3, 4, 5, 6]
    assert _losses(first) + _losses(second) == pytest.approx(_losses(two), rel=1e-4)  # measured: equal

    # It loads back in peft, exports to a GGUF LoRA, and llama.cpp computes the effect torch does.
    tokens = [1, *range(262, 280)]
    base_t = torch_logits(load_hf(hf), tokens)
    adapted_t = torch_logits(PeftModel.from_pretrained(load_hf(hf), str(trained)), tokens)
    exported = export_lora_gguf(trained, tmp_path / "sharded.gguf", base=gguf)
    effect_t = adapted_t - base_t
    effect_c = llama_logits(gguf, tokens, lora=exported.path) - llama_logits(gguf, tokens)
    assert abs(effect_t).max() > 1e-3 and abs(effect_c).max() > 1e-3
    assert cosine(effect_c, effect_t) >= 0.97


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["documents", "dpo"])
def test_the_knowledge_check_and_dpo_run_sharded_like_one_process(kind: str, tiny_pair: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    """Documents: the knowledge check (before and after) and a sample, every rank in the sharded forwards. DPO: the
    reference log-probabilities, scored by every rank on every row (not shared out, as unsharded ranks do)."""
    _gguf, hf = tiny_pair
    source = tmp_path / "source"
    source.mkdir()
    if kind == "documents":
        (source / "facts.md").write_text((
            "Marta Olsen founded the Lantern Bakery in Bergen in 1987. The bakery sells cardamom buns every Saturday. "
            "Its oven was built by Henrik Dahl from Oslo. The river Kvitelva runs past the bakery to the fjord. ") * 6,
            encoding="utf-8")
        spec = spec_from_inputs(str(hf), docs=[str(source)], name=kind, max_steps=4, seq_len=128, batch=2,
                                grad_accum=1, samples=1, sample_tokens=4, save_every=0, lr=5e-3, device="cpu",
                                method_options={"dropout": 0.0})
        data = _chat(tmp_path / "chat.jsonl")  # for the pretend big model's export only
    else:
        data = source / "pref.jsonl"
        data.write_text("\n".join(json.dumps({"prompt": f"what color is the sky {i}", "chosen": "blue",
                                               "rejected": "red dog"}) for i in range(16)), encoding="utf-8")
        # The pair shares one row; 2 x 2 rows per step, one micro-batch per rank.
        spec = spec_from_inputs(str(hf), data=str(data), name=kind, max_steps=4, seq_len=128, batch=2, grad_accum=2,
                                samples=0, save_every=0, lr=1e-3, dpo_beta=0.5, device="cpu",
                                method_options={"dropout": 0.0})
    two, one = _launch_and_alone(_export_sharded(spec, tmp_path, data), tmp_path)
    assert next(e for e in two if e["event"] == "settings")["sharded"]
    assert len(_losses(two)) == 4 and _losses(two) == pytest.approx(_losses(one), rel=RTOL, abs=1e-4)
    finals = [next(e for e in run if e["event"] == "done")["metrics"] for run in (one, two)]
    assert finals[1]["after"]["eval_loss"] == pytest.approx(finals[0]["after"]["eval_loss"], rel=RTOL)
    if kind == "documents":
        checks = [[e for e in run if e["event"] == "knowledge"] for run in (one, two)]
        assert [c["phase"] for c in checks[1]] == ["before", "after"] and checks[1][0]["total"] >= 1
        assert [c["picked"] for c in checks[1]] == [c["picked"] for c in checks[0]]
        assert len(finals[1]["samples"]) == 1 and finals[1]["samples"][0]["prompt"] == finals[0]["samples"][0]["prompt"]


def _method_names() -> list[str]:
    from core.finetune.methods import all_methods

    return [m.name for m in all_methods()]


@pytest.mark.slow
@pytest.mark.parametrize("method", _method_names())
def test_every_method_trains_sharded_and_saves_what_one_process_saves(method: str, tiny_pair: tuple[Path, Path],
                                                                      tmp_path: Path) -> None:
    """Every registered method under the FSDP launch: the same losses and the same saved tensors (names, shapes and
    values within the loss tolerance) as one process, or, for those this job cannot shard, one sentence saying so."""
    from safetensors.torch import load_file

    from core.finetune.job import NOT_SHARDABLE
    from core.finetune.methods import get_method

    _gguf, hf = tiny_pair
    data = _chat(tmp_path / "source" / "chat.jsonl")
    # Dropout off where the method has it (each process draws its own masks); a small rate: LoRA+ trains B 16x
    # faster and at 2e-3 swings from step to step, where bf16 rounding that depends on the rows' split grows.
    fields = getattr(get_method(method).config_cls, "__dataclass_fields__", {})
    spec = spec_from_inputs(str(hf), data=str(data), name="m", method=method, max_steps=3, seq_len=64, batch=2,
                            grad_accum=1, samples=1, sample_tokens=3, save_every=2, lr=5e-4, device="cpu",
                            method_options={"dropout": 0.0} if "dropout" in fields else {})
    folder = _export_sharded(spec, tmp_path, data)
    if get_method(method).wants_4bit or method in NOT_SHARDABLE:
        done = subprocess.run(["bash", str(folder / "launch.sh")], cwd=tmp_path, env=_env(tmp_path / "box-home"),
                              capture_output=True, text=True, check=False)
        assert done.returncode != 0
        (error,) = [e for e in _events(done.stdout) if e["event"] == "error"]  # rank 0 says it, once
        assert error["kind"] == "TrainingError" and "cannot be sharded with FSDP" in error["message"]
        assert not (tmp_path / "box-home" / "data" / "adapters" / "m").exists()
        return
    two, one = _launch_and_alone(folder, tmp_path)
    assert _losses(two) == pytest.approx(_losses(one), rel=RTOL, abs=1e-4) and len(_losses(two)) == 3
    saved = [Path(next(e for e in run if e["event"] == "done")["path"]) for run in (two, one)]
    weights = "model.safetensors" if get_method(method).output == "model" else "adapter_model.safetensors"
    mine, theirs = (load_file(str(f / weights)) for f in saved)
    assert sorted(mine) == sorted(theirs) and mine
    for name, value in theirs.items():
        assert mine[name].shape == value.shape and mine[name].dtype == value.dtype, name
        assert float((mine[name].float() - value.float()).abs().max()) <= 0.05 * max(1.0, float(value.abs().max())), name
