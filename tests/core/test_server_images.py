"""Images through the API server: the official ``openai``, ``ollama`` and ``anthropic`` clients against a real
server on 127.0.0.1, with the tiny vision model and its projector (``tests/fixtures/tiny_vision.py``) paired in
a temporary library, and a text-only model beside it."""

from __future__ import annotations

import base64
import socket
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest

from tests.core.test_server_support import Served, start_server
from tests.fixtures.tiny_vision import TinyVision, write_test_image
from tests.fixtures.tool_model import TEXT_ANSWER, write_text_model

VISION = "tiny-vision"
MISMATCHED = "tiny-vision-wrong-projector"
GREEDY = {"temperature": 0}  # newer anthropic clients send no sampling settings: as extra body fields
NO_VISION_SENTENCE = "it has no vision projector (mmproj) loaded. Pull the model's mmproj file or import one with"


@pytest.fixture(scope="module")
def vision_home(tmp_path_factory: pytest.TempPathFactory, tiny_vision: TinyVision) -> Iterator[Path]:
    """A HEARTH_HOME whose library holds the tiny vision model paired with its projector, and text-llama
    (no projector)."""
    home = tmp_path_factory.mktemp("vision-server-home")
    patch = pytest.MonkeyPatch()
    patch.setenv("HEARTH_HOME", str(home))
    patch.setenv("HF_HUB_CACHE", str(home / "hf-cache"))
    patch.setenv("HF_HUB_OFFLINE", "1")
    from core.library import Library

    folder = home / "data" / "models" / VISION  # its own folder: the projector is not beside text-llama
    folder.mkdir(parents=True)
    model = folder / tiny_vision.model.name
    model.write_bytes(tiny_vision.model.read_bytes())
    text = write_text_model(home / "data" / "models" / "text-llama.gguf")
    library = Library()
    library.register(model, name=VISION, source="copy")
    library.register(text, name="text-llama", source="copy")
    library.set_mmproj(VISION, tiny_vision.mmproj)
    # The same model paired with a projector of another width: refused at load.
    (home / "data" / "models" / MISMATCHED).mkdir()
    other = home / "data" / "models" / MISMATCHED / "tiny-vision-llama.gguf"
    other.write_bytes(tiny_vision.model.read_bytes())
    library.register(other, name=MISMATCHED, source="copy")
    # Pairing checks the widths, so the projector is replaced on disk after it was paired (as a user might).
    replaced = home / "data" / "models" / MISMATCHED / tiny_vision.wrong_mmproj.name
    replaced.write_bytes(tiny_vision.mmproj.read_bytes())
    library.set_mmproj(MISMATCHED, replaced)
    replaced.write_bytes(tiny_vision.wrong_mmproj.read_bytes())
    yield home
    patch.undo()


@pytest.fixture(autouse=True)
def hearth_home(vision_home: Path) -> Path:  # this module's home is the server's
    return vision_home


@pytest.fixture(scope="module")
def served(vision_home: Path) -> Iterator[Served]:
    s = start_server(vision_home)
    yield s
    s.server.stop()
    s.host.close()


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Two different pictures (seeds 0 and 1) as PNG, the first also as JPEG and WebP."""
    folder = tmp_path_factory.mktemp("pictures")
    made = {"a": write_test_image(folder / "a.png", "png", seed=0), "b": write_test_image(folder / "b.png", "png", seed=1),
            "a.jpeg": write_test_image(folder / "a.jpeg", "jpeg", seed=0),
            "a.webp": write_test_image(folder / "a.webp", "webp", seed=0)}
    return {key: path.read_bytes() for key, path in made.items()}


@pytest.fixture
def oai(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture
def oll(served: Served) -> ollama.Client:
    return ollama.Client(host=served.base_url, timeout=120)


@pytest.fixture
def ant(served: Served) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=served.base_url, api_key="unused", max_retries=0, timeout=120)


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def user(*content: Any) -> list[Any]:
    """One user message with these content parts (typed loosely: the clients' TypedDicts are unions)."""
    return [{"role": "user", "content": list(content)}]


def image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def ask(client: openai.OpenAI, content: Any, *, model: str = VISION, max_tokens: int = 6) -> Any:
    """A greedy answer with the top log-probabilities of each token."""
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}],
                                          temperature=0, seed=7, max_tokens=max_tokens, logprobs=True,
                                          top_logprobs=5)


