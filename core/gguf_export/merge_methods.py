"""Model merge methods: each describes itself (name, pretty name, reference, parameters).

Like mergekit's ``merge_methods``: one registry, one class for a family (TIES and the DARE
variants share the sparsify → sign-consensus → combine pipeline). Every method works on one tensor
at a time: the tensors of the models being merged (and of the base, for task-vector methods), all
float32 arrays of the same shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.errors import ExportError


@dataclass(frozen=True)
class MergeParameter:
    """One option of a method, described once for the CLI and the GUI's form."""

    name: str
    default: float
    help: str
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class MergeMethod:
    name: str
    pretty_name: str
    reference_url: str
    needs_base: bool
    parameters: tuple[MergeParameter, ...]
    fn: Callable[[Sequence[np.ndarray], np.ndarray | None, Sequence[float], dict[str, float], np.random.Generator], np.ndarray]
    min_models: int = 2
    max_models: int | None = None

    def resolve(self, params: dict[str, float] | None) -> dict[str, float]:
        """The method's parameters with defaults filled in and ranges checked."""
        given = dict(params or {})
        known = {p.name for p in self.parameters}
        unknown = set(given) - known
        if unknown:
            raise ExportError(f"{self.pretty_name} has no parameter {', '.join(sorted(unknown))} "
                              f"(it takes: {', '.join(sorted(known)) or 'none'}).")
        out = {}
        for p in self.parameters:
            value = float(given.get(p.name, p.default))
            if (p.min is not None and value < p.min) or (p.max is not None and value > p.max):
                raise ExportError(f"{p.name} must be between {p.min} and {p.max} (got {value}).")
            out[p.name] = value
        return out

    def merge(self, tensors: Sequence[np.ndarray], base: np.ndarray | None, weights: Sequence[float],
              params: dict[str, float], rng: np.random.Generator) -> np.ndarray:
        return self.fn(tensors, base, weights, params, rng)


_REGISTRY: dict[str, MergeMethod] = {}


def register_method(method: MergeMethod) -> MergeMethod:
    if method.name in _REGISTRY:
        raise ValueError(f"merge method {method.name} is already registered")
    _REGISTRY[method.name] = method
    return method


def merge_methods() -> list[MergeMethod]:
    return list(_REGISTRY.values())


def get_method(name: str) -> MergeMethod:
    key = name.strip().lower().replace("_", "-")
    if key not in _REGISTRY:
        raise ExportError(f"Unknown merge method '{name}': use one of {', '.join(_REGISTRY)}.")
    return _REGISTRY[key]


# -- formulas -----------------------------------------------------------------------------------
def linear(tensors: Sequence[np.ndarray], base: np.ndarray | None, weights: Sequence[float],
           params: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """Weighted average (Wortsman et al. 2022, "Model soups", arXiv:2203.05482)."""
    w = np.asarray(weights, dtype=np.float32)
    total = float(w.sum()) if params.get("normalize", 1.0) else 1.0
    if total == 0:
        raise ExportError("The merge weights add up to zero.")
    acc = np.zeros_like(tensors[0], dtype=np.float32)
    for wi, t in zip(w, tensors, strict=True):
        acc += wi * t
    out: np.ndarray = acc / np.float32(total)
    return out


def slerp_vectors(a: np.ndarray, b: np.ndarray, t: float, eps: float = 1e-8) -> np.ndarray:
    """Spherical linear interpolation (Shoemake 1985, "Animating rotation with quaternion curves").

    ``slerp(a, b; t) = sin((1-t)Ω)/sin Ω · a + sin(tΩ)/sin Ω · b`` with ``cos Ω`` the cosine between
    ``a`` and ``b``; nearly parallel vectors fall back to linear interpolation (as mergekit does).
    """
    a32, b32 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a32), np.linalg.norm(b32)
    if na < eps or nb < eps:
        return ((1 - t) * a + t * b).astype(np.float32)
    dot = float(np.clip(a32 @ b32 / (na * nb), -1.0, 1.0))
    if abs(dot) > 0.9995:
        return ((1 - t) * a + t * b).astype(np.float32)
    omega = np.arccos(dot)
    so = np.sin(omega)
    out: np.ndarray = np.sin((1 - t) * omega) / so * a32 + np.sin(t * omega) / so * b32
    return out.reshape(a.shape).astype(np.float32)


