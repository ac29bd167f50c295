"""What the Anthropic-compatible endpoint costs against the OpenAI one: streamed decode speed and time to
first token through ``POST /v1/messages`` vs ``POST /v1/chat/completions`` on the same request.

Same server, model (the starter), load options, prompts and greedy sampling; ``ignore_eos`` so that both
write exactly ``--tokens`` tokens. Each run's prompt is new (no KV prefix reuse); the two endpoints
alternate; medians. Two ways of reading the stream: raw SSE over httpx (the server alone), and the
official ``anthropic`` and ``openai`` clients (what an app sees, their parsing included).

    .venv/bin/python -m bench.anthropic_overhead [--tokens 128] [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import median, starter_model_path

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
    def next_i() -> int:
        counter[0] += 1
        return counter[0]

    openai_run(next_i())  # warm-up, both paths
    anthropic_run(next_i())
    o_ttft, o_rate, a_ttft, a_rate = [], [], [], []
    for _ in range(reps):
        t, r, n_o = openai_run(next_i())
        o_ttft.append(t)
        o_rate.append(r)
        t, r, n_a = anthropic_run(next_i())
        a_ttft.append(t)
        a_rate.append(r)
        assert n_o == n_a, f"the endpoints wrote {n_o} and {n_a} tokens"
    print(f"{label}")
    print(f"  decode tok/s   openai {median(o_rate):7.1f}   anthropic {median(a_rate):7.1f}   "
          f"ratio {median(a_rate) / median(o_rate):.3f}  (target >= 0.97)")
    print(f"  TTFT ms        openai {median(o_ttft) * 1000:7.1f}   anthropic {median(a_ttft) * 1000:7.1f}   "
          f"difference {(median(a_ttft) - median(o_ttft)) * 1000:+.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="hearth-bench-anthropic-"))
    os.environ["HEARTH_HOME"] = str(home)
    import anthropic
    import openai

    from core.library import Library
    from core.server import ApiServer, ModelHost, ServerConfig

    models = home / "data" / "models"
    models.mkdir(parents=True)
    model_file = models / starter_model_path().name
    os.link(starter_model_path(), model_file)
    Library().register(model_file, name="starter", source="starter")

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
