"""Quant types read from GGUF file names, and a repo's GGUF files grouped into one entry per quant.

Names follow the conventions of llama.cpp's ``llama-quantize`` (``Q4_K_M``, ``IQ4_XS``, ``TQ1_0``,
``MXFP4`` …) as the big GGUF publishers use them (TheBloke ``model.Q4_K_M.gguf``, bartowski
``Model-Q6_K_L.gguf``, unsloth ``Model-UD-Q4_K_XL.gguf``), and ``gguf-split``'s part names
``<stem>-00001-of-00003.gguf``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from core.library.gguf_meta import SPLIT_RE
from core.library.projector import choose_projector, is_projector_file

_QUANT_RE = re.compile(
    r"(?<![A-Za-z0-9])(?P<q>(?:UD[-_])?(?:"
    r"IQ[1-4]_(?:XXS|XS|NL|S|M|L)"
    r"|Q[2-8]_K(?:_(?:XXL|XL|L|M|S))?"
    r"|Q4_0_[48]_[48]"
    r"|Q[4-8]_[01]"
    r"|TQ[12]_0"
    r"|MXFP4(?:_MOE)?"
    r"|BF16|FP16|FP32|F16|F32"
    r"))(?![A-Za-z0-9])",
    re.IGNORECASE,
)

# Approximate bits per weight of each llama.cpp quant type (llama.cpp's quantize help and
# ggml-quants block sizes), used to order quants and to pick the nearest one to Q4_K_M.
# The ternary TQ1_0 and TQ2_0 store 256 weights in 54 and 66 bytes (gguf.GGML_QUANT_SIZES): 1.69, 2.06.
# fmt: off
BITS_PER_WEIGHT: dict[str, float] = {
    "IQ1_S": 1.56, "IQ1_M": 1.75, "TQ1_0": 1.69, "TQ2_0": 2.06,
    "IQ2_XXS": 2.06, "IQ2_XS": 2.31, "IQ2_S": 2.5, "IQ2_M": 2.7, "Q2_K": 2.96, "Q2_K_S": 2.9,
    "Q2_K_L": 3.1, "Q2_K_XL": 3.2,
    "IQ3_XXS": 3.06, "IQ3_XS": 3.3, "IQ3_S": 3.44, "IQ3_M": 3.66,
    "Q3_K_S": 3.5, "Q3_K_M": 3.91, "Q3_K_L": 4.27, "Q3_K_XL": 4.3,
    "IQ4_XS": 4.25, "IQ4_NL": 4.5, "MXFP4": 4.25, "MXFP4_MOE": 4.25,
    "Q4_0": 4.5, "Q4_0_4_4": 4.5, "Q4_0_4_8": 4.5, "Q4_0_8_8": 4.5, "Q4_1": 5.0,
    "Q4_K_S": 4.58, "Q4_K_M": 4.85, "Q4_K_L": 5.0, "Q4_K_XL": 5.0, "Q4_K": 4.85,
    "Q5_0": 5.5, "Q5_1": 6.0, "Q5_K_S": 5.54, "Q5_K_M": 5.69, "Q5_K_L": 5.8, "Q5_K_XL": 5.9, "Q5_K": 5.69,
    "Q6_K": 6.56, "Q6_K_L": 6.7, "Q6_K_XL": 6.8,
    "Q8_0": 8.5, "Q8_K_XL": 9.0, "Q8_1": 9.0,
    "F16": 16.0, "BF16": 16.0, "F32": 32.0,
}
# fmt: on
DEFAULT_QUANT = "Q4_K_M"


def parse_quant(filename: str) -> str | None:
    """The quant type named in a GGUF file name (``'Llama-3-8B.Q4_K_M.gguf'`` → ``'Q4_K_M'``), or None.

    Unsloth's dynamic quants keep their prefix (``'UD-Q4_K_XL'``); ``FP16``/``FP32`` read as ``F16``/``F32``.
    """
    name = PurePosixPath(filename).name
    split = SPLIT_RE.match(name)
    stem = split["stem"] if split else re.sub(r"\.gguf$", "", name, flags=re.IGNORECASE)
    matches = list(_QUANT_RE.finditer(stem))
    if not matches:
        return None
    quant = matches[-1]["q"].upper().replace("UD_", "UD-")
    return {"FP16": "F16", "FP32": "F32"}.get(quant, quant)


def base_quant(quant: str) -> str:
    """The llama.cpp type of a quant name, without a publisher's prefix (``'UD-Q4_K_XL'`` → ``'Q4_K_XL'``)."""
    return quant.removeprefix("UD-")


def bits_per_weight(quant: str | None) -> float | None:
    if quant is None:
        return None
    return BITS_PER_WEIGHT.get(base_quant(quant))


