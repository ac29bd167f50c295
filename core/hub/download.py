"""Downloading models from the Hub into the library: a queue of tasks that can pause, resume, cancel.

A ``DownloadTask`` fetches every file of one model (all parts of a split GGUF, several at once)
into ``.partial`` files under ``Paths.downloads``, checks each against the SHA-256 the Hub lists,
and only then moves them into ``Paths.models/<owner>__<repo>/`` and registers the model. A task
that is cancelled or fails verification leaves nothing in the library folder.

A model's vision projector (``mmproj``) comes after the model, in the same task: the model is
registered first and usable at once; the projector is then fetched, moved beside it and paired.
A projector that does not arrive (stopped, failed, cancelled) leaves the model as it is, unpaired,
with its ``.partial`` kept (except after a cancel), so pulling again resumes only the projector.
"""

from __future__ import annotations

import collections
import itertools
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from core.errors import AlreadyExistsError, CancelledError, DiskFullError, HearthError, VerificationError
from core.events import Progress
from core.hub.client import check_repo_id, ensure_online, safe_relative_path, token
from core.hub.quants import RemoteFile
from core.hub.transfer import RetryPolicy, TransferStopped, fetch, remove_partial
from core.library import Library, ModelEntry

TaskState = Literal["queued", "downloading", "paused", "verifying", "done", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"done", "failed", "cancelled"})
# Free space kept after a download so the system does not run dry.
DISK_RESERVE = 64 * 1024 * 1024
_ids = itertools.count(1)


@dataclass(frozen=True)
class DownloadProgress(Progress):
    """A ``Progress`` report of one download task, with its state, speed and time left."""

    task_id: int = 0
    repo: str = ""
    state: str = "queued"
    speed: float | None = None  # bytes per second over the last few seconds
    eta: float | None = None  # seconds left at that speed


DownloadCallback = Callable[[DownloadProgress], None]


def file_url(repo_id: str, path: str, revision: str | None) -> str:
    from huggingface_hub import hf_hub_url

    from core.hub.client import endpoint

    return str(hf_hub_url(repo_id, path, revision=revision, endpoint=endpoint()))


def repo_folder_name(repo_id: str) -> str:
    owner, name = check_repo_id(repo_id).split("/")
    return f"{owner}__{name}"