def first_logprobs(reply: Any) -> dict[str, float]:
    """The first answer token's top alternatives and their log-probabilities."""
    content = reply.choices[0].logprobs.content
    return {t.token: t.logprob for t in content[0].top_logprobs}


def same_logprobs(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-4 for k in a)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` (its data is empty): refused before any decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


# -- the image reaches the model ------------------------------------------------------------------------------

def test_openai_image_reaches_the_model(oai: openai.OpenAI, pictures: dict[str, bytes]) -> None:
    question = {"type": "text", "text": "What is in this picture?"}
    plain = ask(oai, [question])
    with_a = ask(oai, [image_part(data_uri(pictures["a"])), question])
    with_b = ask(oai, [image_part(data_uri(pictures["b"])), question])
    again_a = ask(oai, [image_part(data_uri(pictures["a"])), question])
    none, a, b = first_logprobs(plain), first_logprobs(with_a), first_logprobs(with_b)
    assert not same_logprobs(none, a) and not same_logprobs(a, b)  # the picture, and which picture, matter
    assert same_logprobs(a, first_logprobs(again_a))  # deterministic at temperature 0
    assert with_a.choices[0].message.content == again_a.choices[0].message.content
    assert len({plain.choices[0].message.content, with_a.choices[0].message.content,
                with_b.choices[0].message.content}) == 3
    # The picture's tokens are part of the prompt.
    assert with_a.usage.prompt_tokens > plain.usage.prompt_tokens
    # Where the image is matters: after the question, the model reads something else.
    after = ask(oai, [question, image_part(data_uri(pictures["a"]))])
    assert not same_logprobs(first_logprobs(after), a)


def test_openai_formats_and_streaming(oai: openai.OpenAI, pictures: dict[str, bytes]) -> None:
    question = {"type": "text", "text": "Describe it."}
    answers = {kind: ask(oai, [image_part(data_uri(pictures[key], mime)), question]).choices[0].message.content
               for kind, key, mime in [("png", "a", "image/png"), ("jpeg", "a.jpeg", "image/jpeg"),
                                       ("webp", "a.webp", "image/webp")]}
    assert all(isinstance(a, str) for a in answers.values())
    stream = oai.chat.completions.create(
        model=VISION, stream=True, temperature=0, seed=7, max_tokens=6,
        messages=user(image_part(data_uri(pictures["a"])), question))
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == answers["png"]
    # Responses-style input_image parts carry the URL itself.
    shaped = oai.chat.completions.create(
        model=VISION, temperature=0, seed=7, max_tokens=6,
        messages=user({"type": "input_image", "image_url": data_uri(pictures["a"])}, question))
    assert shaped.choices[0].message.content == answers["png"]


def test_ollama_chat_and_generate_read_images(oll: ollama.Client, oai: openai.OpenAI, pictures: dict[str, bytes],
                                              tmp_path: Path) -> None:
    file = tmp_path / "a.png"
    file.write_bytes(pictures["a"])
    options = {"temperature": 0, "seed": 7, "num_predict": 6}
    plain = oll.chat(model=VISION, messages=[{"role": "user", "content": "What is this?"}], options=options)
    seen = oll.chat(model=VISION, messages=[{"role": "user", "content": "What is this?", "images": [file]}],
                    options=options)
    other = oll.chat(model=VISION, messages=[{"role": "user", "content": "What is this?",
                                              "images": [pictures["b"]]}], options=options)
    assert seen.prompt_eval_count and plain.prompt_eval_count and seen.prompt_eval_count > plain.prompt_eval_count
    # The answer follows the picture (greedy decoding of a seeded random model: fixed texts).
    assert len({plain.message.content, seen.message.content, other.message.content}) == 3
    # Ollama puts a message's images before its text: the same prompt as these OpenAI parts, the same answer.
    same = ask(oai, [image_part(data_uri(pictures["a"])), {"type": "text", "text": "What is this?"}])
    assert seen.message.content == same.choices[0].message.content
    b = ask(oai, [image_part(data_uri(pictures["b"])), {"type": "text", "text": "What is this?"}])
    assert other.message.content == b.choices[0].message.content
    generated = oll.generate(model=VISION, prompt="What is this?", images=[pictures["a"]], options=options)
    assert generated.response == seen.message.content
    streamed = "".join(p.response or "" for p in oll.generate(model=VISION, prompt="What is this?", images=[str(file)],
                                                        options=options, stream=True))
    assert streamed == seen.message.content


def test_anthropic_image_block(ant: anthropic.Anthropic, oai: openai.OpenAI, pictures: dict[str, bytes]) -> None:
    def block(data: bytes, mime: str = "image/png") -> dict[str, Any]:
        return {"type": "image", "source": {"type": "base64", "media_type": mime,
                                            "data": base64.b64encode(data).decode()}}

    text = {"type": "text", "text": "What is this?"}
    reply = ant.messages.create(model=VISION, max_tokens=6, extra_body=GREEDY,
                                messages=user(block(pictures["a"]), text))
    same = ask(oai, [image_part(data_uri(pictures["a"])), text])
    assert reply.content[0].text == same.choices[0].message.content  # type: ignore[union-attr]
    plain = ant.messages.create(model=VISION, max_tokens=6, extra_body=GREEDY,
                                messages=user(text))
    assert reply.usage.input_tokens + (reply.usage.cache_read_input_tokens or 0) > \
        plain.usage.input_tokens + (plain.usage.cache_read_input_tokens or 0)
    assert reply.content[0].text != plain.content[0].text  # type: ignore[union-attr]
    counted = ant.messages.count_tokens(model=VISION, messages=user(block(pictures["a.jpeg"], "image/jpeg"), text))
    assert counted.input_tokens > plain.usage.input_tokens + (plain.usage.cache_read_input_tokens or 0)
    with ant.messages.stream(model=VISION, max_tokens=6, extra_body=GREEDY,
                             messages=user(block(pictures["a"]), text)) as stream:
        assert stream.get_final_text() == reply.content[0].text  # type: ignore[union-attr]
    with pytest.raises(anthropic.BadRequestError, match="GIF") as caught:
        ant.messages.create(model=VISION, max_tokens=6, messages=user(block(pictures["a"], "image/gif"), text))
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


# -- what is refused, and the server keeps serving -----------------------------------------------------------

def test_remote_urls_are_refused_and_never_fetched(oai: openai.OpenAI, ant: anthropic.Anthropic,
                                                   served: Served) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/cat.png"
    try:
        with pytest.raises(openai.BadRequestError, match="never fetches anything from the network") as caught:
            ask(oai, [image_part(url), {"type": "text", "text": "?"}])
        assert caught.value.param == "messages.0.content.0.image_url"  # type: ignore[attr-defined]
        assert caught.value.code == "image_url_not_supported" and "data: URI" in caught.value.message
        with pytest.raises(openai.BadRequestError, match="never fetches"):
            ask(oai, [{"type": "text", "text": "?"}, image_part("https://example.com/cat.jpg")])
        with pytest.raises(anthropic.BadRequestError, match="never fetches") as refused:
            ant.messages.create(model=VISION, max_tokens=6, messages=[{"role": "user", "content": [
                {"type": "image", "source": {"type": "url", "url": url}}]}])
        assert "messages.0.content.0.source.url" in refused.value.body["error"]["message"]  # type: ignore[index]
        with pytest.raises(BlockingIOError):  # nobody knocked
            listener.accept()
    finally:
        listener.close()
    assert ask(oai, "hello").choices[0].message.content is not None  # still serving


@pytest.mark.parametrize(("url", "says"), [
    ("data:image/png;base64,!!!not base64!!!", "not valid base64"),
    ("data:image/png;base64,", "is empty"),
    ("data:image/png," + "iVBORw0KGgo", "without ';base64'"),
    ("data:text/plain;base64," + base64.b64encode(b"hello").decode(), "not an image"),
    ("data:image/gif;base64,R0lGODlhAQABAAAAACw=", "GIF"),
    ("ftp://example.com/a.png", "never fetches"),
    ("cat.png", "never fetches"),
])
def test_openai_bad_image_urls(served: Served, url: str, says: str) -> None:
    body = {"model": VISION, "max_tokens": 4,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "?"}, image_part(url)]}]}
    response = httpx.post(f"{served.url}/chat/completions", json=body, timeout=60)
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["param"] == "messages.0.content.1.image_url" and says in error["message"], error


def test_bad_image_bytes_named_by_path(oai: openai.OpenAI, oll: ollama.Client, served: Served,
                                       pictures: dict[str, bytes]) -> None:
    cases = [(b"this is plain text, not a picture", "not an image Hearth can read"),
             (pictures["a"][: len(pictures["a"]) // 2], "cut short or corrupt"),
             (png_declaring(9000, 9000), "far too large"),
             (png_declaring(40000, 40000), "far too large")]
    for data, says in cases:
        with pytest.raises(openai.BadRequestError, match=says) as caught:
            ask(oai, [{"type": "text", "text": "?"}, image_part(data_uri(data))])
        assert caught.value.param == "messages.0.content.1.image_url"  # type: ignore[attr-defined]
        assert caught.value.code == "invalid_image"
        assert "'messages.0.content.1.image_url'" in caught.value.message
        with pytest.raises(ollama.ResponseError, match=says) as refused:
            oll.chat(model=VISION, messages=[{"role": "user", "content": "?"},
                                             {"role": "user", "content": "?", "images": [data]}])
        assert refused.value.status_code == 400 and "messages.1.images.0" in refused.value.error
    raw = httpx.post(f"{served.base_url}/api/generate", timeout=60,
                     json={"model": VISION, "prompt": "?", "stream": False, "images": ["@@not base64@@"]})
    assert raw.status_code == 400 and set(raw.json()) == {"error"} and "'images.0' is not valid base64" in \
        raw.json()["error"]
    mixed = httpx.post(f"{served.base_url}/api/generate", timeout=60, json={
        "model": VISION, "prompt": "?", "raw": True, "stream": False,
        "images": [base64.b64encode(pictures["a"]).decode()]})
    assert mixed.status_code == 400 and "'raw'" in mixed.json()["error"]
    # Images belong to user messages; and a request carries at most so many.
    with pytest.raises(openai.BadRequestError, match="only be sent in user messages"):
        messages: list[Any] = [{"role": "system", "content": [image_part(data_uri(pictures["a"]))]},
                               {"role": "user", "content": "?"}]
        oai.chat.completions.create(model=VISION, max_tokens=4, messages=messages)
    with pytest.raises(openai.BadRequestError, match="more than 32 images"):
        ask(oai, [image_part(data_uri(pictures["a"]))] * 33)
    assert ask(oai, [image_part(data_uri(pictures["a"])), {"type": "text", "text": "?"}]).choices  # still serving


def test_anthropic_bad_images(ant: anthropic.Anthropic, pictures: dict[str, bytes]) -> None:
    def refused(source: dict[str, Any], says: str, where: str) -> None:
        with pytest.raises(anthropic.BadRequestError, match=says) as caught:
            ant.messages.create(model=VISION, max_tokens=4,
                                messages=user({"type": "text", "text": "?"}, {"type": "image", "source": source}))
        assert caught.value.body["type"] == "error"  # type: ignore[index]
        assert where in caught.value.body["error"]["message"]  # type: ignore[index]

    refused({"type": "base64", "media_type": "image/png", "data": "%%%"}, "not valid base64",
            "messages.0.content.1.source.data")
    refused({"type": "base64", "media_type": "image/png", "data": base64.b64encode(b"GIF89a nope").decode()},
            "not an image Hearth can read", "messages.0.content.1.source.data")
    refused({"type": "file", "file_id": "file_011"}, "no Files API", "messages.0.content.1.source")
    with pytest.raises(anthropic.BadRequestError, match="tool result"):
        ant.messages.create(model=VISION, max_tokens=4, messages=[
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "look", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": base64.b64encode(pictures["a"]).decode()}}]}]}])
    reply = ant.messages.create(model=VISION, max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    assert reply.stop_reason in ("end_turn", "max_tokens")  # still serving


def test_model_without_projector_says_so(oai: openai.OpenAI, oll: ollama.Client, ant: anthropic.Anthropic,
                                         pictures: dict[str, bytes]) -> None:
    with pytest.raises(openai.BadRequestError, match="no vision projector") as caught:
        ask(oai, [{"type": "text", "text": "?"}, image_part(data_uri(pictures["a"]))], model="text-llama")
    assert NO_VISION_SENTENCE in caught.value.message and "hearth import --mmproj" in caught.value.message
    assert caught.value.code == "images_not_supported"
    assert caught.value.param == "messages.0.content.1.image_url"  # type: ignore[attr-defined]
    with pytest.raises(ollama.ResponseError, match="no vision projector") as refused:
        oll.chat(model="text-llama", messages=[{"role": "user", "content": "?", "images": [pictures["a"]]}])
    assert refused.value.status_code == 400 and NO_VISION_SENTENCE in refused.value.error
    with pytest.raises(ollama.ResponseError, match="no vision projector"):
        oll.generate(model="text-llama", prompt="?", images=[pictures["a"]])
    with pytest.raises(anthropic.BadRequestError, match="no vision projector") as said:
        ant.messages.create(model="text-llama", max_tokens=4, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": base64.b64encode(pictures["a"]).decode()}}]}])
    assert said.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    # Text alone is still answered.
    reply = oai.chat.completions.create(model="text-llama", messages=[{"role": "user", "content": "hello"}],
                                        temperature=0)
    assert reply.choices[0].message.content == TEXT_ANSWER


def test_vision_capability_reported(oll: ollama.Client, oai: openai.OpenAI, served: Served) -> None:
    shown = oll.show(VISION)
    assert "vision" in (shown.capabilities or []) and "completion" in (shown.capabilities or [])
    raw = httpx.post(f"{served.base_url}/api/show", json={"model": VISION}, timeout=60).json()
    assert raw["projector_info"]["general.architecture"] == "clip"  # the client's model leaves it out
    assert raw["projector_info"]["clip.projector_type"] == "mlp"
    assert "vision" not in (oll.show("text-llama").capabilities or [])
    listed = {m.model: m for m in oll.list().models}
    vision, text = listed[VISION].details, listed["text-llama"].details
    assert vision is not None and "clip" in (vision.families or [])
    assert text is not None and text.families == ["llama"]
    assert {VISION, "text-llama"} <= {m.id for m in oai.models.list()}


def test_model_loaded_without_projector_is_reloaded_with_it(served: Served, oai: openai.OpenAI,
                                                             tiny_vision: TinyVision, pictures: dict[str, bytes]) -> None:
    """The window may hold the model without its projector: text is served as it is, an image reloads it."""
    from core.engine import LoadOptions
    from core.library import Library

    entry = Library().get(VISION)
    with served.host.lock("test: the window"):
        served.host.engine.load(entry.path, LoadOptions(n_ctx=2048))
    assert served.host.engine.status is not None and not served.host.engine.status.vision
    assert ask(oai, "hello").choices[0].message.content is not None
    assert not served.host.engine.status.vision  # text did not need the projector
    reply = ask(oai, [image_part(data_uri(pictures["a"])), {"type": "text", "text": "?"}])
    assert reply.choices[0].message.content is not None
    status = served.host.engine.status
    assert status is not None and status.vision and status.mmproj is not None
    assert Path(status.mmproj).name == tiny_vision.mmproj.name


def test_mismatched_projector_serves_text_and_says_why_for_images(oai: openai.OpenAI,
                                                                    pictures: dict[str, bytes]) -> None:
    """A projector of another model is refused at load: text is still answered (the model is loaded without
    it), and an image gets the engine's reason."""
    reply = ask(oai, "hello", model=MISMATCHED)
    assert reply.choices[0].message.content is not None
    with pytest.raises(openai.InternalServerError, match="could not be loaded") as caught:
        ask(oai, [image_part(data_uri(pictures["a"])), {"type": "text", "text": "?"}], model=MISMATCHED)
    assert "mmproj-wrong-width.gguf" in caught.value.message
    assert ask(oai, "hello again", model=MISMATCHED).choices[0].message.content is not None
