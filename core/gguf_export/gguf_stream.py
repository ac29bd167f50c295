"""Reading and writing GGUF files one tensor at a time.

Layout: llama.cpp's GGUF v3 (ggml/docs/gguf.md): magic, version, tensor count, key/value count,
key/values, tensor infos (name, dims, ggml type, offset), padding to ``general.alignment``, then
each tensor's data at an aligned offset. The source side keeps the byte range of every key/value,
so metadata (a 262k-token vocabulary included) is copied to a new file verbatim instead of being
parsed element by element; tensor data is read one tensor at a time with ``pread`` (not a memory
map, whose touched pages would stay in the process's resident memory), so only the tensor being
worked on is ever in memory.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ExportError, InvalidModelError
from core.library.gguf_header import (  # the shared header scanner: one parser of the format
    _ARRAY,
    _STRING,
    GGUF_MAGIC,
    HeaderError,
    _Stream,
    _value,
)
from core.library.gguf_meta import SPLIT_RE

DEFAULT_ALIGNMENT = 32

# GGUFValueType codes (ggml/docs/gguf.md).
T_UINT32, T_INT32, T_FLOAT32, T_BOOL, T_STRING, T_ARRAY = 4, 5, 6, 7, 8, 9


@dataclass(frozen=True)
class SourceTensor:
    """One tensor of a GGUF file: its shape in numpy order (slowest dimension first)."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # absolute offset in the file
    nbytes: int

    @property
    def type_name(self) -> str:
        import gguf

        return gguf.GGMLQuantizationType(self.ggml_type).name

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1


def _nbytes(shape: Iterable[int], ggml_type: int) -> int:
    import gguf

    block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ggml_type)]
    n = int(np.prod(list(shape)))
    return n * type_size // block


class GGUFSource:
    """A GGUF model opened for streaming: metadata, raw key/value bytes, tensors on demand."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if SPLIT_RE.match(self.path.name):
            raise ExportError(
                f"{self.path.name} is a split GGUF: merge its parts first with llama.cpp's "
                "'llama-gguf-split --merge' and give the single file."
            )
        try:
            self._file = self.path.open("rb")
        except OSError as exc:
            raise InvalidModelError(f"{self.path} cannot be read ({exc.strerror}): check the path.") from exc
        try:
            self._parse()
        except HeaderError as exc:
            self._file.close()
            raise InvalidModelError(f"{self.path.name} is not a readable GGUF file ({exc}).") from exc

    def _parse(self) -> None:
        stream = _Stream(self._file)
        if stream.take(4) != GGUF_MAGIC:
            raise HeaderError("it does not start with the GGUF magic bytes")
        self.version = stream.u32()
        if self.version not in (2, 3):
            raise HeaderError(f"GGUF version {self.version} is not supported")
        n_tensors, n_kv = stream.u64(), stream.u64()
        self.metadata: dict[str, Any] = {}
        # key -> (start, end) of the encoded "type + value" bytes, for verbatim copies.
        self.kv_ranges: dict[str, tuple[int, int]] = {}
        for _ in range(n_kv):
            key = stream.string()
            start = stream.pos
            vtype = stream.u32()
            self.metadata[key] = _value(stream, vtype)
            self.kv_ranges[key] = (start, stream.pos)
        infos = []
        for _ in range(n_tensors):
            name = stream.string()
            dims = tuple(stream.u64() for _ in range(stream.u32()))
            infos.append((name, dims, stream.u32(), stream.u64()))
        self.alignment = int(self.metadata.get("general.alignment", DEFAULT_ALIGNMENT))
        data_start = (stream.pos + self.alignment - 1) // self.alignment * self.alignment
        self.tensors: dict[str, SourceTensor] = {}
        for name, dims, ggml_type, offset in infos:
            shape = tuple(int(d) for d in reversed(dims))
            self.tensors[name] = SourceTensor(name, shape, ggml_type, data_start + offset, _nbytes(shape, ggml_type))
        size = self.path.stat().st_size
        if any(t.offset + t.nbytes > size for t in self.tensors.values()):
            raise HeaderError(f"the file is truncated ({size:,} bytes)")

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    def arch_int(self, suffix: str) -> int | None:
        value = self.metadata.get(f"{self.architecture}.{suffix}")
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def raw_kv(self, key: str) -> bytes:
        start, end = self.kv_ranges[key]
        self._file.seek(start)
        return self._file.read(end - start)

    def token_ids(self, texts: Iterable[str]) -> dict[str, int]:
        """Ids of the given token texts in ``tokenizer.ggml.tokens`` (scanned from the raw bytes)."""
        wanted = {t.encode("utf-8"): t for t in texts}
        if "tokenizer.ggml.tokens" not in self.kv_ranges or not wanted:
            return {}
        raw = self.raw_kv("tokenizer.ggml.tokens")
        count = struct.unpack_from("<Q", raw, 8)[0]  # type u32, element type u32, count u64
        pos, found = 16, {}
        for index in range(count):
            n = struct.unpack_from("<Q", raw, pos)[0]
            text = raw[pos + 8 : pos + 8 + n]
            if text in wanted:
                found[wanted[text]] = index
            pos += 8 + n
        return found

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as stored."""
        t = self.tensors[name]
        data = os.pread(self._file.fileno(), t.nbytes, t.offset)
        if len(data) != t.nbytes:
            raise InvalidModelError(f"{self.path.name} ends inside tensor {name}: the file is truncated.")
        return np.frombuffer(data, dtype=np.uint8)

    def dequantize(self, name: str) -> np.ndarray:
        """The tensor as float32 in numpy order, whatever its stored type."""
        import gguf

        t = self.tensors[name]
        qtype = gguf.GGMLQuantizationType(t.ggml_type)
        if qtype == gguf.GGMLQuantizationType.F32:
            return self.raw(name).view(np.float32).reshape(t.shape)
        values = gguf.quants.dequantize(self.raw(name), qtype)
        return np.asarray(values, dtype=np.float32).reshape(t.shape)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> GGUFSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- encoding new key/values ---------------------------------------------------------------------