class DownloadTask:
    """One model being downloaded. ``pause``, ``resume`` and ``cancel`` may be called from any thread."""

    def __init__(
        self,
        manager: DownloadManager,
        repo_id: str,
        files: list[RemoteFile],
        *,
        revision: str | None,
        name: str | None,
        mmproj: RemoteFile | None = None,
        pair_with: ModelEntry | None = None,
    ) -> None:
        self.id = next(_ids)
        self.manager = manager
        self.repo_id = repo_id
        self.n_model = len(files)  # files[:n_model] are the model; a projector, when any, comes last
        self.mmproj = mmproj
        self.pair_with = pair_with  # a model already in the library: fetch only its projector
        self.files = list(files) + ([mmproj] if mmproj is not None else [])
        self.revision = revision
        self.name = name
        self.total_bytes = sum(f.size for f in self.files)
        self.state: TaskState = "queued"
        self.error: HearthError | None = None
        self.mmproj_error: HearthError | None = None  # why the projector did not arrive (the model did)
        self.entry: ModelEntry | None = None
        self.message = ""
        folder = repo_folder_name(repo_id)
        self.targets = [manager.library.paths.models / folder / safe_relative_path(f.path) for f in self.files]
        self.partials = [
            manager.library.paths.downloads / folder / f"{safe_relative_path(f.path)}.partial" for f in self.files
        ]
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop: str | None = None  # "pause", "cancel" or "abort" (a sibling file failed)
        self._file_done = [0] * len(self.files)
        self._verified = [False] * len(self.files)
        self._samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=64)
        self._last_emit = 0.0
        self._thread = threading.Thread(target=self._run, name=f"hearth-download-{self.id}", daemon=True)
        self._finished = threading.Event()

    # -- public API ----------------------------------------------------------------------------
    @property
    def done_bytes(self) -> int:
        return sum(self._file_done)

    def pause(self) -> None:
        """Stop fetching and keep what has arrived; ``resume`` continues from there."""
        with self._lock:
            if self.state in FINISHED or self._stop == "cancel":
                return
            self._stop = "pause"
            self._wake.set()

    def resume(self) -> None:
        with self._lock:
            if self._stop == "pause":
                self._stop = None
                self._wake.set()

    def cancel(self) -> None:
        """Stop and delete what was fetched; nothing of this model stays on disk."""
        with self._lock:
            if self.state in FINISHED:
                return
            self._stop = "cancel"
            self._wake.set()

    def wait(self, timeout: float | None = None) -> ModelEntry:
        """Block until the task ends; the registered model, or the error that ended it."""
        if not self._finished.wait(timeout):
            raise TimeoutError(f"Download of {self.repo_id} still running after {timeout} s")
        if self.error is not None:
            raise self.error
        assert self.entry is not None
        return self.entry

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def snapshot(self) -> DownloadProgress:
        """The task's progress now (for a queue listing)."""
        speed = self._speed()
        remaining = self.total_bytes - self.done_bytes
        eta = remaining / speed if speed and self.state == "downloading" else None
        label = self.name or (Path(self.files[0].path).name if self.files else self.repo_id)
        return DownloadProgress(
            stage="download",
            done=self.done_bytes,
            total=self.total_bytes,
            message=self.message or f"{self.state.capitalize()} {label}",
            task_id=self.id,
            repo=self.repo_id,
            state=self.state,
            speed=speed,
            eta=eta,
        )

    # -- TransferControl for the file workers --------------------------------------------------
    def stop_reason(self) -> str | None:
        return self._stop

    def wait_or_stop(self, seconds: float) -> None:
        self._wake.wait(seconds)

    def _control(self, index: int) -> _FileControl:
        return _FileControl(self, index)

    def _add_bytes(self, index: int, n: int) -> None:
        self._file_done[index] += n
        now = time.monotonic()
        if now - self._last_emit >= 0.2:
            self._last_emit = now
            self._emit()

    # -- progress ------------------------------------------------------------------------------
    def _speed(self) -> float | None:
        samples = list(self._samples)
        if len(samples) < 2:
            return None
        (t0, d0), (t1, d1) = samples[0], samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else None

    def _emit(self) -> None:
        now = time.monotonic()
        self._samples.append((now, self.done_bytes))
        while len(self._samples) > 2 and now - self._samples[0][0] > 5.0:
            self._samples.popleft()
        self.manager._emit(self, self.snapshot())

    def _set_state(self, state: TaskState, message: str = "") -> None:
        self.state = state
        self.message = message
        if state != "downloading":
            self._samples.clear()
        self._emit()

    # -- the work ------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            with self.manager._slots:
                if self.n_model:
                    self._download_all(range(self.n_model))
                    self._finish()
                else:
                    self.entry = self.pair_with
                if self.mmproj is not None:
                    self._projector()
            assert self.entry is not None
            self._set_state("done", self._done_message(self.entry))
        except TransferStopped:
            self._cleanup()
            self.error = CancelledError(f"The download of {self.repo_id} was cancelled; nothing was kept.")
            self._set_state("cancelled")
        except HearthError as exc:
            self.error = exc
            if isinstance(exc, VerificationError):
                self._cleanup()
            self._set_state("failed", str(exc))
        except Exception as exc:  # a bug: report it on the task rather than losing it in a thread
            self.error = HearthError(f"The download of {self.repo_id} failed unexpectedly: {exc!r}")
            self._set_state("failed", str(exc))
        finally:
            self._finished.set()

    def _download_all(self, indexes: range) -> None:
        while True:
            if self._stop == "cancel":
                raise TransferStopped("cancel")
            if self._stop == "pause":
                self._set_state("paused", f"Paused {self.repo_id}")
                while self._stop == "pause":
                    self._wake.wait(1.0)
                    self._wake.clear()
                continue
            self._set_state("downloading")
            pending = [i for i in indexes if not self._verified[i]]
            if not pending:
                return
            workers = max(1, min(len(pending), self.manager.parallel_files))
            with ThreadPoolExecutor(workers, thread_name_prefix=f"hearth-dl{self.id}") as pool:
                futures: dict[Future[None], int] = {pool.submit(self._fetch_one, i): i for i in pending}
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                failed = [f for f in done if f.exception() is not None]
                if failed:
                    with self._lock:
                        if self._stop is None:
                            self._stop = "abort"  # a sibling's error ends the others
                    wait(futures)
            errors = [e for f in futures if (e := f.exception()) is not None]
            real = [e for e in errors if not isinstance(e, TransferStopped)]
            if real:
                raise real[0]
            if errors and self._stop == "cancel":
                raise TransferStopped("cancel")

    def _fetch_one(self, index: int) -> None:
        remote = self.files[index]
        partial = self.partials[index]
        headers = {"User-Agent": "hearth"}
        hf_token = token()
        if hf_token:
            headers["Authorization"] = f"Bearer {hf_token}"
        existing = partial.stat().st_size if partial.exists() else 0
        self._file_done[index] = min(existing, remote.size)
        digest = fetch(
            file_url(self.repo_id, remote.path, self.revision),
            partial,
            size=remote.size,
            sha256=remote.sha256,
            control=self._control(index),
            headers=headers,
            policy=self.manager.retry,
            on_retry=lambda why, delay: setattr(self, "message", f"Retrying in {delay:.0f} s ({why})"),
        )
        self._file_done[index] = remote.size
        if remote.sha256 and digest != remote.sha256.lower():
            remove_partial(partial)
            raise VerificationError(
                f"{remote.name} did not match the SHA-256 the Hub lists for it (got {digest[:12]}…, expected "
                f"{remote.sha256[:12]}…): the file was deleted and not added to the library; download it again."
            )
        self._verified[index] = True

    def _finish(self) -> None:
        """Move the verified model files into the library and register the model."""
        self._set_state("verifying", f"Adding {self.repo_id} to the library")
        moved: list[Path] = []
        try:
            for partial, target in zip(self.partials[: self.n_model], self.targets[: self.n_model], strict=True):
                target.parent.mkdir(parents=True, exist_ok=True)
                _sync(partial)  # the verified bytes reach the disk before the model enters the library
                os.replace(partial, target)
                moved.append(target)
                remove_partial(partial)
            entry = self.manager.library.register(
                self.targets[0],
                name=self.name,
                source="download",
                repo=self.repo_id,
                sha256=self.files[0].sha256,
            )
        except BaseException:
            for path in moved:
                path.unlink(missing_ok=True)
            raise
        self.entry = entry

    def _projector(self) -> None:
        """Fetch the projector after the model, move it beside the model and pair them.

        Its failure is kept in ``mmproj_error``, not raised: the model is in the library already.
        """
        assert self.mmproj is not None and self.entry is not None
        index = len(self.files) - 1
        partial, target = self.partials[index], self.targets[index]
        try:
            if target.exists() and target.stat().st_size == self.mmproj.size:
                # Another quant of this repo brought the same projector: share the file.
                self._file_done[index] = self.mmproj.size
            else:
                self._download_all(range(index, index + 1))
                self._set_state("verifying", f"Pairing {self.mmproj.name} with {self.entry.name}")
                target.parent.mkdir(parents=True, exist_ok=True)
                _sync(partial)
                os.replace(partial, target)
                remove_partial(partial)
            self.entry = self.manager.library.set_mmproj(self.entry.name, target)
        except TransferStopped:
            remove_partial(partial)  # only a cancel ends a transfer here (a pause waits)
            self.mmproj_error = CancelledError(f"The download of {self.mmproj.name} was cancelled.")
        except HearthError as exc:
            if isinstance(exc, VerificationError):
                remove_partial(partial)
            self.mmproj_error = exc

    def _done_message(self, entry: ModelEntry) -> str:
        if self.mmproj is None:
            return f"Added {entry.name} to the library"
        if self.mmproj_error is None:
            if self.n_model == 0:
                return f"Paired {self.mmproj.name} with {entry.name}: it reads images"
            return f"Added {entry.name} to the library with its vision projector {self.mmproj.name}"
        return (
            f"Added {entry.name} to the library without its vision projector ({self.mmproj_error}): "
            f"pull {self.repo_id} again to resume {self.mmproj.name}"
        )

    def _cleanup(self) -> None:
        for partial in self.partials:
            remove_partial(partial)
        for folder in {p.parent for p in self.partials}:
            try:
                folder.rmdir()
            except OSError:
                pass


