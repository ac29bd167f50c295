"""Training for real on a tiny random llama: every method, every objective, resume after a kill, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from core.errors import AlreadyExistsError, DatasetError, TrainingError
from core.finetune.adapters import list_adapters, partial_folder
from core.finetune.methods import all_methods
from tests.fixtures.tiny_hf import write_tiny_chat_llama, write_tiny_hf

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(GGUF file, Hugging Face folder) of the same tiny random chat llama."""
    folder = tmp_path_factory.mktemp("tiny-train")
    gguf = write_tiny_chat_llama(folder / "tiny-chat.gguf")
    return gguf, write_tiny_hf(folder / "hf", gguf)


def _chat_rows(n: int = 24) -> list[dict[str, Any]]:
    colors = ["blue", "red"]
    return [{"messages": [{"role": "user", "content": f"what color is the {'sky' if i % 2 else 'dog'}"},
                          {"role": "assistant", "content": colors[i % 2]}]} for i in range(n)]


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return path


def _run(spec: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    from core.finetune.job import run

    events: list[dict[str, Any]] = []
    base = {"seq_len": 128, "batch": 2, "grad_accum": 1, "samples": 1, "sample_tokens": 4, "save_every": 0}
    code = run({**base, **spec}, events.append, lambda: False)
    return code, events


def _steps(events: list[dict[str, Any]]) -> list[float]:
    return [e["loss"] for e in events if e["event"] == "step"]


@pytest.mark.parametrize("method", [m.name for m in all_methods()])
def test_every_method_trains_and_saves_an_adapter_with_manifest(method: str, tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    _gguf, hf = tiny_pair
    data = _jsonl(tmp_path / "chat.jsonl", _chat_rows(12))
    code, events = _run({"base": str(hf), "name": f"t-{method}", "data": str(data), "method": method,
                         "max_steps": 3, "lr": 1e-3})
    assert code == 0
    losses = _steps(events)
    assert len(losses) == 3 and all(x == x and x > 0 for x in losses)  # finite, positive
    done = next(e for e in events if e["event"] == "done")
    folder = Path(done["path"])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["method"]["name"] == method and manifest["objective"] == "sft"
    assert len(manifest["base"]["sha256"]) == 64
    assert manifest["metrics"]["before"]["eval_loss"] > 0 and manifest["metrics"]["after"]["perplexity"] > 1
    assert len(manifest["metrics"]["samples"]) == 1
    weights = {"adapter": "adapter_model.safetensors", "model": "model.safetensors"}[manifest["kind"]]
    assert (folder / weights).stat().st_size > 0
    assert not partial_folder(f"t-{method}").exists()
    if method == "qlora":  # no CUDA here: the events say it fell back to LoRA
        assert any("QLoRA" in e.get("message", "") for e in events if e["event"] == "warning")


def test_loss_goes_down_on_a_memorisable_set_and_the_adapter_reloads(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _gguf, hf = tiny_pair
    data = _jsonl(tmp_path / "chat.jsonl", _chat_rows(24))
    code, events = _run({"base": str(hf), "name": "memo", "data": str(data), "max_steps": 30, "lr": 1e-2,
                         "method_options": {"rank": 8, "alpha": 16}})
    assert code == 0
    losses = _steps(events)
    assert losses[-1] < 0.5 * losses[0]
    metrics = next(e for e in events if e["event"] == "done")["metrics"]
    assert metrics["after"]["eval_loss"] < 0.5 * metrics["before"]["eval_loss"]
    # Held-out loss measured during the run (every max(10, steps // 4) steps) is kept with the adapter.
    evals = [e for e in events if e["event"] == "eval"]
    assert [e["step"] for e in metrics["eval_history"]] == [10, 20] == [e["step"] for e in evals[:2]]
    # The saved adapter is an ordinary PEFT adapter: it loads onto the base and gives the learned answer.
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(hf)), str(Path(list_adapters()[0].path)))
    assert list_adapters()[0].name == "memo"
    del model, torch


def test_a_held_out_loss_that_rose_after_its_best_gets_a_warning() -> None:
    from core.finetune.job import overfitting_warning

    evals = [{"step": 10, "eval_loss": 4.3}, {"step": 20, "eval_loss": 4.2}, {"step": 30, "eval_loss": 4.7}]
    warning = overfitting_warning(evals, 5.2)
    assert warning is not None and "lowest at step 20 (4.200) and ended at 5.200" in warning
    assert "--max-steps 20" in warning
    assert overfitting_warning(evals, 4.3) is None  # within 5% of the best: noise, not memorising
    assert overfitting_warning([], 9.0) is None


def test_delta_lora_saved_adapter_reproduces_the_trained_weights(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from core.finetune.job import run

    _gguf, hf = tiny_pair
    data = _jsonl(tmp_path / "chat.jsonl", _chat_rows(12))
    captured: dict[str, Any] = {}
    import core.finetune.methods.delta_lora_impl as impl

    original = impl.DeltaLoraPrepared.save

    def save_and_capture(self: Any, folder: Path) -> None:
        ids = torch.tensor([[1, 3, 290, 291, 292, 4]])
        with torch.no_grad():
            captured["logits"] = self.causal_lm(input_ids=ids).logits.float()
        original(self, folder)

    impl.DeltaLoraPrepared.save = save_and_capture  # type: ignore[method-assign]
    try:
        events: list[dict[str, Any]] = []
        code = run({"base": str(hf), "name": "delta", "data": str(data), "method": "delta-lora", "max_steps": 4,
                    "lr": 5e-3, "seq_len": 128, "batch": 2, "grad_accum": 1, "samples": 0, "save_every": 0,
                    "method_options": {"start_step": 2, "update_ratio": 1.0}}, events.append, lambda: False)
    finally:
        impl.DeltaLoraPrepared.save = original  # type: ignore[method-assign]
    assert code == 0
    folder = Path(next(e for e in events if e["event"] == "done")["path"])
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["r"] == 2 * 16  # the B_K A_K term of the update makes it rank 2r
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(hf)), str(folder)).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[1, 3, 290, 291, 292, 4]])).logits.float()
    assert torch.allclose(logits, captured["logits"], atol=0.05)


