"""The main window: a sidebar of pages, the status bar, drag-and-drop import, remembered layout."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QEvent, QObject, QSettings, QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent, QIcon, QKeySequence, QShortcut, QShowEvent
from PySide6.QtWidgets import (
    QApplication,
    QButtonGroup,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressBar,
    QStackedWidget,
    QSystemTrayIcon,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from core.chats import ChatStore
from core.docs.names import collection_names
from core.engine.gate import FairLock
from core.events import Progress
from core.library import Library, ModelEntry
from core.paths import get_paths
from core.settings import Settings, load_settings, save_settings
from desktop.chat_controller import ChatController
from desktop.models.downloads import DownloadQueueModel
from desktop.models.library import LibraryTableModel
from desktop.ops import Executor, Op, error_text
from desktop.server_control import ServerControl
from desktop.theme import Palette, apply_theme, icon_path
from desktop.tools_control import ToolsControl
from desktop.views.chat_page import ChatPage

if TYPE_CHECKING:  # core.hub pulls in the HTTP stack: loaded on the first download instead
    from core.chats.compare import CompareSide
    from core.hub import DownloadManager, DownloadProgress, QuantGroup
    from desktop.views.compare_view import CompareMode, CompareView

    # The other pages are imported when first opened (``MainWindow.page``): the window shows without them.
    from desktop.views.discover_page import DiscoverPage
    from desktop.views.downloads_page import DownloadsPage
    from desktop.views.finetune_page import FinetunePage
    from desktop.views.knowledge_page import KnowledgePage
    from desktop.views.models_page import ModelsPage
    from desktop.views.settings_page import SettingsPage

PAGES = ("chat", "discover", "downloads", "models", "knowledge", "finetune", "settings")
PAGE_LABELS = {"chat": "Chat", "discover": "Discover", "downloads": "Downloads", "models": "My Models",
               "knowledge": "Knowledge",
               "finetune": "Fine-tune", "settings": "Settings"}


class MainWindow(QMainWindow):
    """Owns the shared pieces (store, library, engine thread, pool, downloads) and wires the pages."""

    library_changed = Signal()
    first_shown = Signal()
    first_painted = Signal()  # the first frame is on screen; the start-up work follows (bench/startup.py)
    download_progress = Signal(object)  # DownloadProgress, from download threads (queued to the GUI)

    def __init__(self, *, library: Library | None = None, download_manager: DownloadManager | None = None) -> None:
        super().__init__()
        self.setWindowTitle("Hearth")
        self.setAcceptDrops(True)
        self.paths = get_paths().ensure()
        self.state = QSettings(str(self.paths.config / "window.ini"), QSettings.Format.IniFormat)
        self.settings: Settings = load_settings(self.paths)
        self.library = library or Library(self.paths)
        self.store = ChatStore(self.paths.chats_db)
        self.engine_thread = Executor(1, "hearth-engine")
        self.pool = Executor(4, "hearth-pool")
        self._downloads = download_manager
        self._unsubscribe: Callable[[], None] = lambda: None
        if download_manager is not None:
            self._unsubscribe = download_manager.subscribe(self.download_progress.emit)
        self.download_progress.connect(self._download_progress)
        # One engine for the window and the API server, taken in turns (first come, first served).
        self.engine_lock = FairLock()
        self.controller = ChatController(self.store, self.engine_thread, lock=self.engine_lock)
        self.server = ServerControl(self.controller.engine, self.engine_lock)
        self.tools = ToolsControl(call_timeout=self.settings.tool_timeout)  # MCP servers (Settings > Tools)
        self._quitting = False  # closing for good: no "keep serving?" question
        self._tray: QSystemTrayIcon | None = None
        self.library_model = LibraryTableModel()
        self.queue_model = DownloadQueueModel()
        self.palette_: Palette = apply_theme(self.settings.theme)
        self._shown = False
        self._started = False  # the start-up work after the first frame has run
        self._closed = False

        self.chat = ChatPage(self.store, self.controller, self.library_model, self.settings, self.save_settings)
        self.chat.set_tools(self.tools)
        self._compare: CompareMode | None = None  # Chat's Compare mode, made when first opened (open_compare)
        self.chat.compare_requested.connect(lambda: self.open_compare())
        self.chat.compare_opened.connect(lambda group: self.open_compare(group=group))
        # Only the chat (the first page seen) is built now; each other page is an empty holder in the stack,
        # replaced by the page the first time it is opened or needed (``page``).
        self.stack = QStackedWidget()
        self.pages: dict[str, QWidget] = {}
        self._built: dict[str, QWidget] = {"chat": self.chat}
        for name in PAGES:
            widget = self.chat if name == "chat" else _holder(name)
            self.pages[name] = widget
            self.stack.addWidget(widget)
        central = QWidget()
        row = QHBoxLayout(central)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(0)
        row.addWidget(self._sidebar())
        row.addWidget(self.stack, 1)
        self.setCentralWidget(central)
        self.status_label = QLabel("")
        self.status_progress = QProgressBar()
        self.status_progress.setFixedWidth(160)
        self.status_progress.hide()
        self.statusBar().addWidget(self.status_label, 1)
        self.statusBar().addPermanentWidget(self.status_progress)
        QShortcut(QKeySequence("Ctrl+N"), self, self.new_chat)
        self._apply_palette()
        self._restore_state()

    # -- layout --------------------------------------------------------------------------------
    def _sidebar(self) -> QFrame:
        bar = QFrame()
        bar.setObjectName("sidebar")
        bar.setFixedWidth(190)
        col = QVBoxLayout(bar)
        col.setContentsMargins(0, 6, 0, 12)
        col.setSpacing(2)
        brand = QLabel("Hearth")
        brand.setObjectName("brand")
        col.addWidget(brand)
        self.nav = QButtonGroup(self)
        self.nav_buttons: dict[str, QToolButton] = {}
        for name in PAGES:
            b = QToolButton()
            b.setObjectName("navButton")
            b.setText(PAGE_LABELS[name])
            b.setCheckable(True)
            b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
            b.setIconSize(QSize(18, 18))
            b.setSizePolicy(b.sizePolicy().horizontalPolicy().Expanding, b.sizePolicy().verticalPolicy())
            b.setCursor(Qt.CursorShape.PointingHandCursor)
            b.clicked.connect(lambda _=False, n=name: self.show_page(n))
            self.nav.addButton(b)
            self.nav_buttons[name] = b
            if name == "settings":
                col.addStretch(1)
            col.addWidget(b)
        return bar

    def _apply_palette(self) -> None:
        p = self.palette_
        for name, b in self.nav_buttons.items():
            path = icon_path(name, p)
            if Path(path).exists():
                b.setIcon(QIcon(path))
        logo = icon_path("hearth", p)
        if Path(logo).exists():
            self.setWindowIcon(QIcon(logo))
        for name in self._built:
            self._page_palette(name)
        if self._compare is not None:
            self._compare.set_palette(p)

    def _page_palette(self, name: str) -> None:
        p = self.palette_
        page = self._built[name]
        if name == "downloads":
            self.downloads_page.set_palette(p.border, p.accent)
        elif hasattr(page, "set_palette"):  # My Models follows the application palette alone
            page.set_palette(p)

    # -- pages, built when first needed ----------------------------------------------------------
    def page(self, name: str) -> QWidget:
        """The page ``name``, built (its module imported, its signals wired) the first time it is asked for."""
        built = self._built.get(name)
        if built is not None:
            return built
        page: QWidget = getattr(self, f"_build_{name}")()
        self._built[name] = page
        holder = self.pages[name]
        was_current = self.stack.currentWidget() is holder
        self.stack.insertWidget(self.stack.indexOf(holder), page)
        self.pages[name] = page
        if was_current:
            self.stack.setCurrentWidget(page)
        self.stack.removeWidget(holder)
        holder.deleteLater()
        self._page_palette(name)
        return page

    def is_built(self, name: str) -> bool:
        return name in self._built

    def _build_discover(self) -> DiscoverPage:
        from desktop.views.discover_page import DiscoverPage

        page = DiscoverPage(self.pool)
        page.download_requested.connect(self.start_download)
        return page

    def _build_downloads(self) -> DownloadsPage:
        from desktop.views.downloads_page import DownloadsPage

        page = DownloadsPage(self.queue_model)
        page.pause_requested.connect(lambda i: self._task(i, "pause"))
        page.resume_requested.connect(lambda i: self._task(i, "resume"))
        page.cancel_requested.connect(lambda i: self._task(i, "cancel"))
        return page

    def _build_models(self) -> ModelsPage:
        from desktop.views.models_page import ModelsPage

        page = ModelsPage(self.library_model, self.pool)
        page.import_requested.connect(self.import_files)
        page.open_in_chat.connect(self.open_in_chat)
        page.delete_requested.connect(self.delete_model)
        page.library_edited.connect(self.refresh_library)  # a projector chosen or cleared
        page.adapters.chat_requested.connect(self.chat_with_adapter)
        page.adapters.library_edited.connect(self.refresh_library)
        page.adapters.adapters_changed.connect(self.chat.refresh_adapters)
        return page

    def _build_knowledge(self) -> KnowledgePage:
        from desktop.views.knowledge_page import KnowledgePage

        page = KnowledgePage(self.library_model, self.pool)
        page.collections_changed.connect(self.chat.set_collections)
        page.finetune_requested.connect(self.finetune_on)
        page.compare.side_by_side_requested.connect(lambda a, b: self.open_compare(a, b))
        return page

    def _build_finetune(self) -> FinetunePage:
        from desktop.views.finetune_page import FinetunePage

        page = FinetunePage(self.library_model, self.pool, current_model=self._chat_model)
        page.form.writer_row.download_requested.connect(self.start_download)
        page.chat_requested.connect(self.chat_with_adapter)
        page.compare_requested.connect(self.compare_with_base)
        page.model_chat_requested.connect(lambda model: self.refresh_library(lambda: self.open_in_chat(model)))
        page.model_compare_requested.connect(
            lambda base, model: self.refresh_library(lambda: self.compare_models(base, model)))
        page.library_changed.connect(self.refresh_library)
        return page

    def _build_settings(self) -> SettingsPage:
        from desktop.views.settings_page import SettingsPage

        page = SettingsPage(self.settings, self.pool, server=self.server, save=self.save_settings, tools=self.tools)
        page.defaults.set_models(self.library_model)  # its draft model picker lists the library
        page.theme_changed.connect(self.set_theme)
        page.defaults_saved.connect(self.save_settings)
        return page

    # The pages by name, as before they were built lazily: asking for one builds it.
    @property
    def discover(self) -> DiscoverPage:
        return self.page("discover")  # type: ignore[return-value]

    @property
    def downloads_page(self) -> DownloadsPage:
        return self.page("downloads")  # type: ignore[return-value]

    @property
    def models(self) -> ModelsPage:
        return self.page("models")  # type: ignore[return-value]

    @property
    def knowledge(self) -> KnowledgePage:
        return self.page("knowledge")  # type: ignore[return-value]

    @property
    def finetune(self) -> FinetunePage:
        return self.page("finetune")  # type: ignore[return-value]

    @property
    def settings_page(self) -> SettingsPage:
        return self.page("settings")  # type: ignore[return-value]

    def finetune_on(self, paths: list[str]) -> None:
        """Fine-tune with these documents (a collection's files): the form gets them unless a job is shown."""
        self.show_page("finetune")
        if self.finetune.view() == "form":
            self.finetune.form.clear_documents()
            self.finetune.form.add_paths(paths)

    def show_page(self, name: str) -> None:
        self.stack.setCurrentWidget(self.page(name))
        self.nav_buttons[name].setChecked(True)
        if name == "discover":
            self.discover.ensure_searched()
        elif name == "settings":
            self.settings_page.ensure_detected()

    def current_page(self) -> str:
        return next(n for n, w in self.pages.items() if w is self.stack.currentWidget())

    def set_theme(self, theme: str) -> None:
        self.settings.theme = theme
        self.save_settings()
        self.palette_ = apply_theme(theme)
        self._apply_palette()

    def save_settings(self) -> None:
        try:
            save_settings(self.settings, self.paths)
        except OSError as exc:
            self.show_status(f"Could not save the settings: {exc}")

    def show_status(self, text: str) -> None:
        self.status_label.setText(text)

    # -- window state --------------------------------------------------------------------------
    def _restore_state(self) -> None:
        geometry = self.state.value("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)  # type: ignore[arg-type]
        else:
            self.resize(1240, 780)
        splitter = self.state.value("chat_splitter")
        if splitter is not None:
            self.chat.splitter.restoreState(splitter)  # type: ignore[arg-type]
        self.chat.params.setVisible(str(self.state.value("params_visible", "true")) == "true")
        page = str(self.state.value("page", "chat"))
        self.show_page(page if page in PAGES else "chat")

    def _save_state(self) -> None:
        self.state.setValue("geometry", self.saveGeometry())
        self.state.setValue("chat_splitter", self.chat.splitter.saveState())
        self.state.setValue("params_visible", "true" if self.chat.params.isVisible() else "false")
        self.state.setValue("page", self.current_page())
        self.state.setValue("conversation", self.chat.current_id if self.chat.current_id is not None else -1)
        self.state.sync()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not self._shown:
            self._shown = True
            self.first_shown.emit()
            # Start-up work after the first frame is painted, so the window appears at once: a zero timer
            # here ran before the paint (reopening the last chat delayed the first frame). The fallback
            # covers a window that never paints (shown minimised).
            self.installEventFilter(self)
            QTimer.singleShot(1000, self, self._after_first_show)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self and event.type() == QEvent.Type.Paint:
            self.removeEventFilter(self)
            # The next turn of the event loop: the whole widget tree of this frame has painted by then.
            QTimer.singleShot(0, self, self._after_first_show)
        return super().eventFilter(watched, event)

    def _after_first_show(self) -> None:
        if self._closed or self._started:
            return
        self._started = True
        self.first_painted.emit()
        self.refresh_library()
        if self.settings.server.enabled:
            self.server.apply(self.settings.server)
        if self.tools.servers:
            self.tools.start()  # off the GUI thread: a slow server never holds up the window
        # The chat's "Use my documents" lists the collections from the start (a folder listing), before the last
        # chat reopens with its collection; the Knowledge page, once built, keeps the list current. (It used to
        # fill only when Knowledge was opened: a reopened chat that had used a collection said it was gone.)
        try:
            self.chat.set_collections(collection_names())
        except OSError as exc:
            self.show_status(f"Could not list the document collections: {exc}")
        # Reopen the conversation that was open at the last close, else the most recent one.
        last = int(str(self.state.value("conversation", -1)))
        ids = [c.id for c in self.store.list()]
        if ids:
            self.chat.open_conversation(last if last in ids else ids[0])
        # A fine-tune still training, or one left to resume, shows on its page as it did when every page was
        # built at start: that page is built (and reattaches to the run) when there is one.
        from core.finetune import runs

        Op(runs.list_runs).on_success(self._runs_listed).on_failure(lambda exc: None).run(self.pool)
        self.show_status("Preparing the starter model…")
        Op(lambda: self.library.ensure_starter()).on_success(self._starter_ready).on_failure(
            lambda exc: self.show_status(error_text(exc))
        ).run(self.pool)

    def _runs_listed(self, listed: list[Any]) -> None:
        if not self._closed and any(r.state == "running" or r.resumable for r in listed):
            self.page("finetune")

    def _starter_ready(self, entry: ModelEntry | None) -> None:
        if self._closed:
            return
        self.show_status("Ready" if entry else "Ready (no starter model installed)")
        if entry and not self.settings.last_model:
            self.settings.last_model = entry.name
        self.refresh_library()

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.server.serving and not self._quitting:
            event.ignore()
            self.ask_keep_serving()
            return
        self.shutdown()
        super().closeEvent(event)

    # -- serving in the background -------------------------------------------------------------
    def ask_keep_serving(self) -> QMessageBox:
        """Closing while serving: keep serving with the window out of the way, or stop and quit."""
        tray = QSystemTrayIcon.isSystemTrayAvailable()
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Question)
        box.setWindowTitle("Hearth")
        box.setText("Keep serving in the background?")
        where = ("the window goes to the system tray (its icon brings it back)" if tray else
                 "there is no system tray here, so the window is minimised to the task bar instead")
        box.setInformativeText(
            f"Other apps may be using your models at {self.server.url}. Keep serving: {where}, and the server "
            "keeps answering. Stop and quit: the server stops and Hearth closes."
        )
        keep = box.addButton("Keep serving", QMessageBox.ButtonRole.AcceptRole)
        stop = box.addButton("Stop and quit", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(keep)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)

        def done(_result: int) -> None:
            if box.clickedButton() is keep:
                self.keep_serving()
            elif box.clickedButton() is stop:
                self.quit_for_good()

        box.finished.connect(done)
        box.open()
        return box

    def keep_serving(self) -> None:
        self._save_state()
        if QSystemTrayIcon.isSystemTrayAvailable():
            if self._tray is None:
                self._tray = QSystemTrayIcon(self.windowIcon(), self)
                self._tray.setToolTip("Hearth: serving your models to other apps")
                menu = QMenu(self)
                menu.addAction("Open Hearth", self.bring_back)
                menu.addAction("Stop serving and quit", self.quit_for_good)
                self._tray.setContextMenu(menu)
                self._tray.activated.connect(lambda _reason: self.bring_back())
            self._tray.show()
            # Hidden, the window is no longer "the last window": only the tray's Quit ends the app.
            QApplication.setQuitOnLastWindowClosed(False)
            self.hide()
        else:
            self.showMinimized()
        self.show_status(f"Serving in the background at {self.server.url}")

    def bring_back(self) -> None:
        if self._tray is not None:
            self._tray.hide()
        QApplication.setQuitOnLastWindowClosed(True)
        self.showNormal()
        self.raise_()
        self.activateWindow()

    def quit_for_good(self) -> None:
        self._quitting = True
        if self._tray is not None:
            self._tray.hide()
        QApplication.setQuitOnLastWindowClosed(True)
        self.close()
        app = QApplication.instance()
        if app is not None and not self.isVisible():
            app.quit()

    def shutdown(self) -> None:
        """Save the layout, stop the engine and downloads, close the store (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._compare is not None:
            self._compare.shutdown()  # first: it leaves the mode, so the chat's layout is saved as the user left it
        self._save_state()
        self._unsubscribe()
        for name in ("finetune", "knowledge"):  # only pages that were built have work to stop
            if name in self._built:
                self._built[name].shutdown()  # type: ignore[attr-defined]
        self.server.shutdown()  # before the engine: a request in flight ends first
        if self._downloads is not None:
            self._downloads.pause_all()
        self.controller.blockSignals(True)  # answers still queued must not reach the closed store
        self.controller.shutdown()
        self.tools.shutdown()  # after the engine thread: an answer's tool call ends first
        self.pool.shutdown(wait=False)
        self.store.close()

    def new_chat(self) -> None:
        self.show_page("chat")
        self.chat.new_chat()

    # -- library -------------------------------------------------------------------------------
    def refresh_library(self, then: Callable[[], None] | None = None) -> None:
        """List the library again (in the background), then ``then()`` when given (a model was just added)."""
        def listed(entries: list[ModelEntry]) -> None:
            self._set_library(entries)
            if then is not None and not self._closed:
                then()

        Op(self.library.models).on_success(listed).on_failure(lambda exc: self.show_status(error_text(exc))).run(self.pool)

    def _set_library(self, entries: list[ModelEntry]) -> None:
        if self._closed:
            return
        models: ModelsPage | None = self._built.get("models")  # type: ignore[assignment]
        selected = models.selected() if models is not None else None
        self.library_model.set_entries(entries)
        if models is not None and selected is not None:
            models.select(selected.name)
        self.library_changed.emit()

    def open_in_chat(self, name: str) -> None:
        self.show_page("chat")
        self.chat.new_chat()
        self.chat.select_model(name)
        self.settings.last_model = name
        self.save_settings()

    def _chat_model(self) -> str | None:
        entry = self.chat.current_entry()
        return entry.name if entry else None

    def chat_with_adapter(self, base: str, adapter: str) -> None:
        """A new chat with ``base`` and the adapter a fine-tune made."""
        self.show_page("chat")
        self.chat.start_chat_with_adapter(base, adapter)

    def open_compare(self, left: CompareSide | None = None, right: CompareSide | None = None,
                     group: int | None = None) -> CompareView:
        """Chat's Compare mode: a saved comparison (``group``), or a new one with these set-ups."""
        if self._compare is None:
            from desktop.views.compare_view import CompareMode

            self._compare = CompareMode(self.chat, self.controller, self.store, self.library_model, self.settings,
                                        self.palette_)
        self.show_page("chat")
        return self._compare.open(left, right, group)

    def compare_with_base(self, base: str, adapter: str) -> None:
        """A fine-tune's result side by side: the base model alone, and the base with the new adapter."""
        from core.chats.compare import CompareSide

        params = self.settings.parameters_for(base).to_dict()
        self.open_compare(CompareSide(base, params=params), CompareSide(base, adapter, 1.0, params=params))

    def compare_models(self, base: str, model: str) -> None:
        """A full fine-tune's result side by side: the base model and the model it became."""
        from core.chats.compare import CompareSide

        self.open_compare(CompareSide(base, params=self.settings.parameters_for(base).to_dict()),
                          CompareSide(model, params=self.settings.parameters_for(model).to_dict()))

    def delete_model(self, name: str) -> None:
        Op(lambda: self.library.remove(name)).on_success(self._deleted).on_failure(lambda exc: self.models.banner.show_message(error_text(exc))).run(self.pool)

    def _deleted(self, entry: ModelEntry) -> None:
        self.show_status(f"Deleted {entry.name}")
        self.refresh_library()

    def import_files(self, files: list[str]) -> None:
        self.show_page("models")
        for file in files:
            self._import(file)

    def _import(self, file: str) -> None:
        name = Path(file).name
        self.show_status(f"Importing {name}…")
        self.status_progress.show()
        self.status_progress.setRange(0, 0)

        def work(report: object) -> ModelEntry:
            return self.library.import_file(file, mode="copy", progress=report)  # type: ignore[arg-type]

        Op(work).on_progress(self._import_progress).on_success(self._imported).on_failure(
            lambda exc: self._import_failed(name, exc)
        ).run(self.pool)

    def _import_progress(self, p: Progress) -> None:
        if p.fraction is not None:
            self.status_progress.setRange(0, 1000)
            self.status_progress.setValue(int(p.fraction * 1000))

    def _imported(self, entry: ModelEntry) -> None:
        self.status_progress.hide()
        self.show_status(f"Imported {entry.name}")
        self.models.banner.hide()
        self.refresh_library()
        self.library_changed.connect(self._select_imported(entry.name))

    def _select_imported(self, name: str) -> object:
        def once() -> None:
            self.library_changed.disconnect(once)
            self.models.select(name)

        return once

    def _import_failed(self, name: str, exc: BaseException) -> None:
        self.status_progress.hide()
        self.show_status(f"Could not import {name}")
        self.models.banner.show_message(error_text(exc))

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if _gguf_files(event.mimeData().urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:
        files = _gguf_files(event.mimeData().urls())
        if files:
            event.acceptProposedAction()
            self.import_files(files)
        else:
            event.ignore()

    # -- downloads -----------------------------------------------------------------------------
    def start_download(self, repo_id: str, group: QuantGroup) -> None:
        label = f"{repo_id} · {group.name}"

        def add() -> DownloadProgress:
            task = self.downloads.add(repo_id, group.files, mmproj=group.mmproj)  # with its vision projector
            return task.snapshot()

        self.show_page("downloads")
        Op(add).on_success(lambda p: self.queue_model.add_task(p, label)).on_failure(self._download_refused).run(self.pool)

    def _download_refused(self, exc: BaseException) -> None:
        self.show_page("discover")
        self.discover.banner.show_message(error_text(exc))

    @property
    def downloads(self) -> DownloadManager:
        """The download queue, created with the first download."""
        if self._downloads is None:
            from core.hub import DownloadManager

            self._downloads = DownloadManager(self.library)
            self._unsubscribe = self._downloads.subscribe(self.download_progress.emit)
        return self._downloads

    def _download_progress(self, p: DownloadProgress) -> None:
        self.queue_model.update(p)
        if p.state == "done":
            self.show_status(p.message)
            self.refresh_library()

    def _task(self, task_id: int, action: str) -> None:
        task = next((t for t in self.downloads.tasks() if t.id == task_id), None) if self._downloads else None
        if task is not None:
            getattr(task, action)()


def _holder(name: str) -> QWidget:
    """The stand-in for a page not built yet (the stack keeps one widget per sidebar entry)."""
    holder = QWidget()
    holder.setObjectName("page")
    holder.setProperty("page_name", name)
    return holder


def _gguf_files(urls: Sequence[QUrl]) -> list[str]:
    files = []
    for url in urls:
        local = url.toLocalFile()
        if local and local.lower().endswith(".gguf"):
            files.append(local)
    return files
