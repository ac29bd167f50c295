"""Images attached to chats: accepted formats, scaling, orientation, transparency, and every refusal."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from core.errors import HearthError, ImageError
from core.media import MAX_PIXELS, MAX_SIDE, PreparedImage, load_image_file, prepare_image


def _picture(size: tuple[int, int] = (64, 48), mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A picture with structure (gradients, a block) so encoders and scaling have something to keep."""
    w, h = size
    image = Image.linear_gradient("L").resize(size)
    other = Image.linear_gradient("L").rotate(90 + seed * 37).resize(size)
    rgb = Image.merge("RGB", (image, other, Image.new("L", size, (seed * 53) % 256)))
    rgb.paste((200, 30, 30), (w // 4, h // 4, w // 2, h // 2))
    return rgb.convert(mode)


def _encode(image: Image.Image, fmt: str, **kw: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kw)
    return out.getvalue()


def _decode(prepared: PreparedImage) -> Image.Image:
    image = Image.open(io.BytesIO(prepared.data))
    image.load()
    return image


@pytest.mark.parametrize(("fmt", "kw", "mime"), [
    ("PNG", {}, "image/png"),
    ("JPEG", {"quality": 95}, "image/jpeg"),
    ("WEBP", {"quality": 80}, "image/jpeg"),  # lossy WebP is a photo
    ("WEBP", {"lossless": True}, "image/png"),  # lossless WebP stays lossless
])
def test_png_jpeg_and_webp_are_accepted_and_re_encoded(fmt: str, kw: dict[str, object], mime: str) -> None:
    source = _picture((120, 80))
    prepared = prepare_image(_encode(source, fmt, **kw), name=f"pic.{fmt.lower()}")
    assert (prepared.mime, prepared.width, prepared.height) == (mime, 120, 80)
    decoded = _decode(prepared)
    assert decoded.format == mime.split("/")[1].upper() and decoded.mode == "RGB" and decoded.size == (120, 80)
    # The content survives: the red block is still red.
    assert decoded.getpixel((40, 30))[0] > 150 > decoded.getpixel((40, 30))[1] + 60  # type: ignore[index]
    import hashlib

    assert prepared.sha256 == hashlib.sha256(prepared.data).hexdigest()


def test_the_same_image_gives_the_same_bytes_and_hash() -> None:
    data = _encode(_picture(seed=3), "PNG")
    assert prepare_image(data) == prepare_image(data)
    assert prepare_image(data).sha256 != prepare_image(_encode(_picture(seed=4), "PNG")).sha256


@pytest.mark.parametrize("size", [(4000, 3000), (900, 2400), (MAX_SIDE + 1, 10)])
def test_a_large_image_is_scaled_down_keeping_its_aspect(size: tuple[int, int]) -> None:
    prepared = prepare_image(_encode(_picture(size), "JPEG", quality=85), name="big.jpg")
    assert max(prepared.width, prepared.height) == MAX_SIDE
    assert prepared.width / prepared.height == pytest.approx(size[0] / size[1], rel=0.01)
    assert _decode(prepared).size == (prepared.width, prepared.height)


def test_a_small_image_keeps_its_size() -> None:
    prepared = prepare_image(_encode(_picture((MAX_SIDE, 7)), "PNG"))
    assert (prepared.width, prepared.height) == (MAX_SIDE, 7)


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": how phones save a portrait photo
    prepared = prepare_image(_encode(_picture((200, 100)), "JPEG", exif=exif.tobytes()), name="phone.jpg")
    assert (prepared.width, prepared.height) == (100, 200)
    assert b"Exif" not in prepared.data[:64]  # the metadata (camera, place) is not kept


def test_transparency_is_laid_on_white() -> None:
    image = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    image.paste((0, 0, 255, 255), (0, 0, 5, 10))
    decoded = _decode(prepare_image(_encode(image, "PNG"), name="logo.png"))
    assert decoded.mode == "RGB"
    assert decoded.getpixel((8, 5)) == (255, 255, 255) and decoded.getpixel((2, 5)) == (0, 0, 255)
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([10, 20, 30, 200, 100, 50])
    palette.info["transparency"] = 0
    assert _decode(prepare_image(_encode(palette, "PNG", transparency=0))).getpixel((1, 1)) == (255, 255, 255)


def test_grey_and_16_bit_images_become_rgb() -> None:
    grey = _decode(prepare_image(_encode(_picture(mode="L"), "PNG")))
    assert grey.mode == "RGB"
    deep = Image.new("I;16", (8, 8), 40000)
    pixel = _decode(prepare_image(_encode(deep, "PNG"))).getpixel((3, 3))
    assert pixel == (156, 156, 156)  # 40000 / 256: scaled, not clipped to white


def test_errors_are_image_errors_with_one_sentence_naming_the_file(tmp_path: Path) -> None:
    assert issubclass(ImageError, HearthError)
    cases: dict[str, tuple[bytes, str]] = {
        "notes.txt": (b"just some text, not a picture\n" * 20, "not an image Hearth can read: use a PNG, JPEG or WebP"),
        "empty.png": (b"", "is empty"),
        "cat.gif": (_encode(_picture(), "GIF"), "is a GIF image, which Hearth does not send to models: convert it"),
        "scan.bmp": (_encode(_picture(), "BMP"), "is a BMP image"),
    }
    for name, (data, expected) in cases.items():
        with pytest.raises(ImageError) as err:
            prepare_image(data, name=name)
        message = str(err.value)
        assert name in message and expected in message, message
        assert message.count(". ") == 0 and message.endswith("."), message  # one sentence
        assert "\n" not in message


def test_a_truncated_file_is_refused_not_half_decoded() -> None:
    for fmt, name in (("PNG", "cut.png"), ("JPEG", "cut.jpg"), ("WEBP", "cut.webp")):
        data = _encode(_picture((300, 200)), fmt)
        with pytest.raises(ImageError, match=rf"{name} is (cut short or corrupt|corrupt)"):
            prepare_image(data[: len(data) * 2 // 3], name=name)


def test_corrupt_image_data_is_refused() -> None:
    data = bytearray(_encode(_picture((200, 200)), "PNG"))
    start = data.index(b"IDAT") + 8
    data[start:start + 200] = bytes(200)  # the compressed pixels damaged (the chunk's CRC no longer matches)
    with pytest.raises(ImageError, match=r"broken\.png is cut short or corrupt"):
        prepare_image(bytes(data), name="broken.png")
    with pytest.raises(ImageError, match=r"header\.jpg"):
        prepare_image(b"\xff\xd8\xff\xe0" + bytes(40), name="header.jpg")


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a huge size and holds a few bytes of data: a decompression bomb's header."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(1024))) + chunk(b"IEND", b"")


@pytest.mark.parametrize("size", [(10_000, 10_000), (100_000, 100_000), (MAX_PIXELS + 1, 1)])
def test_a_pixel_bomb_is_refused_before_decoding(size: tuple[int, int]) -> None:
    with pytest.raises(ImageError) as err:
        prepare_image(_png_header_only(*size), name="bomb.png")
    assert "bomb.png is far too large" in str(err.value) and "scale it down" in str(err.value)


def test_load_image_file(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(_encode(_picture((64, 64)), "JPEG"))
    prepared = load_image_file(path)
    assert (prepared.mime, prepared.width) == ("image/jpeg", 64)
    with pytest.raises(ImageError, match=r"There is no file .*missing\.png: check the path"):
        load_image_file(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="is not a file"):
        load_image_file(tmp_path)
    (tmp_path / "fake.png").write_text("hello")
    with pytest.raises(ImageError, match=r"fake\.png is not an image"):
        load_image_file(tmp_path / "fake.png")


def test_importing_core_media_does_not_load_pillow() -> None:
    import subprocess
    import sys

    code = "import sys, core.media, core.chats.store; print('PIL' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"
