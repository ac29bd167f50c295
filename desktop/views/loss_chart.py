"""The training-loss chart: loss per step and held-out (eval) points, drawn with pyqtgraph.

It draws what a ``core.finetune.run_state.RunState`` holds; the page calls ``show_state`` when the
state announces a step or an eval (pyqtgraph's examples: a ``PlotWidget`` fed by signals).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyqtgraph as pg
from PySide6.QtWidgets import QVBoxLayout, QWidget

from desktop.theme import LIGHT, Palette


class LossChart(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot = pg.PlotWidget()
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.showGrid(x=True, y=True, alpha=0.15)
        self.plot.setLabel("bottom", "step")
        self.plot.setLabel("left", "loss")
        self.legend = self.plot.addLegend(offset=(-10, 10))
        self.train_curve = self.plot.plot([], [], name="training loss")
        self.eval_curve = self.plot.plot([], [], symbol="o", symbolSize=8)  # in the legend once it has points
        self._eval_in_legend = False
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot)
        self.setMinimumHeight(220)
        self.set_palette(LIGHT)

    def set_palette(self, p: Palette) -> None:
        self.plot.setBackground(p.surface)
        axis_pen = pg.mkPen(p.muted)
        for name in ("bottom", "left"):
            axis = self.plot.getAxis(name)
            axis.setPen(axis_pen)
            axis.setTextPen(pg.mkPen(p.muted))
        self.train_curve.setPen(pg.mkPen(p.accent, width=2))
        self.eval_curve.setPen(pg.mkPen(p.ok, width=1.5, style=pg.QtCore.Qt.PenStyle.DashLine))
        self.eval_curve.setSymbolBrush(pg.mkBrush(p.ok))
        self.eval_curve.setSymbolPen(pg.mkPen(p.surface))
        self.legend.setLabelTextColor(p.text)

    def show_points(self, losses: Sequence[tuple[int, float]], evals: Sequence[tuple[int, float]]) -> None:
        self.train_curve.setData([s for s, _ in losses], [v for _, v in losses])
        last = max([s for s, _ in losses] + [s for s, _ in evals] + [1])
        major = whole_step(last / 8)  # steps are whole numbers: no tick at 2.5
        self.plot.getAxis("bottom").setTickSpacing(major, major)
        self.eval_curve.setData([s for s, _ in evals], [v for _, v in evals])
        if evals and not self._eval_in_legend:
            self.legend.addItem(self.eval_curve, "held-out loss")
            self._eval_in_legend = True

    def train_points(self) -> list[tuple[int, float]]:
        xs, ys = self.train_curve.getData()
        return [] if xs is None else [(int(x), float(y)) for x, y in zip(xs, ys, strict=True)]

    def eval_points(self) -> list[tuple[int, float]]:
        xs, ys = self.eval_curve.getData()
        return [] if xs is None else [(int(x), float(y)) for x, y in zip(xs, ys, strict=True)]


def whole_step(raw: float) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50… at least ``raw``."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= raw:
                return step * factor
        step *= 10