class _FileControl:
    """The ``TransferControl`` one file worker sees: its task's stop flag and byte counter."""

    def __init__(self, task: DownloadTask, index: int) -> None:
        self.task = task
        self.index = index

    def stop_reason(self) -> str | None:
        return self.task.stop_reason()

    def wait(self, seconds: float) -> None:
        self.task.wait_or_stop(seconds)

    def add_bytes(self, n: int) -> None:
        self.task._add_bytes(self.index, n)


class DownloadManager:
    """The download queue: at most ``max_active`` models at once, each fetching several files at once."""

    def __init__(
        self,
        library: Library | None = None,
        *,
        max_active: int = 2,
        parallel_files: int = 4,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.library = library or Library()
        self.parallel_files = parallel_files
        self.retry = retry or RetryPolicy()
        self._slots = threading.Semaphore(max_active)
        self._tasks: list[DownloadTask] = []
        self._listeners: list[DownloadCallback] = []
        self._lock = threading.Lock()

    def subscribe(self, callback: DownloadCallback) -> Callable[[], None]:
        """Call ``callback`` with every task's progress; returns a function that unsubscribes."""
        with self._lock:
            self._listeners.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._listeners:
                    self._listeners.remove(callback)

        return unsubscribe

    def tasks(self) -> list[DownloadTask]:
        """Every task of this session, oldest first (finished ones included)."""
        with self._lock:
            return list(self._tasks)

    def queue(self) -> list[DownloadProgress]:
        """A snapshot of every task, for a downloads page."""
        return [t.snapshot() for t in self.tasks()]

    def add(
        self,
        repo_id: str,
        files: list[RemoteFile],
        *,
        revision: str | None = None,
        name: str | None = None,
        on_progress: DownloadCallback | None = None,
        mmproj: RemoteFile | None = None,
    ) -> DownloadTask:
        """Queue one model (one file or every part of a split GGUF) and start it when a slot is free.

        ``mmproj``: the model's vision projector, fetched after it and paired with it. When the model is
        in the library already but not paired with that projector, only the projector is fetched.
        Refused at once, before any byte is fetched, when the disk cannot hold it (``DiskFullError``),
        when ``name`` is taken, or when a file name from the Hub is unsafe.
        """
        repo_id = check_repo_id(repo_id)
        if not files:
            raise HearthError(f"Nothing to download from {repo_id}: no file was chosen.")
        ensure_online(f"download from {repo_id}")
        task = DownloadTask(self, repo_id, files, revision=revision, name=name, mmproj=mmproj)
        entries = self.library.models(include_discovered=False)
        taken = {e.name for e in entries}
        if name and name in taken:
            raise AlreadyExistsError(
                f"A model called '{name}' is already in the library: pick another --name."
            )
        target = task.targets[0].resolve()
        existing = next((e for e in entries if Path(e.path).resolve() == target), None)
        if existing is not None:
            # Only a model still without a (working) projector gets one; a paired one is left as the user has it.
            if mmproj is None or existing.vision:
                how = (
                    f" and reads images with {Path(str(existing.mmproj)).name}; pair another projector with "
                    f"'hearth import {existing.name} --mmproj FILE' or in My Models"
                    if existing.vision
                    else ""
                )
                raise AlreadyExistsError(
                    f"{files[0].name} from {repo_id} is already in the library{how}: see 'hearth models'."
                )
            task = DownloadTask(self, repo_id, [], revision=revision, name=name, mmproj=mmproj, pair_with=existing)
        self._check_disk(task)
        if on_progress:
            original = on_progress

            def only_this(p: DownloadProgress) -> None:
                if p.task_id == task.id:
                    original(p)
                    if p.state in FINISHED:
                        unsubscribe()

            unsubscribe = self.subscribe(only_this)
        with self._lock:
            self._tasks.append(task)
        task._thread.start()
        return task

    def _check_disk(self, task: DownloadTask) -> None:
        have = sum(
            min(p.stat().st_size, f.size) if p.exists() else 0
            for p, f in zip(task.partials, task.files, strict=True)
        )
        need = task.total_bytes - have
        folder = task.manager.library.paths.downloads
        folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder).free
        if free < need + DISK_RESERVE:
            raise DiskFullError(
                f"Downloading {task.files[0].name} needs {(need + DISK_RESERVE) / 1e9:.2f} GB of free disk space "
                f"but only {free / 1e9:.2f} GB is free in {folder}: free at least "
                f"{(need + DISK_RESERVE - free) / 1e9:.2f} GB or pick a smaller quant."
            )

    def pause_all(self) -> None:
        for task in self.tasks():
            task.pause()

    def _emit(self, task: DownloadTask, progress: DownloadProgress) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for callback in listeners:
            try:
                callback(progress)
            except Exception:  # a broken listener must not break the download
                pass


def _sync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())
