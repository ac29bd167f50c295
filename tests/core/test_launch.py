"""The core side of the Fine-tune page: spec options, inputs to a spec (as the CLI builds it), document scans, cost."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest

from core.errors import AlreadyExistsError, TrainingError
from core.finetune import cost as cost_module
from core.finetune.cost import TrainingDevice, estimate_cost
from core.finetune.data.scan import scan_documents
from core.finetune.launch import spec_from_inputs, suggest_name
from core.finetune.spec import GROUPS, FinetuneSpec, spec_options
from tests.fixtures.import_check import assert_not_imported
from tests.fixtures.tiny_hf import write_tiny_chat_llama

NOT_OPTIONS = {"base", "name", "docs", "data", "resume", "method", "method_options"}


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_chat_llama(tmp_path_factory.mktemp("tiny-launch") / "tiny-chat.gguf")


def _notes(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "handbook.md").write_text("# Office\nThe office opens at nine and the code of the door is 4711.\n" * 40)
    (folder / "more.txt").write_text("The garden has three apple trees and one pear tree. " * 30)
    return folder


# -- spec options ---------------------------------------------------------------------------------------
def test_every_job_field_describes_itself_for_a_form_and_the_rest_say_they_are_not_options() -> None:
    fields = {f.name: f for f in dataclasses.fields(FinetuneSpec)}
    hidden = {name for name, f in fields.items() if f.metadata.get("form", True) is False}
    assert hidden == NOT_OPTIONS
    options = spec_options()
    assert [o.name for o in options] == [n for n in fields if n not in NOT_OPTIONS]
    defaults = FinetuneSpec(base="b", name="n")
    for option in options:
        assert option.label and len(option.help) > 20 and option.group in GROUPS, option
        assert option.type in ("int", "float", "bool", "str"), option
        assert option.default == getattr(defaults, option.name)
        if option.default is not None and option.min is not None and option.max is not None:
            assert option.min <= option.default <= option.max, option
        if option.choices and option.default is not None:
            assert option.default in option.choices
    by_name = {o.name: o for o in options}
    assert by_name["epochs"].optional and by_name["epochs"].default is None and by_name["epochs"].group == "job"
    assert by_name["objective"].choices == ("sft", "pretrain", "dpo")
    assert not by_name["save_every"].optional and by_name["seq_len"].group == "advanced"
    # to_dict/from_dict are unchanged by the metadata
    assert FinetuneSpec.from_dict(defaults.to_dict()) == defaults


# -- inputs -> spec -------------------------------------------------------------------------------------
def test_spec_from_inputs_makes_paths_absolute_checks_options_and_names(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hearth_home: Path,
) -> None:
    notes = _notes(tmp_path / "My Notes")
    monkeypatch.chdir(tmp_path)
    spec = spec_from_inputs(str(tiny_gguf), docs=["My Notes"], method_options={"rank": "8", "alpha": 16},
                            max_steps="20", lr=None, gradient_checkpointing=True)
    assert spec.docs == [str(notes.resolve())] and spec.base == str(tiny_gguf.resolve())
    assert spec.name == "my-notes" and spec.method == "lora"
    assert spec.method_options == {"rank": 8, "alpha": 16.0}  # converted by the method's config
    assert spec.max_steps == 20 and spec.lr is None and spec.gradient_checkpointing is True
    assert spec_from_inputs("some-library-model", data="chat.jsonl", name="x").base == "some-library-model"
    assert spec_from_inputs("m", data="chat.jsonl", name="x").data == str((tmp_path / "chat.jsonl").resolve())

    with pytest.raises(TrainingError, match="has no option 'rnk'"):
        spec_from_inputs(str(tiny_gguf), docs=[str(notes)], method_options={"rnk": 4})
    with pytest.raises(TrainingError, match="Unknown job setting 'epoch'"):
        spec_from_inputs(str(tiny_gguf), docs=[str(notes)], epoch=3)
    with pytest.raises(TrainingError, match="--seq-len must be at least 16"):
        spec_from_inputs(str(tiny_gguf), docs=[str(notes)], seq_len=8)
    with pytest.raises(TrainingError, match="Checkpoint every"):
        spec_from_inputs(str(tiny_gguf), docs=[str(notes)], save_every=-1)
    with pytest.raises(TrainingError, match="Train on must be one of"):
        spec_from_inputs(str(tiny_gguf), docs=[str(notes)], device="tpu")
    with pytest.raises(TrainingError, match="whole number"):
        spec_from_inputs(str(tiny_gguf), docs=[str(notes)], batch="2.5")
    with pytest.raises(TrainingError, match="Give training data"):
        spec_from_inputs(str(tiny_gguf))
    with pytest.raises(TrainingError, match="cannot name an adapter"):
        spec_from_inputs(str(tiny_gguf), docs=[str(notes)], name="../up")
    with pytest.raises(TrainingError, match="--resume needs --out NAME"):
        spec_from_inputs(str(tiny_gguf), docs=[str(notes)], resume=True)

    (hearth_home / "data" / "adapters" / "taken").mkdir(parents=True)
    with pytest.raises(AlreadyExistsError, match="'taken' already exists"):
        spec_from_inputs(str(tiny_gguf), docs=[str(notes)], name="taken")
    assert spec_from_inputs(str(tiny_gguf), docs=[str(notes)], name="taken", resume=True).resume
    checkpoint = hearth_home / "data" / "adapters" / ".halfway.partial" / "checkpoint"
    checkpoint.mkdir(parents=True)
    (checkpoint / "state.pt").write_bytes(b"")
    with pytest.raises(AlreadyExistsError, match="'halfway' is an interrupted fine-tune that can be continued"):
        spec_from_inputs(str(tiny_gguf), docs=[str(notes)], name="halfway")
    assert spec_from_inputs(str(tiny_gguf), docs=[str(notes)], name="halfway", resume=True).resume


def test_suggest_name_comes_from_the_documents_folder_and_is_made_unique(tmp_path: Path, hearth_home: Path) -> None:
    notes = _notes(tmp_path / "My Notes!")
    adapters_root = hearth_home / "data" / "adapters"
    assert suggest_name("/models/tiny.gguf", [str(notes)], "lora") == "my-notes"
    (adapters_root / "my-notes").mkdir(parents=True)
    assert suggest_name("/models/tiny.gguf", [str(notes)], "lora") == "my-notes-2"
    (adapters_root / ".my-notes-2.partial").mkdir()  # an interrupted run holds that name
    assert suggest_name("/models/tiny.gguf", [str(notes)], "lora") == "my-notes-3"
    files = [str(notes / "handbook.md"), str(notes / "more.txt")]
    assert suggest_name("/models/tiny.gguf", files, "lora") == "my-notes-3"  # files of one folder
    assert suggest_name("/models/tiny.gguf", [files[0]], "lora") == "handbook"  # one file: its name
    assert suggest_name("/models/Tiny-Chat.gguf", [], "dora") == "tiny-chat-dora"  # no documents: base + method


def test_the_cli_builds_the_same_spec_as_spec_from_inputs(tiny_gguf: Path, tmp_path: Path) -> None:
    from core.cli import cmd_finetune

    notes = _notes(tmp_path / "notes")
    parser = argparse.ArgumentParser()
    cmd_finetune.register(parser.add_subparsers())
    args = parser.parse_args(["finetune", str(tiny_gguf), "--docs", str(notes), "--rank", "4", "--set", "dropout=0.1",
                              "--max-steps", "30", "--seq-len", "64", "--save-every", "5", "--seed", "3",
                              "--no-gradient-checkpointing", "--device", "cpu"])
    built = cmd_finetune.build_spec(args)
    same = spec_from_inputs(str(tiny_gguf), docs=[str(notes)], method="lora",
                            method_options={"rank": 4, "dropout": "0.1"}, max_steps=30, seq_len=64, save_every=5,
                            seed=3, gradient_checkpointing=False, device="cpu")
    assert built == same.to_dict()
    assert built["name"] == "notes" and built["method_options"] == {"rank": 4, "dropout": 0.1}

    args = parser.parse_args(["finetune", str(tiny_gguf), "--data", str(tmp_path / "d.jsonl"), "--out", "mine",
                              "--epochs", "2", "--lr", "1e-3", "--method", "dora"])
    assert cmd_finetune.build_spec(args) == spec_from_inputs(
        str(tiny_gguf), data=str(tmp_path / "d.jsonl"), name="mine", method="dora", epochs=2.0, lr=1e-3).to_dict()


# -- documents ------------------------------------------------------------------------------------------
def test_scan_lists_each_file_with_its_tokens_or_why_it_is_skipped(tmp_path: Path) -> None:
    notes = _notes(tmp_path / "notes")
    (notes / "empty.md").write_text("  \n")
    (notes / "photo.jpg").write_bytes(b"\xff\xd8\xff" + bytes(100))
    (notes / ".hidden.txt").write_text("not read: hidden files are skipped by training too" * 5)
    scan = scan_documents([str(notes), str(tmp_path / "gone.txt")])
    by_name = {Path(f.path).name: f for f in scan.files}
    assert set(by_name) == {"handbook.md", "more.txt", "empty.md", "photo.jpg", "gone.txt"}
    handbook = by_name["handbook.md"]
    assert handbook.type == "md" and handbook.size == (notes / "handbook.md").stat().st_size
    assert not handbook.skipped and handbook.tokens == handbook.chars // 4 and handbook.chars > 2000
    assert by_name["empty.md"].skipped and "no text" in str(by_name["empty.md"].reason)
    assert by_name["photo.jpg"].reason is not None and "unsupported type '.jpg'" in by_name["photo.jpg"].reason
    assert by_name["gone.txt"].reason == "does not exist"
    assert scan.usable and scan.why_not is None
    assert scan.total_tokens == handbook.tokens + (by_name["more.txt"].tokens or 0)
    assert len(scan.usable_files) == 2 and len(scan.skipped_files) == 3
    assert json.loads(json.dumps(scan.to_dict()))["total_tokens"] == scan.total_tokens


def test_a_set_of_scanned_pdfs_is_not_usable_and_says_why(tmp_path: Path) -> None:
    from pypdf import PdfWriter

    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("page1.pdf", "page2.pdf"):
        writer = PdfWriter()
        writer.add_blank_page(width=200, height=200)
        with open(folder / name, "wb") as handle:
            writer.write(handle)
    scan = scan_documents([str(folder)])
    assert not scan.usable and all(f.skipped for f in scan.files) and len(scan.files) == 2
    assert scan.why_not is not None and "scanned PDFs need OCR first" in scan.why_not
    empty = scan_documents([str(tmp_path / "nothing-here")])
    assert not empty.usable and empty.why_not is not None
    (tmp_path / "blank").mkdir()
    assert "No files found" in str(scan_documents([str(tmp_path / "blank")]).why_not)


# -- cost -----------------------------------------------------------------------------------------------
def test_the_cost_of_a_documents_run_on_the_tiny_model(tiny_gguf: Path, tmp_path: Path) -> None:
    from core.finetune import planner
    from core.library import read_gguf_info

    notes = _notes(tmp_path / "notes")
    spec = spec_from_inputs(str(tiny_gguf), docs=[str(notes)])
    scan = scan_documents(spec.docs)
    estimate = estimate_cost(spec, scan)
    params = read_gguf_info(tiny_gguf).parameters
    assert estimate.fits and estimate.problems == []
    assert estimate.method_of_estimate == "calibrated formula"
    assert estimate.parameters == params and estimate.tokens == scan.total_tokens
    assert 0 < estimate.peak_memory < estimate.available_memory
    assert estimate.device in ("cpu", "cuda", "mps")
    # The planner's choices: short rows for little text, a floor of ~100 updates for a documents set.
    assert estimate.seq_len == planner.documents_row_length(scan.total_tokens)
    assert estimate.total_steps >= planner.DOC_STEP_FLOOR and estimate.epochs > 1
    assert estimate.reasons and estimate.train_seconds > 0
    assert estimate.total_seconds == estimate.train_seconds + estimate.overhead_seconds
    assert estimate.overhead_seconds == cost_module.OVERHEAD_S + cost_module.CONVERSION_S  # not converted yet
    assert estimate.conversion_bytes == params * 4
    assert estimate.adapter_bytes == estimate.trainable_parameters * 12
    assert estimate.disk_needed >= estimate.adapter_bytes + estimate.conversion_bytes and estimate.disk_free > 0
    assert estimate_cost(spec).to_dict() == estimate.to_dict()  # scans by itself when not given a scan
    # Fixed settings are kept; a step cap decides the steps.
    capped = estimate_cost(spec_from_inputs(str(tiny_gguf), docs=[str(notes)], seq_len=64, batch=2, grad_accum=2,
                                            max_steps=7), scan)
    assert (capped.seq_len, capped.batch, capped.grad_accum, capped.total_steps) == (64, 2, 2, 7)


def test_a_converted_base_needs_no_conversion_and_a_dataset_is_estimated_from_its_size(
    tiny_gguf: Path, tmp_path: Path,
) -> None:
    from core.finetune.base_model import _conversion_folder, resolve_base

    data = tmp_path / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": "answer"}]}
            for i in range(200)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    spec = spec_from_inputs(str(tiny_gguf), data=str(data), name="chat", epochs=2)
    base = resolve_base(spec.base)
    for dtype in ("float32", "bfloat16"):
        folder = _conversion_folder(base, dtype)
        folder.mkdir(parents=True)
        (folder / "hearth-complete").write_text("{}")
    estimate = estimate_cost(spec)
    assert estimate.conversion_bytes == 0 and estimate.overhead_seconds == cost_module.OVERHEAD_S
    assert estimate.tokens == data.stat().st_size // 4 and estimate.epochs == 2.0 and estimate.fits
    assert estimate.total_steps >= 2 and estimate.tokens_to_train > estimate.tokens  # two passes


def test_too_little_memory_or_disk_says_what_to_change(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    notes = _notes(tmp_path / "notes")
    spec = spec_from_inputs(str(tiny_gguf), docs=[str(notes)])
    monkeypatch.setattr(cost_module, "training_device",
                        lambda requested="auto": TrainingDevice("cpu", False, 200 * 1024**2))
    estimate = estimate_cost(spec)
    assert not estimate.fits
    assert estimate.peak_memory > estimate.available_memory * cost_module.MEMORY_BUDGET
    assert any(p.startswith("Needs about ") and "GB of memory but 0.2 GB is free: close other programs or pick a "
               "smaller model" in p for p in estimate.problems), estimate.problems

    monkeypatch.setattr(cost_module, "training_device",
                        lambda requested="auto": TrainingDevice("cpu", False, 64 * 1024**3))
    monkeypatch.setattr(cost_module, "_free_disk", lambda: (Path("/data"), 10))
    estimate = estimate_cost(spec)
    assert not estimate.fits and len(estimate.problems) == 1
    assert "of disk space in /data but 0.0 GB is free: free some space first" in estimate.problems[0]


def test_a_documents_set_without_text_does_not_fit(tiny_gguf: Path, tmp_path: Path) -> None:
    folder = tmp_path / "empty-notes"
    folder.mkdir()
    (folder / "a.txt").write_text("")
    spec = spec_from_inputs(str(tiny_gguf), docs=[str(folder)])
    estimate = estimate_cost(spec)
    assert not estimate.fits and "None of these files has text" in estimate.problems[0]


def test_the_page_api_imports_without_torch_or_qt() -> None:
    assert_not_imported("import core.finetune.launch, core.finetune.runs, core.finetune.cost, core.finetune.data.scan",
                        ("torch", "transformers", "peft", "PySide6"))


def test_the_training_device_is_judged_from_the_hardware_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    import core.hardware as hardware
    from core.hardware import GPU, CPUInfo, Hardware, LlamaBackends

    def machine(gpus: list[GPU], features: list[str]) -> Hardware:
        return Hardware(ram_total_bytes=32 * 1024**3, ram_available_bytes=20 * 1024**3,
                        cpu=CPUInfo("cpu", "x86_64", 4, 8, features), gpus=gpus,
                        llama=LlamaBackends(available=False), os="Linux")

    nvidia = [GPU(0, "small", "nvidia", 8 * 1024**3, 6 * 1024**3), GPU(1, "big", "nvidia", 80 * 1024**3, 70 * 1024**3)]
    monkeypatch.setattr(hardware, "detect_hardware", lambda **_: machine(nvidia, []))
    assert cost_module.training_device("auto") == TrainingDevice("cuda", True, 70 * 1024**3)
    assert cost_module.training_device("cpu") == TrainingDevice("cpu", False, 20 * 1024**3)
    monkeypatch.setattr(hardware, "detect_hardware", lambda **_: machine([], ["AVX2", "AMX_BF16"]))
    on_cpu = cost_module.training_device("cuda")
    assert on_cpu.device == "cpu" and on_cpu.bf16 and on_cpu.note and "No NVIDIA GPU" in on_cpu.note


def test_a_documents_estimate_counts_the_knowledge_views_and_says_training_may_stop_sooner(
    tiny_gguf: Path, tmp_path: Path,
) -> None:
    from core.finetune import planner
    from core.finetune.data.views import DEFAULT_VIEWS, build_views

    handbook = Path(__file__).resolve().parent.parent / "fixtures" / "handbook"
    views = estimate_cost(spec_from_inputs(str(tiny_gguf), docs=[str(handbook)], name="views"))
    plain = estimate_cost(spec_from_inputs(str(tiny_gguf), docs=[str(handbook)], name="plain", views="none"))
    assert views.stops_early and not plain.stops_early
    # The rows are what the views really make of these documents (the job's replay: six short samples).
    documents = [(str(p), p.read_text(encoding="utf-8")) for p in sorted(handbook.iterdir()) if p.is_file()]
    made = build_views(documents, DEFAULT_VIEWS, tokens=views.tokens, replay=["A short sample of the base model."
                                                                              * 8] * 6)
    made_tokens = sum(len(i.prompt) + len(i.text) for i in made.items) / planner.CHARS_PER_TOKEN
    assert 0.75 < views.rows * views.seq_len / made_tokens < 1.35
    assert views.total_steps > 4 * plain.total_steps and views.train_seconds > 4 * plain.train_seconds
