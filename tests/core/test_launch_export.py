"""hearth finetune --export-launch / --from-spec: the folder for a multi-GPU box, checked with accelerate itself.

The accelerate config is loaded with accelerate's own config classes and run through ``accelerate launch``'s
own validation; DDP or FSDP follows the memory plan (pretend GPUs of a few sizes, a pretend 8B and 70B
model whose weights are sparse files); and the written command trains the tiny model with 2 CPU processes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from core.errors import HearthError, NotFoundError, TrainingError
from core.finetune.launch import spec_from_inputs
from core.finetune.launchers import export_launch, plan_memory, spec_from_file
from core.finetune.resources import GB
from core.finetune.spec import FinetuneSpec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random chat llama as a Hugging Face folder (tests/fixtures/tiny_hf.py)."""
    from tests.fixtures.tiny_hf import write_tiny_chat_llama, write_tiny_hf

    folder = tmp_path_factory.mktemp("tiny-launch")
    return write_tiny_hf(folder / "hf", write_tiny_chat_llama(folder / "tiny-chat.gguf"))


def _pretend_model(folder: Path, *, billions: float, hidden: int, layers: int) -> Path:
    """A Hugging Face folder whose bf16 weights are a sparse file of the size of a ``billions`` model."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": hidden,
        "num_hidden_layers": layers, "vocab_size": 128256, "max_position_embeddings": 8192, "torch_dtype": "bfloat16"}))
    with open(folder / "model.safetensors", "wb") as handle:
        handle.truncate(int(billions * 1e9 * 2))  # sparse: no disk used
    return folder


def _chat_rows(n: int = 24) -> list[dict[str, Any]]:
    colors = ["blue", "red"]
    return [{"messages": [{"role": "user", "content": f"what color is the {'sky' if i % 2 else 'dog'}"},
                          {"role": "assistant", "content": colors[i % 2]}]} for i in range(n)]


def _dataset(tmp_path: Path) -> Path:
    path = tmp_path / "source" / "chat.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in _chat_rows()), encoding="utf-8")
    return path


def _spec(base: Path | str, data: Path, **options: Any) -> FinetuneSpec:
    return spec_from_inputs(str(base), data=str(data), name=options.pop("name", "boxed"), **options)


def _validated(folder: Path, *extra: str) -> Any:
    """``accelerate launch``'s own parsing and validation of the written command (nothing is started)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(
        ["--config_file", str(folder / "accelerate.yaml"), *extra, "-m", "core.finetune.rank", "spec.json"])
    validated, defaults, _mp = _validate_launch_command(args)
    return validated, defaults


def test_ddp_when_the_job_fits_one_gpu_and_accelerate_accepts_the_config(tiny_hf: Path, tmp_path: Path) -> None:
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.utils import DistributedType
    from accelerate.utils.launch import prepare_multi_gpu_env

    out = export_launch(_spec(tiny_hf, _dataset(tmp_path)), tmp_path / "box", gpus_per_node=4, nodes=2,
                        gpu_memory=80 * GB)
    assert out.strategy == "ddp" and out.command == "bash launch.sh"
    assert {f.name for f in out.files} >= {"spec.json", "accelerate.yaml", "launch.sh", "README.txt", "chat.jsonl"}
    config = load_config_from_file(str(out.folder / "accelerate.yaml"))
    assert isinstance(config, ClusterConfig)
    assert config.distributed_type == DistributedType.MULTI_GPU and not config.fsdp_config
    assert (config.num_machines, config.num_processes, config.machine_rank) == (2, 8, 0)
    assert config.main_process_ip == "127.0.0.1" and config.main_process_port == 29500
    # The second machine's command, as launch.sh builds it (MACHINE_RANK=1).
    args, _defaults = _validated(out.folder, "--machine_rank", "1")
    assert args.multi_gpu and not args.use_fsdp and args.num_processes == 8 and args.num_machines == 2
    env = prepare_multi_gpu_env(args)
    assert (args.nproc_per_node, args.nnodes, args.node_rank) == ("4", "2", 1)
    assert args.rdzv_endpoint == "127.0.0.1:29500" and args.rdzv_backend == "static"
    assert "ACCELERATE_USE_FSDP" not in env
    spec = json.loads((out.folder / "spec.json").read_text())
    assert spec["data"] == "data/chat.jsonl" and spec["base"] == f"models/{tiny_hf.name}" and spec["nproc"] == 4
    assert (out.folder / "data" / "chat.jsonl").read_bytes() == _dataset(tmp_path).read_bytes()


