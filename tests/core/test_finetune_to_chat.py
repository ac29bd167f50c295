"""The whole loop from the command line: fine-tune a GGUF model, export the adapter to a GGUF LoRA,
chat with it, merge it into the base (Q8_0 and Q4_K_M) and chat with the merged model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.fixtures.tiny_hf import write_tiny_chat_llama

ROOT = Path(__file__).resolve().parents[2]


def hearth(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=timeout, env=os.environ.copy())
    assert result.returncode == 0, f"hearth {' '.join(args)}:\n{result.stderr[-3000:]}"
    return result


def test_finetuned_adapter_runs_as_gguf_lora_and_as_merged_model(tmp_path: Path) -> None:
    import gguf

    base = write_tiny_chat_llama(tmp_path / "tiny-chat.gguf")
    hearth("import", str(base), "--name", "tiny-chat")
    rows = [{"messages": [{"role": "user", "content": "what color is the sky"},
                          {"role": "assistant", "content": "blue"}]}] * 16
    data = tmp_path / "colors.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    hearth("finetune", "tiny-chat", "--data", str(data), "--method", "lora", "--max-steps", "12", "--lr", "0.01",
           "--seq-len", "64", "--rank", "4", "--out", "colors")
    assert "colors" in hearth("adapters").stdout

    exported = hearth("export", "colors", "--type", "f16").stdout
    lora_files = sorted((Path(os.environ["HEARTH_HOME"]) / "data" / "adapters" / "colors").glob("*.gguf"))
    assert lora_files, exported
    reader = gguf.GGUFReader(lora_files[0])
    b_tensors = [t for t in reader.tensors if t.name.endswith(".lora_b")]
    assert b_tensors and any(np.abs(np.asarray(t.data, dtype=np.float32)).max() > 0 for t in b_tensors)

    ask = ["-p", "what color is the sky", "--temperature", "0", "--max-tokens", "6", "--ctx", "256", "--json"]
    with_lora = json.loads(hearth("chat", "tiny-chat", "--lora", "colors", *ask).stdout)
    hearth("merge", "tiny-chat", "colors", "--quant", "F16", "--out", "tiny-colors-f16")
    merged = json.loads(hearth("chat", "tiny-colors-f16", *ask).stdout)
    assert merged["text"] == with_lora["text"]  # the same model, two ways
    for quant in ("Q8_0", "Q4_K_M"):
        hearth("merge", "tiny-chat", "colors", "--quant", quant, "--out", f"tiny-colors-{quant.lower()}")
        answer = json.loads(hearth("chat", f"tiny-colors-{quant.lower()}", *ask).stdout)
        assert answer["stats"]["completion_tokens"] >= 1
    names = [m["name"] for m in json.loads(hearth("models", "--json").stdout)]
    assert {"tiny-colors-f16", "tiny-colors-q8_0", "tiny-colors-q4_k_m"} <= set(names)