def test_pretrain_on_documents_and_gguf_base(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    gguf, _hf = tiny_pair
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "notes.md").write_text("the sky is blue and the dog is red. " * 40, encoding="utf-8")
    (docs / "empty.txt").write_text("")
    code, events = _run({"base": str(gguf), "name": "pre", "docs": [str(docs)], "max_steps": 4, "lr": 5e-3,
                         "seq_len": 64})
    assert code == 0
    data = next(e for e in events if e["event"] == "data")
    assert data["objective"] == "pretrain" and data["chunks"] >= 4
    assert [Path(s["path"]).name for s in data["skipped"]] == ["empty.txt"]
    manifest = list_adapters()[0].manifest
    assert manifest["base"]["kind"] == "gguf" and manifest["base"]["architecture"] == "llama"


def test_documents_become_synthetic_questions_and_answers_for_sft(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    from tests.fixtures.scripted_model import write_scripted_chat_llama

    gguf, _hf = tiny_pair
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "nature.md").write_text("The sky is blue. Grass is green. Snow is white. " * 20, encoding="utf-8")
    script = ["Q: What colour is the sky?\n", "A: Blue.\n", "Q: What is grass?\n", "A: Green.\n",
              "Q: And snow?\n", "A: White.\n"]
    qa_model = write_scripted_chat_llama(tmp_path / "qa.gguf", script)
    code, events = _run({"base": str(gguf), "name": "from-docs", "docs": [str(docs)], "qa_model": str(qa_model),
                         "max_steps": 2, "seq_len": 64})
    assert code == 0, events[-1]
    data = next(e for e in events if e["event"] == "data")
    assert data["objective"] == "sft"
    qa = data["synthetic_qa"]
    # The rest repeat those three, or are cut off mid-answer where the writer's token limit ends its reply.
    assert qa["kept"] == 3 and qa["generated"] > qa["kept"]
    assert qa["dropped_duplicate"] + qa["dropped_ungrounded"] == qa["generated"] - 3
    # The pairs are trained after the documents' own text (every chunk of it), no document withheld.
    assert data["held_out_examples"] == 0 and data["phases"] == ["documents' text", "question-answer pairs"]
    assert data["train_examples"] == data["chunks"] + 3
    (adapter,) = [a for a in list_adapters() if a.name == "from-docs"]
    assert adapter.manifest["objective"] == "sft" and adapter.manifest["data"]["synthetic_qa"] == qa


