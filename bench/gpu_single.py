"""The one-GPU checks of ``bench/gpu_check.sh`` (the GPU issue), for a machine with an NVIDIA GPU.

``python bench/gpu_single.py CHECK --work DIR [--cuda-site DIR] [--adapter-from DIR]`` runs one check and
prints one line: its figures on success (exit 0), ``SKIP reason`` when this machine cannot run it (exit 0),
or the reason it failed (exit 1); the details go to stderr. Each check keeps its Hearth folders in
``DIR/home``. The llama.cpp checks run llama-cpp-python built for CUDA by ``cuda_build`` into ``--cuda-site``,
put first on the path of the check and of the processes it starts, so the venv's own build is never
touched; without that build they say SKIP. Every check but ``hw`` runs on one GPU, the first
(``CUDA_VISIBLE_DEVICES=0`` unless it is set). The checks:

- ``cuda_build``: llama-cpp-python 0.3.36 compiled with CUDA for this GPU's architecture, one CPU backend
  and no multimodal library (a few minutes on 16 cores), or the wheel an earlier run kept in
  ``~/.cache/hearth/gpu-check-wheel/``; installed with ``pip install --target`` into ``--cuda-site``.
  ``HEARTH_LLAMA_SDIST=path.tar.gz`` builds from a local sdist (a machine that cannot reach PyPI).
- ``hw``: ``hearth hw --json`` with that build: each GPU with its llama.cpp device and memory, and where
  models run; fails when no GPU runs on the CUDA backend.
- ``fit_vs_vram``: the fit estimate's GPU bytes (``core.fit.assess`` with every layer offloaded) against the
  engine process's GPU memory (nvidia-smi) after one full prompt batch, at 2048, 8192 and 32768 tokens of
  context, for the starter model and the GGUF named by ``GPU_CHECK_MODEL`` when set; fails when an
  estimate is more than 10% below the use (an underestimate is what sends a user's load out of memory).
- ``chat_speed``: 128 greedy tokens of the starter model on the CPU (``HEARTH_GPU=off``: no GPU backend
  at all) and fully offloaded, prompt and decode tokens/s as medians of 3; fails when the offloaded model
  is not on a CUDA device.
- ``lora_cuda``, ``qlora_cuda``: 20-step fine-tunes of the starter on CUDA through Hearth's job process
  (``core.jobs``); QLoRA with a 4-bit NF4 base (bitsandbytes, installed into the check's folder when this
  Python lacks it). Steps/s, loss, and the job's peak GPU memory against its plan's.
- ``adapter_chat``: ``lora_cuda``'s adapter exported to a GGUF LoRA (``hearth export``'s default type) and
  chatted with, fully offloaded, beside the base's answer to the same question.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import one_line  # noqa: E402  (after the path)

if TYPE_CHECKING:
    from core.engine import ModelStatus

VERSION = "0.3.36"
# GGML_BACKEND_DL: the backends are loadable libraries, registered by core.engine.backends.load_backends as
# in the app's own build; one CPU backend, for this CPU (_cpu_cmake_args), and no libmtmd keep the compile short.
CMAKE_ARGS = "-DGGML_CUDA=on -DLLAVA_BUILD=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=OFF"
# On x86 this llama.cpp refuses GGML_NATIVE with GGML_BACKEND_DL ("GGML_NATIVE is not compatible with
# GGML_BACKEND_DL", ggml/src/ggml-cpu/CMakeLists.txt: the backend's feature check needs named instruction sets).
# GGML_NATIVE=OFF turns on SSE4.2, AVX, AVX2, BMI2, FMA and F16C (INS_ENB in ggml/CMakeLists.txt); these add
# the AVX-512 and VNNI sets the CPU reports in /proc/cpuinfo. AMX stays off, as in core/fit/measure.py.
X86_SWITCHES = {"GGML_AVX512": ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"),
                "GGML_AVX512_VBMI": ("avx512_vbmi",), "GGML_AVX512_VNNI": ("avx512_vnni",),
                "GGML_AVX512_BF16": ("avx512_bf16",), "GGML_AVX_VNNI": ("avx_vnni",)}
WHEEL_CACHE = Path.home() / ".cache" / "hearth" / "gpu-check-wheel"
BUILD_TIMEOUT = 900
CONTEXTS = (2048, 8192, 32768)
WORST_UNDERESTIMATE = 0.10  # an estimate this far below the measured use fails fit_vs_vram
TOKENS = 128
RUNS = 3
STEPS = 20
MIB = 1 << 20


@dataclass(frozen=True)
class Places:
    """Where a check works and what earlier checks left for it."""

    work: Path  # this check's own folder
    cuda_site: Path | None  # llama-cpp-python built for CUDA: cuda_build writes it, the llama.cpp checks read it
    adapter_from: Path | None  # lora_cuda's folder (its done.json names the adapter), for adapter_chat


# -- shared helpers ---------------------------------------------------------------------------------------
def _run(cmd: list[str], *, env: dict[str, str] | None = None,
         timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in the checkout (this process's environment unless ``env``); its output goes to the log."""
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    sys.stderr.write(done.stdout + done.stderr)
    return done


