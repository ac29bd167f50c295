"""Projectors in the library: pairing, ``hearth import --mmproj``, wrong files refused, old registries,
projectors never listed as models (library folder and HF cache), removal, and ``load_options_for``."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from core.cli import main
from core.engine.params import LoadOptions
from core.errors import InvalidModelError, NotFoundError
from core.library import Library, is_projector_file, load_options_for
from core.paths import get_paths
from tests.fixtures.tiny_models import write_tiny_llama
from tests.fixtures.tiny_vision import TinyVision, write_tiny_projector


def old_style_projector(path: Path) -> Path:
    """A projector as older converters wrote it: architecture 'clip', no general.type, no 'mmproj' in its name."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_uint32("clip.vision.image_size", 28)
    writer.add_uint32("clip.vision.patch_size", 14)
    writer.add_uint32("clip.vision.embedding_length", 32)
    writer.add_tensor("v.patch_embd.weight", np.zeros((32, 3, 14, 14), dtype=np.float32))
    writer.add_tensor("mm.2.weight", np.zeros((64, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def vision_files(tiny_vision: TinyVision, tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the tiny vision model and its projector (tests delete and move them)."""
    folder = tmp_path / "downloads-folder"
    folder.mkdir()
    model = Path(shutil.copy2(tiny_vision.model, folder / tiny_vision.model.name))
    mmproj = Path(shutil.copy2(tiny_vision.mmproj, folder / tiny_vision.mmproj.name))
    return model, mmproj


def test_set_mmproj_pairs_checks_and_clears(vision_files: tuple[Path, Path], tmp_path: Path) -> None:
    model, mmproj = vision_files
    library = Library()
    entry = library.import_file(model, mode="link")
    assert entry.mmproj is None and not entry.vision
    paired = library.set_mmproj(entry.name, mmproj)
    assert paired.mmproj == str(mmproj.resolve()) and paired.vision
    assert library.get(entry.name).mmproj == str(mmproj.resolve())
    assert load_options_for(library.get(entry.name), LoadOptions(n_ctx=256)).mmproj == str(mmproj.resolve())
    # A projector the caller chose wins over the paired one.
    assert load_options_for(paired, LoadOptions(mmproj="/elsewhere/mmproj.gguf")).mmproj == "/elsewhere/mmproj.gguf"

    with pytest.raises(InvalidModelError, match="not a vision projector: pick the mmproj") as wrong:
        library.set_mmproj(entry.name, model)  # a model is not a projector
    assert "'llama'" in str(wrong.value)
    text = tmp_path / "notes.gguf"
    text.write_text("hello")
    with pytest.raises(InvalidModelError, match="not a GGUF"):
        library.set_mmproj(entry.name, text)
    with pytest.raises(NotFoundError, match="only with a library model"):
        library.set_mmproj("no-such-model", mmproj)
    assert library.get(entry.name).mmproj == str(mmproj.resolve())  # a refused file changes nothing

    cleared = library.set_mmproj(entry.name, None)
    assert cleared.mmproj is None
    assert load_options_for(cleared, LoadOptions()).mmproj is None


def test_a_missing_projector_file_leaves_the_model_loadable(vision_files: tuple[Path, Path]) -> None:
    model, mmproj = vision_files
    library = Library()
    entry = library.import_file(model, mode="link", mmproj=mmproj)
    mmproj.unlink()
    again = library.get(entry.name)
    assert again.mmproj and not again.vision
    assert load_options_for(again, LoadOptions()).mmproj is None


def test_import_with_mmproj_copies_both_and_models_marks_vision(
    vision_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model, mmproj = vision_files
    assert main(["import", str(model), "--mmproj", str(mmproj)]) == 0
    assert "reads images with mmproj-tiny-vision.gguf" in capsys.readouterr().out
    entry = Library().get("tiny-vision-llama")
    models = get_paths().models.resolve()
    assert entry.managed and Path(entry.path).parent.resolve() == models
    assert entry.mmproj is not None and Path(entry.mmproj).parent == models  # copied in beside the model
    assert Path(entry.mmproj).read_bytes() == mmproj.read_bytes()

    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-1] == "IMAGES"
    row = next(line for line in lines if line.startswith("tiny-vision-llama"))
    assert row.split()[-1] == "vision"
    assert main(["models", "--json"]) == 0
    data = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert data["tiny-vision-llama"]["vision"] is True and data["tiny-vision-llama"]["mmproj"] == entry.mmproj
    assert main(["show", "tiny-vision-llama"]) == 0
    assert f"Vision projector  {entry.mmproj}" in capsys.readouterr().out


def test_import_link_keeps_the_projector_in_place_and_pairs_a_known_model(
    vision_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, mmproj = vision_files
    assert main(["import", str(model), "--link", "--mmproj", str(mmproj)]) == 0
    assert Library().get("tiny-vision-llama").mmproj == str(mmproj.resolve())
    # 'hearth import NAME --mmproj FILE' pairs a model already in the library.
    other = write_tiny_projector(tmp_path / "mmproj-other.gguf", seed=3)
    assert main(["import", "tiny-vision-llama", "--mmproj", str(other)]) == 0
    assert "Paired 'tiny-vision-llama'" in capsys.readouterr().out
    assert Library().get("tiny-vision-llama").mmproj == str(other.resolve())


def test_wrong_files_are_refused_with_one_sentence(
    vision_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model, mmproj = vision_files
    assert main(["import", str(model), "--mmproj", str(model)]) == 1  # a model given as the projector
    err = capsys.readouterr().err
    assert "not a vision projector" in err and "Traceback" not in err
    assert Library().models(include_discovered=False) == []  # nothing half-imported
    assert main(["import", str(mmproj)]) == 1  # a projector given as the model
    err = capsys.readouterr().err
    assert "is a vision projector (mmproj), not a model" in err and "--mmproj" in err
    assert Library().models(include_discovered=False) == []


def test_a_projector_of_another_width_is_refused_when_paired(
    vision_files: tuple[Path, Path], tiny_vision: TinyVision, capsys: pytest.CaptureFixture[str]
) -> None:
    """The widths are read from both headers: a projector made for another model never gets paired."""
    model, mmproj = vision_files
    assert main(["import", str(model), "--mmproj", str(tiny_vision.wrong_mmproj)]) == 1
    err = capsys.readouterr().err
    assert "mmproj-wrong-width.gguf does not fit" in err and "32 wide and the model's are 64" in err
    assert "Traceback" not in err and Library().models(include_discovered=False) == []  # nothing copied in
    entry = Library().import_file(model, mode="link", mmproj=mmproj)
    with pytest.raises(InvalidModelError, match="pick the projector from the model's own repository"):
        Library().set_mmproj(entry.name, tiny_vision.wrong_mmproj)
    assert Library().get(entry.name).mmproj == str(mmproj.resolve())  # the good pairing is kept


def test_an_old_registry_without_mmproj_loads(tiny_model: Path) -> None:
    paths = get_paths().ensure()
    entry = Library().import_file(tiny_model, mode="link")
    raw = json.loads(paths.library_index.read_text())
    for m in raw["models"]:
        m.pop("mmproj")  # as written before projectors existed
    paths.library_index.write_text(json.dumps(raw))
    loaded = Library().get(entry.name)
    assert loaded.mmproj is None and not loaded.vision
    assert load_options_for(loaded, LoadOptions()).mmproj is None


def test_projectors_in_the_hf_cache_are_paired_not_listed(tiny_vision: TinyVision, tmp_path: Path) -> None:
    cache = Path(os.environ["HF_HUB_CACHE"])
    snapshot = cache / "models--acme--Tiny-Vision-GGUF" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    shutil.copy2(tiny_vision.model, snapshot / "Tiny-Vision-Q4_K_M.gguf")
    shutil.copy2(tiny_vision.mmproj, snapshot / "mmproj-F16.gguf")
    shutil.copy2(tiny_vision.mmproj, snapshot / "mmproj-F32.gguf")
    other = cache / "models--acme--Text-GGUF" / "snapshots" / "def456"
    other.mkdir(parents=True)
    write_tiny_llama(other / "Text-Q4_K_M.gguf")
    old_style_projector(other / "vision-encoder.gguf")  # a projector by its header only
    for _ in range(2):  # the second listing comes from the index's cache of what each file is
        found = {e.name: e for e in Library().models()}
        assert set(found) == {"acme/Tiny-Vision-GGUF/tiny-vision-q4_k_m", "acme/Text-GGUF/text-q4_k_m"}
        vision = found["acme/Tiny-Vision-GGUF/tiny-vision-q4_k_m"]
        assert vision.vision and Path(str(vision.mmproj)).name == "mmproj-F16.gguf"  # F16 over F32
        assert Path(str(found["acme/Text-GGUF/text-q4_k_m"].mmproj)).name == "vision-encoder.gguf"


def test_a_rebuilt_index_skips_projectors_and_pairs_them(tiny_vision: TinyVision) -> None:
    paths = get_paths().ensure()
    folder = paths.models / "acme__Tiny-Vision-GGUF"
    folder.mkdir(parents=True)
    shutil.copy2(tiny_vision.model, folder / "Tiny-Vision-Q4_K_M.gguf")
    shutil.copy2(tiny_vision.mmproj, folder / "mmproj-F16.gguf")
    paths.library_index.write_text("{ not json")  # a damaged index is rebuilt from the files
    entries = Library().models(include_discovered=False)
    assert [e.name for e in entries] == ["tiny-vision-q4_k_m"]
    assert entries[0].mmproj == str(folder / "mmproj-F16.gguf")


def test_remove_deletes_a_managed_projector_unless_another_model_uses_it(
    vision_files: tuple[Path, Path], tiny_model: Path
) -> None:
    model, mmproj = vision_files
    library = Library()
    a = library.import_file(model, mmproj=mmproj)  # copies both in
    b = library.import_file(tiny_model, name="second")
    library.set_mmproj(b.name, str(a.mmproj))  # the same projector, shared
    library.remove(a.name)
    assert Path(str(a.mmproj)).exists()
    library.remove(b.name)
    assert not Path(str(a.mmproj)).exists()  # the last user is gone: so is the managed file
    # A projector outside the library (linked in place) is the user's file: it stays.
    c = library.import_file(model, mode="link", mmproj=mmproj)
    library.remove(c.name)
    assert mmproj.exists() and model.exists()
    # --keep-file keeps the managed projector too.
    d = library.import_file(model, mmproj=mmproj)
    library.remove(d.name, delete_files=False)
    assert Path(str(d.mmproj)).exists()


def test_a_projector_is_not_a_model_to_load(vision_files: tuple[Path, Path]) -> None:
    _, mmproj = vision_files
    with pytest.raises(InvalidModelError, match="is a vision projector \\(mmproj\\), not a model"):
        Library().get(str(mmproj))


def test_projector_names() -> None:
    assert is_projector_file(Path("/x/mmproj-model-f16.gguf")) and is_projector_file("C:\\m\\mmproj-F32.gguf")
    assert not is_projector_file("model-Q4_K_M.gguf")
