"""Time to first token of turn 10 vs turn 1 of a conversation (prefix reuse in the KV cache).

    .venv/bin/python -m bench.followup_latency [--turns 10] [--conversations 3]
"""

from __future__ import annotations

import argparse
import time

from bench.common import median, starter_model_path

QUESTIONS = [
    "Tell me about the history of bread in a few sentences.",
    "Which grains were used first, and where?",
    "How did ovens change the way bread was made?",
    "What is sourdough and why does it rise?",
    "How did industrial baking change bread in the twentieth century?",
    "What makes a baguette different from a sandwich loaf?",
    "Why does rye bread taste sour and dense?",
    "How should I store bread so it stays fresh?",
    "What is the role of salt in bread dough?",
    "Give me a simple recipe for a first loaf.",
    "What mistakes do beginners make most often?",
    "Summarise our conversation in one sentence.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--conversations", type=int, default=3)
    parser.add_argument("--answer-tokens", type=int, default=64)
    args = parser.parse_args()
    from core.engine import Completion, Engine, LoadOptions, SamplingParams, TextChunk

    params = SamplingParams(temperature=0.7, max_tokens=args.answer_tokens, seed=3)
    first_turn, last_turn, last_history = [], [], []
    with Engine() as engine:
        engine.load(starter_model_path(), LoadOptions(n_ctx=4096))
        for conv in range(args.conversations):
            history = [{"role": "system", "content": f"You are a patient baking teacher (session {conv})."}]
            for turn in range(args.turns):
                history.append({"role": "user", "content": QUESTIONS[turn % len(QUESTIONS)]})
                started = time.perf_counter()
                ttft = None
                answer = None
                for item in engine.stream_chat(history, params):
                    if isinstance(item, TextChunk) and ttft is None:
                        ttft = time.perf_counter() - started
                    elif isinstance(item, Completion):
                        answer = item
                assert answer is not None
                ttft = ttft if ttft is not None else time.perf_counter() - started
                history.append({"role": "assistant", "content": answer.text})
                if turn == 0:
                    first_turn.append(ttft)
                if turn == args.turns - 1:
                    last_turn.append(ttft)
                    last_history.append(answer.stats.prompt_tokens)
                print(f"conversation {conv} turn {turn + 1:2d}: ttft {ttft * 1000:6.1f} ms, prompt "
                      f"{answer.stats.prompt_tokens} tokens ({answer.stats.cached_tokens} reused)", flush=True)
    ratio = median(last_turn) / median(first_turn)
    print()
    print(f"time to first token: turn 1 {median(first_turn) * 1000:.1f} ms | turn {args.turns} "
          f"{median(last_turn) * 1000:.1f} ms (history of ~{int(median(last_history))} tokens) | "
          f"ratio {ratio:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
