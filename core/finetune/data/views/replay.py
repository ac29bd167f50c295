"""The ``replay`` view: a small share of the base model's own text, trained beside the documents.

Training only on new facts pulls a small model away from everything else it could write; mixing in a
little text of its own (as rehearsal / replay against catastrophic forgetting: Robins, 1995; Scialom et al.,
"Fine-tuned language models are continual learners", 2022, keep ~1% of earlier data) holds it near its
old behaviour at almost no cost. The samples are written by the base model before training, from general
openings that have nothing to do with the documents, sampled with the job's seed: by llama.cpp when the base
is a GGUF (the same weights the trainer dequantizes; a few seconds, where transformers' ``generate`` took
50-130 s on 2 cores for Gemma 3 270M), by the training model itself otherwise.
"""

from __future__ import annotations

import random
from typing import Any

from core.finetune.data.views import Item
from core.finetune.data.views.facts import Facts

OPENINGS = (
    "The history of bread goes back", "A good way to start the morning is", "The river flows through",
    "In mathematics, a prime number", "Most birds build their nests", "The recipe calls for",
)
NEW_TOKENS = 48


def _kept(opening: str, text: str) -> bool:
    """A sample worth training: it goes on past its opening by a clause at least."""
    return len(text) > len(opening) + 20


def write_replay_gguf(path: str, *, seed: int) -> list[str]:
    """The continuations of ``OPENINGS`` by the GGUF at ``path`` in the chat engine (sampled, the same for a seed)."""
    from core.engine import Engine, LoadOptions, SamplingParams

    texts = []
    with Engine() as engine:
        engine.load(path, LoadOptions(n_ctx=256))
        for n, opening in enumerate(OPENINGS):
            params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0.8, top_p=0.95, seed=seed * 1_009 + n)
            text = (opening + engine.complete(opening, params).text).strip()
            if _kept(opening, text):
                texts.append(text)
    return texts


def write_replay(model: Any, tokenizer: Any, device: Any, *, seed: int) -> list[str]:
    """The base model's continuations of ``OPENINGS`` (sampled, the same for a seed)."""
    import torch

    texts = []
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for opening in OPENINGS:
                ids = tokenizer(opening, return_tensors="pt")["input_ids"].to(device)
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                                     do_sample=True, temperature=0.8, top_p=0.95, use_cache=True,
                                     pad_token_id=tokenizer.pad_token_id)
                text = tokenizer.decode(out[0].tolist(), skip_special_tokens=True).strip()
                if _kept(opening, text):
                    texts.append(text)
    finally:
        model.train(was_training)
        torch.random.set_rng_state(generator_state)  # training's own randomness stays as the seed set it
    return texts


def replay_items(facts: Facts, rng: random.Random, options: dict[str, Any]) -> list[Item]:
    return [Item("replay", text, frozenset()) for text in options.get("replay", [])]