def test_fsdp_when_only_sharded_fits_with_the_decoder_layer_wrapped(tmp_path: Path) -> None:
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    big = _pretend_model(tmp_path / "llama-8b", billions=8, hidden=4096, layers=32)
    data = _dataset(tmp_path)
    # An 8B LoRA job: about 20 GB on one GPU at the least. A 16 GB GPU cannot hold it; 80 GB can.
    small_gpu = export_launch(_spec(big, data, name="big-small"), tmp_path / "small", gpus_per_node=8, gpu_memory=16 * GB)
    huge_gpu = export_launch(_spec(big, data, name="big-huge"), tmp_path / "huge", gpus_per_node=8, gpu_memory=80 * GB)
    assert huge_gpu.strategy == "ddp"
    assert small_gpu.strategy == "fsdp"
    plan = small_gpu.plan
    assert plan is not None and plan.whole_bytes > 16 * GB * 0.85 >= plan.sharded_bytes
    assert plan.layer_class == "LlamaDecoderLayer"
    config = load_config_from_file(str(small_gpu.folder / "accelerate.yaml"))
    assert config.distributed_type == DistributedType.FSDP
    assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    assert config.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    args, _defaults = _validated(small_gpu.folder)
    assert args.use_fsdp and args.num_processes == 8
    env = prepare_multi_gpu_env(args)
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_TRANSFORMER_CLS_TO_WRAP"] == "LlamaDecoderLayer"
    # accelerate's FSDP plugin reads those variables as the training processes would, and accepts them.
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        plugin = FullyShardedDataParallelPlugin()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True  # FULL_SHARD
    assert plugin.transformer_cls_names_to_wrap == ["LlamaDecoderLayer"]
    assert "FSDP" in (small_gpu.folder / "README.txt").read_text()
    from core.finetune.launchers import JOB_SHARDS

    # The job shards (tests/core/test_fsdp_job.py), and the user reads so before renting GPUs.
    assert JOB_SHARDS
    assert any("job shards the model with FSDP2" in n for n in small_gpu.notes)
    readme = (small_gpu.folder / "README.txt").read_text()
    assert "job shards the model with FSDP2" in readme and "does not shard" not in readme


def test_qlora_that_needs_fsdp_is_refused_with_the_reason_and_fits_ddp_when_small(tmp_path: Path) -> None:
    data = _dataset(tmp_path)
    big = _pretend_model(tmp_path / "llama-70b", billions=70, hidden=8192, layers=80)
    with pytest.raises(TrainingError, match="QLoRA's 4-bit weights cannot be sharded with FSDP") as caught:
        export_launch(_spec(big, data, name="q70", method="qlora"), tmp_path / "q70", gpus_per_node=8,
                      gpu_memory=24 * GB)
    assert "--method lora" in str(caught.value)
    assert not (tmp_path / "q70").exists()  # nothing written
    eight = _pretend_model(tmp_path / "llama-8b", billions=8, hidden=4096, layers=32)
    # 4-bit, the 8B fits one 24 GB GPU: DDP, which QLoRA supports.
    out = export_launch(_spec(eight, data, name="q8", method="qlora"), tmp_path / "q8", gpus_per_node=2,
                        gpu_memory=24 * GB)
    assert out.strategy == "ddp" and out.plan is not None and out.plan.four_bit
    # The same 70B with LoRA shards over 8 x 80 GB.
    assert plan_memory(_spec(big, data, name="l70"), gpu_memory=80 * GB, world=8).strategy == "fsdp"
    with pytest.raises(TrainingError, match="does not fit even sharded over 2 GPUs"):
        plan_memory(_spec(big, data, name="l70b"), gpu_memory=24 * GB, world=2)