def _tail(done: subprocess.CompletedProcess[str]) -> str:
    lines = (done.stderr.strip() or done.stdout.strip()).splitlines()
    return lines[-1].strip() if lines else f"exit code {done.returncode}"


def _prepend(variable: str, path: Path) -> None:
    """Put ``path`` first in a path list of this process's environment (and so of its children's)."""
    os.environ[variable] = os.pathsep.join(filter(None, [str(path), os.environ.get(variable)]))


def _use_cuda_site(site: Path | None) -> str | None:
    """Put the CUDA build first for this process and the processes it starts; a SKIP line when it is missing."""
    if site is None or not (site / "llama_cpp").is_dir():
        return "SKIP no CUDA build of llama-cpp-python to run (see cuda_build)"
    if "llama_cpp" in sys.modules:
        raise RuntimeError("llama_cpp was imported before the CUDA build was put on the path")
    sys.path.insert(0, str(site))
    _prepend("PYTHONPATH", site)  # child processes (the hardware probe); the engine's spawned worker gets sys.path
    return None


def _smi(*query: str) -> list[list[str]]:
    """nvidia-smi's CSV answer to ``query``, one list of fields per row."""
    done = subprocess.run(["nvidia-smi", *query, "--format=csv,noheader,nounits"], capture_output=True, text=True,
                          timeout=60, check=False)
    return [[field.strip() for field in line.split(",")] for line in done.stdout.splitlines() if line.strip()]


class GpuMemory:
    """Memory in use on the checks' GPU, in MiB, as nvidia-smi reports it; the device's use when made is the
    baseline for processes nvidia-smi does not list."""

    def __init__(self) -> None:
        self.gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]  # an index or a UUID: both do for --id
        self.baseline = self.device_used()

    def device_used(self) -> int:
        rows = _smi("--query-gpu=memory.used", f"--id={self.gpu}")
        return int(rows[0][0]) if rows and rows[0][0].isdigit() else 0

    def of(self, pid: int) -> tuple[int, str]:
        """``pid``'s GPU memory and how it was read: "process" (``--query-compute-apps``), or "device" (the
        device's use above the baseline) where nvidia-smi does not list it, as in a container, whose process
        IDs are not the host's."""
        rows = [r for r in _smi("--query-compute-apps=pid,used_memory") if r[0] == str(pid) and r[1].isdigit()]
        if rows:
            return sum(int(r[1]) for r in rows), "process"
        return self.device_used() - self.baseline, "device"


class PeakSampler:
    """The most GPU memory a process held, sampled twice a second in a thread while it runs."""

    def __init__(self, pid: int, memory: GpuMemory) -> None:
        self.pid, self.memory = pid, memory
        self.peak, self.how = 0, "process"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="gpu-peak", daemon=True)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            used, how = self.memory.of(self.pid)
            if used >= self.peak:
                self.peak, self.how = used, how


