"""Images: a vision projector (mmproj) beside the model, read through llama.cpp's multimodal library (libmtmd).

The projector is loaded with ``mtmd_init_from_file`` after the model (``tools/mtmd/mtmd.h``). A chat whose
messages have image parts is rendered with ``mtmd_default_marker()`` where each image goes, split by
``mtmd_tokenize`` into text and image chunks, and evaluated chunk by chunk: text with the worker's own
batches, images with ``mtmd_encode_chunk`` and ``mtmd_helper_decode_image_chunk`` (what
``mtmd_helper_eval_chunk_single`` does, timed apart so the stats can say what encoding cost). Generation
then samples as for any prompt (``ops.generate.generate``).

The KV cache keeps one key per cell: a text token's id, or for every cell of an image a negative number
made from the image's SHA-256 (``mtmd_helper_bitmap_init_from_buf`` sets it as the bitmap's id). So the
next turn reuses the cache up to the first difference, through an image only when the same bytes sit at
the same place, and never cuts an image in half. Models with M-RoPE (Qwen2-VL...) give an image fewer
positions than cells (``mtmd_input_chunk_get_n_pos``); ``Worker.pos_shift`` keeps the difference.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import time
from typing import TYPE_CHECKING, Any

import llama_cpp as L

from core.engine.ops.base import RequestError
from core.engine.ops.tokens import fit_messages
from core.engine.params import GenerationStats
from core.engine.templates import render
from core.errors import EngineError, InvalidModelError, NoVisionError
from core.library.projector import FIX, mismatch, projector_width

if TYPE_CHECKING:
    from core.engine.worker import Worker

_MISMATCH = re.compile(r"n_embd = (\d+)\) and mmproj \(n_embd = (\d+)\)")
_READS_LISTS: dict[str, bool] = {}  # chat template -> it shows images only when content is a list of parts
IMAGE_ERROR = ("could not be read: it is not a PNG, JPEG or WebP picture, or it is cut short or corrupt. "
               "Attach the picture again, or another one.")


def _mtmd() -> Any:
    import llama_cpp.mtmd_cpp as M

    return M


# -- the projector -------------------------------------------------------------------------------
def load_projector(w: Worker, path: str, *, n_threads: int, use_gpu: bool, flash_attn: bool | None) -> None:
    """Load the projector at ``path`` beside the loaded model (``w.mtmd``); refuse one that does not fit."""
    n_embd = int(L.llama_model_n_embd_inp(w.model))
    _kind, width = projector_width(path)
    if width is not None and width != n_embd:
        raise mismatch(path, w.path, width, n_embd)
    try:
        M = _mtmd()
    except (ImportError, OSError) as exc:
        raise RequestError(
            "load_failed",
            f"This build of llama.cpp has no multimodal library (libmtmd), so {os.path.basename(path)} cannot be "
            "loaded: reinstall Hearth, or load the model without its projector.",
        ) from exc
    M.mtmd_helper_log_set(w.log.callback, ctypes.c_void_p(0))  # caught like llama.cpp's own lines
    params = M.mtmd_context_params_default()
    params.use_gpu = use_gpu
    params.print_timings = False
    params.n_threads = n_threads
    if flash_attn is not None:
        params.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else L.LLAMA_FLASH_ATTN_TYPE_DISABLED
    w.log.lines.clear()
    ctx = M.mtmd_init_from_file(path.encode(), w.model, params)
    if not ctx:
        text = "\n".join(w.log.lines)
        found = _MISMATCH.search(text)
        if found:
            raise mismatch(path, w.path, int(found.group(2)), int(found.group(1)))
        reason = w.log.reason() or "llama.cpp could not read it"
        raise RequestError(
            "load_failed", f"Could not load the projector {os.path.basename(path)} ({reason.rstrip('.')}): "
                           f"{FIX}, or load the model without it.",
        )
    if not M.mtmd_support_vision(ctx):
        M.mtmd_free(ctx)
        raise InvalidModelError(f"{os.path.basename(path)} has no vision encoder (it reads sound, not images): {FIX}.")
    w.mtmd = ctx
    w.mmproj = path


def free_projector(w: Worker) -> None:
    if w.mtmd is not None:
        _mtmd().mtmd_free(w.mtmd)
        w.mtmd = None
    w.mmproj = None


# -- messages ------------------------------------------------------------------------------------
def has_images(messages: list[dict[str, Any]]) -> bool:
    """Whether any message has an image part."""
    return any(
        isinstance(part, dict) and part.get("type") == "image"
        for m in messages if isinstance(m.get("content"), list) for part in m["content"]
    )


def flatten(messages: list[dict[str, Any]], marker: str, as_parts: bool) -> tuple[list[dict[str, Any]], list[list[bytes]]]:
    """Messages with each image part replaced by ``marker`` (as llama.cpp's server does), and each message's
    images in order. ``as_parts``: content stays a list of text parts (for templates that only read lists)."""
    out: list[dict[str, Any]] = []
    images: list[list[bytes]] = []
    for message in messages:
        content = message.get("content")
        mine: list[bytes] = []
        if isinstance(content, list):
            texts: list[str] = []
            for part in content:
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "image":
                    data = part.get("data")
                    if not isinstance(data, (bytes, bytearray)):
                        raise RequestError("bad_request", "An image part has no image bytes ('data'): attach the "
                                                          "picture again.")
                    mine.append(bytes(data))
                    texts.append(marker)
                elif part.get("type") == "text":
                    texts.append(str(part.get("text", "")).replace(marker, ""))  # a marker typed by the user is text
            if as_parts:
                message = {**message, "content": [{"type": "text", "text": t} for t in texts]}
            else:
                message = {**message, "content": "".join(texts)}
        elif isinstance(content, str) and marker in content:
            message = {**message, "content": content.replace(marker, "")}
        out.append(message)
        images.append(mine)
    return out, images


# -- the prompt ----------------------------------------------------------------------------------
class ImagePrompt:
    """A chat prompt with images: mtmd's chunks and the cache keys of their cells (see the module's notes).

    Owns the chunks and bitmaps until ``free``. Not drafted: drafting verifies text tokens only.
    """

    draftable = False

    def __init__(self, chunks: Any, bitmaps: list[Any], n_tokens: int) -> None:
        self.chunks = chunks
        self.bitmaps = bitmaps
        self.n_tokens = n_tokens
        self.parts: list[tuple[Any, int, list[int] | None]] = []  # (chunk, cells, text tokens or None)
        self.keys: list[int] = []
        M = _mtmd()
        for i in range(M.mtmd_input_chunks_size(chunks)):
            chunk = M.mtmd_input_chunks_get(chunks, i)
            n = int(M.mtmd_input_chunk_get_n_tokens(chunk))
            if M.mtmd_input_chunk_get_type(chunk) == M.MTMD_INPUT_CHUNK_TYPE_TEXT:
                count = ctypes.c_size_t()
                ptr = M.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
                tokens = [int(ptr[j]) for j in range(count.value)]
                self.parts.append((chunk, n, tokens))
                self.keys.extend(tokens)
            else:
                self.parts.append((chunk, n, None))
                self.keys.extend([image_key(M.mtmd_input_chunk_get_id(chunk))] * n)
        self.image_tokens = sum(n for _c, n, t in self.parts if t is None)

    def evaluate(self, w: Worker, stats: GenerationStats) -> None:
        """Bring the cache to this prompt, reusing the longest shared start; fills the prompt's stats."""
        M = _mtmd()
        common = rewind_keeping_images(w, self.keys)
        stats.cached_tokens = common
        stats.image_tokens = self.image_tokens
        at = 0
        for chunk, n, tokens in self.parts:
            if at + n <= common:
                at += n
                continue
            if tokens is not None:
                w.decode(tokens[max(0, common - at) :], logits=at + n == len(self.keys))
            else:
                if n > w.n_batch and M.mtmd_decode_use_non_causal(w.mtmd, chunk):
                    # Gemma 3-style images attend both ways, so llama.cpp needs one whole image in one batch.
                    raise RequestError("image_batch", f"This model reads an image as {n} tokens in one batch, more "
                                       f"than the batch size ({w.n_batch}): reload it with a batch size of at "
                                       f"least {n}.")
                started = time.perf_counter()
                rc = M.mtmd_encode_chunk(w.mtmd, chunk)
                stats.image_seconds += time.perf_counter() - started
                n_past = len(w.kv_tokens) + w.pos_shift
                new_n_past = L.llama_pos(n_past)
                if rc == 0:
                    rc = M.mtmd_helper_decode_image_chunk(
                        w.mtmd, w.ctx, chunk, M.mtmd_get_output_embd(w.mtmd), n_past, 0, w.n_batch,
                        ctypes.byref(new_n_past), M.mtmd_helper_post_decode_callback(), None,  # no callback
                    )
                if rc != 0:
                    w.reset_cache()
                    reason = w.log.reason()
                    raise RequestError("decode_failed", "llama.cpp could not evaluate an image of the prompt"
                                       + (f" ({reason})" if reason else "") + f" (code {rc}).")
                w.add_image_cells(self.keys[at : at + n], int(new_n_past.value) - n_past)
            at += n

    def free(self) -> None:
        M = _mtmd()
        if self.chunks is not None:
            M.mtmd_input_chunks_free(self.chunks)
            self.chunks = None
        for bitmap in self.bitmaps:
            M.mtmd_bitmap_free(bitmap)
        self.bitmaps = []