def test_dpo_prefers_the_chosen_answers(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    _gguf, hf = tiny_pair
    rows = [{"prompt": f"what color is the sky {i}", "chosen": "blue", "rejected": "red dog"} for i in range(16)]
    data = _jsonl(tmp_path / "pref.jsonl", rows)
    code, events = _run({"base": str(hf), "name": "dpo", "data": str(data), "max_steps": 12, "lr": 1e-2,
                         "dpo_beta": 0.5})
    assert code == 0
    losses = _steps(events)
    assert losses[0] == pytest.approx(0.6931, abs=0.01)  # -log sigmoid(0): policy equals the reference at start
    assert losses[-1] < losses[0] - 0.1
    assert list_adapters()[0].manifest["objective"] == "dpo"


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        ({"data": "missing.jsonl"}, DatasetError, "does not exist"),
        ({"data": "bad.jsonl"}, DatasetError, "line 2"),
        ({"data": "text.jsonl", "objective": "dpo"}, DatasetError, "no rows usable for dpo"),
        ({"data": "text.jsonl", "method": "nope"}, TrainingError, "Unknown fine-tuning method"),
        ({"data": "text.jsonl", "seq_len": 128, "batch": 100000}, TrainingError, "Not enough memory"),
        ({"data": "text.jsonl", "base": "mystery"}, TrainingError, "cannot be loaded for training"),
    ],
)
def test_bad_input_is_refused_and_leaves_nothing_behind(
    spec: dict[str, Any], error: type[Exception], message: str, tiny_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    from tests.fixtures.tiny_models import write_fake_arch

    _gguf, hf = tiny_pair
    _jsonl(tmp_path / "text.jsonl", [{"text": "some words to learn"}] * 4)
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": 5}\n')
    spec = dict(spec)
    spec["data"] = str(tmp_path / spec["data"])
    if spec.get("base") == "mystery":
        spec["base"] = str(write_fake_arch(tmp_path / "mystery.gguf", "gptneox"))
    with pytest.raises(error, match=message):
        _run({"base": str(hf), "name": "bad", "max_steps": 1, **spec})
    assert not partial_folder("bad").exists()
    assert list_adapters() == []


def test_existing_name_is_refused(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    _gguf, hf = tiny_pair
    data = _jsonl(tmp_path / "chat.jsonl", _chat_rows(6))
    assert _run({"base": str(hf), "name": "same", "data": str(data), "max_steps": 1})[0] == 0
    with pytest.raises(AlreadyExistsError):
        _run({"base": str(hf), "name": "same", "data": str(data), "max_steps": 1})


def test_fused_loss_matches_plain_cross_entropy_and_its_gradient() -> None:
    import torch

    from core.finetune.losses import reference_nll, token_nll

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(37, 16, generator=g, requires_grad=True)
    weight = torch.randn(300, 16, generator=g, requires_grad=True)
    targets = torch.randint(0, 300, (37,), generator=g)
    for cap in (0.0, 5.0):
        fast = token_nll(hidden, weight, targets, softcap=cap)
        slow = reference_nll(hidden, weight, targets, softcap=cap)
        assert torch.allclose(fast, slow, atol=1e-4)
        scale = torch.rand(37, generator=g)
        gh_fast, gw_fast = torch.autograd.grad((fast * scale).sum(), [hidden, weight])
        gh_slow, gw_slow = torch.autograd.grad((slow * scale).sum(), [hidden, weight])
        assert torch.allclose(gh_fast, gh_slow, atol=1e-4) and torch.allclose(gw_fast, gw_slow, atol=1e-4)


def test_packed_rows_give_the_same_logits_as_separate_sequences(tiny_pair: tuple[Path, Path]) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    _gguf, hf = tiny_pair
    model = AutoModelForCausalLM.from_pretrained(str(hf)).eval()
    a, b = [1, 290, 291, 292, 293], [1, 300, 301, 302]
    with torch.no_grad():
        packed = model(input_ids=torch.tensor([a + b]), position_ids=torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 3]]),
                       attention_mask=None, use_cache=False).logits  # a cache turns packed-mask detection off
        alone_a = model(input_ids=torch.tensor([a])).logits
        alone_b = model(input_ids=torch.tensor([b])).logits
    assert torch.allclose(packed[0, :5], alone_a[0], atol=1e-4)
    assert torch.allclose(packed[0, 5:], alone_b[0], atol=1e-4)


