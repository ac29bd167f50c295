"""Images a user attaches to a chat: checked, decoded, turned upright, flattened to RGB and scaled down.

Everything a chat stores or sends to the engine goes through ``prepare_image`` first, so the engine
(llama.cpp's mtmd, which decodes with stb_image) only ever sees a PNG or JPEG it can read, of a size
that is cheap to keep in the chat database. Pillow is imported inside the functions: the chat store
imports this module, and the window must start without decoding libraries loaded.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import ImageError

if TYPE_CHECKING:
    from PIL import Image

# The longest side kept. Vision projectors resize every image to their own input size anyway (Gemma 3's
# SigLIP 896 px, SmolVLM's 512 px tiles, LLaVA 336 px; Qwen2.5-VL works at native resolution but its
# llama.cpp preprocessor caps the pixel count near 1-2 megapixels, tools/mtmd/clip.cpp). 1536 px keeps
# every one of them at full detail, lets tiling models (SmolVLM, Qwen2.5-VL) see fine print, and keeps a
# stored photo around 0.3-0.6 MB instead of the 5-10 MB a phone writes.
MAX_SIDE = 1536
# The most pixels an image may declare before anything is decoded: 2**26 (8192 x 8192, 67 megapixels)
# takes every ordinary camera (50 and 64 megapixel phone modes included) and refuses decompression bombs
# (a few KB of PNG that would inflate to gigabytes). It is below Pillow's own limit
# (``Image.MAX_IMAGE_PIXELS``, 89 megapixels), so Pillow's check in ``Image.open`` never warns first, and
# its DecompressionBombError is still caught for anything it refuses.
MAX_PIXELS = 1 << 26
# A file larger than this is not read into memory at all (a 67-megapixel PNG is well under it).
MAX_FILE_BYTES = 256 * 1024 * 1024
JPEG_QUALITY = 90
ACCEPTED = ("PNG", "JPEG", "MPO", "WEBP")  # MPO: a camera JPEG with extra frames (Pillow names it apart)
_WORKS = "use a PNG, JPEG or WebP image"


@dataclass(frozen=True)
class PreparedImage:
    """An image ready to store and send: re-encoded PNG or JPEG, RGB, longest side <= ``MAX_SIDE``."""

    data: bytes
    mime: str  # "image/png" or "image/jpeg"
    width: int
    height: int
    sha256: str  # of ``data``: the key the chat store keeps it under

    @classmethod
    def from_encoded(cls, data: bytes, mime: str, width: int, height: int) -> PreparedImage:
        """Wrap already prepared bytes (read back from the chat store), computing their sha256."""
        return cls(data, mime, width, height, hashlib.sha256(data).hexdigest())


def load_image_file(path: str | Path) -> PreparedImage:
    """Read and prepare an image file; ``ImageError`` names the file when it cannot be used."""
    file = Path(path).expanduser()
    name = file.name or str(file)
    try:
        size = file.stat().st_size
        if not file.is_file():
            raise ImageError(f"{file} is not a file: {_WORKS}.")
        if size > MAX_FILE_BYTES:
            raise ImageError(f"{name} is far too large ({size / 2**20:.0f} MB): scale it down and attach it again.")
        data = file.read_bytes()
    except FileNotFoundError as exc:
        raise ImageError(f"There is no file {file}: check the path and attach it again.") from exc
    except OSError as exc:
        raise ImageError(f"{file} cannot be read ({exc.strerror or exc}): check its permissions.") from exc
    return prepare_image(data, name=name)


def prepare_image(data: bytes, *, name: str = "image") -> PreparedImage:
    """Check, decode and re-encode an image given as the bytes of a PNG, JPEG or WebP file.

    The whole image is decoded (a file cut short is an error, not a grey half), its EXIF orientation
    applied, transparency laid on white, converted to RGB and scaled down to ``MAX_SIDE``. Lossless
    sources (PNG, lossless WebP) become PNG, photos (JPEG, lossy WebP) JPEG at quality 90. Re-encoding
    also drops the file's metadata (EXIF: camera, place), which the model has no use for.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageError(f"{name} is empty: {_WORKS}.")
    try:
        # Image.open reads only the header: the size below is known before any pixel is decoded. Pillow's
        # own bomb check runs there too; its warning (between its two limits) counts as a refusal here.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name} is far too large (more than {MAX_PIXELS / 1e6:.0f} megapixels): "
                         "scale it down and attach it again.") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{name} is not an image Hearth can read: {_WORKS}.") from exc
    except (OSError, ValueError, SyntaxError) as exc:  # a damaged header (Pillow raises all three)
        raise ImageError(f"{name} is corrupt (its header cannot be read): save or download it again.") from exc
    with image:
        kind = image.format or "unknown"
        if kind not in ACCEPTED:
            raise ImageError(f"{name} is a {_format_name(kind)} image, which Hearth does not send to models: "
                             f"convert it to PNG, JPEG or WebP.")
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise ImageError(f"{name} is far too large ({width}x{height}, {width * height / 1e6:.0f} megapixels; "
                             f"at most {MAX_PIXELS / 1e6:.0f}): scale it down and attach it again.")
        lossless = kind == "PNG" or (kind == "WEBP" and _is_lossless_webp(data))
        if kind in ("JPEG", "MPO"):
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the result is scaled down anyway: a
            # 50-megapixel photo then never exists at full size in memory.
            image.draft("RGB", _scaled(width, height, MAX_SIDE))
        try:
            image.load()  # the whole image: ImageFile.LOAD_TRUNCATED_IMAGES stays False, so a short file raises
            flat = _flatten(_upright(image))
        except Image.DecompressionBombError as exc:
            raise ImageError(f"{name} is far too large: scale it down and attach it again.") from exc
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise ImageError(f"{name} is cut short or corrupt (its image data cannot be decoded): "
                             "save or download it again.") from exc
    target = _scaled(*flat.size, MAX_SIDE)
    if target != flat.size:
        # Lanczos after a cheap box reduction (reducing_gap): the quality of Lanczos at a fraction of its cost.
        flat = flat.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    out = io.BytesIO()
    if lossless:
        flat.save(out, "PNG", optimize=False, compress_level=6)
        mime = "image/png"
    else:
        flat.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
        mime = "image/jpeg"
    return PreparedImage.from_encoded(out.getvalue(), mime, flat.width, flat.height)


