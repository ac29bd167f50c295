"""``hearth hw`` and ``hearth fit`` through the real command entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.cli import main


def test_hw_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hw", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ram_total_bytes"] > 0 and data["cpu"]["logical_cores"] >= 1
    assert "CPU" in data["llama"]["backends"]
    assert isinstance(data["gpus"], list) and isinstance(data["notes"], list)


def test_hw_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hw"]) == 0
    out = capsys.readouterr().out
    assert "RAM" in out and "CPU features" in out and "llama.cpp" in out


def test_fit_library_model_text_and_json(
    starter_in_library: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from core.library import Library

    name = Library().register(starter_in_library, source="copy").name
    assert main(["fit", name, "--ctx", "2048"]) == 0
    out = capsys.readouterr().out
    assert "gemma3" in out and "KV cache" in out and "Verdict: cpu" in out
    assert main(["fit", str(starter_in_library), "--ctx", "2048", "--cache-type", "q8_0", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    estimate = data["verdict"]["estimate"]
    assert estimate["n_ctx"] == 2048 and estimate["cache_type_k"] == "q8_0"
    parts = ("weights_cpu", "kv_cpu", "compute_cpu", "output", "vocab", "baseline", "margin_cpu")
    assert sum(estimate[p] for p in parts) == estimate["cpu_bytes"]
    assert data["verdict"]["total_bytes"] == estimate["total_bytes"]
    assert data["shape"]["n_layer"] == 18


def test_fit_with_gpu_layers_on_a_machine_without_gpu(
    starter_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fit", str(starter_model), "--gpu-layers", "10", "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)["verdict"]
    assert verdict["kind"] == "cpu" and verdict["gpu_layers"] == 0


def test_fit_bad_input(tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", str(tmp_path / "missing.gguf")]) == 1
    assert "does not exist" in capsys.readouterr().err
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"PK\x03\x04 a zip file")
    assert main(["fit", str(junk)]) == 1
    assert "not a GGUF model" in capsys.readouterr().err
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_model.read_bytes()[:100])
    assert main(["fit", str(cut)]) == 1
    err = capsys.readouterr().err
    assert "truncated" in err and err.count("\n") == 1  # one line, no traceback
    assert main(["fit", "no-such-model"]) == 1
    assert "No model called 'no-such-model'" in capsys.readouterr().err
    assert main(["fit", str(tiny_model), "--cache-type", "q3"]) == 1
    assert "Unknown KV cache type" in capsys.readouterr().err
    assert main(["fit", str(tiny_model), "--ctx", "-5"]) == 1
