"""The Fine-tune page's other goals, each a real job on the tiny chat llama driven through the window:
questions and answers written by a local model from the documents, and a JSONL file of chats or of
preference pairs (DPO). Each result says what was trained on, in words that fit it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtWidgets import QApplication

from core.finetune.adapters import list_adapters
from core.library import Library
from desktop.views.finetune_page import FinetunePage
from desktop.views.finetune_result import qa_sentence
from tests.desktop.conftest import wait_until
from tests.desktop.test_finetune_page import FAST, KEEPER, docs, make_page, page_text, ready, shot, tiny_gguf  # noqa: F401
from tests.fixtures.scripted_model import write_scripted_chat_llama

QA_SCRIPT = ["Q: What colour is the lamp room?\n", "A: Blue.\n", "Q: Who kept the light?\n", "A: Marguerite Olier.\n",
             "Q: How many steps has the tower?\n", "A: 214.\n", "Q: Who painted it?\n", "A: Vincent van Gogh.\n"]


@pytest.fixture
def qa_writer(hearth_home: Path, tmp_path: Path) -> str:
    """A local chat model in the library that writes the same four question-answer pairs for any text, one made up."""
    path = write_scripted_chat_llama(tmp_path / "qa-writer.gguf", QA_SCRIPT)
    Library(discover_hf_cache=False).import_file(path, mode="link", name="qa-writer")
    return "qa-writer"


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _start_file(qtbot: Any, page: FinetunePage, data: Path, name: str, *, dpo: bool = False, shot_as: str = "",
                **job: Any) -> None:
    form = page.form
    form.advanced_toggle.setChecked(True)
    form.advanced.select_objective("jsonl")
    assert form.start_button.text() == "Train on my file"
    assert form.why_not() == "Pick a JSONL file under Advanced."
    form.advanced.data_edit.setText(str(data.with_name("missing.jsonl")))
    assert form.why_not().startswith("There is no file ") and not form.start_button.isEnabled()
    form.advanced.data_edit.setText(str(data))
    assert not form.documents_box.isVisible() and form.file_note.isVisible()  # the file, not documents
    assert form.file_note.text() == f"Trains on {data.name}, the JSONL file chosen under Advanced."
    form.advanced.dpo_box.setChecked(dpo)
    form.name_edit.setText(name)
    form.advanced.job_form.set_values({**FAST, "samples": 1, "save_every": 0, **job})
    wait_until(qtbot, lambda: form.start_button.isEnabled() and form.estimate is not None, 60, "the estimate")
    if shot_as:  # Advanced folded again (the goal stays), so the button is in view
        form.advanced_toggle.setChecked(False)
        QApplication.processEvents()
        page.stack.currentWidget().ensureWidgetVisible(form.start_button)
        shot(page, shot_as)
    form.start_button.click()
    wait_until(qtbot, lambda: page.state is not None and page.state.finished, 300, "the end of the job")
    assert page.state is not None and page.state.outcome == "done", (page.state.error, page.state.stage)
    wait_until(qtbot, lambda: page.view() == "result", 30, "the result view")


def test_questions_written_by_a_local_model_are_trained_and_shown(
        qtbot: Any, qa_writer: str, make_page: Callable[[], FinetunePage], tmp_path: Path) -> None:  # noqa: F811
    notes = tmp_path / "lighthouse-notes"  # short: the writer answers every chunk in full (384 tokens each)
    notes.mkdir()
    (notes / "keeper.md").write_text(KEEPER, encoding="utf-8")
    page = make_page()
    page.form.select_base("tiny-chat")
    ready(qtbot, page, notes, max_steps=6, samples=1, save_every=0, seq_len=128)
    assert page.form.base_name() == "tiny-chat"
    advanced = page.form.advanced
    advanced.select_objective("qa")
    assert advanced.qa_combo.isVisible() and not advanced.data_box.isVisible()
    assert page.form.documents_box.isVisible() and not page.form.file_note.isVisible()
    advanced.qa_combo.setCurrentIndex(advanced.qa_combo.findText(qa_writer))
    assert page.form.start_button.text() == "Teach it my documents"
    wait_until(qtbot, lambda: page.form.start_button.isEnabled() and page.form.estimate is not None, 60, "the estimate")
    page.form.start_button.click()
    wait_until(qtbot, lambda: "chunks done" in page.run_view.stage_message.text(), 120, "the writer's progress")
    assert page.run_view.stage_message.text().startswith(f"Writing questions and answers with {qa_writer}: ")
    wait_until(qtbot, lambda: page.state is not None and page.state.finished, 300, "the end of the job")
    state = page.state
    assert state is not None and state.outcome == "done", (state.error, state.stage, state.step)
    wait_until(qtbot, lambda: page.view() == "result", 30, "the result view")
    qa = state.data["synthetic_qa"]
    assert qa["model"] == qa_writer and qa["kept"] == 3 and qa["generated"] > 3
    # The documents' knowledge views (question warm-up first), then the writer's pairs.
    assert state.data["objective"] == "sft" and state.data["phases"] == [
        "question warm-up", "documents' facts", "question-answer pairs"]
    result = page.result_view
    assert result.qa_label.text() == qa_sentence(qa)
    assert result.qa_label.text().startswith(f"{qa_writer} wrote 3 question–answer pairs from your documents (")
    assert "repeated" in result.qa_label.text()
    assert qa["dropped_ungrounded"] >= 1 and "not in your documents" in result.qa_label.text()  # the made-up painter
    texts = page_text(page)
    assert "Q: What colour is the lamp room?" in texts or "What colour is the lamp room?" in texts
    assert result.knowledge_label.text().startswith("Answered ")  # a documents job: the knowledge check too
    assert result.numbers_label.text().startswith("Loss on your documents' text ")
    shot(page, "finished-questions")
    (adapter,) = [a for a in list_adapters() if a.name == "lighthouse-notes"]
    assert adapter.manifest["data"]["synthetic_qa"]["kept"] == 3 and adapter.manifest["base"]["name"] == "tiny-chat"


def test_a_jsonl_chat_file_trains_and_the_result_speaks_of_the_file(
        qtbot: Any, make_page: Callable[[], FinetunePage], tmp_path: Path) -> None:  # noqa: F811
    rows = [{"messages": [{"role": "user", "content": f"What colour is the door of house {i}?"},
                          {"role": "assistant", "content": "The door is green."}]} for i in range(40)]
    data = _jsonl(tmp_path / "doors.jsonl", rows)
    page = make_page()
    _start_file(qtbot, page, data, "doors", shot_as="form-jsonl", max_steps=8)
    state = page.state
    assert state is not None and state.data["objective"] == "sft" and not state.knowledge_total
    result = page.result_view
    examples = state.data["train_examples"]
    assert 0 < examples < 40  # a share is held out to measure on
    assert result.knowledge_label.text() == f"Trained 8 steps on {examples} examples from your file."
    assert "the held-out examples of your file" in result.improvement_label.text()
    assert result.numbers_label.text().startswith("Loss on the held-out examples of your file ")
    assert not result.qa_label.isVisible()
    shot(page, "finished-jsonl")
    (adapter,) = [a for a in list_adapters() if a.name == "doors"]
    assert adapter.manifest["objective"] == "sft" and adapter.manifest["data"]["data"] == str(data)


def test_a_jsonl_file_of_preference_pairs_trains_dpo(
        qtbot: Any, make_page: Callable[[], FinetunePage], tmp_path: Path) -> None:  # noqa: F811
    rows = [{"prompt": f"what colour is the sky {i}", "chosen": "blue", "rejected": "red dog"} for i in range(24)]
    data = _jsonl(tmp_path / "prefs.jsonl", rows)
    page = make_page()
    _start_file(qtbot, page, data, "prefs", dpo=True, max_steps=4, seq_len=256)
    state = page.state
    assert state is not None and state.data["objective"] == "dpo"
    result = page.result_view
    assert result.knowledge_label.text().endswith("preference pairs from your file.")
    assert "the preferred answers of the held-out pairs" in result.improvement_label.text()
    (adapter,) = [a for a in list_adapters() if a.name == "prefs"]
    assert adapter.manifest["objective"] == "dpo"