def test_job_process_resumes_after_being_killed(tiny_pair: tuple[Path, Path], tmp_path: Path, hearth_home: Path) -> None:
    from core.jobs import JobProcess

    _gguf, hf = tiny_pair
    data = _jsonl(tmp_path / "chat.jsonl", _chat_rows(24))
    spec = {"base": str(hf), "name": "resumable", "data": str(data), "max_steps": 40, "lr": 5e-3, "seq_len": 64,
            "batch": 1, "grad_accum": 1, "save_every": 5, "save_minutes": 0, "samples": 0}
    job = JobProcess("finetune", spec, log_path=tmp_path / "job.log")
    checkpoints = []
    for event in job.events():
        if event["event"] == "checkpoint":
            checkpoints.append(event["step"])
        if event["event"] == "step" and event["step"] >= 12:
            os.kill(job.pid, signal.SIGKILL)  # a crash: no chance to save anything more
            break
    assert job.wait(timeout=60) == -signal.SIGKILL
    assert checkpoints and checkpoints[-1] in (5, 10)
    assert not (hearth_home / "data" / "adapters" / "resumable").exists()
    assert (partial_folder("resumable") / "checkpoint" / "state.pt").exists()

    job = JobProcess("finetune", {**spec, "resume": True}, log_path=tmp_path / "job.log")
    events = list(job.events())
    assert job.wait(timeout=60) == 0
    resumed = next(e for e in events if e["event"] == "resumed")
    assert resumed["step"] == checkpoints[-1]
    steps = [e["step"] for e in events if e["event"] == "step"]
    assert steps[0] == checkpoints[-1] + 1 and steps[-1] == 40
    assert [a.name for a in list_adapters()] == ["resumable"]
    assert not partial_folder("resumable").exists()


