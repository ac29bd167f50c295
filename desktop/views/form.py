"""A form built from option metadata (``core.finetune.methods.options``, ``spec_options``): no option is described twice.

Each option becomes an editor chosen from its type and limits: a bool a check box, choices a combo
box, a number a spin box (a learning rate, or any range over several orders of magnitude, in
scientific notation), text a line edit. An option whose default is ``None`` ("pick a sensible value")
gets an "auto" state. The help text sits under the label and in the tooltip.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

AUTO = "auto"


class Option(Protocol):
    """What the form reads of an option (``core.finetune.methods.registry.OptionSpec`` has it all)."""

    name: str
    default: Any
    help: str
    min: float | None
    max: float | None
    choices: tuple[Any, ...] | None


def option_type(option: Option) -> str:
    """"bool", "int", "float" or "str", from the declared type or else the default's."""
    declared = str(getattr(option, "type", "") or "").replace("typing.", "")
    for name in ("bool", "int", "float", "str"):
        if declared == name or declared.startswith(f"{name} ") or declared.startswith(f"{name}|") or (
                declared.startswith("Optional[") and name in declared):
            return name
    if isinstance(option.default, bool):
        return "bool"
    if isinstance(option.default, int):
        return "int"
    if isinstance(option.default, float):
        return "float"
    return "str"


def optional(option: Option) -> bool:
    """Whether ``None`` (automatic) is a value: a ``SpecOption`` says so, else a ``None`` default does."""
    return bool(getattr(option, "optional", option.default is None))


def scientific(option: Option) -> bool:
    """Learning rates and other values spanning orders of magnitude read best as 2e-4."""
    name = option.name.lower()
    if name == "lr" or "learning_rate" in name or name.endswith("_lr"):
        return True
    low, high = option.min, option.max
    if low is not None and high is not None and low > 0 and high / low >= 1e4:
        return True
    d = option.default
    return isinstance(d, float) and d != 0 and abs(d) < 1e-3


def label_for(name: str) -> str:
    """``seq_len`` -> "Sequence length"."""
    words = {"lr": "learning rate", "len": "length", "seq": "sequence", "qa": "Q&A", "dpo": "DPO",
             "mlp": "MLP", "d": "d"}
    text = " ".join(words.get(w, w) for w in name.replace("-", "_").split("_") if w)
    return text[:1].upper() + text[1:]


