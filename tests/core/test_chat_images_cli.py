"""``hearth chat --image`` and ``/image``, run in a real subprocess: answers, saved images, one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from core.chats import ChatStore
from tests.core.test_cli import hearth


def _png(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    Image.linear_gradient("L").resize(size).convert("RGB").save(path, "PNG")
    return path


def _saved() -> list[dict[str, Any]]:
    return [json.loads(ChatStore().export(c.id, "json")) for c in ChatStore().list()]


def _one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("hearth: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_an_image_for_a_model_without_projector_is_refused_with_exit_code_2(tiny_model: Path, tmp_path: Path) -> None:
    result = hearth("chat", str(tiny_model), "--image", str(_png(tmp_path / "pic.png")), "-p", "What is this?")
    assert result.returncode == 2
    line = _one_line_error(result.stderr)
    assert "cannot read images: it has no vision projector (mmproj) paired" in line and "--mmproj FILE" in line
    assert _saved() == []  # nothing was loaded or saved


@pytest.mark.parametrize(("setup", "message"), [
    ("text", "notes.txt is not an image Hearth can read: use a PNG, JPEG or WebP image."),
    ("missing", "There is no file"),
    ("gif", "anim.gif is a GIF image"),
])
def test_a_bad_image_file_is_one_line(setup: str, message: str, tiny_model: Path, tmp_path: Path) -> None:
    path = {"text": tmp_path / "notes.txt", "missing": tmp_path / "gone.png", "gif": tmp_path / "anim.gif"}[setup]
    if setup == "text":
        path.write_text("not a picture")
    elif setup == "gif":
        Image.new("RGB", (8, 8)).save(path, "GIF")
    result = hearth("chat", str(tiny_model), "--image", str(path), "-p", "hi")
    assert result.returncode == 1
    assert message in _one_line_error(result.stderr)


def test_a_missing_projector_file_is_one_line(tiny_model: Path, tmp_path: Path) -> None:
    result = hearth("chat", str(tiny_model), "--mmproj", str(tmp_path / "mmproj-gone.gguf"), "-p", "hi")
    assert result.returncode == 1
    assert "There is no projector file" in _one_line_error(result.stderr)


def test_a_wrong_projector_is_refused_at_load(tiny_vision: Any, tmp_path: Path) -> None:
    result = hearth("chat", str(tiny_vision.model), "--mmproj", str(tiny_vision.wrong_mmproj),
                    "--image", str(_png(tmp_path / "pic.png")), "-p", "hi")
    assert result.returncode == 1
    assert "projector" in _one_line_error(result.stderr)
    assert _saved() == []


def test_one_shot_with_images_answers_and_saves_them(tiny_vision: Any, tmp_path: Path) -> None:
    first, second = _png(tmp_path / "a.png"), _png(tmp_path / "b.png", (120, 90))
    result = hearth("chat", str(tiny_vision.model), "--mmproj", str(tiny_vision.mmproj), "--image", str(first),
                    "--image", str(second), "-p", "Compare them.", "--json", "--temperature", "0", "--max-tokens", "4")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert len(data["images"]) == 2 and data["stats"]["image_tokens"] > 0
    [chat] = _saved()
    assert chat["messages"][0]["images"] == data["images"]
    shown = hearth("chats", "show", str(data["conversation_id"])).stdout
    assert "[image: 64x48]\n\n[image: 120x90]\n\nCompare them." in shown


def test_the_library_pairing_loads_the_projector(tiny_vision: Any, tmp_path: Path) -> None:
    imported = hearth("import", str(tiny_vision.model), "--name", "seer", "--mmproj", str(tiny_vision.mmproj))
    assert imported.returncode == 0, imported.stderr
    result = hearth("chat", "seer", "--image", str(_png(tmp_path / "pic.png")), "-p", "Look.", "--max-tokens", "3")
    assert result.returncode == 0, result.stderr
    assert "reads images" in result.stderr and "image tokens" in result.stderr


def test_interactive_image_command_attaches_to_the_next_message(tiny_vision: Any, tmp_path: Path) -> None:
    pic, start = _png(tmp_path / "pic.png"), _png(tmp_path / "start.png", (30, 20))
    script = f"Hello.\n/image {pic}\n/image {tmp_path / 'nope.png'}\n/image\nWhat is it?\nThanks.\n/exit\n"
    result = hearth("chat", str(tiny_vision.model), "--mmproj", str(tiny_vision.mmproj), "--image", str(start),
                    "--max-tokens", "3", "--temperature", "0", input=script)
    assert result.returncode == 0, result.stderr
    assert "/image FILE attaches an image" in result.stderr
    assert "[image attached: 64x48; it will go with your next message]" in result.stderr
    assert "There is no file" in result.stderr and "Give the image's file: /image FILE" in result.stderr
    [chat] = _saved()
    users = [m for m in chat["messages"] if m["role"] == "user"]
    assert [(m["content"], len(m["images"])) for m in users] == [("Hello.", 1), ("What is it?", 1), ("Thanks.", 0)]
    assert [chat["images"][m["images"][0]]["width"] for m in users[:2]] == [30, 64]


def test_interactive_image_command_on_a_model_without_projector(tiny_model: Path, tmp_path: Path) -> None:
    script = f"/image {_png(tmp_path / 'pic.png')}\nhello\n/exit\n"
    result = hearth("chat", str(tiny_model), "--max-tokens", "3", input=script)
    assert result.returncode == 0, result.stderr
    assert "cannot read images: it has no vision projector (mmproj) loaded" in result.stderr
    [chat] = _saved()
    assert [(m["content"], m["images"]) for m in chat["messages"] if m["role"] == "user"] == [("hello", [])]
