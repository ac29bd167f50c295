"""Images in chat on real llama.cpp and its multimodal library (libmtmd): a tiny text model with a tiny
random-weight LLaVA projector (tests/fixtures/tiny_vision.py). The image reaches the model (the first token's
log-probabilities change with the picture, and only with it), images sit where their part is, the KV cache is
reused across turns only where the same image is at the same place, and every bad input (a projector of
another width, a file that is no projector, an image for a model without one, a corrupt picture) is refused
with one sentence while the engine keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.engine import Engine, LoadOptions, SamplingParams
from core.errors import ImageError, InvalidModelError, NoVisionError
from tests.fixtures.tiny_models import write_tiny_llama
from tests.fixtures.tiny_vision import CONTROLS, TEXT_EMBD, TinyVision, write_test_image

IMAGE_CELLS = 4  # a 28-pixel image in 14-pixel patches
Logprobs = list[tuple[str, float]]


def options(**more: Any) -> LoadOptions:
    return LoadOptions(n_ctx=512, n_threads=2, **more)


def probe(max_tokens: int = 1, **more: Any) -> SamplingParams:
    """Greedy, with the first tokens' top log-probabilities: what the model makes of the prompt."""
    return SamplingParams(temperature=0, max_tokens=max_tokens, repeat_penalty=1.0, logprobs=True, top_logprobs=5,
                          ignore_eos=True, **more)


def image(tiny_vision: TinyVision, seed: int = 0, kind: str = "png") -> bytes:
    path = tiny_vision.images / f"picture-{seed}.{kind}"
    if not path.exists():
        write_test_image(path, kind=kind, seed=seed)
    return path.read_bytes()


def ask(*parts: bytes | str, role: str = "user") -> dict[str, Any]:
    content = [{"type": "image", "data": p} if isinstance(p, bytes) else {"type": "text", "text": p} for p in parts]
    return {"role": role, "content": content}


def first_logprobs(engine: Engine, messages: list[dict[str, Any]], **more: Any) -> Logprobs:
    done = engine.chat(messages, probe(**more))
    assert done.logprobs, done
    return [(str(e["token"]), float(e["logprob"])) for e in done.logprobs[0]["top_logprobs"]]


def same(a: Logprobs, b: Logprobs) -> bool:
    """The same distribution, up to the rounding of llama.cpp's batched kernels (a prompt's last token is
    evaluated alone when the rest comes from the cache)."""
    return [t for t, _ in a] == [t for t, _ in b] and all(abs(x - y) < 1e-3 for (_, x), (_, y) in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def engine(tiny_vision: TinyVision) -> Iterator[Engine]:
    with Engine() as eng:
        eng.load(tiny_vision.model, options(mmproj=str(tiny_vision.mmproj)))
        yield eng


def test_status_says_the_model_reads_images(engine: Engine, tiny_vision: TinyVision) -> None:
    assert engine.status is not None
    assert engine.status.vision and engine.status.mmproj == str(tiny_vision.mmproj)


def test_the_image_reaches_the_model(engine: Engine, tiny_vision: TinyVision) -> None:
    a, b = image(tiny_vision, 1), image(tiny_vision, 2)
    without = first_logprobs(engine, [ask("What is in the picture?")])
    with_a = first_logprobs(engine, [ask(a, "What is in the picture?")])
    with_b = first_logprobs(engine, [ask(b, "What is in the picture?")])
    again_a = first_logprobs(engine, [ask(a, "What is in the picture?")])
    assert not same(without, with_a)
    assert not same(with_a, with_b)  # the prompts differ only in the picture's pixels
    assert same(with_a, again_a)


def test_image_stats_and_the_whole_answer(engine: Engine, tiny_vision: TinyVision) -> None:
    done = engine.chat([ask(image(tiny_vision, 3), "Describe it.")], probe(max_tokens=6))
    stats = done.stats
    assert stats.image_tokens == IMAGE_CELLS
    assert stats.prompt_tokens > IMAGE_CELLS and stats.image_seconds > 0.0
    assert stats.completion_tokens == 6 and done.finish_reason == "length"
    assert stats.context_used > stats.prompt_tokens


def test_images_go_where_their_parts_are(engine: Engine, tiny_vision: TinyVision) -> None:
    a, b = image(tiny_vision, 4), image(tiny_vision, 5)
    first = first_logprobs(engine, [ask(a, "and", b, "compare them")])
    swapped = first_logprobs(engine, [ask(b, "and", a, "compare them")])
    assert not same(first, swapped)
    assert same(first, first_logprobs(engine, [ask(a, "and", b, "compare them")]))


@pytest.mark.parametrize("kind", ["png", "jpeg", "webp"])
def test_png_jpeg_and_webp_are_read(engine: Engine, tiny_vision: TinyVision, kind: str) -> None:
    done = engine.chat([ask(image(tiny_vision, 6, kind), "What is it?")], probe())
    assert done.stats.image_tokens == IMAGE_CELLS and done.stats.completion_tokens == 1


def test_drafting_is_skipped_after_images(engine: Engine, tiny_vision: TinyVision) -> None:
    done = engine.chat([ask(image(tiny_vision, 7), "say it again and again")],
                       SamplingParams(temperature=0, max_tokens=12, draft="lookup"))
    assert done.stats.drafted_tokens == 0 and done.stats.accepted_tokens == 0
    assert done.stats.completion_tokens > 0


def test_the_second_turn_still_sees_the_image_and_reuses_it(engine: Engine, tiny_vision: TinyVision) -> None:
    a, b = image(tiny_vision, 8), image(tiny_vision, 9)

    def conversation(picture: bytes) -> list[dict[str, Any]]:
        return [ask(picture, "What colour is it?"), {"role": "assistant", "content": "the world"},
                ask("And what else?")]

    engine.chat(conversation(a)[:1], probe())  # turn 1: the image goes into the cache
    warm = engine.chat(conversation(a), probe())  # turn 2 reuses turn 1's cells, the image's among them
    assert warm.stats.cached_tokens > IMAGE_CELLS and warm.stats.image_tokens == IMAGE_CELLS
    other = engine.chat(conversation(b), probe())  # another picture at the same place: evaluated afresh
    assert other.stats.cached_tokens < warm.stats.cached_tokens
    engine.chat([ask("something else entirely")], probe())  # the cache now keeps no image
    cold = engine.chat(conversation(a), probe())
    assert cold.stats.cached_tokens < warm.stats.cached_tokens

    def top(done: Any) -> Logprobs:
        return [(str(e["token"]), float(e["logprob"])) for e in done.logprobs[0]["top_logprobs"]]

    assert same(top(warm), top(cold))  # the reused cache gives what a fresh evaluation gives
    assert not same(top(warm), top(other))  # turn 2 still sees turn 1's picture
    engine.chat([ask("something else entirely")], probe())
    assert same(top(other), first_logprobs(engine, conversation(b)))  # nothing of picture a was kept for b


def test_old_turns_with_their_images_are_dropped_to_fit(tiny_vision: TinyVision) -> None:
    with Engine() as eng:
        eng.load(tiny_vision.model, LoadOptions(n_ctx=256, n_threads=2, mmproj=str(tiny_vision.mmproj)))
        long = "the world is a hello " * 12
        messages = [ask(image(tiny_vision, 10), long), {"role": "assistant", "content": long},
                    ask("and now", image(tiny_vision, 11))]
        done = eng.chat(messages, probe())
        assert done.stats.dropped_messages == 2 and done.stats.image_tokens == IMAGE_CELLS
        assert done.stats.prompt_tokens + 1 <= 256


def test_a_template_that_reads_only_lists_of_parts(tiny_vision: TinyVision, tmp_path: Path) -> None:
    lists_only = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for p in m['content'] %}"
        "{% if p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
        "<|im_start|>assistant\n"
    )
    model = write_tiny_llama(tmp_path / "lists.gguf", n_embd=TEXT_EMBD, chat_template=lists_only, controls=CONTROLS)
    with Engine() as eng:
        eng.load(model, options(mmproj=str(tiny_vision.mmproj)))
        a = first_logprobs(eng, [ask(image(tiny_vision, 12), "look")])
        b = first_logprobs(eng, [ask(image(tiny_vision, 13), "look")])
        assert not same(a, b)