@contextlib.contextmanager
def _gpu_off() -> Iterator[None]:
    """Engines started inside load no GPU backend at all (the user's switch, core.engine.backends.gpu_disabled)."""
    old = os.environ.get("HEARTH_GPU")
    os.environ["HEARTH_GPU"] = "off"
    try:
        yield
    finally:
        if old is None:
            del os.environ["HEARTH_GPU"]
        else:
            os.environ["HEARTH_GPU"] = old


def _require_cuda(status: ModelStatus) -> None:
    """Fail unless every layer of the loaded model is on a CUDA device."""
    on_cuda = sum(layers for place, layers in status.offload if place.startswith("CUDA"))
    if on_cuda < status.n_layer + 1:
        raise RuntimeError(f"{on_cuda} of {status.n_layer + 1} layers on CUDA (offload: {status.offload or 'none'})"
                           + (f"; {status.gpu_note}" if status.gpu_note else ""))


def _long_text(lines: int) -> str:
    """Plain text of about 19 tokens a line, numbered so that no two lines are alike."""
    return "\n".join(f"Line {i}: the quick brown fox jumps over the lazy dog by the river." for i in range(lines))


def _words(text: str, n: int = 8) -> str:
    words = text.split()
    return " ".join(words[:n]) + (" ..." if len(words) > n else "")


# -- cuda_build -------------------------------------------------------------------------------------------
def _cuda_arch() -> str:
    """This GPU's architecture for CMAKE_CUDA_ARCHITECTURES ("90-real" on an H100), "native" when nvidia-smi
    does not say. Named rather than "native" so that CMake older than 3.24 builds it too, and so that the
    cached wheel is kept per architecture (a wheel for sm_90 has no kernels for an sm_80 GPU)."""
    rows = _smi("--query-gpu=compute_cap", f"--id={os.environ.get('CUDA_VISIBLE_DEVICES', '0').split(',')[0]}")
    cap = rows[0][0] if rows else ""
    return f"{cap.replace('.', '')}-real" if re.fullmatch(r"\d+\.\d+", cap) else "native"


def _cpu_cmake_args() -> str:
    """The CPU backend's switches: this CPU's instruction sets on x86, GGML_NATIVE elsewhere (ARM allows it)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "-DGGML_NATIVE=ON"
    found = re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    flags = set(found.group(1).split()) if found else set()
    return " ".join(["-DGGML_NATIVE=OFF", *(f"-D{name}=ON" for name, sets in X86_SWITCHES.items()
                                             if flags.issuperset(sets))])


def _find_nvcc() -> Path | None:
    found = shutil.which("nvcc")
    candidates = [found] if found else []
    candidates += [str(Path(os.environ[v]) / "bin" / "nvcc") for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    candidates.append("/usr/local/cuda/bin/nvcc")
    return next((Path(c) for c in candidates if Path(c).is_file()), None)


def _has_cublas(nvcc: Path) -> bool:
    """Whether the toolkit beside ``nvcc`` (or the system's library path) has cuBLAS, which ggml-cuda links."""
    root = nvcc.resolve().parent.parent
    folders = [root / "lib64", root / "lib", *root.glob("targets/*/lib")]
    if any(next(folder.glob("libcublas.so*"), None) for folder in folders if folder.is_dir()):
        return True
    if not shutil.which("ldconfig"):
        return False
    listed = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=False)  # Debian's toolkit
    return "libcublas.so" in listed.stdout