def is_model_file(path: str) -> bool:
    """True for GGUF model weights; vision projectors (``mmproj``) and importance matrices are not models."""
    name = PurePosixPath(path).name.lower()
    return name.endswith(".gguf") and not is_projector_file(name) and "imatrix" not in name


def projector_files(files: list[RemoteFile]) -> list[RemoteFile]:
    """A repo's vision projector files (``mmproj-*.gguf``), smallest first."""
    return sorted((f for f in files if is_projector_file(f.path)), key=lambda f: (f.size, f.path))


def pick_projector(
    files: list[RemoteFile], model_path: str | None = None, wanted: str | None = None
) -> tuple[RemoteFile | None, str]:
    """The projector that comes with a model of the repo (``choose_projector``'s rule), and why."""
    projectors = projector_files(files)
    path, reason = choose_projector([(f.path, f.size) for f in projectors], model_path, wanted)
    return next((f for f in projectors if f.path == path), None), reason


@dataclass(frozen=True)
class RemoteFile:
    """One file of a Hub repo: its path in the repo, size and the SHA-256 the Hub lists (LFS oid)."""

    path: str
    size: int
    sha256: str | None = None

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name


@dataclass
class QuantGroup:
    """One downloadable model of a repo: a single GGUF file, or every part of a split GGUF."""

    name: str  # unique in the repo: the quant, or the file stem when two files share a quant
    quant: str | None
    stem: str
    files: list[RemoteFile]
    parts_expected: int = 1
    fit: object | None = field(default=None, repr=False)  # a core.fit.FitVerdict when known
    mmproj: RemoteFile | None = None  # the vision projector that comes with this model, when the repo has one

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def complete(self) -> bool:
        return len(self.files) == self.parts_expected

    @property
    def first_file(self) -> RemoteFile:
        return self.files[0]


def group_gguf_files(files: list[RemoteFile]) -> list[QuantGroup]:
    """GGUF model files grouped one entry per model (split parts together), smallest quant first."""
    groups: dict[str, QuantGroup] = {}
    for f in files:
        if not is_model_file(f.path):
            continue
        posix = PurePosixPath(f.path)
        split = SPLIT_RE.match(posix.name)
        stem = split["stem"] if split else posix.name[: -len(".gguf")]
        key = str(posix.parent / stem)
        group = groups.get(key)
        if group is None:
            group = QuantGroup(
                name="",
                quant=parse_quant(f.path),
                stem=key.removeprefix("./"),
                files=[],
                parts_expected=int(split["count"]) if split else 1,
            )
            groups[key] = group
        group.files.append(f)
    result = list(groups.values())
    for g in result:
        g.files.sort(key=lambda f: f.path)
    counts: dict[str, int] = {}
    for g in result:
        counts[g.quant or g.stem] = counts.get(g.quant or g.stem, 0) + 1
    for g in result:
        label = g.quant or g.stem
        g.name = label if counts[label] == 1 else g.stem
    result.sort(key=lambda g: (bits_per_weight(g.quant) or 99.0, g.size, g.name))
    return result


def find_group(groups: list[QuantGroup], quant: str) -> QuantGroup | None:
    """The group a user means by a quant name (``q4_k_m``) or a group name; None when there is none."""
    wanted = quant.strip().upper()
    exact = [g for g in groups if g.name.upper() == wanted or g.stem.upper() == wanted]
    if exact:
        return exact[0]
    by_quant = [g for g in groups if (g.quant or "").upper() == wanted]
    if not by_quant:
        by_quant = [g for g in groups if g.quant and base_quant(g.quant).upper() == wanted]
    if len(by_quant) > 1:
        from core.errors import HearthError

        names = ", ".join(g.name for g in by_quant)
        raise HearthError(f"Several files are {quant}: {names}. Pick one with --quant NAME or --file FILE.")
    return by_quant[0] if by_quant else None


def group_for_file(groups: list[QuantGroup], filename: str) -> QuantGroup | None:
    """The group holding a file (any part of a split model selects all of its parts)."""
    for g in groups:
        if any(f.path == filename or f.name == filename for f in g.files):
            return g
    return None


def fallback_choice(groups: list[QuantGroup]) -> QuantGroup | None:
    """Q4_K_M when the repo has it, else the complete group whose bits per weight are nearest to it."""
    complete = [g for g in groups if g.complete]
    if not complete:
        return None
    exact = [g for g in complete if g.quant and base_quant(g.quant) == DEFAULT_QUANT]
    if exact:
        return exact[0]
    target = BITS_PER_WEIGHT[DEFAULT_QUANT]

    def distance(g: QuantGroup) -> tuple[float, int]:
        bpw = bits_per_weight(g.quant)
        return (abs(bpw - target) if bpw is not None else 99.0, g.size)

    return min(complete, key=distance)
