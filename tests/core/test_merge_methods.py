"""Model merge methods against their formulas, and real GGUF merges run in llama.cpp."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from core.errors import ExportError
from core.gguf_export.merge_methods import (
    get_method,
    merge_methods,
    slerp_vectors,
    sparsify_dare,
    sparsify_magnitude,
)
from tests.fixtures.tiny_hf_export import llama_logits
from tests.fixtures.tiny_models import write_fake_arch, write_tiny_llama

RNG = np.random.default_rng(0)


def test_slerp_of_orthogonal_vectors() -> None:
    a, b = np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)
    half = slerp_vectors(a, b, 0.5)
    np.testing.assert_allclose(half, [np.sqrt(0.5), np.sqrt(0.5)], atol=1e-6)  # on the arc, not the chord
    np.testing.assert_allclose(slerp_vectors(a, b, 1 / 3), [np.cos(np.pi / 6), np.sin(np.pi / 6)], atol=1e-6)
    np.testing.assert_allclose(slerp_vectors(a, b, 0.0), a, atol=1e-6)
    np.testing.assert_allclose(slerp_vectors(a, b, 1.0), b, atol=1e-6)
    np.testing.assert_allclose(slerp_vectors(a, 2 * a, 0.5), 1.5 * a, atol=1e-6)  # parallel: linear


def test_ties_trim_elect_and_disjoint_mean() -> None:
    base = np.zeros(4, np.float32)
    d1 = np.array([1.0, -2.0, 3.0, 0.1], np.float32)
    d2 = np.array([-3.0, 1.0, 2.0, 0.2], np.float32)
    ties = get_method("ties")
    merged = ties.merge([d1, d2], base, [1.0, 1.0], ties.resolve({"density": 1.0}), RNG)
    # Elected signs: sign(d1 + d2) = [-, -, +, +]; each entry averages only the agreeing values.
    np.testing.assert_allclose(merged, [-3.0, -2.0, 2.5, 0.15], atol=1e-6)
    np.testing.assert_allclose(sparsify_magnitude(d1, 0.5), [0.0, -2.0, 3.0, 0.0])


def test_dare_drops_and_rescales() -> None:
    delta = np.ones(200_000, np.float32)
    out = sparsify_dare(delta, 0.3, np.random.default_rng(1))
    kept = out[out != 0]
    np.testing.assert_allclose(kept, 1 / 0.3, rtol=1e-6)
    assert abs(kept.size / delta.size - 0.3) < 0.01
    assert abs(out.mean() - 1.0) < 0.02  # the expectation of the task vector is kept


def test_linear_and_task_arithmetic_formulas() -> None:
    a, b, base = (RNG.standard_normal((3, 5)).astype(np.float32) for _ in range(3))
    lin = get_method("linear")
    np.testing.assert_allclose(lin.merge([a, b], None, [1, 3], lin.resolve({}), RNG), (a + 3 * b) / 4, atol=1e-6)
    ta = get_method("task-arithmetic")
    out = ta.merge([a, b], base, [1.0, 0.5], ta.resolve({"lambda": 0.8}), RNG)
    np.testing.assert_allclose(out, base + 0.8 * ((a - base) + 0.5 * (b - base)), atol=1e-5)


@pytest.mark.parametrize("method", [m.name for m in merge_methods()])
def test_every_method_describes_itself_and_merges(method: str) -> None:
    m = get_method(method)
    assert m.pretty_name and m.reference_url.startswith("https://")
    params = m.resolve({})
    assert set(params) == {p.name for p in m.parameters}
    x, y, base = (RNG.standard_normal((4, 8)).astype(np.float32) for _ in range(3))
    out = m.merge([x, y], base if m.needs_base else None, [1.0, 1.0], params, np.random.default_rng(0))
    assert out.shape == x.shape and out.dtype == np.float32 and np.isfinite(out).all()
    with pytest.raises(ExportError):
        m.resolve({"no_such_option": 1.0})


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mm")
    return {
        "base": write_tiny_llama(root / "base.gguf", seed=0),
        "a": write_tiny_llama(root / "a.gguf", seed=1),
        "b": write_tiny_llama(root / "b.gguf", seed=2),
        "small": write_tiny_llama(root / "small.gguf", n_embd=32, n_head=2, n_head_kv=1),
        "other": write_fake_arch(root / "other.gguf"),
    }


@pytest.mark.parametrize("method", [m.name for m in merge_methods()])
def test_merge_two_models_runs_in_llama_cpp(models: dict[str, Path], tmp_path: Path, method: str) -> None:
    from core.gguf_export.model_merge import merge_models_gguf

    m = get_method(method)
    result = merge_models_gguf([models["a"], models["b"]], tmp_path / "merged.gguf", method=method,
                               base=models["base"] if m.needs_base else None, quant="Q8_0")
    logits = llama_logits(result.path, [1, 262, 263, 270, 280])
    assert logits.shape == (5, 294) and np.isfinite(logits).all()


def test_linear_merge_tensors_are_the_average(models: dict[str, Path], tmp_path: Path) -> None:
    from core.gguf_export.gguf_stream import GGUFSource
    from core.gguf_export.model_merge import merge_models_gguf

    result = merge_models_gguf([models["a"], models["b"]], tmp_path / "avg.gguf", weights=[1, 3], quant="F32")
    with GGUFSource(result.path) as out, GGUFSource(models["a"]) as a, GGUFSource(models["b"]) as b:
        for name in ("blk.0.attn_q.weight", "output.weight", "blk.1.ffn_down.weight"):
            expected = (a.dequantize(name) + 3 * b.dequantize(name)) / 4
            np.testing.assert_allclose(out.dequantize(name), expected, atol=1e-6)
        assert out.raw_kv("tokenizer.ggml.tokens") == a.raw_kv("tokenizer.ggml.tokens")


def test_mismatched_models_are_refused_before_work(models: dict[str, Path], tmp_path: Path) -> None:
    from core.gguf_export.model_merge import merge_models_gguf

    with pytest.raises(ExportError, match="different shapes"):
        merge_models_gguf([models["a"], models["small"]], tmp_path / "x.gguf")
    with pytest.raises(ExportError, match="same architecture"):
        merge_models_gguf([models["a"], models["other"]], tmp_path / "x.gguf")
    with pytest.raises(ExportError, match="--base"):
        merge_models_gguf([models["a"], models["b"]], tmp_path / "x.gguf", method="ties")
    with pytest.raises(ExportError, match="at most 2"):
        merge_models_gguf([models["a"], models["b"], models["base"]], tmp_path / "x.gguf", method="slerp")
    assert not list(tmp_path.iterdir())


def test_cli_merge_models_registers_result(models: dict[str, Path], hearth_home: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from core.cli import cmd_export
    from core.library import Library

    p = argparse.ArgumentParser()
    cmd_export.register(p.add_subparsers())
    args = p.parse_args(["merge-models", "--list"])
    assert args.func(args) == 0
    assert "dare-ties" in capsys.readouterr().out
    args = p.parse_args(["merge-models", str(models["a"]), str(models["b"]), "--method", "dare-ties",
                         "--base", str(models["base"]), "--density", "0.5", "--out", "tiny-dare"])
    assert args.func(args) == 0
    entry = Library().get("tiny-dare")
    assert entry.source == "merge" and entry.file_type == "Q8_0"
    args = p.parse_args(["merge-models", str(models["a"]), str(models["b"]), "--method", "slerp", "--density", "0.5"])
    with pytest.raises(ExportError, match="does not take --density"):
        args.func(args)