def _scaled(width: int, height: int, limit: int) -> tuple[int, int]:
    """(width, height) scaled so the longest side is at most ``limit``, aspect kept, never below 1."""
    longest = max(width, height)
    if longest <= limit:
        return width, height
    factor = limit / longest
    return max(1, round(width * factor)), max(1, round(height * factor))


def _upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation tag says (phones store photos sideways and tag them)."""
    from PIL import ImageOps

    turned = ImageOps.exif_transpose(image)
    return turned if turned is not None else image


def _flatten(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited on white (what a viewer shows; models take no alpha)."""
    from PIL import Image as PILImage

    has_alpha = image.mode in ("RGBA", "LA", "RGBa", "La", "PA") or (
        image.mode == "P" and "transparency" in image.info) or (
        image.mode in ("RGB", "L") and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        white = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PILImage.alpha_composite(white, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey (medical, scientific PNGs): scale to 8 bits first; a plain convert would clip at 255.
        return image.point(lambda v: v / 256).convert("L").convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


def _is_lossless_webp(data: bytes) -> bool:
    """True when a WebP file's image is VP8L (lossless), False for VP8 (lossy).

    RIFF container (https://developers.google.com/speed/webp/docs/riff_container): "RIFF", size, "WEBP",
    then chunks of fourcc + little-endian size + payload (padded to even); a simple file's first chunk
    is "VP8 " or "VP8L", an extended one ("VP8X") holds them after other chunks (ICCP, ANIM, ALPH...).
    """
    pos = 12
    while pos + 8 <= len(data):
        fourcc = data[pos:pos + 4]
        if fourcc == b"VP8L":
            return True
        if fourcc in (b"VP8 ", b"ANMF"):  # the first frame decides for an animation
            return fourcc == b"ANMF" and b"VP8L" in data[pos + 8:pos + 48]
        size = int.from_bytes(data[pos + 4:pos + 8], "little")
        pos += 8 + size + (size & 1)
    return False


def _format_name(kind: str) -> str:
    return {"GIF": "GIF", "BMP": "BMP", "TIFF": "TIFF", "ICO": "icon"}.get(kind, kind)
