"""What an image costs before the first token, and the engine's overhead over llama.cpp's own mtmd helper.

For each set-up (the tiny vision fixture; the starter model with a random 640-wide LLaVA projector of
the same shape, unless --no-starter), in one run:
  * through the engine (client -> worker process -> client): time from sending a one-token chat to its
    answer, with one image and with none (the same words), each evaluated from a cold cache;
  * llama.cpp's mtmd helper called directly in this process on the same prompt text and image bytes:
    mtmd_helper_bitmap_init_from_buf + mtmd_tokenize + mtmd_helper_eval_chunks + one greedy sample;
  * the engine's worker code run in this process on the same request (no pipe): the engine's own Python
    (template, checks, cache keys, chunk walk) without the process boundary.
Reps alternate engine and direct runs (the machine is shared and noisy); figures are medians, ratios the
median of each rep's ratio. The engine keeps its cache's first cell (the BOS token) between the reps;
everything else, the image included, is evaluated afresh each time.

    .venv/bin/python -m bench.image_prompt [--reps 7] [--threads 1] [--no-starter]
"""

from __future__ import annotations

import argparse
import ctypes
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import median, starter_model_path

QUESTION = "What is in the picture? Answer in one word."


def engine_times(model: Path, mmproj: Path, image: bytes, threads: int) -> tuple[Any, Any]:
    """An engine with the model and projector loaded, and a function timing one cold one-token answer."""
    from core.engine import Engine, LoadOptions, SamplingParams

    engine = Engine()
    engine.load(model, LoadOptions(n_ctx=1024, n_threads=threads, mmproj=str(mmproj)))
    greedy = SamplingParams(temperature=0, max_tokens=1, repeat_penalty=1.0)

    def run(with_image: bool) -> float:
        engine.complete("Z", greedy)  # moves the cache off the prompt (all but the BOS cell)
        content: Any = [{"type": "image", "data": image}, {"type": "text", "text": QUESTION}] if with_image \
            else QUESTION
        started = time.perf_counter()
        done = engine.chat([{"role": "user", "content": content}], greedy)
        seconds = time.perf_counter() - started
        assert done.stats.completion_tokens == 1 and (done.stats.image_tokens > 0) == with_image
        return seconds

    def follow_up(warm: bool) -> float:
        """Turn 2 of a chat whose turn 1 had the image: after turn 1 (cache reused) or from a cold cache."""
        turn1 = [{"role": "user", "content": [{"type": "image", "data": image}, {"type": "text", "text": QUESTION}]}]
        turn2 = [*turn1, {"role": "assistant", "content": "A picture."},
                 {"role": "user", "content": "And what colour is it?"}]
        if warm:
            engine.chat(turn1, greedy)
        else:
            engine.complete("Z", greedy)
        started = time.perf_counter()
        engine.chat(turn2, greedy)
        return time.perf_counter() - started

    run.follow_up = follow_up  # type: ignore[attr-defined]
    return engine, run


def worker_in_process(model: Path, mmproj: Path, image: bytes, threads: int) -> Any:
    """The engine's worker code run in this process (no pipe, no second process): what the engine's own
    Python costs beside llama.cpp's, without the process boundary. Returns a function timing one cold answer."""
    from core.engine.ops.generate import op_chat
    from core.engine.params import LoadOptions, SamplingParams
    from core.engine.worker import Worker

    class Pipe:  # stands in for the connection to the client: answers are dropped
        def send(self, _message: object) -> None:
            pass

    class Flag:
        value = 0

    worker = Worker(Pipe(), Flag())  # type: ignore[arg-type]
    worker.op_load({"path": str(model), "options": LoadOptions(n_ctx=1024, n_threads=threads,
                                                               mmproj=str(mmproj)).to_dict()})
    request = {"op": "chat", "tools": None,
               "params": SamplingParams(temperature=0, max_tokens=1, repeat_penalty=1.0).to_dict(),
               "messages": [{"role": "user", "content": [{"type": "image", "data": image},
                                                         {"type": "text", "text": QUESTION}]}]}

    def run() -> float:
        worker.reset_cache()
        started = time.perf_counter()
        op_chat(worker, request)
        return time.perf_counter() - started

    run.worker = worker  # type: ignore[attr-defined]
    return run