def image_key(image_id: bytes | None) -> int:
    """The cache key of an image's cells: negative (text tokens are not), from its SHA-256 hex id."""
    if image_id:
        try:
            return -1 - int(image_id[:15], 16)
        except ValueError:
            return -1 - int.from_bytes(hashlib.sha256(image_id).digest()[:7], "little")
    return -(1 << 62) - int.from_bytes(os.urandom(6), "little")  # no id: a key that matches nothing


def rewind_keeping_images(w: Worker, keys: list[int]) -> int:
    """Keep the longest start of the cache that ``keys`` share, never half an image and never all of
    ``keys`` (the last one gives the logits); returns how many cells are kept."""
    kv = w.kv_tokens
    common = 0
    limit = min(len(keys), len(kv))
    while common < limit and keys[common] == kv[common]:
        common += 1
    if common == len(keys):
        common -= 1
    for start, n, _n_pos in w.kv_images:
        if start < common < start + n:
            common = start
    if common < len(kv):
        if common <= 0 or not L.llama_memory_seq_rm(w.mem, 0, w.position_of(common), -1):
            w.reset_cache()
            return 0
        w.forget_after(common)
    return common


def decode_image(w: Worker, data: bytes, number: int) -> Any:
    """An mtmd bitmap of the encoded image ``data`` (PNG, JPEG... through stb_image; WebP through Pillow)."""
    from core.media import MAX_PIXELS

    M = _mtmd()
    size = _image_size(data)
    if size is None:
        raise RequestError("image", f"Image {number} {IMAGE_ERROR}")
    if size[0] * size[1] > MAX_PIXELS:
        raise RequestError("image", f"Image {number} is far too large (more than {MAX_PIXELS / 1e6:.0f} "
                                    "megapixels): scale it down and attach it again.")
    buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
    bitmap = M.mtmd_helper_bitmap_init_from_buf(w.mtmd, buf, len(data), False)
    if bitmap:
        return bitmap
    # stb_image reads no WebP (mtmd decodes it with ffmpeg only in a video build): Pillow decodes it here.
    try:
        from io import BytesIO

        from PIL import Image

        with Image.open(BytesIO(data)) as image:
            rgb = image.convert("RGB")
        raw = rgb.tobytes()
    except Exception as exc:  # Pillow raises many kinds for a broken file
        raise RequestError("image", f"Image {number} {IMAGE_ERROR}") from exc
    bitmap = M.mtmd_bitmap_init(rgb.width, rgb.height, (ctypes.c_uint8 * len(raw)).from_buffer_copy(raw))
    M.mtmd_bitmap_set_id(bitmap, hashlib.sha256(data).hexdigest().encode())  # as the helper names its bitmaps
    return bitmap