def _enc_str(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


def encode_value(value: Any) -> bytes:
    """GGUF ``type + value`` bytes of a Python value (str, bool, int → uint32/int32, float → f32, list)."""
    if isinstance(value, bool):
        return struct.pack("<I?", T_BOOL, value)
    if isinstance(value, int):
        if value < 0:
            return struct.pack("<Ii", T_INT32, value)
        return struct.pack("<II", T_UINT32, value)
    if isinstance(value, float):
        return struct.pack("<If", T_FLOAT32, value)
    if isinstance(value, str):
        return struct.pack("<I", _STRING) + _enc_str(value)
    if isinstance(value, list):
        if all(isinstance(v, str) for v in value):
            return struct.pack("<IIQ", _ARRAY, _STRING, len(value)) + b"".join(_enc_str(v) for v in value)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return struct.pack("<IIQ", _ARRAY, T_INT32, len(value)) + struct.pack(f"<{len(value)}i", *value)
    raise TypeError(f"cannot encode {type(value).__name__} as a GGUF value")


@dataclass(frozen=True)
class TensorSpec:
    """A tensor to be written: name, numpy-order shape and ggml type."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int

    @property
    def nbytes(self) -> int:
        return _nbytes(self.shape, self.ggml_type)


class GGUFStreamWriter:
    """Writes a GGUF whose tensor table is known up front, then its tensors one by one.

    The file is written beside ``path`` under a temporary name and renamed on ``finish()``;
    ``abort()`` (or an exception inside ``with``) removes it, so a half-written model never appears.
    """

    def __init__(self, path: str | Path, kv: list[tuple[str, bytes]], tensors: list[TensorSpec],
                 alignment: int = DEFAULT_ALIGNMENT) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.alignment = alignment
        self.specs = tensors
        self._next = 0
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self._tmp = Path(tmp)
        self._out = os.fdopen(fd, "wb")
        keys = [k for k, _ in kv]
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate metadata keys")
        head = [GGUF_MAGIC, struct.pack("<IQQ", 3, len(tensors), len(kv))]
        for key, encoded in kv:
            head.append(_enc_str(key) + encoded)
        offset = 0
        self._offsets = []
        for spec in tensors:
            dims = list(reversed(spec.shape))
            head.append(_enc_str(spec.name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, spec.ggml_type, offset))
            self._offsets.append(offset)
            offset = self._align(offset + spec.nbytes)
        header = b"".join(head)
        self._out.write(header)
        self._out.write(b"\0" * (self._align(len(header)) - len(header)))
        self._data_start = self._align(len(header))

    def _align(self, n: int) -> int:
        return (n + self.alignment - 1) // self.alignment * self.alignment

    def write(self, name: str, data: np.ndarray | bytes) -> None:
        """Write the next tensor's bytes (tensors must come in the order of the table)."""
        spec = self.specs[self._next]
        if spec.name != name:
            raise ValueError(f"expected tensor {spec.name}, got {name}")
        if isinstance(data, np.ndarray):
            buf = memoryview(np.ascontiguousarray(data)).cast("B")  # type: ignore[arg-type]
        else:
            buf = memoryview(data)
        if buf.nbytes != spec.nbytes:
            raise ValueError(f"tensor {name}: {buf.nbytes} bytes, expected {spec.nbytes}")
        pos = self._out.tell() - self._data_start
        self._out.write(b"\0" * (self._offsets[self._next] - pos))
        self._out.write(buf)
        self._next += 1

    def finish(self) -> Path:
        if self._next != len(self.specs):
            raise ValueError(f"only {self._next} of {len(self.specs)} tensors were written")
        end = self._out.tell()
        self._out.write(b"\0" * (self._align(end) - end))
        self._out.flush()
        os.fsync(self._out.fileno())
        self._out.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        if not self._out.closed:
            self._out.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> GGUFStreamWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            self.abort()


def encode_tensor(values: np.ndarray, ggml_type: int) -> np.ndarray:
    """Float values converted to a ggml storage type (F32, F16, BF16 or Q8_0, via the gguf package)."""
    import gguf

    qtype = gguf.GGMLQuantizationType(ggml_type)
    if qtype == gguf.GGMLQuantizationType.F32:
        return np.ascontiguousarray(values, dtype=np.float32)
    if qtype == gguf.GGMLQuantizationType.F16:
        return np.ascontiguousarray(values, dtype=np.float16)
    return np.asarray(gguf.quants.quantize(np.asarray(values, dtype=np.float32), qtype))


def float_type(name: str) -> int:
    """The ggml type id of ``F32``, ``F16`` or ``BF16``."""
    import gguf

    return int(gguf.GGMLQuantizationType[name.upper()])