def test_readme_and_launch_script_name_the_placeholders_and_the_way_home(tiny_hf: Path, tmp_path: Path) -> None:
    out = export_launch(_spec(tiny_hf, _dataset(tmp_path)), tmp_path / "box", nodes=2, gpu_memory=40 * GB)
    script = (out.folder / "launch.sh").read_text()
    readme = (out.folder / "README.txt").read_text()
    config = (out.folder / "accelerate.yaml").read_text()
    assert os.access(out.folder / "launch.sh", os.X_OK)
    assert "--machine_rank \"$MACHINE_RANK\"" in script and 'MACHINE_RANK="${MACHINE_RANK:-0}"' in script
    assert "-m core.finetune.rank spec.json" in script and "accelerate.commands.launch" in script
    assert "nvidia-smi -L" in script  # no --gpus-per-node: counted on the box
    for placeholder in ("num_machines", "main_process_ip", "main_process_port", "MACHINE_RANK=0", "MACHINE_RANK=1"):
        assert placeholder in readme, placeholder
    assert config.count("PLACEHOLDER") == 3
    assert "hearth adapters import PATH/boxed" in readme
    assert f"models/{tiny_hf.name}" in readme and "Copy these files" in readme  # the base to copy
    assert not any("no NVIDIA GPU here" in n for n in out.notes)  # the GPU memory was given