def _image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the image's header (Pillow reads no pixels for it); None: not an image."""
    import warnings
    from io import BytesIO

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is judged below
            with Image.open(BytesIO(data)) as image:
                return int(image.width), int(image.height)
    except Image.DecompressionBombError:  # over twice Pillow's own limit: far larger than MAX_PIXELS
        return (1 << 20, 1 << 20)
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def image_chat_prompt(
    w: Worker, messages: list[dict[str, Any]], reserve: int, tools: list[dict[str, Any]] | None = None
) -> tuple[ImagePrompt, int]:
    """The prompt for a chat with images, dropping the oldest turns as ``chat_prompt`` does until ``reserve``
    tokens fit after it; returns it (the caller frees it) and how many messages were dropped."""
    if w.mtmd is None:
        raise RequestError("no_vision", NoVisionError.MESSAGE)
    M = _mtmd()
    marker = M.mtmd_default_marker().decode()
    # Content as a string with markers suits most templates (llama.cpp's server does the same); a template that
    # only reads lists of parts gets lists of text parts, the markers among them (found once per template).
    template = w.fmt.template or ""
    as_parts = _READS_LISTS.get(template, False)
    flat, images = flatten(messages, marker, as_parts)
    if template not in _READS_LISTS:
        try:
            probe = render(w.fmt, flat, bos_token=w.bos_text, eos_token=w.eos_text, tools=tools)
            as_parts = _READS_LISTS[template] = probe.count(marker) != sum(len(mine) for mine in images)
        except EngineError:
            as_parts = True  # this conversation only: lists may render (else the error is the template's)
        if as_parts:
            flat = flatten(messages, marker, as_parts=True)[0]
    place = {id(m): i for i, m in enumerate(flat)}  # the kept messages are these same objects
    numbers = {(i, j): n for n, (i, j) in enumerate(
        ((i, j) for i, mine in enumerate(images) for j in range(len(mine))), start=1)}
    bitmaps: dict[tuple[int, int], Any] = {}  # decoded once per request

    def build(kept: list[dict[str, Any]]) -> tuple[ImagePrompt, int]:
        text = render(w.fmt, kept, bos_token=w.bos_text, eos_token=w.eos_text, tools=tools)
        if text.endswith(marker):
            text += "\n"  # an image is decoded without logits: a text token must come last
        wanted = [(place[id(m)], j) for m in kept for j in range(len(images[place[id(m)]]))]
        if text.count(marker) != len(wanted):
            raise EngineError(
                f"The model's chat template left out {len(wanted) - text.count(marker)} of the conversation's "
                "images, so this model cannot be shown pictures with it: use the model's own chat template."
            )
        for key in wanted:
            if key not in bitmaps:
                i, j = key
                bitmaps[key] = decode_image(w, images[i][j], numbers[key])
        return _tokenize(w, text, [bitmaps[key] for key in wanted])

    try:
        prompt, dropped = fit_messages(w, flat, reserve, build, release=lambda p: p.free())
    except BaseException:
        for bitmap in bitmaps.values():
            M.mtmd_bitmap_free(bitmap)
        raise
    prompt.bitmaps = list(bitmaps.values())
    return prompt, dropped


def _tokenize(w: Worker, text: str, bitmaps: list[Any]) -> tuple[ImagePrompt, int]:
    M = _mtmd()
    data = text.encode("utf-8")
    add_bos = bool(L.llama_vocab_get_add_bos(w.vocab)) and not (w.bos_text and text.startswith(w.bos_text))
    inp = M.mtmd_input_text()
    inp.text, inp.text_len, inp.add_special, inp.parse_special = data, len(data), add_bos, True
    chunks = M.mtmd_input_chunks_init()
    array = (M.mtmd_bitmap_p_ctypes * max(1, len(bitmaps)))(*bitmaps)
    w.log.lines.clear()
    rc = M.mtmd_tokenize(w.mtmd, chunks, ctypes.byref(inp), array, len(bitmaps))
    if rc != 0:
        M.mtmd_input_chunks_free(chunks)
        reason = w.log.reason()
        raise RequestError("image", "The projector could not prepare the conversation's images"
                           + (f" ({reason})" if reason else "") + ": attach them again, or other pictures.")
    prompt = ImagePrompt(chunks, [], int(M.mtmd_helper_get_n_tokens(chunks)))
    return prompt, prompt.n_tokens