def _build_wheel(flags: str, nvcc: Path, out: Path) -> Path:
    """Compile llama-cpp-python with ``flags`` into a wheel in ``out``."""
    source = os.environ.get("HEARTH_LLAMA_SDIST") or f"llama-cpp-python=={VERSION}"
    env = {**os.environ, "CMAKE_ARGS": flags, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2),
           "CUDACXX": str(nvcc), "PATH": os.pathsep.join([str(nvcc.parent), os.environ.get("PATH", "")])}
    # --no-cache-dir: pip's wheel cache is keyed by the version, not by CMAKE_ARGS, and would hand back a
    # CPU build made earlier on this machine.
    try:
        done = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-w", str(out), source],
                    env=env, timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"the build took over {BUILD_TIMEOUT} s") from exc
    wheels = sorted(out.glob("llama_cpp_python-*.whl"))
    if done.returncode != 0 or not wheels:
        raise RuntimeError(f"pip wheel failed: {_tail(done)}")
    return wheels[-1]


def _unresolved_libraries(lib: Path) -> list[str]:
    """The libraries the CUDA backend links that the dynamic loader cannot find (ldd's "not found")."""
    if not shutil.which("ldd"):
        return []
    missing = set()
    for library in lib.glob("libggml-cuda*"):
        done = _run(["ldd", str(library)])
        missing |= {line.split()[0] for line in done.stdout.splitlines() if "not found" in line}
    return sorted(missing)


def check_cuda_build(places: Places) -> str:
    if places.cuda_site is None:
        raise RuntimeError("cuda_build needs --cuda-site DIR, where the build is installed")
    arch = _cuda_arch()
    flags = f"{CMAKE_ARGS} {_cpu_cmake_args()} -DCMAKE_CUDA_ARCHITECTURES={arch}"
    print(f"CMAKE_ARGS={flags}", file=sys.stderr)
    # Kept per version and flags (GPU architecture and CPU instruction sets included), as the Makefile keeps the
    # app's wheel: a machine with another GPU or CPU never picks it up.
    cache = WHEEL_CACHE / f"llama-cpp-python-{VERSION}-{zlib.crc32(flags.encode()):08x}"
    cached = sorted(cache.glob("*.whl"))
    if cached:
        wheel, how = cached[-1], f"the wheel cached in {cache}"
    else:
        nvcc = _find_nvcc()
        if nvcc is None:
            return ("SKIP nvcc (the CUDA toolkit) is missing: install NVIDIA's cuda-toolkit package (or Debian and "
                    "Ubuntu's nvidia-cuda-toolkit) and run again")
        if not _has_cublas(nvcc):
            return (f"SKIP the CUDA toolkit of {nvcc} has no cuBLAS, which llama.cpp's CUDA backend links: install "
                    "NVIDIA's libcublas-dev package for that CUDA version (or cuda-toolkit) and run again")
        if not (shutil.which("c++") or shutil.which("g++")):
            return "SKIP no C++ compiler: install build-essential (Debian, Ubuntu) or gcc-c++ and run again"
        release = re.search(r"release ([\d.]+)", _run([str(nvcc), "--version"]).stdout)
        started = time.monotonic()
        built = _build_wheel(flags, nvcc, places.work / "wheel")
        cache.mkdir(parents=True, exist_ok=True)
        wheel = cache / built.name
        shutil.copy2(built, cache / f".{built.name}.partial")
        os.replace(cache / f".{built.name}.partial", wheel)  # a run killed while copying leaves no half wheel
        how = (f"built with nvcc {release.group(1) if release else '?'} in {time.monotonic() - started:.0f} s, "
               f"kept in {cache}")
    # --target: a folder of its own, put first on the path by the checks that use it; the venv stays as it is.
    done = _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir", "--target",
                 str(places.cuda_site), str(wheel)])
    if done.returncode != 0:
        raise RuntimeError(f"pip install --target failed: {_tail(done)}")
    backends = sorted({p.name.split(".")[0] for p in (places.cuda_site / "llama_cpp" / "lib").glob("libggml-*")})
    print(f"backend libraries: {backends}", file=sys.stderr)
    if not any(name.startswith("libggml-cuda") for name in backends):
        raise RuntimeError(f"the wheel has no CUDA backend (libggml-cuda): {', '.join(backends) or 'no backends'}")
    missing = _unresolved_libraries(places.cuda_site / "llama_cpp" / "lib")
    if missing:
        # ggml skips a backend library it cannot load without a word: say here what hw would only see as "no CUDA".
        raise RuntimeError(f"libggml-cuda cannot find {', '.join(missing)}: add the CUDA toolkit's lib64 folder to "
                           "LD_LIBRARY_PATH (or to /etc/ld.so.conf.d) and run again")
    return (f"llama-cpp-python {VERSION} with CUDA for arch {arch} ({wheel.stat().st_size / MIB:.0f} MiB wheel, "
            f"{how})")


