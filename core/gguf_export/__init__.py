"""From adapters to GGUF: LoRA export, merging into a base, quantizing, model merging, Ollama files.

Submodules import torch/peft/llama_cpp only inside the functions that need them.
"""

from __future__ import annotations
