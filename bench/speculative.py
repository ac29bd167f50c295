"""Decode speed with speculative decoding (SamplingParams.draft) against plain decoding, in one run.

Two tasks on the starter model: rewriting a given paragraph (the answer repeats the prompt: prompt
lookup should win) and free chat (little to look up: drafting must not cost more than 3%, or it stays
off by default). Each rep asks every mode the same question with the same seed, in turn, so the answers
start alike (the cache is cleared before each) and only the speed should differ; the figures are medians
over the reps, the ratios medians of each rep's ratio (steadier on a busy machine). Sampled answers
(the default settings used here) can part ways after a while: llama.cpp computes a batch of 4 or more
positions with other CPU kernels than one position at a time (a logit moves by up to ~0.5), which tips
the sampler at some steps, so the line "same answers" counts them. The draft-model mode
has the starter draft for itself: only a check of the plumbing (its acceptance should be near 100%),
not a speed-up, since the draft model costs as much as the model.

    .venv/bin/python -m bench.speculative [--reps 5] [--tokens 160] [--threads N] [--draft-max 8]
"""

from __future__ import annotations

import argparse

from bench.common import median, starter_model_path

PARAGRAPH = (
    "The lighthouse keeper climbed the narrow stairs every evening at dusk. He trimmed the wick, polished "
    "the great lens and wrote the weather in his logbook. Ships passed far out at sea, and none of them knew "
    "his name, but all of them trusted his light. In winter the storms shook the tower and salt crusted the "
    "windows, yet the lamp never once went dark while he kept it."
)
REWRITE = "Copy this paragraph exactly, word for word, changing only 'lighthouse keeper' to 'guardian':\n\n"
CHAT = [
    "What should I cook for dinner tonight?",
    "Tell me about the history of bread.",
    "How do bees make honey?",
    "Give me three tips for learning to play the guitar.",
    "Why is the sky blue?",
    "What is a good way to start running?",
    "Explain how a bicycle stays upright.",
]
MODES = ("off", "lookup", "model")


def answer(engine: object, prompt: str, mode: str, seed: int, tokens: int, draft_max: int) -> tuple[str, object]:
    from core.engine import SamplingParams
    from core.settings import ChatParameters

    defaults = ChatParameters()  # what the window and the server use unless the user changed them
    params = SamplingParams(temperature=defaults.temperature, top_p=defaults.top_p, top_k=defaults.top_k,
                            min_p=defaults.min_p, repeat_penalty=defaults.repeat_penalty, seed=seed,
                            max_tokens=tokens, draft=mode, draft_max=draft_max)
    engine.complete("Clear the cache.", SamplingParams(max_tokens=1))  # type: ignore[attr-defined]
    done = engine.chat([{"role": "user", "content": prompt}], params)  # type: ignore[attr-defined]
    return done.text, done.stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=160, help="max tokens per answer")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--draft-max", type=int, default=None, help="tokens per draft (default: SamplingParams')")
    args = parser.parse_args()
    import psutil

    from core.engine import Engine, LoadOptions, SamplingParams

    threads = args.threads or psutil.cpu_count(logical=False) or 1
    draft_max = args.draft_max or SamplingParams().draft_max
    path = str(starter_model_path())
    tasks = {"rewrite": lambda rep: REWRITE + PARAGRAPH, "chat": lambda rep: CHAT[rep % len(CHAT)]}
    speed: dict[tuple[str, str], list[float]] = {(t, m): [] for t in tasks for m in MODES}
    drafted: dict[tuple[str, str], list[int]] = {(t, m): [0, 0] for t in tasks for m in MODES}
    ratios: dict[tuple[str, str], list[float]] = {(t, m): [] for t in tasks for m in MODES}
    same = total = 0
    with Engine() as engine:
        engine.load(path, LoadOptions(n_ctx=args.ctx, n_threads=threads, draft_model=path))
        answer(engine, "Warm up.", "lookup", 0, 16, draft_max)
        for rep in range(args.reps):
            for task, prompt_of in tasks.items():
                texts = {}
                order = MODES if rep % 2 == 0 else MODES[::-1]  # neither mode always runs first
                for mode in order:
                    text, stats = answer(engine, prompt_of(rep), mode, 1000 + rep, args.tokens, draft_max)
                    texts[mode] = text
                    speed[task, mode].append(stats.tokens_per_second)  # type: ignore[attr-defined]
                    drafted[task, mode][0] += stats.drafted_tokens  # type: ignore[attr-defined]
                    drafted[task, mode][1] += stats.accepted_tokens  # type: ignore[attr-defined]
                for mode in MODES[1:]:
                    ratios[task, mode].append(speed[task, mode][-1] / speed[task, "off"][-1])
                    same += texts[mode] == texts["off"]
                    total += 1
                print(f"rep {rep} {task:7}: " + " | ".join(f"{m} {speed[task, m][-1]:5.1f} tok/s" for m in MODES),
                      flush=True)
    print()
    print(f"model: {path} | threads {threads} | ctx {args.ctx} | draft_max {draft_max} | "
          f"{args.tokens} tokens x {args.reps} reps, default sampling, one seed per rep (medians)")
    for task in tasks:
        off = median(speed[task, "off"])
        cells = [f"off {off:6.1f} tok/s"]
        for mode in MODES[1:]:
            n, ok = drafted[task, mode]
            rate = f"{ok / n:.0%}" if n else "-"
            cells.append(f"{mode} {median(speed[task, mode]):6.1f} tok/s (x{median(ratios[task, mode]):.2f}, "
                         f"accepted {ok}/{n} = {rate})")
        print(f"{task:8}: " + " | ".join(cells))
    print(f"same answers with and without drafting: {same} of {total}")


if __name__ == "__main__":
    main()