def test_a_projector_of_another_width_is_refused_and_the_model_loads_without_it(tiny_vision: TinyVision) -> None:
    with Engine() as eng:
        with pytest.raises(InvalidModelError) as caught:
            eng.load(tiny_vision.model, options(mmproj=str(tiny_vision.wrong_mmproj)))
        message = str(caught.value)
        assert tiny_vision.wrong_mmproj.name in message and tiny_vision.model.name in message
        assert f"{TEXT_EMBD // 2} wide" in message and f"the model's are {TEXT_EMBD}" in message
        assert "pick the projector from the model's own repository" in message and "\n" not in message
        assert eng.status is None  # not loaded half-way
        status = eng.load(tiny_vision.model, options())
        assert not status.vision and status.mmproj is None
        assert eng.chat([{"role": "user", "content": "hello"}], probe()).stats.completion_tokens == 1


def test_a_file_that_is_no_projector_is_refused(tiny_vision: TinyVision) -> None:
    with Engine() as eng:
        with pytest.raises(InvalidModelError, match="is not a vision projector"):
            eng.load(tiny_vision.model, options(mmproj=str(tiny_vision.model)))
        assert eng.load(tiny_vision.model, options(mmproj=str(tiny_vision.mmproj))).vision


def test_an_image_for_a_model_without_a_projector(tiny_vision: TinyVision) -> None:
    with Engine() as eng:
        eng.load(tiny_vision.model, options())
        with pytest.raises(NoVisionError) as caught:
            eng.chat([ask(image(tiny_vision, 14), "what is it?")], probe())
        assert str(caught.value) == NoVisionError.MESSAGE
        assert eng.chat([ask("hello", "world")], probe()).stats.completion_tokens == 1


def png_header(width: int, height: int) -> bytes:
    """The start of a PNG that says it is ``width`` x ``height`` (no pixels follow)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("size", [(12_000, 9_000), (40_000, 40_000)])
def test_an_image_far_too_large_is_refused_before_it_is_decoded(engine: Engine, tiny_vision: TinyVision,
                                                                 size: tuple[int, int]) -> None:
    with pytest.raises(ImageError, match="Image 1 is far too large"):
        engine.chat([ask(png_header(*size), "what is it?")], probe())
    assert engine.chat([ask(image(tiny_vision, 16), "and this?")], probe()).stats.image_tokens == IMAGE_CELLS


@pytest.mark.parametrize("damage", ["not an image", "cut short"])
def test_a_corrupt_image_is_refused_and_the_next_request_works(engine: Engine, tiny_vision: TinyVision,
                                                              damage: str) -> None:
    good = image(tiny_vision, 15)
    bad = b"this is not a picture at all" if damage == "not an image" else good[: len(good) // 2]
    with pytest.raises(ImageError) as caught:
        engine.chat([ask("first", good, "then", bad)], probe())
    assert "Image 2" in str(caught.value) and "\n" not in str(caught.value)
    done = engine.chat([ask(good, "and this one?")], probe())
    assert done.stats.image_tokens == IMAGE_CELLS