class ScientificSpinBox(QDoubleSpinBox):
    """A positive number shown as ``2e-04``; the arrows halve or double it."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setDecimals(12)

    def textFromValue(self, value: float) -> str:
        return f"{value:.3g}"

    def valueFromText(self, text: str) -> float:
        try:
            return float(text)
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int) -> object:
        if text == self.specialValueText() and text:
            return QValidator.State.Acceptable, text, pos
        try:
            float(text)
        except ValueError:
            ok = all(c in "0123456789.eE+-" for c in text)
            return (QValidator.State.Intermediate if ok else QValidator.State.Invalid), text, pos
        return QValidator.State.Acceptable, text, pos

    def stepBy(self, steps: int) -> None:
        value = self.value()
        if value <= self.minimum() or value <= 0:
            base = max(self.minimum(), 1e-6)
            self.setValue(base if steps > 0 else self.minimum())
            return
        self.setValue(value * (2.0 ** steps))


class OptionsForm(QWidget):
    """Editors for ``options``; ``values()`` holds only the options changed from their defaults.

    Returning only the changes keeps the defaults where they are defined (the config dataclass, or the
    job's "pick a sensible value" ``None``), so ``values()`` can go straight into ``method_options`` or
    the spec. ``all_values()`` gives every option.
    """

    changed = Signal()

    def __init__(self, options: Sequence[Option], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.options = list(options)
        self.editors: dict[str, QWidget] = {}
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setHorizontalSpacing(16)
        grid.setVerticalSpacing(10)
        grid.setColumnStretch(0, 3)
        grid.setColumnStretch(1, 2)
        for row, option in enumerate(self.options):
            editor = self._editor(option)
            editor.setObjectName(f"option_{option.name}")
            editor.setToolTip(option.help)
            self.editors[option.name] = editor
            text = QWidget()
            col = QVBoxLayout(text)
            col.setContentsMargins(0, 0, 0, 0)
            col.setSpacing(1)
            label = QLabel(str(getattr(option, "label", "") or label_for(option.name)))
            label.setToolTip(option.help)
            col.addWidget(label)
            if option.help:
                help_label = QLabel(option.help)
                help_label.setObjectName("muted")
                help_label.setWordWrap(True)
                help_label.setStyleSheet("font-size: 9pt;")
                col.addWidget(help_label)
            grid.addWidget(text, row, 0)
            grid.addWidget(editor, row, 1, Qt.AlignmentFlag.AlignTop)
        if not self.options:
            none = QLabel("This method has no options.")
            none.setObjectName("muted")
            grid.addWidget(none, 0, 0, 1, 2)
        self.set_values({})

    # -- editors ---------------------------------------------------------------------------------
    def _editor(self, option: Option) -> QWidget:
        kind = option_type(option)
        if option.choices:
            combo = QComboBox()
            if optional(option):
                combo.addItem(AUTO, None)
            for choice in option.choices:
                combo.addItem(str(choice), choice)
            combo.currentIndexChanged.connect(lambda _i: self.changed.emit())
            return combo
        if kind == "bool":
            if optional(option):
                combo = QComboBox()
                for text, value in ((AUTO, None), ("on", True), ("off", False)):
                    combo.addItem(text, value)
                combo.currentIndexChanged.connect(lambda _i: self.changed.emit())
                return combo
            box = QCheckBox()
            box.toggled.connect(lambda _b: self.changed.emit())
            return box
        if kind == "int":
            spin = QSpinBox()
            low = int(option.min) if option.min is not None else 0
            high = int(option.max) if option.max is not None else 1_000_000_000
            if optional(option):
                low -= 1
                spin.setSpecialValueText(AUTO)
            spin.setRange(low, high)
            spin.setSingleStep(_int_step(low, high))
            spin.setMinimumWidth(110)
            spin.valueChanged.connect(lambda _v: self.changed.emit())
            return spin
        if kind == "float":
            spin: QDoubleSpinBox = ScientificSpinBox() if scientific(option) else QDoubleSpinBox()
            low = float(option.min) if option.min is not None else 0.0
            high = float(option.max) if option.max is not None else 1e9
            if isinstance(spin, ScientificSpinBox):
                low = 0.0 if optional(option) else low
            else:
                step, decimals = _float_step(low, high, option.default)
                spin.setDecimals(decimals)
                spin.setSingleStep(step)
                if optional(option):
                    low -= step
            if optional(option):
                spin.setSpecialValueText(AUTO)
            spin.setRange(low, high)
            spin.setMinimumWidth(110)
            spin.valueChanged.connect(lambda _v: self.changed.emit())
            return spin
        line = QLineEdit()
        if optional(option):
            line.setPlaceholderText("none")
        line.textChanged.connect(lambda _t: self.changed.emit())
        return line

    # -- values ----------------------------------------------------------------------------------
    def value(self, name: str) -> Any:
        option = next(o for o in self.options if o.name == name)
        editor = self.editors[name]
        if isinstance(editor, QComboBox):
            return editor.currentData()
        if isinstance(editor, QCheckBox):
            return editor.isChecked()
        if isinstance(editor, QSpinBox | QDoubleSpinBox):
            if optional(option) and editor.value() == editor.minimum():
                return None
            return int(editor.value()) if isinstance(editor, QSpinBox) else float(editor.value())
        assert isinstance(editor, QLineEdit)
        text = editor.text().strip()
        return None if optional(option) and not text else text

    def all_values(self) -> dict[str, Any]:
        return {o.name: self.value(o.name) for o in self.options}

    def values(self) -> dict[str, Any]:
        """The options whose value differs from the default (see the class docstring)."""
        out = {}
        for option in self.options:
            value = self.value(option.name)
            if not _same(value, option.default):
                out[option.name] = value
        return out

    def set_values(self, values: dict[str, Any]) -> None:
        """Show ``values``; options not named go back to their defaults. Emits ``changed`` once."""
        self.blockSignals(True)
        try:
            for option in self.options:
                self._set(option, values.get(option.name, option.default))
        finally:
            self.blockSignals(False)
        self.changed.emit()

    def _set(self, option: Option, value: Any) -> None:
        editor = self.editors[option.name]
        if isinstance(editor, QComboBox):
            index = editor.findData(value)
            editor.setCurrentIndex(index if index >= 0 else 0)
        elif isinstance(editor, QCheckBox):
            editor.setChecked(bool(value))
        elif isinstance(editor, QSpinBox):
            editor.setValue(editor.minimum() if value is None else int(value))
        elif isinstance(editor, QDoubleSpinBox):
            editor.setValue(editor.minimum() if value is None else float(value))
        elif isinstance(editor, QLineEdit):
            editor.setText("" if value is None else str(value))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, int | float) and not isinstance(b, bool):
        return math.isclose(a, float(b), rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)


def _int_step(low: int, high: int) -> int:
    span = high - low
    return 1 if span <= 1000 else 10 if span <= 100_000 else 100


def _float_step(low: float, high: float, default: Any) -> tuple[float, int]:
    span = high - low
    if span <= 1.0:
        return 0.01, 3
    if span <= 100.0:
        return 0.1, 2
    return 1.0, 2
