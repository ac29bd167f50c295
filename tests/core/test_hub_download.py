"""Downloads from the local fake Hub: into the library, resumed, retried, verified, paused, cancelled."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.errors import CancelledError, DiskFullError, HearthError, OfflineError, VerificationError
from core.hub import DownloadManager, DownloadProgress, RetryPolicy, plan_pull, pull, start_pull
from core.hub.quants import RemoteFile
from core.library import Library
from core.paths import get_paths
from tests.fixtures.fakehub import FakeHub, make_gguf_repo, write_quant_file

REPO = "acme/Tiny-Llama-GGUF"
BIG = "Big-Q4_K_M.gguf"
BIG_REPO = "acme/Big-GGUF"
FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, timeout=5.0)


@pytest.fixture(scope="module")
def repo_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hubfiles")
    # ~3 MB: big enough that "less than 1% re-fetched" means something, small enough to stay fast.
    write_quant_file(folder / "big" / BIG, pad=3_000_000)
    return folder


@pytest.fixture
def hub(repo_files: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        make_gguf_repo(server, repo_files, REPO)
        server.add_repo(BIG_REPO, {BIG: repo_files / "big" / BIG})
        yield server


def manager(**kwargs: Any) -> DownloadManager:
    return DownloadManager(retry=kwargs.pop("retry", FAST), **kwargs)


def library_files() -> list[Path]:
    paths = get_paths()
    return [p for p in paths.models.rglob("*") if p.is_file()] + [
        p for p in paths.downloads.rglob("*") if p.is_file()
    ]


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_pull_lands_a_verified_model_in_the_library(hub: FakeHub) -> None:
    events: list[DownloadProgress] = []
    entry = pull(REPO, quant="Q4_K_M", manager=manager(), on_progress=events.append)
    remote = hub.repos[REPO].files["Tiny-Llama-Q4_K_M.gguf"]
    assert Path(entry.path) == get_paths().models / "acme__Tiny-Llama-GGUF" / "Tiny-Llama-Q4_K_M.gguf"
    assert (entry.source, entry.repo, entry.sha256) == ("download", REPO, remote.sha256)
    assert Path(entry.path).read_bytes() == remote.source.read_bytes()
    assert [m.name for m in Library().models()] == [entry.name]
    assert events[-1].state == "done" and events[-1].done == events[-1].total == remote.size
    dones = [e.done for e in events]
    assert dones == sorted(dones)
    assert not list(get_paths().downloads.rglob("*.partial"))


def test_split_model_parts_download_together_and_register_once(hub: FakeHub) -> None:
    part1 = "Tiny-Llama-F16-00001-of-00002.gguf"
    hub.add_fault("stall", path=part1, after=1000, seconds=0.5)
    entry = pull(REPO, filename="Tiny-Llama-F16-00002-of-00002.gguf", manager=manager())
    assert [Path(f).name for f in entry.files] == [part1, "Tiny-Llama-F16-00002-of-00002.gguf"]
    assert len(Library().models()) == 1
    # Both parts were requested before the first one's stall ended: they travel concurrently.
    times = {p.rsplit("/", 1)[1]: t for m, p, _, t in hub.requests if m == "GET" and "/resolve/" in p}
    assert abs(times[part1] - times["Tiny-Llama-F16-00002-of-00002.gguf"]) < 0.4


def test_a_dropped_connection_resumes_without_fetching_again(hub: FakeHub) -> None:
    size = hub.repos[BIG_REPO].files[BIG].size
    hub.add_fault("drop", after=size // 2)
    entry = pull(BIG_REPO, filename=BIG, manager=manager())
    assert Path(entry.path).stat().st_size == size
    gets = hub.file_requests(BIG)
    assert len(gets) == 2 and gets[1]["Range"] == f"bytes={size // 2}-"
    assert hub.served(BIG) - size < 0.01 * size


def test_a_download_interrupted_for_good_resumes_in_a_later_session(hub: FakeHub) -> None:
    size = hub.repos[BIG_REPO].files[BIG].size
    hub.add_fault("drop", after=size // 2, times=10)
    plan = plan_pull(BIG_REPO, filename=BIG)
    first = start_pull(plan, manager=manager(retry=RetryPolicy(attempts=0, base_delay=0.01, timeout=5)))
    with pytest.raises(HearthError, match="resumes"):
        first.wait(10)
    assert first.state == "failed" and Library().models() == []
    hub.faults.clear()
    entry = start_pull(plan, manager=manager()).wait(10)  # a new manager: as after restarting the app
    assert entry.sha256 == hub.repos[BIG_REPO].files[BIG].sha256
    assert hub.served(BIG) - size < 0.01 * size


def test_server_errors_are_retried(hub: FakeHub) -> None:
    hub.add_fault("error", status=503, times=2)
    entry = pull(BIG_REPO, filename=BIG, manager=manager())
    assert len(hub.file_requests(BIG)) == 3
    assert Path(entry.path).exists()


def test_a_stalled_transfer_times_out_and_resumes(hub: FakeHub) -> None:
    size = hub.repos[BIG_REPO].files[BIG].size
    hub.add_fault("stall", after=size // 3, seconds=3.0)
    policy = RetryPolicy(attempts=3, base_delay=0.01, timeout=0.5)
    entry = pull(BIG_REPO, filename=BIG, manager=manager(retry=policy))
    assert Path(entry.path).stat().st_size == size
    assert hub.file_requests(BIG)[1]["Range"] == f"bytes={size // 3}-"


def test_wrong_bytes_fail_verification_and_leave_nothing(hub: FakeHub) -> None:
    hub.add_fault("corrupt", after=12345)
    with pytest.raises(VerificationError, match=r"SHA-256.*deleted"):
        pull(BIG_REPO, filename=BIG, manager=manager())
    assert Library().models() == []
    assert library_files() == []


def test_a_download_that_does_not_fit_on_disk_is_refused_before_it_starts(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = shutil.disk_usage

    def nearly_full(path: Any) -> Any:
        usage = real(path)
        return type(usage)(usage.total, usage.total - 1_000_000, 1_000_000)

    monkeypatch.setattr("core.hub.download.shutil.disk_usage", nearly_full)
    with pytest.raises(DiskFullError, match=r"needs 0\.07 GB .* only 0\.00 GB is free"):
        pull(BIG_REPO, filename=BIG, manager=manager())
    assert hub.file_requests(BIG) == [] and library_files() == []


def test_cancel_leaves_no_half_model(hub: FakeHub) -> None:
    hub.add_fault("stall", after=1_000_000, seconds=1.0)
    task = start_pull(plan_pull(BIG_REPO, filename=BIG), manager=manager())
    wait_for(lambda: task.done_bytes >= 1_000_000)
    task.cancel()
    with pytest.raises(CancelledError):
        task.wait(10)
    assert task.state == "cancelled"
    assert Library().models() == [] and library_files() == []


def test_pause_keeps_the_bytes_and_resume_finishes(hub: FakeHub) -> None:
    size = hub.repos[BIG_REPO].files[BIG].size
    hub.add_fault("stall", after=1_000_000, seconds=1.0)
    mgr = manager()
    task = start_pull(plan_pull(BIG_REPO, filename=BIG), manager=mgr)
    wait_for(lambda: task.done_bytes >= 1_000_000)
    task.pause()
    wait_for(lambda: task.state == "paused")
    kept = task.done_bytes
    assert 1_000_000 <= kept < size
    assert [p.state for p in mgr.queue()] == ["paused"]
    time.sleep(0.2)
    assert task.done_bytes == kept  # nothing moves while paused
    task.resume()
    entry = task.wait(10)
    assert Path(entry.path).stat().st_size == size
    ranges = [h.get("Range") for h in hub.file_requests(BIG)]
    assert ranges[0] is None and ranges[-1] == f"bytes={kept}-"
    assert mgr.queue()[0].state == "done"


def test_several_models_download_at_once_from_one_queue(hub: FakeHub) -> None:
    mgr = manager(max_active=2)
    seen: list[DownloadProgress] = []
    mgr.subscribe(seen.append)
    tasks = [start_pull(plan_pull(REPO, quant=q), manager=mgr) for q in ("Q2_K", "Q8_0")]
    names = {t.wait(10).name for t in tasks}
    assert names == {m.name for m in Library().models()} and len(names) == 2
    assert {p.task_id for p in seen} == {t.id for t in tasks}


def test_a_file_name_escaping_its_folder_is_refused(hub: FakeHub, repo_files: Path) -> None:
    evil = hub.add_repo("evil/Sneaky-GGUF", {})
    hub.add_file(evil, "../../outside-Q4_K_M.gguf", repo_files / "big" / BIG)
    with pytest.raises(HearthError, match="unsafe file name"):
        pull("evil/Sneaky-GGUF", filename="../../outside-Q4_K_M.gguf", manager=manager())
    assert hub.file_requests("outside") == []
    assert not (get_paths().data / "outside-Q4_K_M.gguf").exists()
    with pytest.raises(HearthError, match="unsafe file name"):
        manager().add(REPO, [RemoteFile("/tmp/x.gguf", 10, None)])


def test_taken_names_and_offline_mode_are_refused_up_front(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    pull(REPO, quant="Q2_K", name="mine", manager=manager())
    with pytest.raises(HearthError, match="'mine' is already"):
        pull(REPO, quant="Q8_0", name="mine", manager=manager())
    with pytest.raises(HearthError, match="already in the library"):
        pull(REPO, quant="Q2_K", manager=manager())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="offline mode"):
        manager().add(REPO, [RemoteFile("Tiny-Llama-Q8_0.gguf", 10, None)])


def test_an_unreachable_hub_is_an_offline_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeHub() as gone:
        url = gone.url
    monkeypatch.setenv("HF_ENDPOINT", url)  # nothing listens there any more
    task = manager(retry=RetryPolicy(attempts=1, base_delay=0.01, timeout=2)).add(
        REPO, [RemoteFile("Tiny-Llama-Q8_0.gguf", 10, None)]
    )
    with pytest.raises(OfflineError, match="failed 2 times"):
        task.wait(10)
    assert Library().models() == []


def test_the_hub_token_is_sent_with_downloads(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    pull(REPO, quant="Q2_K", manager=manager())
    (headers,) = hub.file_requests("Q2_K")
    assert headers["Authorization"] == "Bearer hf_test_token"
