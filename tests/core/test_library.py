"""The model library: import, list, show, remove, discovery, and refusing bad files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from core.errors import AlreadyExistsError, InvalidModelError, NotFoundError, UnsupportedArchitectureError
from core.library import Library, read_gguf_info
from tests.fixtures.tiny_models import write_fake_arch, write_tiny_llama


def test_import_copy_lists_and_removes(tiny_model: Path) -> None:
    lib = Library()
    entry = lib.import_file(tiny_model)
    assert entry.managed and Path(entry.path).parent == lib.paths.models
    assert Path(entry.path).read_bytes() == tiny_model.read_bytes()
    [listed] = lib.models()
    assert listed.name == "tiny-llama" and listed.architecture == "llama"
    assert listed.parameters == read_gguf_info(tiny_model).parameters
    assert lib.get("tiny-llama").path == entry.path
    lib.remove("tiny-llama")
    assert lib.models() == [] and not Path(entry.path).exists()
    assert tiny_model.exists()  # the user's original is never touched


def test_import_link_keeps_file_in_place_and_remove_keeps_it(tiny_model: Path) -> None:
    lib = Library()
    entry = lib.import_file(tiny_model, mode="link", name="linked")
    assert entry.path == str(tiny_model) and not entry.managed
    lib.remove("linked")
    assert tiny_model.exists()


def test_duplicate_name_is_refused_and_library_unchanged(tiny_model: Path) -> None:
    lib = Library()
    lib.import_file(tiny_model, mode="link")
    with pytest.raises(AlreadyExistsError, match="already"):
        lib.import_file(tiny_model, mode="link")
    assert [e.name for e in lib.models()] == ["tiny-llama"]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty or truncated"),
        (b"PK\x03\x04 this is a zip file", "not a GGUF model"),
        (b"GGUF\x03\x00\x00\x00" + b"\xff" * 16, "corrupt or truncated"),
    ],
)
def test_bad_files_are_refused_with_a_clear_message(tmp_path: Path, tiny_model: Path, content: bytes, message: str) -> None:
    lib = Library()
    lib.import_file(tiny_model, mode="link", name="good")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(content)
    with pytest.raises(InvalidModelError, match=message):
        lib.import_file(bad)
    assert [e.name for e in lib.models()] == ["good"]
    assert not any(p.name.startswith("bad") for p in lib.paths.models.iterdir())


def test_truncated_model_is_refused(tmp_path: Path, tiny_model: Path) -> None:
    data = tiny_model.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidModelError, match="truncated"):
        Library().import_file(cut)


def test_missing_file_and_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelError, match="does not exist"):
        Library().import_file(tmp_path / "nope.gguf")
    with pytest.raises(NotFoundError, match="No model called"):
        Library().get("nope")


def test_unknown_architecture_is_refused(tmp_path: Path) -> None:
    path = write_fake_arch(tmp_path / "mystery.gguf")
    with pytest.raises(UnsupportedArchitectureError, match="notanarch"):
        Library().import_file(path)


def test_split_model_is_one_entry(tmp_path: Path) -> None:
    # Two parts as llama.cpp's gguf-split writes them: the first holds the metadata, each holds tensors.
    import gguf
    import numpy as np

    folder = tmp_path / "split"
    folder.mkdir()
    full = write_tiny_llama(tmp_path / "whole.gguf")
    info = read_gguf_info(full)
    reader = gguf.GGUFReader(full)
    names = [t.name for t in reader.tensors]
    halves = [names[: len(names) // 2], names[len(names) // 2 :]]
    for i, subset in enumerate(halves, start=1):
        w = gguf.GGUFWriter(str(folder / f"tiny-0000{i}-of-00002.gguf"), "llama")
        if i == 1:
            for key, field in reader.fields.items():
                if key.startswith("GGUF.") or key == "general.architecture":
                    continue
                value = field.contents()
                vtype = field.types[0]
                if vtype == gguf.GGUFValueType.ARRAY:
                    w.add_array(key, value)
                else:
                    w.add_key_value(key, value, vtype)
        w.add_uint16("split.no", i - 1)
        w.add_uint16("split.count", 2)
        for t in reader.tensors:
            if t.name in subset:
                w.add_tensor(t.name, np.array(t.data), raw_shape=list(reversed(t.shape.tolist())))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    entry = Library().import_file(folder / "tiny-00002-of-00002.gguf")
    assert entry.name == "tiny" and len(entry.files) == 2
    assert entry.parameters == info.parameters
    assert [e.name for e in Library().models()] == ["tiny"]
    os.unlink(folder / "tiny-00002-of-00002.gguf")
    with pytest.raises(InvalidModelError, match="missing"):
        read_gguf_info(folder / "tiny-00001-of-00002.gguf")


def test_hugging_face_cache_models_are_discovered(tiny_model: Path, tmp_path: Path) -> None:
    cache = Path(os.environ["HF_HUB_CACHE"])
    snap = cache / "models--someone--tiny-GGUF" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "tiny-Q8_0.gguf").write_bytes(tiny_model.read_bytes())
    entries = Library().models()
    assert [e.name for e in entries] == ["someone/tiny-GGUF/tiny-q8_0"]
    assert entries[0].source == "hf-cache" and not entries[0].managed
    assert Library().get("someone/tiny-GGUF/tiny-q8_0").path.endswith("tiny-Q8_0.gguf")


def test_corrupt_index_is_set_aside_and_rebuilt(tiny_model: Path) -> None:
    lib = Library()
    lib.import_file(tiny_model)
    lib.paths.library_index.write_text("{ not json")
    assert [e.name for e in Library().models()] == ["tiny-llama"]
    assert list(lib.paths.data.glob("library.corrupt-*.json"))
    json.loads(lib.paths.library_index.read_text())


def test_starter_model_is_added_once(starter_in_library: Path) -> None:
    lib = Library()
    entry = lib.ensure_starter()
    assert entry is not None and entry.source == "starter"
    assert entry.architecture == "gemma3" and entry.file_type == "Q4_K_M"
    assert lib.ensure_starter() == entry
    assert [e.name for e in lib.models()] == [entry.name]
    lib.remove(entry.name)  # a user who removes the starter model does not get it back
    assert lib.ensure_starter() is None and lib.models() == []


def test_metadata_of_the_starter_model(starter_model: Path) -> None:
    info = read_gguf_info(starter_model)
    assert (info.architecture, info.block_count, info.head_count_kv, info.sliding_window) == ("gemma3", 18, 1, 512)
    assert info.vocab_size == 262144 and not info.has_chat_template
    assert 260e6 < info.parameters < 280e6