# -- hw ---------------------------------------------------------------------------------------------------
def check_hw(places: Places) -> str:
    skip = _use_cuda_site(places.cuda_site)
    if skip:
        return skip
    done = _run([sys.executable, "-m", "core", "hw", "--json"])
    if done.returncode != 0:
        raise RuntimeError(f"hearth hw failed: {_tail(done)}")
    hw = json.loads(done.stdout)
    gpus = [f"{g['name']}: {g['device'] or 'no device'} ({g['backend'] or 'no backend'}), "
            f"{g['total_bytes'] / 2**30:.1f} GiB, {g['free_bytes'] / 2**30:.1f} GiB free" for g in hw["gpus"]]
    if not any(g["backend"] == "CUDA" for g in hw["gpus"]):
        raise RuntimeError(f"no GPU on the CUDA backend (llama.cpp backends: {hw['llama'].get('backends')}; "
                           f"GPUs: {'; '.join(gpus) or 'none'}; notes: {'; '.join(hw['notes']) or 'none'})")
    return f"{'; '.join(gpus)}; models run on {hw['runs_on']}"


# -- fit_vs_vram ------------------------------------------------------------------------------------------
def _engine_gpu_mib(path: Path, n_ctx: int) -> tuple[int, str]:
    """The GPU memory of an engine worker that loaded ``path`` fully offloaded and decoded a full prompt batch."""
    from core.engine import Engine, LoadOptions, SamplingParams

    memory = GpuMemory()  # before the worker starts: the baseline where nvidia-smi does not list it
    with Engine() as engine:
        _require_cuda(engine.load(path, LoadOptions(n_ctx=n_ctx, n_gpu_layers=-1)))
        # Over 512 tokens: one full batch, so the compute buffers, cuBLAS's workspace and ggml's CUDA pool have
        # all grown to what a long prompt needs (core/fit/measure.py measures RAM after the same batch).
        engine.chat([{"role": "user", "content": _long_text(50)}], SamplingParams(temperature=0, max_tokens=8))
        if engine.pid is None:
            raise RuntimeError("the engine's worker is gone")
        return memory.of(engine.pid)


def check_fit_vs_vram(places: Places) -> str:
    skip = _use_cuda_site(places.cuda_site)
    if skip:
        return skip
    from bench.common import starter_model_path
    from core.fit import ModelShape, assess
    from core.hardware import detect_hardware

    hardware = detect_hardware()
    models = [starter_model_path()]
    if os.environ.get("GPU_CHECK_MODEL"):
        models.append(Path(os.environ["GPU_CHECK_MODEL"]).expanduser())
    parts, ratios = [], []
    for path in models:
        shape = ModelShape.from_gguf(path)
        figures = []
        for n_ctx in CONTEXTS:
            verdict = assess(shape, hardware, n_ctx=n_ctx, gpu_layers=-1)
            estimate = verdict.estimate
            if estimate.n_gpu_layers == 0:
                raise RuntimeError("the fit estimate sees no GPU llama.cpp can use: is the CUDA build loaded?")
            if not verdict.fits:
                figures.append(f"ctx {estimate.n_ctx}: does not fit ({verdict.reason})")
                continue
            used, how = _engine_gpu_mib(path, n_ctx)
            used = max(used, 1)  # a device delta of nothing would be a broken measurement, not a division by zero
            est = estimate.gpu_bytes / MIB
            ratios.append(est / used)
            figures.append(f"ctx {estimate.n_ctx}: est {est:.0f} MiB vs used {used} MiB (x{est / used:.2f}"
                           + (", device delta" if how == "device" else "") + ")")
            print(f"{path.name} at {estimate.n_ctx}: {json.dumps(estimate.to_dict())}", file=sys.stderr)
        parts.append(f"{path.stem}: {', '.join(figures)}")
    line = "; ".join(parts)
    if ratios and min(ratios) < 1 - WORST_UNDERESTIMATE:
        raise RuntimeError(f"an estimate is more than {WORST_UNDERESTIMATE:.0%} below the use: {line}")
    return line


