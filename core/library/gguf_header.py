"""A fast reader of a GGUF file's header: key/values and tensor infos, not tensor data.

The layout is llama.cpp's GGUF v2/v3 format (ggml/docs/gguf.md): ``GGUF`` magic, uint32 version,
uint64 tensor count, uint64 key/value count, the key/values (string key, uint32 value type, value),
then per tensor: name, uint32 n_dims, uint64 dims, uint32 ggml type, uint64 offset; tensor data
starts at the next multiple of ``general.alignment`` (default 32).

``gguf.GGUFReader`` builds a numpy object for every element of every array, which takes about 15 s
on a 262k-token vocabulary; this reader skips large arrays in bulk and needs only a ``read(n)``
stream, so it also works over HTTP range requests on a remote file. Type codes and quant block
sizes come from the ``gguf`` package.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# Arrays longer than this are summarised by their length (token lists, merges, scores).
SMALL_ARRAY = 4096

# GGUFValueType codes (ggml/docs/gguf.md): size in bytes of fixed-size scalars.
_SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1),  # uint8
    1: ("<b", 1),  # int8
    2: ("<H", 2),  # uint16
    3: ("<h", 2),  # int16
    4: ("<I", 4),  # uint32
    5: ("<i", 4),  # int32
    6: ("<f", 4),  # float32
    7: ("<?", 1),  # bool
    10: ("<Q", 8),  # uint64
    11: ("<q", 8),  # int64
    12: ("<d", 8),  # float64
}
_STRING = 8
_ARRAY = 9


class HeaderError(ValueError):
    """The bytes are not a readable GGUF header."""


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class RawTensor:
    name: str
    dims: tuple[int, ...]  # GGUF order: fastest-varying first (ne[0], ne[1], ...)
    ggml_type: int
    offset: int  # relative to the start of tensor data


@dataclass
class ArrayInfo:
    """A large array value: its element type and length (the elements are skipped)."""

    element_type: int
    length: int

    def __int__(self) -> int:
        return self.length


@dataclass
class GGUFHeader:
    version: int
    metadata: dict[str, Any]
    tensors: list[RawTensor]
    header_size: int  # bytes of key/values and tensor infos, before alignment padding
    data_offset: int  # absolute offset where tensor data starts


class _Stream:
    """Buffered reads with a running position over any ``read(n)`` source."""

    def __init__(self, source: Readable | BinaryIO, chunk: int = 1 << 20) -> None:
        self.source = source
        self.chunk = chunk
        self.buf = b""
        self.at = 0  # position in buf
        self.pos = 0  # absolute position

    def _fill(self, need: int) -> None:
        if len(self.buf) - self.at >= need:
            return
        parts = [self.buf[self.at :]]
        have = len(parts[0])
        while have < need:
            data = self.source.read(max(self.chunk, need - have))
            if not data:
                raise HeaderError("the file ends inside its header (truncated)")
            parts.append(data)
            have += len(data)
        self.buf = b"".join(parts)
        self.at = 0

    def take(self, n: int) -> bytes:
        self._fill(n)
        out = self.buf[self.at : self.at + n]
        self.at += n
        self.pos += n
        return out

    def unpack(self, fmt: str, size: int) -> Any:
        return struct.unpack(fmt, self.take(size))[0]

    def u32(self) -> int:
        return int(self.unpack("<I", 4))

    def u64(self) -> int:
        return int(self.unpack("<Q", 8))

    def string(self) -> str:
        n = self.u64()
        if n > 1 << 30:
            raise HeaderError("a string length is impossible (corrupt file)")
        return self.take(n).decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        """Skip ``count`` length-prefixed strings without copying them (vocabularies: 100k+ entries)."""
        unpack = _U64.unpack_from
        remaining = count
        while remaining:
            self._fill(8)
            buf, at, end = self.buf, self.at, len(self.buf)
            start = at
            while remaining and at + 8 <= end:
                (n,) = unpack(buf, at)
                if n > 1 << 30:
                    raise HeaderError("a string length is impossible (corrupt file)")
                if at + 8 + n > end:
                    break
                at += 8 + n
                remaining -= 1
            self.pos += at - start
            self.at = at
            if remaining:
                self._fill(8)
                (n,) = unpack(self.buf, self.at)
                if n > 1 << 30:
                    raise HeaderError("a string length is impossible (corrupt file)")
                self._fill(8 + n)  # the next string now lies wholly in the buffer


_U64 = struct.Struct("<Q")


def _value(stream: _Stream, vtype: int) -> Any:
    if vtype in _SCALARS:
        fmt, size = _SCALARS[vtype]
        return stream.unpack(fmt, size)
    if vtype == _STRING:
        return stream.string()
    if vtype == _ARRAY:
        etype = stream.u32()
        count = stream.u64()
        if count > 1 << 34:
            raise HeaderError("an array length is impossible (corrupt file)")
        if count <= SMALL_ARRAY:
            return [_value(stream, etype) for _ in range(count)]
        if etype in _SCALARS:
            stream.take(_SCALARS[etype][1] * count)
        elif etype == _STRING:
            stream.skip_strings(count)
        else:
            for _ in range(count):
                _value(stream, etype)
        return ArrayInfo(etype, count)
    raise HeaderError(f"unknown value type {vtype} (corrupt file or a newer GGUF version)")


def read_header(source: Readable | BinaryIO) -> GGUFHeader:
    """Parse the header from a stream positioned at the start of a GGUF file."""
    stream = _Stream(source)
    try:
        magic = stream.take(4)
    except HeaderError as exc:
        raise HeaderError("the file is empty or shorter than a GGUF header") from exc
    if magic != GGUF_MAGIC:
        raise HeaderError("it does not start with the GGUF magic bytes")
    version = stream.u32()
    if version not in (2, 3):
        raise HeaderError(f"GGUF version {version} is not supported (only 2 and 3)")
    n_tensors = stream.u64()
    n_kv = stream.u64()
    if n_tensors > 1 << 24 or n_kv > 1 << 24:
        raise HeaderError("the tensor or key counts are impossible (corrupt file)")
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = stream.string()
        vtype = stream.u32()
        metadata[key] = _value(stream, vtype)
    tensors = []
    for _ in range(n_tensors):
        name = stream.string()
        n_dims = stream.u32()
        if n_dims > 8:
            raise HeaderError(f"tensor {name} has {n_dims} dimensions (corrupt file)")
        dims = tuple(stream.u64() for _ in range(n_dims))
        ggml_type = stream.u32()
        offset = stream.u64()
        tensors.append(RawTensor(name, dims, ggml_type, offset))
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise HeaderError("general.alignment is not a power of two (corrupt file)")
    header_size = stream.pos
    data_offset = (header_size + alignment - 1) // alignment * alignment
    return GGUFHeader(version, metadata, tensors, header_size, data_offset)


def tensor_nbytes(tensor: RawTensor) -> int:
    """Bytes of a tensor's data, from the quant type's block size and type size (gguf package)."""
    import gguf

    n = 1
    for d in tensor.dims:
        n *= d
    try:
        block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(tensor.ggml_type)]
    except (ValueError, KeyError) as exc:
        raise HeaderError(f"tensor {tensor.name} has unknown type {tensor.ggml_type}") from exc
    return n * type_size // block


def tensor_type_name(ggml_type: int) -> str:
    import gguf

    try:
        return gguf.GGMLQuantizationType(ggml_type).name
    except ValueError:
        return f"type{ggml_type}"
