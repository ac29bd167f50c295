"""What the Anthropic-compatible endpoint costs against the OpenAI one: streamed decode speed and time to
first token through ``POST /v1/messages`` vs ``POST /v1/chat/completions`` on the same request.

Same server, model (the starter), load options, prompts and greedy sampling; ``ignore_eos`` so that both
write exactly ``--tokens`` tokens. Each run's prompt is new (no KV prefix reuse); the two endpoints
alternate; medians. Two ways of reading the stream: raw SSE over httpx (the server alone), and the
official ``anthropic`` and ``openai`` clients (what an app sees, their parsing included). Besides wall
time, the CPU time of this process (server, request threads and client; the engine works in its own
process) per token: on a busy machine, where the wall-clock rates swing with the neighbours' load, it
is the steadier measure of what each endpoint costs.

    .venv/bin/python -m bench.anthropic_overhead [--tokens 128] [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from bench.common import median, starter_home

QUESTION = "Write a long story about a lighthouse keeper and the storm that changed her life."
Run = tuple[float, float, int]  # time to first token (s), decode tokens/s, tokens


def prompt(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Story number {i}. {QUESTION}"}]


def _rate(start: float, first: float, last: float, n: int) -> Run:
    return first - start, (n - 1) / (last - first), n


def raw_openai(base: str, tokens: int, i: int) -> Run:
    import httpx

    body = {"model": "starter", "messages": prompt(i), "max_tokens": tokens, "stream": True, "temperature": 0,
            "ignore_eos": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first = last = 0.0
    n = 0
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=600) as response:
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            data = json.loads(line[6:])
            if data["choices"] and data["choices"][0]["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
            if data.get("usage"):
                n = data["usage"]["completion_tokens"]
    return _rate(start, first, last, n)


def raw_anthropic(base: str, tokens: int, i: int) -> Run:
    import httpx

    body = {"model": "starter", "messages": prompt(i), "max_tokens": tokens, "stream": True, "temperature": 0,
            "ignore_eos": True}
    start = time.perf_counter()
    first = last = 0.0
    n = 0
    with httpx.stream("POST", f"{base}/v1/messages", json=body, timeout=600) as response:
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            data = json.loads(line[6:])
            if data["type"] == "content_block_delta":
                last = time.perf_counter()
                first = first or last
            elif data["type"] == "message_delta":
                n = data["usage"]["output_tokens"]
    return _rate(start, first, last, n)


def sdk_openai(client: object, tokens: int, i: int) -> Run:
    import openai

    assert isinstance(client, openai.OpenAI)
    start = time.perf_counter()
    first = last = 0.0
    n = 0
    for chunk in client.chat.completions.create(
        model="starter", messages=prompt(i), max_tokens=tokens, stream=True, temperature=0,  # type: ignore[call-overload]
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            last = time.perf_counter()
            first = first or last
        if chunk.usage is not None:
            n = chunk.usage.completion_tokens
    return _rate(start, first, last, n)


def sdk_anthropic(client: object, tokens: int, i: int) -> Run:
    import anthropic

    assert isinstance(client, anthropic.Anthropic)
    start = time.perf_counter()
    first = last = 0.0
    with client.messages.stream(model="starter", messages=prompt(i), max_tokens=tokens,  # type: ignore[arg-type]
                                extra_body={"temperature": 0, "ignore_eos": True}) as stream:
        for _text in stream.text_stream:
            last = time.perf_counter()
            first = first or last
        n = stream.get_final_message().usage.output_tokens
    return _rate(start, first, last, n)


def compare(label: str, openai_run: Callable[[int], Run], anthropic_run: Callable[[int], Run], reps: int,
            counter: list[int]) -> None:
    def timed(run: Callable[[int], Run]) -> tuple[float, float, int, float]:
        counter[0] += 1
        cpu = time.process_time()
        ttft, rate, n = run(counter[0])
        return ttft, rate, n, (time.process_time() - cpu) / max(n, 1)

    timed(openai_run)  # warm-up, both paths
    timed(anthropic_run)
    o_runs, a_runs = [], []
    for _ in range(reps):
        o_runs.append(timed(openai_run))
        a_runs.append(timed(anthropic_run))
        assert o_runs[-1][2] == a_runs[-1][2], f"the endpoints wrote {o_runs[-1][2]} and {a_runs[-1][2]} tokens"

    def med(runs: list[tuple[float, float, int, float]], k: int) -> float:
        return median([r[k] for r in runs])

    print(label)
    print(f"  decode tok/s       openai {med(o_runs, 1):7.1f}   anthropic {med(a_runs, 1):7.1f}   "
          f"ratio {med(a_runs, 1) / med(o_runs, 1):.3f}  (target >= 0.97)")
    print(f"  TTFT ms            openai {med(o_runs, 0) * 1000:7.1f}   anthropic {med(a_runs, 0) * 1000:7.1f}   "
          f"difference {(med(a_runs, 0) - med(o_runs, 0)) * 1000:+.1f} ms")
    print(f"  CPU us per token   openai {med(o_runs, 3) * 1e6:7.0f}   anthropic {med(a_runs, 3) * 1e6:7.0f}   "
          f"anthropic/openai {med(a_runs, 3) / med(o_runs, 3):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    starter_home("hearth-bench-anthropic-")
    import anthropic
    import openai

    from core.server import ApiServer, ModelHost, ServerConfig

    host = ModelHost()
    host.preload("starter")
    server = ApiServer(ServerConfig(port=0), host)
    server.start()
    base = server.base_url
    oa = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=600)
    an = anthropic.Anthropic(base_url=base, api_key="x", max_retries=0, timeout=600)
    counter = [0]
    try:
        print(f"starter model, {args.tokens} tokens per answer, greedy, {args.reps} runs each, medians")
        compare("raw SSE over httpx (the server alone)", lambda i: raw_openai(base, args.tokens, i),
                lambda i: raw_anthropic(base, args.tokens, i), args.reps, counter)
        compare("official clients (openai, anthropic)", lambda i: sdk_openai(oa, args.tokens, i),
                lambda i: sdk_anthropic(an, args.tokens, i), args.reps, counter)
    finally:
        server.stop()
        host.close()


if __name__ == "__main__":
    main()