def slerp(tensors: Sequence[np.ndarray], base: np.ndarray | None, weights: Sequence[float],
          params: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    return slerp_vectors(tensors[0], tensors[1], params["t"])


def task_arithmetic(tensors: Sequence[np.ndarray], base: np.ndarray | None, weights: Sequence[float],
                    params: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """``base + λ Σ w_i (θ_i − base)`` (Ilharco et al. 2023, "Editing models with task arithmetic", arXiv:2212.04089)."""
    assert base is not None
    delta = sum((w * (t - base) for w, t in zip(weights, tensors, strict=True)), np.zeros_like(base))
    return (base + params["lambda"] * delta).astype(np.float32)


def sparsify_magnitude(delta: np.ndarray, density: float) -> np.ndarray:
    """TIES "trim": keep the ``density`` fraction of entries with the largest magnitude, zero the rest."""
    if density >= 1.0:
        return delta
    k = round(density * delta.size)
    if k <= 0:
        return np.zeros_like(delta)
    threshold = np.partition(np.abs(delta).ravel(), delta.size - k)[delta.size - k]
    return np.where(np.abs(delta) >= threshold, delta, 0).astype(np.float32)


def sparsify_dare(delta: np.ndarray, density: float, rng: np.random.Generator) -> np.ndarray:
    """DARE: drop each entry with probability ``1 − density`` and rescale the rest by ``1/density``
    (Yu et al. 2024, "Language models are Super Mario", arXiv:2311.03099), so the expectation is kept."""
    if density >= 1.0:
        return delta
    keep = rng.random(delta.shape) < density
    return np.where(keep, delta / density, 0).astype(np.float32)


def sign_consensus(deltas: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """TIES "elect": per entry, the sign of the summed (weighted) task vectors (arXiv:2306.01708)."""
    total = sum((w * d for w, d in zip(weights, deltas, strict=True)), np.zeros_like(deltas[0]))
    return np.sign(total).astype(np.float32)


@dataclass(frozen=True)
class SparseFamily:
    """TIES / DARE-TIES / DARE-linear: sparsify task vectors, optionally elect signs, combine."""

    sparsify: str  # "magnitude" or "random"
    consensus: bool
    extra: dict[str, Any] = field(default_factory=dict)

    def __call__(self, tensors: Sequence[np.ndarray], base: np.ndarray | None, weights: Sequence[float],
                 params: dict[str, float], rng: np.random.Generator) -> np.ndarray:
        assert base is not None
        density = params["density"]
        deltas = []
        for t in tensors:
            d = (t - base).astype(np.float32)
            d = sparsify_magnitude(d, density) if self.sparsify == "magnitude" else sparsify_dare(d, density, rng)
            deltas.append(d)
        w = [float(x) for x in weights]
        if self.consensus:
            # TIES "disjoint merge" (Yadav et al. 2023, arXiv:2306.01708): average only the entries whose
            # sign agrees with the elected sign, each weighted; the divisor counts the agreeing weights.
            elected = sign_consensus(deltas, w)
            num = np.zeros_like(base, dtype=np.float32)
            den = np.zeros_like(base, dtype=np.float32)
            for wi, d in zip(w, deltas, strict=True):
                agree = (np.sign(d) == elected) & (d != 0)
                num += np.where(agree, wi * d, 0)
                den += np.where(agree, wi, 0)
            merged = np.divide(num, den, out=np.zeros_like(num), where=den != 0)
        else:
            merged = sum((wi * d for wi, d in zip(w, deltas, strict=True)), np.zeros_like(base))
        return (base + params["lambda"] * merged).astype(np.float32)


_LAMBDA = MergeParameter("lambda", 1.0, "scale of the combined task vector", 0.0, 10.0)
_DENSITY = MergeParameter("density", 0.5, "fraction of each task vector kept", 0.01, 1.0)

register_method(MergeMethod(
    "linear", "Linear (model soup)", "https://arxiv.org/abs/2203.05482", False,
    (MergeParameter("normalize", 1.0, "1 divides by the sum of the weights, 0 does not", 0.0, 1.0),), linear,
))
register_method(MergeMethod(
    "slerp", "SLERP", "https://en.wikipedia.org/wiki/Slerp", False,
    (MergeParameter("t", 0.5, "interpolation position: 0 = first model, 1 = second", 0.0, 1.0),), slerp,
    max_models=2,
))
register_method(MergeMethod(
    "task-arithmetic", "Task arithmetic", "https://arxiv.org/abs/2212.04089", True, (_LAMBDA,), task_arithmetic,
    min_models=1,
))
register_method(MergeMethod(
    "ties", "TIES", "https://arxiv.org/abs/2306.01708", True, (_DENSITY, _LAMBDA),
    SparseFamily("magnitude", consensus=True), min_models=1,
))
register_method(MergeMethod(
    "dare-ties", "DARE + TIES", "https://arxiv.org/abs/2311.03099", True, (_DENSITY, _LAMBDA),
    SparseFamily("random", consensus=True), min_models=1,
))
register_method(MergeMethod(
    "dare-linear", "DARE (linear)", "https://arxiv.org/abs/2311.03099", True, (_DENSITY, _LAMBDA),
    SparseFamily("random", consensus=False), min_models=1,
))
