"""The window with a Vulkan GPU (lavapipe, Mesa's Vulkan device on the CPU, named as ggml needs it to be): Settings
lists it with its backend and whether models use it, the GPU switch turns it off; the chat says where the model
runs; the GPU layers editor starts on Auto; the Fine-tune page's estimate says why training uses the CPU."""

from __future__ import annotations

import dataclasses
import glob
import os
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from core.engine.params import GPU_LAYERS_AUTO
from core.hardware import clear_cache
from core.settings import load_settings
from desktop.views.main_window import MainWindow
from tests.desktop.conftest import use_model, wait_until

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / ".screenshots"
LAVAPIPE = sorted(glob.glob("/usr/share/vulkan/icd.d/lvp_icd*.json"))
WAIT = 240  # seconds: a bound on a busy machine's detection and load, not a measurement


@pytest.fixture
def lavapipe(monkeypatch: pytest.MonkeyPatch) -> None:
    assert LAVAPIPE, "lavapipe is not installed: run `bash packaging/vulkan_deps.sh --runtime` (make test does)"
    for key in ("VK_DRIVER_FILES", "VK_ICD_FILENAMES"):
        monkeypatch.setenv(key, LAVAPIPE[0])
    monkeypatch.setenv("GGML_VK_VISIBLE_DEVICES", "0")
    monkeypatch.delenv("HEARTH_GPU", raising=False)
    monkeypatch.delenv("HEARTH_GPU_FROM_SETTINGS", raising=False)
    clear_cache()


def _shot(window: MainWindow, qtbot: object, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    for theme in ("light", "dark"):
        window.set_theme(theme)
        qtbot.wait(150)  # type: ignore[attr-defined]  # the restyled transcript lays out again
        assert window.grab().save(str(SHOTS / f"{name}-{theme}.png"))
    window.set_theme("system")


def test_settings_lists_the_vulkan_gpu_and_the_switch_turns_it_off(lavapipe: None, window: MainWindow,
                                                                   qtbot: object) -> None:
    window.show_page("settings")
    page = window.settings_page
    page.ensure_detected()
    wait_until(qtbot, lambda: "Models run on" in page.hardware_label.text(), WAIT, "hardware detection")
    text = page.hardware_label.text()
    assert "llvmpipe" in text and "Vulkan0 (Vulkan)" in text and "used for models" in text, text
    assert "<b>Models run on</b>: Vulkan0: llvmpipe" in text
    assert page.gpu_use.currentData() == "auto"
    page.scroll_area.verticalScrollBar().setValue(0)
    _shot(window, qtbot, "settings-gpu-vulkan")

    page.gpu_use.setCurrentIndex(page.gpu_use.findData("off"))
    assert load_settings().gpu == "off" and os.environ.get("HEARTH_GPU") == "off"
    wait_until(qtbot, lambda: "the GPU is turned off" in page.hardware_label.text(), WAIT, "detection without the GPU")
    assert "used for models" not in page.hardware_label.text()
    _shot(window, qtbot, "settings-gpu-off")
    page.gpu_use.setCurrentIndex(page.gpu_use.findData("auto"))
    assert load_settings().gpu == "auto" and "HEARTH_GPU" not in os.environ


def test_the_chat_runs_the_model_on_the_gpu_with_no_setting_touched_and_says_so(
        lavapipe: None, window: MainWindow, qtbot: object) -> None:
    window.show_page("chat")
    page = window.chat
    assert page.params.form.editors["n_gpu_layers"].value() == GPU_LAYERS_AUTO
    assert page.params.form.editors["n_gpu_layers"].text() == "Auto"
    use_model(page, window.library_model.entry(0).name, max_tokens=8, n_ctx=512)
    page.composer.edit.setPlainText("Name a colour.")
    qtbot.keyClick(page.composer.edit, Qt.Key.Key_Return)  # type: ignore[attr-defined]
    wait_until(qtbot, lambda: page.load_label.text().startswith("Ready") and not page.controller.streaming, WAIT,
               "the load and the answer")
    status = page.controller.engine.status
    assert status is not None and status.offload and status.offload[0][0].startswith("Vulkan0: llvmpipe")
    assert "Vulkan0: llvmpipe" in page.load_label.text()
    assert f"{status.n_layer + 1}/{status.n_layer + 1} layers" in page.load_label.text()
    assert not page.banner.text, page.banner.text
    assert page.transcript.bubbles[1].text.toPlainText().strip()
    _shot(window, qtbot, "chat-on-vulkan")


def test_the_finetune_estimate_says_why_a_vulkan_gpu_does_not_train() -> None:
    from core.finetune.cost import CostEstimate
    from desktop.views.finetune_form import estimate_text

    note = ("Training runs on the CPU: PyTorch has no Vulkan backend, so the AMD Radeon 780M runs your chats but "
            "not fine-tuning (that needs an NVIDIA GPU or a Mac).")
    est = CostEstimate(device="cpu", peak_memory=3 << 30, available_memory=20 << 30, train_seconds=600,
                       overhead_seconds=60, disk_needed=1 << 30, disk_free=50 << 30, seq_len=512, batch=4,
                       grad_accum=1, gradient_checkpointing=False, epochs=3, total_steps=60, rows=80, tokens=40_000,
                       tokens_to_train=120_000, parameters=270_000_000, trainable_parameters=1_000_000,
                       adapter_bytes=4 << 20, conversion_bytes=0, fits=True, device_note=note)
    text = estimate_text(est)
    assert text.startswith("This run needs about 3.2 GB of memory") and text.endswith(note)
    assert "about 11 min on this machine (estimated)" in text and "at most" not in text
    # Knowledge views: training stops when the questions asked in other words stop improving, often sooner.
    assert "at most about 11 min on this machine" in estimate_text(dataclasses.replace(est, stops_early=True))