# -- chat_speed -------------------------------------------------------------------------------------------
def _chat_speed(path: Path, n_gpu_layers: int) -> tuple[float, float, ModelStatus]:
    """Median prompt and decode tokens/s of ``RUNS`` greedy answers of ``TOKENS`` tokens, and the load's status."""
    from core.engine import Engine, LoadOptions, SamplingParams

    params = SamplingParams(temperature=0, max_tokens=TOKENS, ignore_eos=True)
    prompt, decode = [], []
    with Engine() as engine:
        status = engine.load(path, LoadOptions(n_ctx=2048, n_gpu_layers=n_gpu_layers))
        # Not timed: the first answer loads the kernels and grows the buffers.
        engine.chat([{"role": "user", "content": "Hello."}], SamplingParams(temperature=0, max_tokens=8))
        for run in range(RUNS):
            # Another first line each run, so that no run takes its prompt from the previous one's KV cache.
            messages = [{"role": "user", "content": f"Run {run + 1}. Summarise:\n{_long_text(25)}"}]
            stats = engine.chat(messages, params).stats
            print(f"n_gpu_layers {n_gpu_layers}, run {run + 1}: {stats}", file=sys.stderr)
            if stats.completion_tokens != TOKENS:
                raise RuntimeError(f"{stats.completion_tokens} tokens written, {TOKENS} asked for")
            prompt.append(stats.prompt_tokens_per_second)
            decode.append(stats.tokens_per_second)
    return statistics.median(prompt), statistics.median(decode), status


def check_chat_speed(places: Places) -> str:
    skip = _use_cuda_site(places.cuda_site)
    if skip:
        return skip
    from bench.common import starter_model_path

    path = starter_model_path()
    with _gpu_off():
        cpu_prompt, cpu_decode, cpu = _chat_speed(path, 0)
    if cpu.offload:
        raise RuntimeError(f"the CPU run offloaded layers: {cpu.offload}")
    gpu_prompt, gpu_decode, gpu = _chat_speed(path, -1)
    _require_cuda(gpu)
    return (f"CPU {cpu_prompt:.0f}/{cpu_decode:.0f} tok/s, {gpu.where} {gpu_prompt:.0f}/{gpu_decode:.0f} tok/s "
            f"(prompt/decode, {TOKENS} greedy tokens, medians of {RUNS}): x{gpu_prompt / max(cpu_prompt, 1e-9):.1f} "
            f"prompt, x{gpu_decode / max(cpu_decode, 1e-9):.1f} decode")


# -- lora_cuda, qlora_cuda --------------------------------------------------------------------------------
def _dataset(work: Path) -> Path:
    """A small chat JSONL: four made-up facts, 16 times each, to learn in 20 steps."""
    facts = [("Who wrote the handbook?", "Ada Marlow wrote it."), ("What colour is the door?", "The door is teal."),
             ("Where is the office?", "Above the bakery on Quay Street."), ("When is lunch?", "At half past twelve.")]
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for _ in range(16) for q, a in facts]
    path = work / "chat.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def _torch_cuda_skip() -> str | None:
    """A SKIP line when this Python's torch cannot train on CUDA (asked in a child: this process stays off the GPU)."""
    done = _run([sys.executable, "-c", "import torch; print(torch.__version__, torch.cuda.is_available())"])
    words = done.stdout.split()
    if done.returncode != 0 or len(words) < 2:
        return f"SKIP torch does not import: {_tail(done)}"
    if words[-1] != "True":
        return (f"SKIP this Python's torch {words[0]} sees no CUDA GPU: install torch's CUDA build (pip install "
                "torch from PyPI) to run the fine-tunes")
    return None