def test_the_base_as_a_hugging_face_repo_id_stays_an_id_with_the_download_command(tmp_path: Path,
                                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cache = Path(os.environ["HF_HUB_CACHE"])
    snapshot = cache / "models--acme--tiny-8b" / "snapshots" / "abc"
    _pretend_model(snapshot, billions=0.5, hidden=1024, layers=16)
    (cache / "models--acme--tiny-8b" / "refs").mkdir(parents=True)
    (cache / "models--acme--tiny-8b" / "refs" / "main").write_text("abc")
    out = export_launch(_spec("acme/tiny-8b", _dataset(tmp_path)), tmp_path / "box", gpus_per_node=2,
                        gpu_memory=24 * GB)
    spec = json.loads((out.folder / "spec.json").read_text())
    assert spec["base"] == "acme/tiny-8b"
    readme = (out.folder / "README.txt").read_text()
    assert "hf download acme/tiny-8b" in readme and "Copy these files" not in readme
    assert spec_from_file(out.folder)["base"] == "acme/tiny-8b"  # a repo id is not a path of the folder


def test_spec_from_file_resolves_the_folder_and_says_what_is_wrong(tiny_hf: Path, tmp_path: Path) -> None:
    out = export_launch(_spec(tiny_hf, _dataset(tmp_path)), tmp_path / "box", gpus_per_node=2, gpu_memory=24 * GB,
                        copy_base=True)
    read = spec_from_file(out.folder / "spec.json")
    assert read["data"] == str(out.folder / "data" / "chat.jsonl")
    assert read["base"] == str(out.folder / "models" / tiny_hf.name)
    assert spec_from_file(out.folder) == read  # the folder works as well as the file
    FinetuneSpec.from_dict(read).check()

    with pytest.raises(NotFoundError, match="No job spec at"):
        spec_from_file(tmp_path / "nowhere" / "spec.json")
    with pytest.raises(NotFoundError, match="No job spec at"):
        spec_from_file(tmp_path / "source")  # a folder without spec.json
    bad = tmp_path / "bad.json"
    bad.write_text("{\n  \"base\": \"x\",\n  oops\n}")
    with pytest.raises(TrainingError, match=r"not valid JSON \(line 3\)"):
        spec_from_file(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(TrainingError, match="not a JSON object"):
        spec_from_file(bad)
    bad.write_text(json.dumps({**json.loads((out.folder / "spec.json").read_text()), "gpus": 8, "zz": 1}))
    with pytest.raises(TrainingError, match=r"settings this Hearth does not know \(gpus, zz\)"):
        spec_from_file(bad)
    bad.write_text(json.dumps({"data": "x.jsonl"}))
    with pytest.raises(TrainingError, match="names no base and no name"):
        spec_from_file(bad)
    moved = json.loads((out.folder / "spec.json").read_text())
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "spec.json").write_text(json.dumps({**moved, "base": "meta/x"}))
    with pytest.raises(NotFoundError, match=r"The dataset data/chat\.jsonl is missing from"):
        spec_from_file(tmp_path / "elsewhere")
    (tmp_path / "elsewhere" / "spec.json").write_text(json.dumps(moved))
    with pytest.raises(NotFoundError, match=f"models/{tiny_hf.name} is not in"):
        spec_from_file(tmp_path / "elsewhere")
    (tmp_path / "typed").mkdir()
    (tmp_path / "typed" / "spec.json").write_text(json.dumps({**moved, "base": "meta/x", "data": None}))
    with pytest.raises(TrainingError, match="Give training data"):
        spec_from_file(tmp_path / "typed")


def test_export_refuses_a_folder_with_other_files_and_writes_nothing(tiny_hf: Path, tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(TrainingError, match="is not empty"):
        export_launch(_spec(tiny_hf, _dataset(tmp_path)), busy, gpu_memory=24 * GB)
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]
    with pytest.raises(TrainingError, match="--nodes must be at least 1"):
        export_launch(_spec(tiny_hf, _dataset(tmp_path)), tmp_path / "n0", nodes=0, gpu_memory=24 * GB)
    again = export_launch(_spec(tiny_hf, _dataset(tmp_path)), tmp_path / "twice", gpu_memory=24 * GB)
    export_launch(_spec(tiny_hf, _dataset(tmp_path)), again.folder, gpu_memory=24 * GB)  # over its own export


def test_adapters_import_copies_a_folder_trained_elsewhere(tmp_path: Path) -> None:
    from core.finetune.adapters import get_adapter, import_adapter

    src = tmp_path / "from-box" / "boxed"
    src.mkdir(parents=True)
    (src / "manifest.json").write_text(json.dumps({"format": 1, "kind": "adapter", "created_at": 1.0,
                                                   "base": {"name": "tiny"}, "method": {"name": "lora"}}))
    (src / "adapter_model.safetensors").write_bytes(b"x" * 100)
    entry = import_adapter(src)
    assert entry.name == "boxed" and get_adapter("boxed").manifest["imported"]["from"] == str(src.resolve())
    with pytest.raises(HearthError, match="already exists"):
        import_adapter(src)
    with pytest.raises(NotFoundError, match=r"has no manifest\.json"):
        import_adapter(tmp_path)
    done = subprocess.run([sys.executable, "-m", "core", "adapters", "import", str(src), "--name", "boxed-2"],
                          cwd=ROOT, capture_output=True, text=True, env=os.environ.copy(), check=False)
    assert done.returncode == 0, done.stderr
    assert "Imported adapter 'boxed-2'" in done.stdout


def test_the_written_command_trains_the_tiny_model_with_two_cpu_processes_and_the_adapter_comes_home(
        tiny_hf: Path, tmp_path: Path) -> None:
    """launch.sh as written, on this machine: accelerate starts 2 ranks (gloo on the CPU); the adapter imports back."""
    spec = _spec(tiny_hf, _dataset(tmp_path), max_steps=4, seq_len=128, batch=2, grad_accum=2, samples=1,
                 sample_tokens=4, save_every=0, lr=1e-3)
    out = export_launch(spec, tmp_path / "box", gpus_per_node=2, gpu_memory=24 * GB, copy_base=True)
    assert out.strategy == "ddp"
    # For this machine only: no GPU (the CPU, gloo) and any free port, as a shared test machine needs.
    config = out.folder / "accelerate.yaml"
    text = config.read_text().replace("use_cpu: false", "use_cpu: true").replace("main_process_port: 29500",
                                                                                  "main_process_port: 0")
    config.write_text(text)
    box_home = tmp_path / "box-home"  # Hearth's folders on "the other machine"
    env = {**os.environ, "HEARTH_HOME": str(box_home), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("GPUS_PER_NODE", None)
    done = subprocess.run(["bash", str(out.folder / "launch.sh")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    kinds = [e["event"] for e in events]
    assert kinds.count("settings") == 1 and kinds.count("done") == 1  # rank 0 alone speaks
    settings = next(e for e in events if e["event"] == "settings")
    assert settings["processes"] == 2 and settings["device"] == "cpu" and settings["total_steps"] == 4
    losses = [e["loss"] for e in events if e["event"] == "step"]
    assert len(losses) == 4 and losses[-1] < losses[0]
    trained = Path(next(e for e in events if e["event"] == "done")["path"])
    assert trained == box_home / "data" / "adapters" / "boxed"
    manifest = json.loads((trained / "manifest.json").read_text())
    assert manifest["hyperparameters"]["processes"] == 2

    # Home: the folder copied back and imported with the CLI.
    copied = tmp_path / "brought-home" / "boxed"
    shutil.copytree(trained, copied)
    imported = subprocess.run([sys.executable, "-m", "core", "adapters", "import", str(copied)], cwd=ROOT,
                              capture_output=True, text=True, env=os.environ.copy(), check=False)
    assert imported.returncode == 0, imported.stderr
    listed = subprocess.run([sys.executable, "-m", "core", "adapters", "--json"], cwd=ROOT, capture_output=True,
                            text=True, env=os.environ.copy(), check=True)
    names = {a["name"]: a for a in json.loads(listed.stdout)}
    assert names["boxed"]["metrics"]["loss_history"] == manifest["metrics"]["loss_history"]


def _launch_fixture(config: Path, model: Path, out: Path, dtype: str) -> dict[str, Any]:
    """tests/fixtures/fsdp_rank.py under ``accelerate launch`` with ``config``: 3 LoRA steps, rank 0's report."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "-m",
                           "tests.fixtures.fsdp_rank", str(model), str(out), "3", "cpu", dtype],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def _for_this_machine(exported: Path, target: Path) -> Path:
    """The exported config with what only this test machine needs: the CPU, 2 processes, any free port."""
    text = (exported / "accelerate.yaml").read_text()
    text = text.replace("use_cpu: false", "use_cpu: true").replace("main_process_port: 29500", "main_process_port: 0")
    text = "\n".join("num_processes: 2" if line.startswith("num_processes:") else line for line in text.splitlines())
    target.write_text(text + "\n")
    return target


def test_the_exported_fsdp_config_shards_lora_training_over_two_cpu_processes(tiny_hf: Path, tmp_path: Path) -> None:
    """core.finetune.sharding under the FSDP config accelerate.yaml asks for: every LlamaDecoderLayer sharded
    (FSDP2, gloo), the same steps as plain data parallel and as one process, the adapter gathered whole."""
    from accelerate.utils.launch import prepare_multi_gpu_env

    from core.finetune.sharding import settings_from_env

    big = _pretend_model(tmp_path / "llama-8b", billions=8, hidden=4096, layers=32)  # the tiny model is a llama too
    data = _dataset(tmp_path)
    fsdp = export_launch(_spec(big, data, name="f"), tmp_path / "fsdp", gpus_per_node=2, gpu_memory=16 * GB)
    ddp = export_launch(_spec(big, data, name="d"), tmp_path / "ddp", gpus_per_node=2, gpu_memory=80 * GB)
    assert (fsdp.strategy, ddp.strategy) == ("fsdp", "ddp")
    args, _defaults = _validated(fsdp.folder)
    settings = settings_from_env(prepare_multi_gpu_env(args))
    assert settings.layer_classes == ("LlamaDecoderLayer",) and settings.reshard_after_forward and settings.version == 2
    with pytest.raises(TrainingError, match="FSDP version 1"):
        settings_from_env({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"})

    sharded = _launch_fixture(_for_this_machine(fsdp.folder, tmp_path / "f.yaml"), tiny_hf, tmp_path / "f.json",
                              "bfloat16")
    plain = _launch_fixture(_for_this_machine(ddp.folder, tmp_path / "d.yaml"), tiny_hf, tmp_path / "d.json",
                            "bfloat16")
    assert sharded["sharded"] and sharded["world"] == 2 and sharded["fsdp_units"] == 3  # 2 layers + the model
    assert not plain["sharded"] and plain["world"] == 2
    # A frozen bf16 base with fp32 LoRA weights: sharded, the same steps as data parallel, to the last bit
    # (the gradients are summed over the ranks in both).
    assert sharded["losses"] == plain["losses"] and sharded["losses"][-1] < sharded["losses"][0]
    assert sharded["sums"] == plain["sums"] and len(sharded["sums"]) == 28  # every LoRA A and B, gathered whole

    # In float32 (no bf16 rounding that depends on the batch's shape), sharded = one process with all rows.
    alone_out = tmp_path / "alone.json"
    done = subprocess.run([sys.executable, "-m", "tests.fixtures.fsdp_rank", str(tiny_hf), str(alone_out), "3", "cpu",
                           "float32"], cwd=ROOT, capture_output=True, text=True, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    alone = json.loads(alone_out.read_text())
    sharded32 = _launch_fixture(_for_this_machine(fsdp.folder, tmp_path / "f32.yaml"), tiny_hf, tmp_path / "f32.json",
                                "float32")
    assert sharded32["losses"] == pytest.approx(alone["losses"], rel=1e-4)
    for name, value in alone["sums"].items():
        assert sharded32["sums"][name] == pytest.approx(value, abs=1e-3), name
