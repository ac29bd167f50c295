"""``hearth search``, ``hearth files`` and ``hearth pull`` through ``core.cli.main`` against the fake Hub."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.cli import main
from core.library import Library
from tests.fixtures.fakehub import FakeHub, make_gguf_repo

REPO = "acme/Tiny-Llama-GGUF"


@pytest.fixture(scope="module")
def repo_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hubfiles")


@pytest.fixture
def hub(repo_files: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        make_gguf_repo(server, repo_files, REPO, downloads=1234, likes=7)
        make_gguf_repo(
            server,
            repo_files,
            "zeta/Other-GGUF",
            split_quant=None,
            downloads=10,
            likes=99,
            last_modified="2026-01-01T00:00:00.000Z",
        )
        yield server


def test_search_prints_a_table_and_json(hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "gguf"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["MODEL", "PARAMS", "ARCH", "DOWNLOADS", "LIKES", "MODIFIED"]
    assert lines[2].split()[:3] == [REPO, "123K", "llama"] and "zeta/Other-GGUF" in lines[3]
    assert main(["search", "--sort", "likes", "--limit", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [m["id"] for m in data] == ["zeta/Other-GGUF"] and data[0]["likes"] == 99


def test_files_marks_the_recommended_quant(hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["files", REPO]) == 0
    out = capsys.readouterr().out
    rows = [
        line.split()
        for line in out.splitlines()[2:]
        if line.strip() and not line.startswith(("Recommended", "No fit"))
    ]
    quants = [r[1] if r[0] == "*" else r[0] for r in rows]
    assert quants == ["Q2_K", "Q4_K_M", "Q5_K_M", "Q8_0", "F16"]
    assert sum(1 for r in rows if r[0] == "*") == 1
    assert "2 parts" in out and "Recommended: " in out
    assert main(["files", REPO, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["repo"] == REPO and sum(q["recommended"] for q in data["quants"]) == 1
    f16 = next(q for q in data["quants"] if q["name"] == "F16")
    assert len(f16["files"]) == 2 and all(len(f["sha256"]) == 64 for f in f16["files"])


def test_pull_downloads_into_the_library(hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pull", REPO, "--quant", "q8_0", "--name", "tiny8"]) == 0
    captured = capsys.readouterr()
    assert "Added 'tiny8' to the library" in captured.out
    assert "done" in captured.err and "100.0%" in captured.err
    (entry,) = Library().models()
    assert entry.name == "tiny8" and entry.repo == REPO and Path(entry.path).name == "Tiny-Llama-Q8_0.gguf"


def test_pull_without_a_quant_takes_the_recommended_one(
    hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["files", REPO, "--json"]) == 0
    recommended = json.loads(capsys.readouterr().out)["recommended"]
    assert main(["pull", REPO]) == 0
    (entry,) = Library().models()
    group = f"-{recommended}".lower()
    assert Path(entry.path).name.lower().startswith(f"tiny-llama{group}")


def test_errors_are_one_line_and_say_what_to_do(
    hub: FakeHub, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["pull", REPO, "--quant", "Q3_K_S"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hearth: error: acme/Tiny-Llama-GGUF has no Q3_K_S file: its quants are Q2_K, ")
    assert len(err.strip().splitlines()) == 1
    assert main(["files", "acme/Missing"]) == 1
    assert "No model repository 'acme/Missing'" in capsys.readouterr().err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["search", "llama"]) == 1
    assert "offline mode" in capsys.readouterr().err
    assert Library().models() == []
