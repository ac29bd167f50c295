"""Chat with a fine-tuned adapter: the picker lists only the loaded base's adapters, the scale changes without
reloading, the conversation keeps adapter and scale, and 'Chat with it' opens a chat with the adapter on."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt

from core.library import Library
from desktop.views.chat_page import ChatPage
from desktop.views.main_window import MainWindow
from tests.desktop.conftest import WindowFactory, pick_model, wait_until
from tests.desktop.test_adapters_view import ADAPTER, BASE, install_adapter, train_root  # noqa: F401 (fixture)

SHOTS = Path(__file__).resolve().parents[2] / ".screenshots"


def _greedy(page: ChatPage, max_tokens: int = 6) -> None:
    form = page.params.form.editors
    form["temperature"].setValue(0)
    form["max_tokens"].setValue(max_tokens)
    form["n_ctx"].setValue(256)
    form["n_threads"].setValue(1)


def _picker_names(page: ChatPage) -> list[str]:
    return [page.adapter_picker.itemText(i) for i in range(page.adapter_picker.count())]


def _loras(page: ChatPage) -> list[tuple[str, float]]:
    status = page.controller.engine.status
    return list(status.loras) if status else []


def _wait_scale(qtbot: object, page: ChatPage, scale: float | None) -> None:
    def applied() -> bool:
        loras = _loras(page)
        return loras == [] if scale is None else len(loras) == 1 and abs(loras[0][1] - scale) < 1e-6

    wait_until(qtbot, applied, 60, f"the adapter applied at {scale}")


def _send(qtbot: object, page: ChatPage, text: str) -> None:
    page.composer.edit.setPlainText(text)
    qtbot.keyClick(page.composer.edit, Qt.Key.Key_Return)  # type: ignore[attr-defined]
    wait_until(qtbot, lambda: not page.controller.streaming, 90, "the answer")


def _window(make_window: WindowFactory, qtbot: object) -> MainWindow:
    window = make_window()
    wait_until(qtbot, lambda: window.library_model.row_of(BASE) >= 0 and window.library_model.rowCount() >= 2, 30,
               "the tiny base and the starter model in the library")
    return window


def test_the_picker_applies_the_adapter_and_the_scale_without_reloading_and_the_chat_keeps_them(
    make_window: WindowFactory, qtbot: object, train_root: Path, hearth_home: Path  # noqa: F811
) -> None:
    install_adapter(train_root, hearth_home)
    window = _window(make_window, qtbot)
    page = window.chat
    window.show_page("chat")
    _greedy(page)
    starter = window.library_model.entry(next(r for r in range(window.library_model.rowCount())
                                               if window.library_model.entry(r).name != BASE)).name
    page.select_model(starter)
    assert _picker_names(page) == ["No adapter"] and not page.adapter_picker.isEnabled()
    assert not page.adapter_picker.isVisibleTo(page) and not page.scale_slider.isVisibleTo(page)
    pick_model(page, BASE)
    _greedy(page)  # after the pick: picking a model sets its parameters
    assert _picker_names(page) == ["No adapter", ADAPTER]
    wait_until(qtbot, lambda: page.controller.engine.status is not None and not page.controller.loading, 60, "the model")
    assert page.adapter_picker.isVisibleTo(page) and not page.scale_slider.isVisibleTo(page)
    assert not page.scale_slider.isEnabled() and page.active_label.text() == ""

    assert page.set_adapter(ADAPTER)
    assert page.scale_slider.isVisibleTo(page) and page.scale_label.text() == "×1.00"
    _wait_scale(qtbot, page, 1.0)
    lora = Path(_loras(page)[0][0])
    assert lora.parent == hearth_home / "data" / "adapters" / ADAPTER and lora.name.endswith(".gguf")  # exported on first use
    wait_until(qtbot, lambda: page.active_label.text() == f"{BASE} + {ADAPTER} (×1)", 10, "the header")
    status = page.controller.engine.status
    assert status is not None
    pid, load_seconds = page.controller.engine.pid, status.load_seconds

    page.scale_slider.setValue(16)  # 16 × 0.05
    assert page.scale_label.text() == "×0.80"
    _wait_scale(qtbot, page, 0.8)
    status = page.controller.engine.status
    assert status is not None and page.controller.engine.pid == pid and status.load_seconds == load_seconds
    wait_until(qtbot, lambda: page.active_label.text() == f"{BASE} + {ADAPTER} (×0.8)", 10, "the header")

    _send(qtbot, page, "Who rings the bell?")
    conv_id = page.current_id
    assert conv_id is not None
    conv = window.store.get(conv_id)
    assert (conv.model, conv.adapter, conv.adapter_scale) == (BASE, ADAPTER, 0.8)
    assert [m.role for m in window.store.messages(conv_id)] == ["user", "assistant"]
    assert page.controller.engine.pid == pid
    SHOTS.mkdir(exist_ok=True)
    window.resize(1280, 800)
    for theme in ("light", "dark"):
        window.set_theme(theme)
        qtbot.wait(120)  # type: ignore[attr-defined]
        assert window.grab().save(str(SHOTS / f"chat-adapter-{theme}.png"))
    window.set_theme("system")

    # Another chat without the adapter takes it off; reopening the first puts it back at its scale.
    page.new_chat()
    page.adapter_picker.setCurrentIndex(0)
    page._adapter_picked()
    _wait_scale(qtbot, page, None)
    wait_until(qtbot, lambda: page.active_label.text() == "", 10, "the header without adapter")
    page.open_conversation(conv_id)
    assert page.current_adapter() == (ADAPTER, 0.8)
    _wait_scale(qtbot, page, 0.8)
    assert window.store.get(conv_id).adapter == ADAPTER

    # A restarted window reopens the chat with the same adapter.
    window.close()
    again = _window(make_window, qtbot)
    wait_until(qtbot, lambda: again.chat.current_id == conv_id, 20, "the last chat reopened")
    assert again.chat.current_adapter() == (ADAPTER, 0.8)


def test_chat_with_it_opens_a_chat_whose_answer_uses_the_adapter(
    make_window: WindowFactory, qtbot: object, train_root: Path, hearth_home: Path  # noqa: F811
) -> None:
    install_adapter(train_root, hearth_home, ADAPTER, "broken")
    (hearth_home / "data" / "adapters" / "broken" / "adapter_model.safetensors").write_bytes(b"not safetensors")
    window = _window(make_window, qtbot)
    _greedy(window.chat)
    window.show_page("models")
    view = window.models.adapters
    wait_until(qtbot, lambda: view.model.rowCount() == 2 and view.model.row(0).base is not None, 20, "the adapters")
    view.select(ADAPTER)
    view.chat_button.click()  # the window wires it to ChatPage.start_chat_with_adapter
    page = window.chat
    assert window.current_page() == "chat"
    conv_id = page.current_id
    assert conv_id is not None
    conv = window.store.get(conv_id)
    assert (conv.title, conv.model, conv.adapter, conv.adapter_scale) == (f"Chat with {ADAPTER}", BASE, ADAPTER, 1.0)
    assert page.current_entry() is not None and page.current_entry().name == BASE  # type: ignore[union-attr]
    _wait_scale(qtbot, page, 1.0)
    _send(qtbot, page, "Who rings the bell?")
    messages = window.store.messages(conv_id)
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[1].model == str(Library().get(BASE).path)
    assert len(_loras(page)) == 1 and window.store.get(conv_id).title == f"Chat with {ADAPTER}"

    # An adapter that cannot be applied says why in place; the one in use stays on.
    assert page.set_adapter("broken")
    wait_until(qtbot, lambda: bool(page.banner.text), 30, "the adapter error")
    assert page.current_adapter() == (ADAPTER, 1.0) and window.store.get(conv_id).adapter == ADAPTER
    assert len(_loras(page)) == 1 and Path(_loras(page)[0][0]).parent.name == ADAPTER
    assert page.active_label.text() == f"{BASE} + {ADAPTER} (×1)"