class Direct:
    """llama.cpp's own path in this process: the model, a context and an mtmd context, as mtmd-cli sets them up."""

    def __init__(self, model: Path, mmproj: Path, threads: int) -> None:
        import llama_cpp as L
        import llama_cpp.mtmd_cpp as M

        from core.engine.backends import load_backends
        from core.engine.llama_log import LlamaLog
        from core.engine.templates import choose_format, render

        self.L, self.M = L, M
        self.log = LlamaLog()
        load_backends()
        M.mtmd_helper_log_set(self.log.callback, ctypes.c_void_p(0))
        self.model = L.llama_model_load_from_file(str(model).encode(), L.llama_model_default_params())
        cparams = L.llama_context_default_params()
        cparams.n_ctx, cparams.n_batch, cparams.n_ubatch = 1024, 512, 512
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.swa_full = True  # as the engine's context (core.engine.worker), so both do the same work
        self.ctx = L.llama_init_from_model(self.model, cparams)
        self.mem = L.llama_get_memory(self.ctx)
        params = M.mtmd_context_params_default()
        params.use_gpu, params.print_timings, params.n_threads = False, False, threads
        self.mtmd = M.mtmd_init_from_file(str(mmproj).encode(), self.model, params)
        assert self.mtmd, "\n".join(self.log.lines)
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
        self.sampler = chain
        vocab = L.llama_model_get_vocab(self.model)
        buf = ctypes.create_string_buffer(256)
        n = L.llama_model_meta_val_str(self.model, b"general.architecture", buf, 256)
        arch = buf.value.decode() if n >= 0 else ""
        template = L.llama_model_chat_template(self.model, None)
        fmt = choose_format(arch, template.decode() if template else None)
        bos_id = L.llama_vocab_bos(vocab)
        piece = ctypes.create_string_buffer(64)
        k = L.llama_token_to_piece(vocab, bos_id, piece, 64, 0, True)
        self.bos = piece.raw[:k].decode() if k > 0 else ""
        marker = M.mtmd_default_marker().decode()
        # The same prompt text the engine renders (core.engine.ops.vision flattens an image part to the marker).
        self.texts = {flag: render(fmt, [{"role": "user", "content": (marker if flag else "") + QUESTION}],
                                   bos_token=self.bos) for flag in (False, True)}
        self.add_bos = bool(L.llama_vocab_get_add_bos(vocab))

    def run(self, image: bytes, with_image: bool) -> float:
        L, M = self.L, self.M
        text = self.texts[with_image]
        L.llama_memory_clear(self.mem, True)
        started = time.perf_counter()
        bitmaps = []
        if with_image:
            buf = (ctypes.c_uint8 * len(image)).from_buffer_copy(image)
            bitmaps.append(M.mtmd_helper_bitmap_init_from_buf(self.mtmd, buf, len(image), False))
        data = text.encode()
        inp = M.mtmd_input_text()
        inp.text, inp.text_len = data, len(data)
        inp.add_special, inp.parse_special = self.add_bos and not (self.bos and text.startswith(self.bos)), True
        chunks = M.mtmd_input_chunks_init()
        array = (M.mtmd_bitmap_p_ctypes * max(1, len(bitmaps)))(*bitmaps)
        assert M.mtmd_tokenize(self.mtmd, chunks, ctypes.byref(inp), array, len(bitmaps)) == 0
        new_n_past = L.llama_pos(0)
        assert M.mtmd_helper_eval_chunks(self.mtmd, self.ctx, chunks, 0, 0, 512, True, ctypes.byref(new_n_past)) == 0
        L.llama_sampler_sample(self.sampler, self.ctx, -1)
        seconds = time.perf_counter() - started
        M.mtmd_input_chunks_free(chunks)
        for bitmap in bitmaps:
            M.mtmd_bitmap_free(bitmap)
        return seconds

    def close(self) -> None:
        self.L.llama_sampler_free(self.sampler)
        self.M.mtmd_free(self.mtmd)
        self.L.llama_free(self.ctx)
        self.L.llama_model_free(self.model)


def measure(label: str, model: Path, mmproj: Path, image: bytes, reps: int, threads: int) -> None:
    engine, engine_run = engine_times(model, mmproj, image, threads)
    direct = Direct(model, mmproj, threads)
    inner = worker_in_process(model, mmproj, image, threads)
    try:
        for _ in range(2):  # warm-up: first-call costs (allocations, page faults) on both sides
            engine_run(True), engine_run(False), direct.run(image, True), inner()
        with_image, without, raw, in_worker, image_ratio, overhead, code_overhead = [], [], [], [], [], [], []
        for rep in range(reps):
            if rep % 2:  # either side first in turn: a busy spell then hits both alike
                c, d = direct.run(image, True), inner()
            a = engine_run(True)
            b = engine_run(False)
            if not rep % 2:
                c, d = direct.run(image, True), inner()
            with_image.append(a)
            without.append(b)
            raw.append(c)
            in_worker.append(d)
            image_ratio.append(a / b)
            overhead.append(a / c)
            code_overhead.append(d / c)
        warm_turn, cold_turn, reuse = [], [], []
        for _ in range(reps):
            x, y = engine_run.follow_up(True), engine_run.follow_up(False)
            warm_turn.append(x)
            cold_turn.append(y)
            reuse.append(x / y)
    finally:
        engine.close()
        direct.close()
        inner.worker.unload()  # type: ignore[attr-defined]
    ms = 1000.0
    print(f"{label}:")
    print(f"  engine, one image:   {median(with_image) * ms:8.1f} ms to the first token")
    print(f"  engine, no image:    {median(without) * ms:8.1f} ms   -> an image costs x{median(image_ratio):.2f}")
    print(f"  mtmd helper direct:  {median(raw) * ms:8.1f} ms   -> engine overhead x{median(overhead):.3f} "
          f"(target <= 1.05)")
    print(f"  worker code in-process: {median(in_worker) * ms:5.1f} ms   -> without the process boundary "
          f"x{median(code_overhead):.3f}")
    print(f"  turn 2 after an image in turn 1: {median(warm_turn) * ms:.1f} ms with the cache reused, "
          f"{median(cold_turn) * ms:.1f} ms cold -> x{median(reuse):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="1: steadiest on a shared machine")
    parser.add_argument("--no-starter", action="store_true", help="only the tiny vision fixture")
    args = parser.parse_args()
    from tests.fixtures.tiny_vision import write_test_image, write_tiny_projector, write_tiny_vision

    folder = Path(tempfile.mkdtemp(prefix="hearth-image-bench-"))
    tiny = write_tiny_vision(folder)
    image = write_test_image(folder / "picture.png", "png", seed=1, size=(512, 384)).read_bytes()
    measure("tiny vision fixture (28-pixel LLaVA projector, 4 image tokens)", tiny.model, tiny.mmproj, image,
            args.reps, args.threads)
    if not args.no_starter:
        mmproj = write_tiny_projector(folder / "mmproj-starter.gguf", n_embd_text=640, image_size=224)
        measure("starter model (Gemma 3 270M) + random 640-wide LLaVA projector (224 pixels, 256 image tokens)",
                starter_model_path(), mmproj, image, args.reps, args.threads)


if __name__ == "__main__":
    main()