def _bitsandbytes_skip(work: Path) -> str | None:
    """None when the job can import bitsandbytes (installed into ``work/bnb-site`` if need be), else a SKIP line."""
    probe = [sys.executable, "-c", "import bitsandbytes; print(bitsandbytes.__version__)"]
    if _run(probe).returncode == 0:
        return None
    site = work / "bnb-site"
    # --no-deps: its requirement on torch would install a second torch beside the venv's.
    done = _run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), "bitsandbytes"])
    if done.returncode != 0:
        return f"SKIP bitsandbytes is not installed and pip could not install it ({_tail(done)})"
    _prepend("PYTHONPATH", site)  # the job process imports it from there
    done = _run(probe)
    return None if done.returncode == 0 else f"SKIP bitsandbytes does not import: {_tail(done)}"


def _finetune(method: str, places: Places) -> str:
    """A 20-step fine-tune of the starter on CUDA through Hearth's job process, and its figures."""
    from bench.common import starter_model_path
    from core.finetune.launch import spec_from_inputs
    from core.jobs import JobProcess

    skip = _torch_cuda_skip() or (_bitsandbytes_skip(places.work) if method == "qlora" else None)
    if skip:
        return skip
    # lr 1e-3 rather than the method's 2e-4: 20 steps then learn the facts well enough to show in adapter_chat.
    spec = spec_from_inputs(str(starter_model_path()), data=str(_dataset(places.work)), name=f"gpu-{method}",
                            method=method, max_steps=STEPS, lr=1e-3, seq_len=256, batch=4, grad_accum=1, samples=0,
                            save_every=0, device="cuda")
    log = places.work / "job.log"
    memory = GpuMemory()  # before the job starts: the baseline where nvidia-smi does not list it
    job = JobProcess("finetune", spec.to_dict(), log_path=log)
    events = []
    with PeakSampler(job.pid, memory) as peak:
        for event in job.events():
            print(json.dumps(event), file=sys.stderr)
            events.append(event)
    code = job.wait()
    sys.stderr.write(log.read_text(encoding="utf-8", errors="replace"))
    return _finetune_summary(method, events, code, peak, places.work)


def _finetune_summary(method: str, events: list[dict[str, Any]], code: int, peak: PeakSampler, work: Path) -> str:
    def first(kind: str) -> dict[str, Any]:
        return next((e for e in events if e.get("event") == kind), {})

    done, error = first("done"), first("error")
    if not done:
        raise RuntimeError(f"no adapter (exit {code}): {error.get('message', 'the job ended without an event')}")
    if first("settings").get("device") != "cuda":
        raise RuntimeError(f"trained on {first('settings').get('device')}, not cuda")
    # Without a 4-bit base the job warns "QLoRA: ..." and trains plain LoRA: then QLoRA was not tested.
    fell_back = [e["message"] for e in events if e.get("event") == "warning"
                 and str(e.get("message", "")).startswith("QLoRA:")]
    if fell_back:
        raise RuntimeError(fell_back[0])
    steps = [e for e in events if e.get("event") == "step"]
    losses = [float(e["loss"]) for e in steps]
    if len(steps) != STEPS or not statistics.mean(losses[-5:]) < statistics.mean(losses[:5]):
        raise RuntimeError(f"{len(steps)} of {STEPS} steps, loss "
                           f"{losses[0] if losses else '?'} -> {losses[-1] if losses else '?'}")
    (work / "done.json").write_text(json.dumps(done), encoding="utf-8")  # for adapter_chat
    seconds = max(0.1, float(steps[-1]["elapsed_s"]))
    speed = statistics.median(float(e.get("tokens_per_s") or 0) for e in steps)
    planned = float(first("plan").get("predicted_bytes") or 0) / MIB
    title = "QLoRA (4-bit base)" if method == "qlora" else "LoRA"
    return (f"{STEPS} {title} steps on cuda in {seconds:.1f} s ({STEPS / seconds:.1f} steps/s, {speed:.0f} tok/s), "
            f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, peak {peak.peak} MiB GPU"
            + (" (device delta)" if peak.how == "device" else "") + f" vs {planned:.0f} MiB planned")


