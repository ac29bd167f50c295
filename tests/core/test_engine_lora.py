"""GGUF LoRA adapters in the chat engine: load with the model, switch and rescale without reloading."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from core.engine import Engine, LoadOptions, SamplingParams
from core.errors import EngineError
from tests.fixtures.tiny_hf_export import build_tiny_hf_llama, make_lora

GREEDY = SamplingParams(temperature=0, max_tokens=12, repeat_penalty=1.0)
PROMPT = "hello world the"


@pytest.fixture(scope="module")
def tiny_with_lora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from core.gguf_export.lora import export_lora_gguf

    root = tmp_path_factory.mktemp("engine-lora")
    hf = build_tiny_hf_llama(root)
    adapter = make_lora(hf.folder, root / "lora")
    lora = export_lora_gguf(adapter, root / "lora.gguf", base=hf.gguf).path
    return {"model": hf.gguf, "lora": lora}


def test_adapters_switch_without_reloading_the_base(tiny_with_lora: dict[str, Any]) -> None:
    with Engine() as eng:
        eng.load(tiny_with_lora["model"], LoadOptions(n_ctx=128))
        pid = eng.pid
        base = eng.complete(PROMPT, GREEDY).text
        active = eng.set_loras([(tiny_with_lora["lora"], 1.0)])
        assert active == [(str(tiny_with_lora["lora"]), 1.0)]
        adapted = eng.complete(PROMPT, GREEDY).text
        assert adapted != base  # the adapter changes what the model says
        eng.set_loras([(tiny_with_lora["lora"], 0.0)])
        assert eng.complete(PROMPT, GREEDY).text == base  # scale 0 is the base model
        eng.set_loras([])
        assert eng.complete(PROMPT, GREEDY).text == base
        assert eng.pid == pid  # same worker, base never reloaded
        with pytest.raises(EngineError, match="Could not load the adapter"):
            eng.set_loras([(tiny_with_lora["model"], 1.0)])  # a model is not an adapter
        assert eng.complete(PROMPT, GREEDY).text == base


def test_loading_with_an_adapter_matches_switching_it_on(tiny_with_lora: dict[str, Any]) -> None:
    with Engine() as eng:
        eng.load(tiny_with_lora["model"], LoadOptions(n_ctx=128, loras=[(str(tiny_with_lora["lora"]), 1.0)]))
        assert eng.status is not None and eng.status.loras == [(str(tiny_with_lora["lora"]), 1.0)]
        loaded = eng.complete(PROMPT, GREEDY).text
        eng.set_loras([])
        eng.set_loras([(tiny_with_lora["lora"], 1.0)])
        assert eng.complete(PROMPT, GREEDY).text == loaded


def test_cli_chat_takes_lora_with_scale(tiny_with_lora: dict[str, Any]) -> None:
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-m", "core", "chat", str(tiny_with_lora["model"]), "-p", "hello",
         "--lora", f"{tiny_with_lora['lora']}:0.5", "--max-tokens", "4", "--ctx", "128"],
        cwd=root, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "core", "chat", str(tiny_with_lora["model"]), "-p", "hi", "--lora", "nope"],
        cwd=root, capture_output=True, text=True, timeout=120,
    )
    assert missing.returncode == 1 and "No adapter 'nope'" in missing.stderr
