"""Every page rendered to PNG, light and dark, into .screenshots/ at the repo root (for people to look at)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtGui import QImage

from core.chats import Message
from desktop.views.main_window import PAGES, MainWindow
from tests.desktop.conftest import WindowFactory, wait_until
from tests.fixtures.fakehub import FakeHub, make_gguf_repo

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / ".screenshots"
REPO = "acme/Tiny-Llama-GGUF"

ANSWER = """Here is a small function that reverses a string:

```python
def reverse(text: str) -> str:
    \"\"\"Return the text backwards.\"\"\"
    return text[::-1]
```

It uses **slicing** with a step of `-1`. You could also:

1. loop over the characters, or
2. call `"".join(reversed(text))`.
"""


@pytest.fixture
def hub(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        make_gguf_repo(server, tmp_path_factory.mktemp("hub"), REPO, downloads=12_345, likes=321)
        make_gguf_repo(server, tmp_path_factory.mktemp("hub2"), "bartowski/Qwen-Mini-GGUF", downloads=5_400, likes=88,
                       gguf={"total": 494_000_000, "architecture": "qwen2", "context_length": 32768})
        yield server


def _populate(window: MainWindow, qtbot: object) -> None:
    store = window.store
    model = window.library_model.entry(0).name
    conv = store.create(title="Reverse a string in Python", model=model)
    store.add_message(conv.id, Message(role="user", content="How do I reverse a string in Python?"))
    store.add_message(conv.id, Message(
        role="assistant", content=ANSWER, finish_reason="stop", completion_tokens=74, tokens_per_second=18.4,
        meta={"context_used": 131, "n_ctx": 4096},
    ))
    store.create(title="Packing list for a weekend hike", model=model)
    window.chat.conversations.refresh()
    window.chat.open_conversation(conv.id)


def test_render_every_page_light_and_dark(make_window: WindowFactory, qtbot: object, hub: FakeHub) -> None:
    hub.add_fault("stall", path="Q8_0", after=60_000, seconds=30.0)
    window = make_window()
    window.resize(1280, 800)
    _populate(window, qtbot)
    window.show_page("discover")
    wait_until(qtbot, lambda: window.discover.results.rowCount() == 2, 20, "search results")
    window.discover.select_result(REPO)
    wait_until(qtbot, lambda: window.discover.quants.rowCount() > 0, 20, "the quants")
    for quant in ("Q4_K_M", "Q8_0"):
        names = [window.discover.quants.group(r).name for r in range(window.discover.quants.rowCount())]
        window.discover.quant_view.selectRow(names.index(quant))
        window.discover.download_button.click()
    wait_until(qtbot, lambda: sorted(window.queue_model.progress(r).state for r in range(window.queue_model.rowCount()))
               == ["done", "downloading"], 20, "one download done and one under way")
    window.show_page("settings")
    wait_until(qtbot, lambda: "Memory" in window.settings_page.hardware_label.text(), 60, "hardware detection")
    window.show_page("models")
    window.models.select(window.library_model.entry(0).name)
    wait_until(qtbot, lambda: "Metadata" in window.models.details.toPlainText(), 10, "model details")

    SHOTS.mkdir(exist_ok=True)
    written = []
    for theme in ("light", "dark"):
        window.set_theme(theme)
        for page in PAGES:
            window.show_page(page)
            qtbot.wait(120)  # type: ignore[attr-defined]
            path = SHOTS / f"{page}-{theme}.png"
            assert window.grab().save(str(path))
            image = QImage(str(path))
            assert image.width() >= 1000 and image.height() >= 700
            written.append(path)
    window.set_theme("system")
    window.show_page("chat")
    print(f"\nscreenshots written to {SHOTS}: {', '.join(p.name for p in written)}")
