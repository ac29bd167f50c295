"""Reading a Hub file's GGUF header with range requests, from a loopback server speaking the Hub's URLs."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from core.cli import main
from core.errors import InvalidModelError, NetworkError, NotFoundError, OfflineError
from core.fit import ModelShape, parse_hub_ref, read_remote_shape
from tests.fixtures.tiny_models import write_tiny_llama

REPO = "tester/tiny-llama-GGUF"


@dataclass
class FakeHubFiles:
    files: dict[str, bytes] = field(default_factory=dict)  # "/{repo}/resolve/main/{filename}" -> data
    sent: int = 0
    ranges: list[str] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)
    honour_range: bool = True
    url: str = ""


def _handler(state: FakeHubFiles) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            data = state.files.get(self.path.split("?")[0])
            state.auth.append(self.headers.get("Authorization"))
            if data is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            wanted = self.headers.get("Range")
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted or "")
            if match and state.honour_range:
                state.ranges.append(wanted or "")
                start = int(match[1])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                end = min(int(match[2]) if match[2] else len(data) - 1, len(data) - 1)
                body = data[start : end + 1]
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            else:
                body = data
                self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
                state.sent += len(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHubFiles]:
    state = FakeHubFiles()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HF_ENDPOINT", state.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def big_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-architecture GGUF whose tensor data (~17 MB) dwarfs its header (~10 KB)."""
    return write_tiny_llama(
        tmp_path_factory.mktemp("remote") / "tiny-big.gguf",
        n_layer=4,
        n_embd=256,
        n_head=4,
        n_head_kv=2,
        n_ff=1024,
    )


def publish(hub: FakeHubFiles, filename: str, data: bytes, repo: str = REPO) -> None:
    hub.files[f"/{repo}/resolve/main/{filename}"] = data


def test_reads_only_the_header(hub: FakeHubFiles, big_tiny: Path) -> None:
    data = big_tiny.read_bytes()
    publish(hub, "tiny-big.Q8_0.gguf", data)
    shape = read_remote_shape(REPO, "tiny-big.Q8_0.gguf")
    local = ModelShape.from_gguf(big_tiny)
    assert (shape.n_layer, shape.n_embd, shape.n_head_kv, shape.n_vocab) == (4, 256, [2] * 4, local.n_vocab)
    assert shape.weight_bytes == local.weight_bytes and shape.layer_bytes == local.layer_bytes
    assert shape.extras["file_bytes"] == len(data)
    assert hub.sent == shape.extras["bytes_transferred"]
    assert hub.sent <= (1 << 20) and hub.sent * 10 < len(data)  # one 1 MB chunk of a 17 MB file
    assert all(r.startswith("bytes=") for r in hub.ranges)


def test_large_header_is_read_in_growing_chunks(hub: FakeHubFiles, starter_model: Path) -> None:
    """The starter model's 262k-token vocabulary makes a ~6 MB header: several range requests."""
    with starter_model.open("rb") as handle:
        head = handle.read(16 << 20)
    size = starter_model.stat().st_size
    # Only the first 16 MB are served (the header ends well before): nothing past it is ever asked for.
    publish(hub, "gemma.gguf", head)
    shape = read_remote_shape(REPO, "gemma.gguf")
    assert shape.architecture == "gemma3" and shape.n_vocab == 262144 and shape.tied_output
    assert shape.weight_bytes == ModelShape.from_gguf(starter_model).weight_bytes
    assert len(hub.ranges) >= 2 and hub.sent < size / 10


def test_token_is_sent(hub: FakeHubFiles, big_tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    publish(hub, "m.gguf", big_tiny.read_bytes())
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    read_remote_shape(REPO, "m.gguf")
    assert hub.auth and all(a == "Bearer hf_test_token" for a in hub.auth)


def test_server_ignoring_range_is_read_as_a_stream(hub: FakeHubFiles, big_tiny: Path) -> None:
    hub.honour_range = False
    publish(hub, "m.gguf", big_tiny.read_bytes())
    assert read_remote_shape(REPO, "m.gguf").n_layer == 4


def test_split_model_reads_every_part_header(hub: FakeHubFiles, tmp_path: Path) -> None:
    one = write_tiny_llama(tmp_path / "a.gguf", n_layer=2)
    publish(hub, "sub/m-00001-of-00002.gguf", one.read_bytes())
    publish(hub, "sub/m-00002-of-00002.gguf", one.read_bytes())
    shape = read_remote_shape(REPO, "sub/m-00001-of-00002.gguf")
    assert shape.weight_bytes == 2 * ModelShape.from_gguf(one).weight_bytes  # type: ignore[operator]


def test_bad_remote_files(hub: FakeHubFiles, big_tiny: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist on the Hub"):
        read_remote_shape(REPO, "missing.gguf")
    publish(hub, "notes.gguf", b"<html>this is not a model</html>")
    with pytest.raises(InvalidModelError, match="GGUF magic"):
        read_remote_shape(REPO, "notes.gguf")
    publish(hub, "cut.gguf", big_tiny.read_bytes()[:300])
    with pytest.raises(InvalidModelError, match="truncated"):
        read_remote_shape(REPO, "cut.gguf")


def test_offline_and_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError):
        read_remote_shape(REPO, "m.gguf")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(NetworkError, match="Could not reach the Hub"):
        read_remote_shape(REPO, "m.gguf")


def test_hub_refs() -> None:
    assert parse_hub_ref("hf://org/repo/file.Q4_K_M.gguf") == ("org/repo", "file.Q4_K_M.gguf")
    assert parse_hub_ref("org/repo/sub/f.gguf") == ("org/repo", "sub/f.gguf")
    assert parse_hub_ref("model-name") is None and parse_hub_ref("org/f.gguf") is None


def test_cli_fit_on_a_hub_file(hub: FakeHubFiles, big_tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    publish(hub, "tiny.gguf", big_tiny.read_bytes())
    assert main(["fit", f"hf://{REPO}/tiny.gguf", "--ctx", "256", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == f"{REPO}/tiny.gguf"
    assert data["verdict"]["kind"] in ("cpu", "full_gpu")
    assert data["verdict"]["estimate"]["n_ctx"] == 256
    assert main(["fit", f"hf://{REPO}/absent.gguf"]) == 1
    assert "does not exist on the Hub" in capsys.readouterr().err
