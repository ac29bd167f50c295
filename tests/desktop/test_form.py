"""The generic options form: editors from option metadata, and a new method's options with no desktop change."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from PySide6.QtWidgets import QApplication, QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit, QSpinBox

from core.finetune.methods import registry
from core.finetune.methods.registry import Method, OptionSpec, opt, options, register_method
from core.finetune.spec import spec_options
from desktop.models.library import LibraryTableModel
from desktop.ops import Executor
from desktop.views.finetune_page import FinetunePage
from desktop.views.form import OptionsForm, ScientificSpinBox


@dataclass
class ThrowawayConfig:
    depth: int = opt(3, "How many layers of wobble.", min=1, max=12)
    wobble: float = opt(0.25, "How much it wobbles.", min=0.0, max=1.0)
    learning_rate: float = opt(3e-4, "Its own learning rate.", min=1e-7, max=1.0)
    shape: str = opt("round", "The wobble's shape.", choices=("round", "square"))
    loud: bool = opt(False, "Wobble loudly.")
    motto: str = opt("", "Something to say.")


def _never(*_args: object) -> None:
    raise AssertionError("a throw-away method never trains")


@pytest.fixture
def throwaway() -> Iterator[Method]:
    registry.all_methods()  # load the built-in methods first
    method = register_method(Method(
        name="wobble", title="Wobble", summary="A throw-away method that only a test knows.", reference="",
        config_cls=ThrowawayConfig, prepare=_never, order=99,
    ))
    yield method
    registry._METHODS.pop("wobble", None)


@pytest.fixture
def pool() -> Iterator[Executor]:
    executor = Executor(2, "test-form")
    yield executor
    executor.shutdown(wait=False)


def test_each_option_gets_the_editor_its_metadata_asks_for(qtbot: object) -> None:
    form = OptionsForm(options(ThrowawayConfig))
    qtbot.addWidget(form)  # type: ignore[attr-defined]
    e = form.editors
    assert isinstance(e["depth"], QSpinBox) and (e["depth"].minimum(), e["depth"].maximum()) == (1, 12)
    assert isinstance(e["wobble"], QDoubleSpinBox) and not isinstance(e["wobble"], ScientificSpinBox)
    assert e["wobble"].singleStep() == pytest.approx(0.01)
    assert isinstance(e["learning_rate"], ScientificSpinBox) and e["learning_rate"].text() == "0.0003"
    assert isinstance(e["shape"], QComboBox) and [e["shape"].itemText(i) for i in range(2)] == ["round", "square"]
    assert isinstance(e["loud"], QCheckBox) and isinstance(e["motto"], QLineEdit)
    assert e["depth"].toolTip() == "How many layers of wobble."
    assert form.values() == {}
    assert form.all_values() == {"depth": 3, "wobble": 0.25, "learning_rate": 3e-4, "shape": "round", "loud": False,
                                 "motto": ""}

    seen: list[int] = []
    form.changed.connect(lambda: seen.append(1))
    e["depth"].setValue(5)
    e["shape"].setCurrentIndex(1)
    e["loud"].setChecked(True)
    e["learning_rate"].lineEdit().setText("2e-05")
    e["learning_rate"].interpretText()
    assert form.values() == {"depth": 5, "shape": "square", "loud": True, "learning_rate": pytest.approx(2e-5)}
    assert len(seen) == 4
    e["learning_rate"].stepBy(1)
    assert form.value("learning_rate") == pytest.approx(4e-5)

    form.set_values({"wobble": 0.5})
    assert form.values() == {"wobble": 0.5}


def test_optional_options_have_an_auto_state(qtbot: object) -> None:
    opts = [
        OptionSpec("epochs", "float", None, "Passes over the data.", min=0.01, max=100.0),
        OptionSpec("seq_len", "int", None, "Tokens per row.", min=16, max=32768),
        OptionSpec("lr", "float", None, "Learning rate.", min=1e-9, max=1.0),
        OptionSpec("gradient_checkpointing", "bool", None, "Trade time for memory."),
    ]
    form = OptionsForm(opts)
    qtbot.addWidget(form)  # type: ignore[attr-defined]
    assert all(form.value(o.name) is None for o in opts)
    assert form.editors["seq_len"].text() == "auto" and form.editors["lr"].text() == "auto"
    form.set_values({"seq_len": 64, "lr": 5e-3, "gradient_checkpointing": False})
    assert form.values() == {"seq_len": 64, "lr": pytest.approx(5e-3), "gradient_checkpointing": False}


def test_the_job_options_come_from_the_spec(qtbot: object) -> None:
    form = OptionsForm(spec_options())
    qtbot.addWidget(form)  # type: ignore[attr-defined]
    assert {"max_steps", "lr", "seq_len"} <= set(form.editors)
    assert form.values() == {}  # every option starts at the spec's own default


def test_a_registered_method_appears_under_advanced_with_its_options(qtbot: object, throwaway: Method,
                                                                    pool: Executor) -> None:
    page = FinetunePage(LibraryTableModel(), pool)
    qtbot.addWidget(page)  # type: ignore[attr-defined]
    advanced = page.form.advanced
    names = [advanced.method_combo.itemData(i) for i in range(advanced.method_combo.count())]
    assert "wobble" in names and names[0] == "lora"
    advanced.select_method("wobble")
    assert advanced.method_summary.text() == "A throw-away method that only a test knows."
    form = advanced.method_form
    assert list(form.editors) == ["depth", "wobble", "learning_rate", "shape", "loud", "motto"]
    assert isinstance(form.editors["shape"], QComboBox)
    form.editors["depth"].setValue(7)  # type: ignore[attr-defined]
    inputs = advanced.spec_inputs(["/tmp/docs"])
    assert inputs["method"] == "wobble" and inputs["method_options"] == {"depth": 7}
    page.shutdown()
    QApplication.processEvents()
