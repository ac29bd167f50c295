"""Vision projectors on the (local, fake) Hub: listed apart from the quants, pulled with the model and paired,
chosen by a stated rule among several, left out on request, and resumed after an interrupted download."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.cli import main
from core.errors import AlreadyExistsError, NotFoundError
from core.hub import DownloadManager, RetryPolicy, is_projector_file, plan_pull, pull, repo_quants, start_pull
from core.hub.quants import RemoteFile, group_gguf_files, parse_quant, pick_projector, projector_files
from core.library import Library, read_gguf_info
from core.paths import get_paths
from tests.fixtures.fakehub import FakeHub, make_gguf_repo, make_vision_repo

VISION = "acme/Tiny-Vision-GGUF"
SINGLE = "acme/One-Vision-GGUF"
TEXT = "acme/Tiny-Llama-GGUF"
BIG = "acme/Big-Vision-GGUF"
FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, timeout=5.0)


@pytest.fixture(scope="module")
def repo_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vision-hub")


@pytest.fixture
def hub(repo_files: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        make_vision_repo(server, repo_files, VISION)
        make_vision_repo(server, repo_files, SINGLE, projectors=("BF16",), quants=("Q4_K_M",))
        # ~1 MB of projector: big enough to be cut mid-way and resumed.
        make_vision_repo(server, repo_files, BIG, projectors=("F16",), quants=("Q4_K_M",), projector_pad=1_000_000)
        make_gguf_repo(server, repo_files, TEXT, split_quant=None)
        yield server


def manager() -> DownloadManager:
    return DownloadManager(retry=FAST)


def repo_folder(repo: str) -> Path:
    return get_paths().models / repo.replace("/", "__")


# -- names and listing ---------------------------------------------------------------------------------
def test_projector_file_names_are_told_from_models() -> None:
    for name in ("mmproj-F16.gguf", "sub/mmproj-model-f16.gguf", "gemma-3-4b-it-mmproj-BF16.gguf", "MMPROJ-q8_0.gguf"):
        assert is_projector_file(name), name
    for name in ("Model-Q4_K_M.gguf", "mmproj-F16.bin", "imatrix.gguf", "README.md"):
        assert not is_projector_file(name), name
    files = [RemoteFile("Model-Q4_K_M.gguf", 10), RemoteFile("mmproj-F16.gguf", 5), RemoteFile("mmproj-F32.gguf", 9)]
    assert [g.name for g in group_gguf_files(files)] == ["Q4_K_M"]  # a projector is never a quant
    assert [f.path for f in projector_files(files)] == ["mmproj-F16.gguf", "mmproj-F32.gguf"]
    assert parse_quant("mmproj-F16.gguf") == "F16"


def test_the_choice_among_several_projectors_follows_the_stated_rule() -> None:
    files = [RemoteFile(f"mmproj-{p}.gguf", s) for p, s in (("Q8_0", 1), ("F32", 4), ("BF16", 2), ("F16", 2))]
    chosen, why = pick_projector(files, "Model-Q4_K_M.gguf")
    assert chosen is not None and chosen.path == "mmproj-F16.gguf"
    assert "F16 is preferred" in why and "--mmproj" in why
    assert pick_projector(files[:3], "Model-Q4_K_M.gguf")[0] == files[2]  # no F16: BF16
    assert pick_projector([files[0], files[1]], "Model-Q4_K_M.gguf")[0] == files[1]  # F32 over Q8_0
    # The projector in the model's own folder wins over a better precision elsewhere (llama.cpp's rule).
    nested = [RemoteFile("other/mmproj-F16.gguf", 2), RemoteFile("vl/mmproj-Q8_0.gguf", 1)]
    assert pick_projector(nested, "vl/Model-Q4_K_M.gguf")[0] == nested[1]
    assert pick_projector(files, None, "q8_0")[0] == files[0]
    assert pick_projector(files, None, "mmproj-F32.gguf")[0] == files[1]
    with pytest.raises(NotFoundError, match=r"projectors are mmproj-Q8_0\.gguf, mmproj-BF16\.gguf, mmproj-F16\.gguf"):
        pick_projector(files, None, "Q4_0")
    assert pick_projector([], "Model.gguf") == (None, "no vision projector")


def test_hearth_files_lists_projectors_apart_from_the_quants(
    hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["files", VISION]) == 0
    out = capsys.readouterr().out
    table = out.split("Vision projectors:")[0]
    assert "mmproj" not in table  # not a quant row
    assert "Q4_K_M" in table and "Q8_0" in table
    line = next(x for x in out.splitlines() if x.startswith("Vision projectors:"))
    for name in ("mmproj-F16.gguf", "mmproj-F32.gguf", "mmproj-Q8_0.gguf"):
        assert name in line
    assert "KB" in line  # sizes are shown
    assert "also fetches mmproj-F16.gguf" in out
    recommended = next(x for x in out.splitlines() if x.startswith("Recommended:"))
    assert "mmproj" not in recommended.split("(")[0]  # the recommendation is a model quant
    assert main(["files", VISION, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [p["path"] for p in data["projectors"] if p["chosen"]] == ["mmproj-F16.gguf"]
    assert all(not q["name"].lower().startswith("mmproj") for q in data["quants"])
    assert {q["mmproj"] for q in data["quants"]} == {"mmproj-F16.gguf"}
    assert main(["files", TEXT]) == 0
    assert "Vision projectors" not in capsys.readouterr().out


def test_the_fit_verdicts_of_a_vision_repo_count_its_projector(hub: FakeHub) -> None:
    rq = repo_quants(VISION)
    assert rq.mmproj is not None and rq.mmproj.path == "mmproj-F16.gguf"
    assert rq.shape.projector is not None
    for group in rq.groups:
        verdict = group.fit
        assert verdict is not None
        assert verdict.estimate.projector_bytes == rq.shape.projector.total_bytes > 0  # type: ignore[attr-defined]
        assert "vision projector mmproj-F16.gguf" in verdict.reason  # type: ignore[attr-defined]
    text = repo_quants(TEXT)
    assert text.projectors == [] and text.mmproj is None
    assert all("projector" not in g.fit.reason for g in text.groups if g.fit is not None)  # type: ignore[attr-defined]


# -- pulling -------------------------------------------------------------------------------------------
def test_pull_fetches_the_projector_and_pairs_it(hub: FakeHub) -> None:
    entry = pull(VISION, quant="Q4_K_M", manager=manager())
    projector = repo_folder(VISION) / "mmproj-F16.gguf"
    assert entry.mmproj == str(projector.resolve()) and entry.vision
    assert projector.read_bytes() == hub.repos[VISION].files["mmproj-F16.gguf"].source.read_bytes()
    assert read_gguf_info(projector, check_architecture=False).architecture == "clip"
    listed = Library().models()
    assert [e.name for e in listed] == [entry.name]  # the projector is not a model
    assert listed[0].mmproj == entry.mmproj
    assert hub.served("mmproj-F32") == hub.served("mmproj-Q8_0") == 0  # only the chosen one came
    assert not list(get_paths().downloads.rglob("*.partial"))


def test_pull_with_repo_colon_quant_and_a_chosen_projector(hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pull", f"{VISION}:Q8_0", "--mmproj", "F32"]) == 0
    out = capsys.readouterr().out
    assert "With its vision projector mmproj-F32.gguf" in out and "as asked" in out
    entry = Library().get("tiny-vision-q8_0")
    assert entry.mmproj is not None and Path(entry.mmproj).name == "mmproj-F32.gguf"
    assert main(["pull", VISION, "--quant", "Q4_K_M", "--mmproj", "Q4_0"]) == 1
    assert "no projector 'Q4_0'" in capsys.readouterr().err


def test_a_single_projector_is_taken_whatever_its_precision(hub: FakeHub) -> None:
    plan = plan_pull(SINGLE)
    assert plan.mmproj is not None and plan.mmproj.path == "mmproj-BF16.gguf"
    assert "the repository's projector" in plan.mmproj_reason
    assert plan.total_bytes == plan.group.size + plan.mmproj.size


def test_no_mmproj_leaves_the_projector_out(hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pull", VISION, "--quant", "Q4_K_M", "--no-mmproj"]) == 0
    out = capsys.readouterr().out
    assert "vision projector" not in out
    entry = Library().get("tiny-vision-q4_k_m")
    assert entry.mmproj is None and not entry.vision
    assert hub.served("mmproj") == 0
    assert not list(repo_folder(VISION).glob("mmproj*"))
    # A later pull of the same quant with the projector fetches only the projector and pairs it.
    assert main(["pull", VISION, "--quant", "Q4_K_M"]) == 0
    assert "paired it with mmproj-F16.gguf" in capsys.readouterr().out
    assert Library().get("tiny-vision-q4_k_m").vision
    with pytest.raises(AlreadyExistsError, match=r"reads images with mmproj-F16\.gguf"):
        pull(VISION, quant="Q4_K_M", manager=manager())
    with pytest.raises(AlreadyExistsError, match="--mmproj FILE"):  # a paired model keeps its projector
        pull(VISION, quant="Q4_K_M", mmproj="F32", manager=manager())
    with pytest.raises(Exception, match="--mmproj NAME or --no-mmproj"):
        plan_pull(VISION, mmproj="F16", no_mmproj=True)
    with pytest.raises(NotFoundError, match="no vision projector"):
        plan_pull(TEXT, mmproj="F16")


def test_two_quants_share_one_projector_file(hub: FakeHub) -> None:
    size = hub.repos[VISION].files["mmproj-F16.gguf"].size
    a = pull(VISION, quant="Q4_K_M", manager=manager())
    b = pull(VISION, quant="Q8_0", manager=manager())
    assert a.mmproj == b.mmproj
    assert hub.served("mmproj-F16") == size  # fetched once
    library = Library()
    library.remove(a.name)
    assert Path(str(b.mmproj)).exists()  # still used by the other quant
    library.remove(b.name)
    assert not Path(str(b.mmproj)).exists()
    assert not repo_folder(VISION).exists()


def test_an_interrupted_projector_leaves_the_model_usable_and_resumes(
    hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    projector = hub.repos[BIG].files["mmproj-F16.gguf"]
    cut = projector.size // 2
    model_file = "Big-Vision-Q4_K_M.gguf"
    plan = plan_pull(BIG)  # reads the projector's header for the fit: before the faults
    # The connection drops half-way, then the Hub fails every try the retry policy allows.
    hub.add_fault("drop", path="mmproj-F16.gguf", after=cut, times=1)
    fault = hub.add_fault("error", path="mmproj-F16.gguf", status=503, times=50)
    task = start_pull(plan, manager=manager())
    entry = task.wait()
    assert task.mmproj_error is not None and task.state == "done"
    assert entry.mmproj is None and not entry.vision
    assert Library().get(entry.name).mmproj is None  # the pairing is not recorded
    assert read_gguf_info(entry.path).architecture == "llama"  # the model is whole and usable
    partial = get_paths().downloads / "acme__Big-Vision-GGUF" / "mmproj-F16.gguf.partial"
    assert partial.stat().st_size == cut  # what arrived is kept
    assert not (repo_folder(BIG) / "mmproj-F16.gguf").exists()
    assert "without its vision projector" in task.snapshot().message

    fault.times = 0
    assert main(["pull", BIG]) == 0  # the same command again
    out = capsys.readouterr().out
    assert "paired it with mmproj-F16.gguf" in out
    # The model was downloaded once (other requests for it are the fit's header reads, by Range).
    assert [h.get("Range") for h in hub.file_requests(model_file)].count(None) == 1
    ranges = [h.get("Range") for h in hub.file_requests("mmproj-F16.gguf")]
    assert ranges[-1] == f"bytes={cut}-"  # resumed where it stopped
    paired = Library().get(entry.name)
    assert paired.vision and Path(str(paired.mmproj)).read_bytes() == projector.source.read_bytes()
    assert not partial.exists()


def test_the_cli_says_when_the_projector_did_not_arrive(hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    hub.add_fault("error", path="mmproj-F16.gguf", status=403, times=50)  # final: not retried
    assert main(["pull", BIG, "--quant", "Q4_K_M"]) == 1  # a named quant: no header is read for a fit
    captured = capsys.readouterr()
    assert "Added 'big-vision-q4_k_m'" in captured.out
    assert "did not arrive" in captured.err and f"hearth pull {BIG} --quant Q4_K_M" in captured.err
    assert "Traceback" not in captured.err
    assert Library().get("big-vision-q4_k_m").mmproj is None


def test_a_pause_while_the_projector_downloads_leaves_the_model_in_the_library(hub: FakeHub) -> None:
    import time

    plan = plan_pull(BIG)
    hub.add_fault("stall", path="mmproj-F16.gguf", after=10_000, seconds=1.0)
    task = start_pull(plan, manager=manager())
    deadline = time.monotonic() + 30
    while task.entry is None and not task.finished:  # the model comes first, then the projector
        assert time.monotonic() < deadline, "the model never arrived"
        time.sleep(0.01)
    task.pause()
    while task.state != "paused":
        assert time.monotonic() < deadline, "the task never paused"
        time.sleep(0.01)
    entry = Library().get("big-vision-q4_k_m")
    assert entry.mmproj is None and read_gguf_info(entry.path).architecture == "llama"
    task.resume()
    paired = task.wait(30)
    assert paired.vision and task.mmproj_error is None
    assert Path(str(paired.mmproj)).read_bytes() == hub.repos[BIG].files["mmproj-F16.gguf"].source.read_bytes()
