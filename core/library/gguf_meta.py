"""Reading what a GGUF file says about its model, without loading the model.

The header is parsed by ``core.library.gguf_header`` (the gguf package's ``GGUFReader`` takes ~15 s on
a 262k-token vocabulary because it materialises every array element); type names, quant sizes and
architecture names come from the ``gguf`` package.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.errors import InvalidModelError, UnsupportedArchitectureError

SPLIT_RE = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    type: str
    shape: tuple[int, ...]
    n_elements: int
    n_bytes: int


@dataclass
class GGUFInfo:
    """What one GGUF model (all of its split files together) declares about itself."""

    path: Path
    files: list[Path]
    size_bytes: int
    architecture: str
    name: str
    file_type: str | None
    parameters: int
    context_length: int | None
    block_count: int | None
    embedding_length: int | None
    head_count: int | None
    head_count_kv: int | list[int] | None
    key_length: int | None
    value_length: int | None
    sliding_window: int | None
    has_chat_template: bool
    chat_template: str | None
    vocab_size: int | None
    general_type: str
    # Every scalar key/value; arrays are replaced by their length.
    metadata: dict[str, Any] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)

    def arch_key(self, suffix: str) -> Any:
        return self.metadata.get(f"{self.architecture}.{suffix}")

    def to_dict(self, with_tensors: bool = False) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        data["files"] = [str(f) for f in self.files]
        if not with_tensors:
            data.pop("tensors")
        data.pop("chat_template")
        return data


def split_parts(path: Path) -> list[Path]:
    """All files of a split GGUF given any one of them; ``[path]`` for a single-file model."""
    match = SPLIT_RE.match(path.name)
    if not match:
        return [path]
    count = int(match["count"])
    stem = match["stem"]
    parts = [path.with_name(f"{stem}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    missing = [p.name for p in parts if not p.exists()]
    if missing:
        raise InvalidModelError(
            f"{path.name} is part of a split model but {', '.join(missing)} is missing: "
            "put every part in the same folder and try again."
        )
    return parts


def is_first_part(path: Path) -> bool:
    match = SPLIT_RE.match(path.name)
    return match is None or int(match["no"]) == 1


def file_type_name(value: int | None) -> str | None:
    """``general.file_type`` as a quant name (e.g. 15 → ``Q4_K_M``)."""
    if value is None:
        return None
    import gguf

    try:
        name = gguf.LlamaFileType(int(value)).name
    except ValueError:
        return f"type {value}"
    return name.removeprefix("MOSTLY_").replace("ALL_", "")


def known_architectures() -> set[str]:
    import gguf

    return set(gguf.MODEL_ARCH_NAMES.values())


def _check_header(path: Path) -> None:
    if not path.exists():
        raise InvalidModelError(f"{path} does not exist: check the path and try again.")
    if path.is_dir():
        raise InvalidModelError(f"{path} is a folder, not a .gguf file: pick the model file inside it.")
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise InvalidModelError(f"{path} cannot be read ({exc.strerror}): check its permissions.") from exc
    if len(magic) < 4:
        raise InvalidModelError(f"{path.name} is empty or truncated: download or copy it again.")
    if magic != GGUF_MAGIC:
        raise InvalidModelError(
            f"{path.name} is not a GGUF model (it does not start with 'GGUF'): Hearth runs .gguf files; "
            "convert the model to GGUF or pick a .gguf file."
        )


def _read_one(path: Path) -> tuple[dict[str, Any], list[TensorInfo], int]:
    """Key/values (large arrays as lengths), tensor infos and the end of tensor data of one file."""
    from core.library.gguf_header import HeaderError, read_header, tensor_nbytes, tensor_type_name

    _check_header(path)
    try:
        with path.open("rb") as handle:
            header = read_header(handle)
    except HeaderError as exc:
        raise InvalidModelError(
            f"{path.name} is a corrupt or truncated GGUF file ({exc}): download or copy it again."
        ) from exc
    except OSError as exc:
        raise InvalidModelError(f"{path.name} cannot be read ({exc}): check the file and try again.") from exc
    tensors = []
    end = header.data_offset
    try:
        for t in header.tensors:
            nbytes = tensor_nbytes(t)
            n_elements = 1
            for d in t.dims:
                n_elements *= d
            # Shapes are shown numpy-style (slowest dimension first), as gguf's reader does.
            tensors.append(
                TensorInfo(t.name, tensor_type_name(t.ggml_type), tuple(reversed(t.dims)), n_elements, nbytes)
            )
            end = max(end, header.data_offset + t.offset + nbytes)
    except HeaderError as exc:
        raise InvalidModelError(f"{path.name} is a corrupt GGUF file ({exc}): get a fresh copy.") from exc
    size = path.stat().st_size
    if end > size:
        raise InvalidModelError(
            f"{path.name} is truncated ({size:,} of at least {end:,} bytes): the download or copy was "
            "interrupted; get the file again."
        )
    metadata = {k: (int(v) if hasattr(v, "element_type") else v) for k, v in header.metadata.items()}
    metadata["__chat_template__"] = header.metadata.get("tokenizer.chat_template")
    return metadata, tensors, end


def read_gguf_info(path: str | Path, *, check_architecture: bool = True) -> GGUFInfo:
    """Read a model's metadata and tensor table; raises ``InvalidModelError`` with what to do."""
    path = Path(path).expanduser()
    if path.suffix.lower() != ".gguf" and path.exists() and path.is_file():
        _check_header(path)  # a non-GGUF file gets the clear message; a GGUF with odd suffix passes
    parts = split_parts(path) if path.exists() else [path]
    first = parts[0]
    metadata, tensors, _ = _read_one(first)
    for part in parts[1:]:
        _, more, _ = _read_one(part)
        tensors.extend(more)
    chat_template = metadata.pop("__chat_template__", None)
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise InvalidModelError(
            f"{first.name} has no 'general.architecture' key: it is not a llama.cpp model file."
        )
    general_type = str(metadata.get("general.type", "model"))
    if check_architecture and general_type == "model" and arch not in known_architectures():
        raise UnsupportedArchitectureError(
            f"{first.name} is a '{arch}' model, an architecture this version of llama.cpp does not know: "
            "update Hearth or pick a model of a supported architecture."
        )

    def arch_int(suffix: str) -> int | None:
        value = metadata.get(f"{arch}.{suffix}")
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    head_kv = metadata.get(f"{arch}.attention.head_count_kv")
    vocab = metadata.get("tokenizer.ggml.tokens")
    return GGUFInfo(
        path=first,
        files=parts,
        size_bytes=sum(p.stat().st_size for p in parts),
        architecture=arch,
        name=str(metadata.get("general.name") or first.stem),
        file_type=file_type_name(metadata.get("general.file_type")),
        parameters=sum(t.n_elements for t in tensors),
        context_length=arch_int("context_length"),
        block_count=arch_int("block_count"),
        embedding_length=arch_int("embedding_length"),
        head_count=arch_int("attention.head_count"),
        head_count_kv=head_kv if isinstance(head_kv, list) else arch_int("attention.head_count_kv"),
        key_length=arch_int("attention.key_length"),
        value_length=arch_int("attention.value_length"),
        sliding_window=arch_int("attention.sliding_window"),
        has_chat_template=bool(chat_template),
        chat_template=chat_template,
        vocab_size=int(vocab) if isinstance(vocab, int) else arch_int("vocab_size"),
        general_type=general_type,
        metadata=metadata,
        tensors=tensors,
    )