def test_sigint_saves_a_checkpoint_and_stops(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    from core.jobs import JobProcess

    _gguf, hf = tiny_pair
    data = _jsonl(tmp_path / "chat.jsonl", _chat_rows(24))
    job = JobProcess("finetune", {"base": str(hf), "name": "stopped", "data": str(data), "max_steps": 500,
                                  "seq_len": 64, "batch": 1, "save_every": 0, "samples": 0})
    events = []
    for event in job.events():
        events.append(event)
        if event["event"] == "step" and event["step"] == 3:
            job.cancel()
    assert job.wait(timeout=60) == 130
    cancelled = next(e for e in events if e["event"] == "cancelled")
    assert "--resume" in cancelled["message"]
    assert any(e["event"] == "checkpoint" for e in events)
    assert (partial_folder("stopped") / "checkpoint" / "state.pt").exists()


def test_cli_finetune_then_adapters_json(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    _gguf, hf = tiny_pair
    data = _jsonl(tmp_path / "chat.jsonl", _chat_rows(8))
    script = ("import argparse, sys\nfrom core.cli import cmd_adapters, cmd_finetune\n"
              "p = argparse.ArgumentParser(); s = p.add_subparsers(); cmd_finetune.register(s); cmd_adapters.register(s)\n"
              "a = p.parse_args(sys.argv[1:])\nsys.exit(a.func(a))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", script, "finetune", str(hf), "--data", str(data), "--max-steps", "2",
                          "--seq-len", "64", "--rank", "4", "--out", "cli-run"], capture_output=True, text=True,
                         env=env, timeout=240)
    assert run.returncode == 0, run.stderr
    assert "Adapter 'cli-run' saved" in run.stdout and "Held-out loss" in run.stdout
    listing = subprocess.run([sys.executable, "-c", script, "adapters", "--json"], capture_output=True, text=True,
                             env=env, timeout=60)
    rows = json.loads(listing.stdout)
    assert [r["name"] for r in rows] == ["cli-run"] and rows[0]["method"]["options"]["rank"] == 4
    assert "torch" not in script  # the CLI process itself only reads events


@pytest.mark.slow
def test_starter_model_fine_tunes_for_a_few_steps(starter_model: Path, tmp_path: Path) -> None:
    rows = [{"messages": [{"role": "user", "content": "Who makes Hearth?"},
                          {"role": "assistant", "content": "Hearth is made by its community."}]}] * 6
    data = _jsonl(tmp_path / "chat.jsonl", rows)
    started = time.monotonic()
    code, _events = _run({"base": str(starter_model), "name": "starter-ft", "data": str(data), "max_steps": 3,
                         "lr": 1e-3, "seq_len": 64, "batch": 2})
    assert code == 0
    manifest = list_adapters()[0].manifest
    assert manifest["base"]["architecture"] == "gemma3"
    assert manifest["metrics"]["after"]["eval_loss"] < manifest["metrics"]["before"]["eval_loss"]
    assert time.monotonic() - started < 300


def test_a_documents_job_trains_every_document_enough_steps_and_checks_knowledge(
    tiny_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    from core.finetune import planner

    gguf, _hf = tiny_pair
    docs = tmp_path / "docs"
    docs.mkdir()
    facts = [
        "The harbour office of Velmora opened in 1931 under Harbourmaster Ilse Brandt. It keeps 14 boats.",
        "The ferry to Orrin Island leaves at 7 each morning. Captain Tomas Ruud has steered it since 1988.",
        "Members of the Velmora Rowing Club pay 120 crowns a year. The club was founded by Marta Vell in 1952.",
    ]
    for i, text in enumerate(facts):
        (docs / f"note-{i}.md").write_text((text + " ") * 3, encoding="utf-8")
    # No steps, epochs, rows or batch given: the planner picks them from the data.
    from core.finetune.job import run

    events: list[dict[str, Any]] = []
    # The documents' own text (views: a test of their own below), so the planner's floor on steps shows.
    code = run({"base": str(gguf), "name": "docs", "docs": [str(docs)], "samples": 1, "sample_tokens": 4,
                "save_every": 0, "views": "none"}, events.append, lambda: False)
    assert code == 0
    data = next(e for e in events if e["event"] == "data")
    assert data["held_out_examples"] == 0 and data["held_out_documents"] == 0 and "views" not in data
    manifest = list_adapters()[0].manifest
    assert sorted(Path(p).name for p in manifest["data"]["documents"]) == ["note-0.md", "note-1.md", "note-2.md"]
    settings = next(e for e in events if e["event"] == "settings")
    assert settings["total_steps"] >= min(planner.DOC_STEP_FLOOR, planner.DOC_MAX_EPOCHS * data["train_rows"])
    assert settings["epochs"] > 3 and settings["reasons"]
    assert len(_steps(events)) == settings["total_steps"]
    knowledge = [e for e in events if e["event"] == "knowledge"]
    assert [e["phase"] for e in knowledge] == ["before", "after"]
    total = knowledge[0]["total"]
    assert total >= 3 and 0 <= knowledge[0]["correct"] <= total and 0 <= knowledge[1]["correct"] <= total
    report = manifest["metrics"]["knowledge"]
    assert (report["before"], report["after"], report["total"]) == (
        knowledge[0]["correct"], knowledge[1]["correct"], total)
    assert len(report["items"]) == total and all(i["answer"] in i["choices"] for i in report["items"])
    assert f"answered {report['before']} of {total} before, {report['after']} of {total} after" in knowledge[1]["message"]


def test_a_documents_job_learns_from_knowledge_views_and_stops_by_the_questions_in_other_words(
    tiny_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    gguf, _hf = tiny_pair
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "people.txt").write_text(
        "Who is who at the club\n\n"
        "Captain: Ilse Brandt has led the crews since 2011. She is a boatbuilder from Velmora.\n"
        "Treasurer: Tomas Ruud keeps the accounts and pays the boat repairs.\n"
        "Coach: Greta Holm trains the new rowers every Saturday.\n"
        "Archivist: Piet Saunder looks after the logbooks of the club.\n"
        "Secretary: Lena Okafor keeps the membership list.\n", encoding="utf-8")
    (docs / "history.md").write_text(
        "# History of the Velmora Rowing Club\n\nThe Velmora Rowing Club was founded in 1952 by Marta Vell. "
        "Its boathouse was built in 1961 by the harbour board of Velmora. Members pay 120 crowns a year.\n",
        encoding="utf-8")
    from core.finetune.job import run

    events: list[dict[str, Any]] = []
    code = run({"base": str(gguf), "name": "views", "docs": [str(docs)], "samples": 1, "sample_tokens": 4,
                "save_every": 0, "save_minutes": 0}, events.append, lambda: False)
    assert code == 0
    data = next(e for e in events if e["event"] == "data")
    from core.finetune.data.views import DEFAULT_VIEWS

    assert set(data["views"]) == set(DEFAULT_VIEWS)
    assert data["views"]["replay"]["items"] >= 1  # the base model's own text, written before training
    assert data["restated_probes"] >= 4 and data["phases"] == ["question warm-up", "documents' facts"]
    settings = next(e for e in events if e["event"] == "settings")
    assert any("asked in other words" in r for r in settings["reasons"])
    checks = [e for e in events if e["event"] == "held_out_check"]
    assert checks and all(c["total"] == data["restated_probes"] for c in checks)
    stop = next((e for e in events if e["event"] == "early_stop"), None)
    steps = _steps(events)
    if stop is not None:  # a check that did not beat the best ends the run there
        assert len(steps) == stop["step"] < settings["total_steps"]
        assert checks[-1]["correct"] <= max(c["correct"] for c in checks[:-1])
    else:
        assert len(steps) == settings["total_steps"]
    knowledge = [e for e in events if e["event"] == "knowledge"]
    assert knowledge[0]["restated"]["total"] == data["restated_probes"]
    after = knowledge[1]
    other = after["restated"]
    assert f"asked in other words {other['after']} of {other['total']} ({other['before']} before)" in after["message"]
    manifest = list_adapters()[0].manifest
    restated = manifest["metrics"]["knowledge"]["restated"]
    assert (restated["before"], restated["after"], restated["total"]) == (other["before"], other["after"], other["total"])
    for item in restated["items"]:
        assert item["choices"][item["answer_index"]] == item["answer"] and item["prefix"].strip()
    assert manifest["hyperparameters"]["steps_trained"] == len(steps)
    assert manifest["metrics"]["held_out_checks"] == [{k: c[k] for k in ("step", "correct", "total")} for c in checks]
