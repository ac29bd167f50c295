"""What the local API server costs: streamed decode speed and time to first token through
``/v1/chat/completions`` with the official ``openai`` client vs the same ``Engine`` called directly,
and aggregate tokens/s with 1, 2 and 4 concurrent streaming clients.

Same model (the starter), load options (the user's defaults), sampling settings and prompts; direct
and server runs alternate over one shared engine, each prompt new (no KV prefix reuse); medians.
The server answers concurrent clients one after another (one generation at a time).

    .venv/bin/python -m bench.server_overhead [--tokens 128] [--reps 5]
"""

from __future__ import annotations

import argparse
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from bench.common import median, starter_home

QUESTION = "Write a long story about a lighthouse keeper and the storm that changed her life."


def prompt(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Story number {i}. {QUESTION}"}]


def direct(engine: object, params: object, i: int) -> tuple[float, float, int]:
    from core.engine import Completion, Engine, TextChunk

    assert isinstance(engine, Engine)
    start = time.perf_counter()
    first = last = 0.0
    done = None
    for item in engine.stream_chat(prompt(i), params):  # type: ignore[arg-type]
        if isinstance(item, TextChunk) and item.text:
            last = time.perf_counter()
            first = first or last
        elif isinstance(item, Completion):
            done = item
    assert done is not None
    n = done.stats.completion_tokens
    return first - start, (n - 1) / (last - first), n


def served(client: object, tokens: int, i: int) -> tuple[float, float, int]:
    import openai

    assert isinstance(client, openai.OpenAI)
    start = time.perf_counter()
    first = last = 0.0
    n = 0
    stream = client.chat.completions.create(
        model="starter", messages=prompt(i), max_tokens=tokens, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            last = time.perf_counter()
            first = first or last
        if chunk.usage is not None:
            n = chunk.usage.completion_tokens
    return first - start, (n - 1) / (last - first), n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    starter_home("hearth-bench-server-")
    import openai

    from core.engine import Engine
    from core.server import ApiServer, ModelHost, ServerConfig
    from core.server.generate import sampling

    with Engine() as engine:
        host = ModelHost(engine=engine)
        model = host.resolve("starter")
        engine.load(model.base.path, host.load_options(model))
        from dataclasses import replace

        params = replace(sampling(host, model, max_tokens=args.tokens), ignore_eos=True)
        server = ApiServer(ServerConfig(port=0), host)
        server.start()
        client = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=600)
        try:
            direct(engine, params, -1)  # warm-up, both paths
            served(client, args.tokens, -2)
            d_ttft, d_rate, s_ttft, s_rate = [], [], [], []
            for rep in range(args.reps):
                t, r, _ = direct(engine, params, 2 * rep)
                d_ttft.append(t)
                d_rate.append(r)
                t, r, _ = served(client, args.tokens, 2 * rep + 1)
                s_ttft.append(t)
                s_rate.append(r)
            print(f"starter model, {args.tokens} tokens per answer, {args.reps} runs each, medians")
            print(f"decode tok/s   direct {median(d_rate):7.1f}   server {median(s_rate):7.1f}   "
                  f"ratio {median(s_rate) / median(d_rate):.3f}  (target >= 0.95)")
            print(f"TTFT ms        direct {median(d_ttft) * 1000:7.1f}   server {median(s_ttft) * 1000:7.1f}   "
                  f"overhead {(median(s_ttft) - median(d_ttft)) * 1000:+.1f} ms  (target <= 20 ms)")
            counter = iter(range(1000, 10**6))
            lock = threading.Lock()

            def one(_: int) -> int:
                with lock:
                    i = next(counter)
                return served(client, args.tokens, i)[2]

            for clients in (1, 2, 4):
                start = time.perf_counter()
                with ThreadPoolExecutor(clients) as pool:
                    total = sum(pool.map(one, range(clients)))
                seconds = time.perf_counter() - start
                print(f"{clients} concurrent client(s): {total} tokens in {seconds:5.1f} s = "
                      f"{total / seconds:6.1f} tok/s aggregate")
        finally:
            server.stop()
            host.close()


if __name__ == "__main__":
    main()