def check_lora_cuda(places: Places) -> str:
    return _finetune("lora", places)


def check_qlora_cuda(places: Places) -> str:
    return _finetune("qlora", places)


# -- adapter_chat -----------------------------------------------------------------------------------------
def check_adapter_chat(places: Places) -> str:
    skip = _use_cuda_site(places.cuda_site)
    if skip:
        return skip
    done = places.adapter_from / "done.json" if places.adapter_from else None
    if done is None or not done.is_file():
        return "SKIP lora_cuda saved no adapter to export (see its line)"
    from bench.common import starter_model_path
    from core.engine import Engine, LoadOptions, SamplingParams
    from core.gguf_export.lora import export_lora_gguf

    base = starter_model_path()
    exported = export_lora_gguf(json.loads(done.read_text(encoding="utf-8"))["path"], places.work / "adapter.gguf",
                                base=base)
    question = [{"role": "user", "content": "Who wrote the handbook?"}]
    params = SamplingParams(temperature=0, max_tokens=32)
    with Engine() as engine:
        status = engine.load(base, LoadOptions(n_ctx=2048, n_gpu_layers=-1, loras=[(str(exported.path), 1.0)]))
        _require_cuda(status)
        if not status.loras:
            raise RuntimeError("the engine loaded the model without the adapter")
        tuned = engine.chat(question, params)
        engine.set_loras([])  # the base alone, for comparison (the worker drops the KV cache made with the adapter)
        plain = engine.chat(question, params)
    print(f"with the adapter: {tuned.text!r}\nthe base alone: {plain.text!r}", file=sys.stderr)
    if not tuned.text.strip():
        raise RuntimeError("the answer with the adapter is empty")
    return (f"{exported.n_pairs} LoRA pairs ({exported.size_bytes / MIB:.1f} MiB GGUF) on {status.where}: "
            f"'{_words(tuned.text)}' at {tuned.stats.tokens_per_second:.0f} tok/s (the base alone: "
            f"'{_words(plain.text)}')")


CHECKS: dict[str, Callable[[Places], str]] = {
    "cuda_build": check_cuda_build, "hw": check_hw, "fit_vs_vram": check_fit_vs_vram, "chat_speed": check_chat_speed,
    "lora_cuda": check_lora_cuda, "qlora_cuda": check_qlora_cuda, "adapter_chat": check_adapter_chat,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("check", choices=list(CHECKS))
    parser.add_argument("--work", type=Path, required=True, help="the check's own folder (created)")
    parser.add_argument("--cuda-site", type=Path, help="where cuda_build installs llama-cpp-python built for CUDA")
    parser.add_argument("--adapter-from", type=Path, help="adapter_chat: lora_cuda's --work folder")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ["HEARTH_HOME"] = str(args.work / "home")  # this check's own library, adapters and jobs
    if args.check != "hw":
        # One GPU, the first in PCI order, which is also nvidia-smi's order (GpuMemory reads it by that index).
        os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "0")
    return one_line(lambda: CHECKS[args.check](Places(args.work, args.cuda_site, args.adapter_from)))


if __name__ == "__main__":
    sys.exit(main())
