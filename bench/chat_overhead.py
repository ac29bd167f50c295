"""Decode and prompt-processing speed of Hearth's engine vs a bare llama_cpp.Llama loop.

Both run the starter model with the same threads, context, batch size and sampling settings, in one
run, alternating, several times; the figures are medians. Hearth's engine runs in a worker process,
streams over a pipe and supports cancel; the baseline is llama-cpp-python's own high-level
``Llama.generate`` loop in this process.

    .venv/bin/python -m bench.chat_overhead [--tokens 128] [--reps 5] [--threads N]
"""

from __future__ import annotations

import argparse
import time

from bench.common import median, starter_model_path

PROMPT = (
    "You are a helpful assistant. Here is a long passage about the history of bread making, "
    "from the first flat breads of the Neolithic to the sourdough revival of today. "
) * 12


def run_baseline(
    path: str, n_ctx: int, threads: int, tokens: int, prompt_prefix: str, flash_attn: bool
) -> tuple[float, float]:
    import llama_cpp

    from core.engine.backends import load_backends

    load_backends()  # what any program must do with a GGML_BACKEND_DL build of llama.cpp
    llm = llama_cpp.Llama(path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, n_batch=512,
                          flash_attn=flash_attn, verbose=False)
    prompt_tokens = llm.tokenize((prompt_prefix + PROMPT).encode())
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt_tokens)
    pp = len(prompt_tokens) / (time.perf_counter() - t0)
    llm.reset()
    first = last = 0.0
    n = 0
    for n, _token in enumerate(
        llm.generate(prompt_tokens, temp=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1, reset=True),
        start=1,
    ):
        now = time.perf_counter()
        if n == 1:
            first = now
        last = now
        if n >= tokens:
            break
    decode = (n - 1) / (last - first)
    del llm
    return pp, decode


def run_engine(engine: object, tokens: int, prompt_prefix: str) -> tuple[float, float]:
    from core.engine import Completion, SamplingParams, TextChunk

    params = SamplingParams(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1,
                            max_tokens=tokens, ignore_eos=True)
    first_at = end_at = 0.0
    first_n = 0
    done = None
    for item in engine.stream_complete(prompt_prefix + PROMPT, params):  # type: ignore[attr-defined]
        if isinstance(item, TextChunk) and not first_at:
            first_at, first_n = time.perf_counter(), item.n_tokens
        elif isinstance(item, Completion):
            end_at, done = time.perf_counter(), item
    assert done is not None
    evaluated = done.stats.prompt_tokens - done.stats.cached_tokens
    pp = evaluated / done.stats.prompt_seconds
    decode = (done.stats.completion_tokens - first_n) / (end_at - first_at)
    return pp, decode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--flash-attn", choices=["off", "on"], default="off",
                        help="flash attention on both sides (llama-cpp-python's Llama defaults to off)")
    args = parser.parse_args()
    flash = args.flash_attn == "on"
    import psutil

    from core.engine import Engine, LoadOptions

    threads = args.threads or psutil.cpu_count(logical=False) or 1
    path = str(starter_model_path())
    base_pp, base_dec, eng_pp, eng_dec = [], [], [], []
    with Engine() as engine:
        engine.load(path, LoadOptions(n_ctx=args.ctx, n_threads=threads, n_batch=512, flash_attn=flash))
        run_engine(engine, 16, "warm-up ")
        run_baseline(path, args.ctx, threads, 16, "warm-up ", flash)
        for rep in range(args.reps):
            prefix = f"Run {rep}. "  # a different first token each time: no prompt reuse on either side
            pp, dec = run_engine(engine, args.tokens, prefix)
            eng_pp.append(pp)
            eng_dec.append(dec)
            pp, dec = run_baseline(path, args.ctx, threads, args.tokens, prefix, flash)
            base_pp.append(pp)
            base_dec.append(dec)
            print(f"rep {rep}: decode engine {eng_dec[-1]:.1f} vs bare {base_dec[-1]:.1f} tok/s; "
                  f"prompt engine {eng_pp[-1]:.0f} vs bare {base_pp[-1]:.0f} tok/s", flush=True)
    print()
    print(f"model: {path} | threads {threads} | ctx {args.ctx} | flash attention {args.flash_attn} | "
          f"{args.tokens} tokens x {args.reps} reps (medians)")
    print(f"decode tokens/s  : Hearth engine {median(eng_dec):7.1f} | bare Llama.generate {median(base_dec):7.1f} "
          f"| ratio {median(eng_dec) / median(base_dec):.3f} (target >= 1.0)")
    print(f"prompt tokens/s  : Hearth engine {median(eng_pp):7.1f} | bare Llama.eval     {median(base_pp):7.1f} "
          f"| ratio {median(eng_pp) / median(base_pp):.3f}")


if __name__ == "__main__":
    main()
