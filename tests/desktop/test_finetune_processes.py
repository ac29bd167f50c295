"""The Fine-tune page's progress line says how many processes train the job (``hearth finetune --nproc``).

The events are those a two-process run emits (``core.finetune.job``: its settings event carries
``"processes"``). Screenshots, light and dark, go to /work/notes/shots (or HEARTH_SHOTS).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from core.finetune.run_state import RunState
from desktop.theme import apply_theme
from desktop.views.finetune_page import RunView, numbers_text

SHOTS = Path(os.environ.get("HEARTH_SHOTS", "/work/notes/shots"))


def _two_process_run() -> RunState:
    state = RunState("notes-lora")
    events: list[dict[str, Any]] = [
        {"event": "job_did_start", "kind": "finetune", "pid": 4242, "resumed": False},
        {"event": "settings", "method": "lora", "objective": "sft", "lr": 2e-4, "epochs": 3.0, "total_steps": 40,
         "trainable_parameters": 3_800_000, "batch": 2, "grad_accum": 2, "seq_len": 256,
         "gradient_checkpointing": False, "bf16": True, "device": "cpu", "tokens_to_train": 60_000,
         "estimated_train_s": 300.0, "reasons": [], "processes": 2},
        {"event": "stage", "stage": "train", "message": "training 40 steps"},
    ]
    loss = 3.2
    for step in range(1, 15):
        loss *= 0.93
        events.append({"event": "step", "step": step, "total_steps": 40, "loss": round(loss, 4), "lr": 2e-4,
                       "tokens_per_s": 410.0, "eta_s": 7.5 * (40 - step), "elapsed_s": 7.5 * step})
    for event in events:
        state.apply(event)
    return state


def test_the_progress_line_names_the_processes(qtbot: Any) -> None:
    state = _two_process_run()
    assert numbers_text(state).startswith("Step 14 of 40 · 2 processes · 410 tokens/s")
    alone = RunState("x")
    alone.apply({"event": "settings", "total_steps": 4, "processes": 1})
    assert "process" not in numbers_text(alone)

    view = RunView()
    qtbot.addWidget(view)
    view.resize(1000, 560)
    view.watch(state)
    view.resume_button.hide()  # the page shows Resume only for a stopped run
    view.show()
    assert "2 processes" in view.numbers.text()
    SHOTS.mkdir(parents=True, exist_ok=True)
    for theme in ("light", "dark"):
        view.set_palette(apply_theme(theme))
        qtbot.wait(150)
        assert view.grab().save(str(SHOTS / f"finetune-processes-{theme}.png"))
