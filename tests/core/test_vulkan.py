"""llama.cpp's Vulkan backend, proven on lavapipe: Mesa's Vulkan device implemented on the CPU.

Hearth's Linux build carries the Vulkan backend as a loadable library (the Makefile's GGML_VULKAN); ``make test``
installs lavapipe (packaging/vulkan_deps.sh --runtime). ggml skips a Vulkan device of the CPU type unless
``GGML_VK_VISIBLE_DEVICES`` names it, so on a machine without a GPU lavapipe is invisible (nothing changes,
as a user without a GPU needs), and these tests name it to stand in for an AMD or Intel GPU. What is checked:
Hearth lists the device as ggml does; the starter model with every layer on it writes the CPU's greedy tokens
through the engine, ``hearth chat`` and the server; a partial offload follows the fit estimate; with no driver,
with the GPU turned off, and with a driver that crashes, models run on the CPU with one sentence at most.
"""

from __future__ import annotations

import ctypes
import glob
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from core.engine import Engine, LoadOptions, SamplingParams
from core.engine.params import GPU_LAYERS_AUTO
from core.hardware import clear_cache, detect_hardware
from core.runtime import module_command

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Vulkan build is Linux's (macOS: Metal)")

LAVAPIPE = sorted(glob.glob("/usr/share/vulkan/icd.d/lvp_icd*.json"))
# A prompt whose continuation is never a near-tie: the CPU and Vulkan write the same 32 greedy tokens.
PROMPT = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"
# An open one, where they part at a near-tie: compared token by token on the same inputs (top-1 agreement).
OPEN_PROMPT = "The three primary colors are"
GREEDY = SamplingParams(temperature=0.0, max_tokens=32, ignore_eos=True)
AGREEMENT = 0.95  # the bar for top-1 agreement when Vulkan's kernels round differently

# ggml's own device list, read in a fresh process with the backends loaded as Hearth loads them.
GGML_DEVICES = """
import ctypes, json
from core.engine.backends import library, load_backends
loaded = load_backends()
ggml, base = library("ggml"), library("ggml-base")
vp, sz = ctypes.c_void_p, ctypes.c_size_t
ggml.ggml_backend_dev_count.restype = sz
ggml.ggml_backend_dev_get.restype, ggml.ggml_backend_dev_get.argtypes = vp, [sz]
for f in (base.ggml_backend_dev_name, base.ggml_backend_dev_description):
    f.restype, f.argtypes = ctypes.c_char_p, [vp]
base.ggml_backend_dev_memory.argtypes = [vp, ctypes.POINTER(sz), ctypes.POINTER(sz)]
out = []
for i in range(ggml.ggml_backend_dev_count()):
    d = ggml.ggml_backend_dev_get(i)
    free, total = sz(0), sz(0)
    base.ggml_backend_dev_memory(d, ctypes.byref(free), ctypes.byref(total))
    out.append({"name": base.ggml_backend_dev_name(d).decode(), "description": base.ggml_backend_dev_description(d).decode(),
                "total": total.value})
print(json.dumps({"registered": loaded.registered, "devices": out}))
"""


def _vulkan_library() -> list[str]:
    import llama_cpp

    return glob.glob(str(Path(llama_cpp.__file__).parent / "lib" / "*ggml-vulkan*"))


@pytest.fixture
def lavapipe(monkeypatch: pytest.MonkeyPatch) -> str:
    """This process and the engines it starts see lavapipe as Vulkan0."""
    assert _vulkan_library(), "this llama.cpp build lacks the Vulkan backend (the Makefile builds it on Linux)"
    assert LAVAPIPE, "lavapipe is not installed: run `bash packaging/vulkan_deps.sh --runtime` (make test does)"
    monkeypatch.setenv("VK_DRIVER_FILES", LAVAPIPE[0])  # the Vulkan loader's variable (VK_ICD_FILENAMES before 1.3.207)
    monkeypatch.setenv("VK_ICD_FILENAMES", LAVAPIPE[0])
    monkeypatch.setenv("GGML_VK_VISIBLE_DEVICES", "0")
    monkeypatch.delenv("HEARTH_GPU", raising=False)
    clear_cache()
    yield LAVAPIPE[0]  # type: ignore[misc]
    clear_cache()


@pytest.fixture
def no_driver(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The Vulkan library is there, but the loader finds no driver at all."""
    missing = str(tmp_path / "no-such-driver.json")
    monkeypatch.setenv("VK_DRIVER_FILES", missing)
    monkeypatch.setenv("VK_ICD_FILENAMES", missing)
    monkeypatch.delenv("GGML_VK_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("HEARTH_GPU", "on")  # load the GPU backends as on a machine with a GPU device node
    clear_cache()


def _hw_json() -> dict[str, object]:
    done = subprocess.run(module_command("core", "hw", "--json"), capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout))


def _greedy(engine: Engine) -> tuple[str, list[int]]:
    text = engine.complete(PROMPT, GREEDY).text
    return text, engine.tokenize(text)


@pytest.fixture(scope="module")
def cpu_answer(starter_model: Path) -> tuple[str, list[int]]:
    """The starter model's 32 greedy tokens on the CPU: what every offload must write."""
    with Engine() as engine:
        engine.load(starter_model, LoadOptions(n_ctx=512, n_gpu_layers=0))
        return _greedy(engine)


def test_the_build_lists_lavapipe_as_ggml_does(lavapipe: str) -> None:
    done = subprocess.run([sys.executable, "-c", GGML_DEVICES], capture_output=True, text=True, check=True)
    ggml = json.loads(done.stdout.strip().splitlines()[-1])
    assert "Vulkan" in ggml["registered"]
    vulkan = [d for d in ggml["devices"] if d["name"].startswith("Vulkan")]
    assert len(vulkan) == 1 and "llvmpipe" in vulkan[0]["description"]

    hw = _hw_json()
    gpus = [g for g in hw["gpus"] if g["backend"] == "Vulkan"]  # type: ignore[union-attr, index]
    assert len(gpus) == 1
    gpu = gpus[0]
    assert gpu["device"] == vulkan[0]["name"] == "Vulkan0"
    assert gpu["name"] == vulkan[0]["description"] and gpu["total_bytes"] == vulkan[0]["total"] > 0
    assert gpu["vendor"] == "software"
    assert hw["llama"]["gpu_offload"] is True  # type: ignore[index]
    assert str(hw["runs_on"]).startswith("Vulkan0: llvmpipe")
    words = subprocess.run(module_command("core", "hw"), capture_output=True, text=True, check=True).stdout
    assert "Vulkan0 (Vulkan)" in words and "Models run on: Vulkan0: llvmpipe" in words


def _next_tokens(engine: Engine, prefixes: list[str]) -> list[str]:
    """The greedy next token after each prefix (one token each; the cache keeps the shared part)."""
    return [engine.complete(p, SamplingParams(temperature=0.0, max_tokens=1)).text for p in prefixes]


def test_every_layer_on_vulkan_writes_the_cpus_greedy_tokens(lavapipe: str, starter_model: Path,
                                                            cpu_answer: tuple[str, list[int]]) -> None:
    with Engine() as cpu:
        cpu.load(starter_model, LoadOptions(n_ctx=512, n_gpu_layers=0))
        written = cpu.complete(OPEN_PROMPT, replace(GREEDY, logprobs=True)).logprobs or []
        pieces = [bytes(t["bytes"]).decode("utf-8", errors="replace") for t in written]  # one per token
        prefixes = [OPEN_PROMPT + "".join(pieces[:i]) for i in range(len(pieces))]
        on_cpu = _next_tokens(cpu, prefixes)
    with Engine() as engine:
        status = engine.load(starter_model, LoadOptions(n_ctx=512, n_gpu_layers=-1))
        assert engine.gpus == ["Vulkan0"]
        ((place, layers),) = status.offload
        assert place.startswith("Vulkan0: llvmpipe") and layers == status.n_layer + 1
        assert status.where == f"{place}, {layers}/{layers} layers"
        text, tokens = _greedy(engine)
        on_vulkan = _next_tokens(engine, prefixes)
    # The counting prompt: the same 32 tokens.
    assert len(tokens) >= 30 and tokens == cpu_answer[1], (text, cpu_answer[0])
    # The open prompt: Vulkan's kernels round differently (f16 accumulation; the CPU's repacked Q4_K), and where two
    # words are nearly tied the greedy texts part ("red, blue and yellow" against "red, yellow and blue"). Asked the
    # same inputs, the two devices pick the same next token at nearly every position.
    agree = sum(a == b for a, b in zip(on_cpu, on_vulkan, strict=True)) / len(prefixes)
    assert len(prefixes) >= 30 and agree >= AGREEMENT, list(zip(on_cpu, on_vulkan, strict=True))


def test_auto_puts_the_model_where_the_fit_estimate_says(lavapipe: str, starter_model: Path) -> None:
    from core.fit import ModelShape, assess

    verdict = assess(ModelShape.from_gguf(starter_model), detect_hardware(), n_ctx=512)
    assert verdict.kind == "full_gpu"  # lavapipe reports the machine's memory: the starter fits whole
    with Engine() as engine:
        status = engine.load(starter_model, LoadOptions(n_ctx=512, n_gpu_layers=GPU_LAYERS_AUTO))
        assert sum(layers for _place, layers in status.offload) == verdict.gpu_layers == status.n_layer + 1


def test_a_model_larger_than_the_device_is_offloaded_in_part_as_the_fit_says(
        lavapipe: str, starter_model: Path, cpu_answer: tuple[str, list[int]]) -> None:
    from core.fit import ModelShape, assess, estimate_memory

    shape = ModelShape.from_gguf(starter_model)
    hardware = detect_hardware()
    (gpu,) = hardware.usable_gpus
    # The device as a small GPU would report it: room for half the layers (the driver's answer, replaced).
    half = estimate_memory(shape, n_ctx=512, n_gpu_layers=shape.n_layer // 2).gpu_bytes
    small = replace(hardware, gpus=[replace(gpu, free_bytes=half, total_bytes=2 * half)])
    verdict = assess(shape, small, n_ctx=512)
    assert verdict.kind == "partial_gpu" and verdict.gpu_layers == shape.n_layer // 2, verdict.reason
    with Engine() as engine:
        status = engine.load(starter_model, LoadOptions(n_ctx=512, n_gpu_layers=verdict.gpu_layers))
        ((_place, layers),) = status.offload
        assert layers == verdict.gpu_layers
        assert status.where.endswith(f"{verdict.gpu_layers}/{status.n_layer + 1} layers")
        _text, tokens = _greedy(engine)
    assert tokens == cpu_answer[1]


def test_hearth_chat_says_where_the_model_runs_and_answers_as_on_the_cpu(lavapipe: str,
                                                                        starter_in_library: Path) -> None:
    def chat(*extra: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            module_command("core", "chat", starter_in_library.stem, "--prompt", PROMPT, "--ctx", "512",
                           "--temperature", "0", "--max-tokens", "32", *extra),
            capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        return done

    on_gpu, on_cpu = chat(), chat("--gpu-layers", "0")  # Auto (the default), then the CPU alone
    assert "; Vulkan0: llvmpipe" in on_gpu.stderr and "19/19 layers]" in on_gpu.stderr, on_gpu.stderr
    assert "Vulkan0" not in on_cpu.stderr
    assert on_gpu.stdout.strip() and on_gpu.stdout == on_cpu.stdout


def test_the_server_answers_on_vulkan_as_on_the_cpu(lavapipe: str, starter_in_library: Path,
                                                    cpu_answer: tuple[str, list[int]]) -> None:
    import openai

    from core.library import Library
    from tests.core.test_server_support import start_server

    Library().register(starter_in_library, name="starter", source="copy")
    served = start_server(starter_in_library.parent)
    try:
        client = openai.OpenAI(base_url=served.url, api_key="unused", max_retries=0, timeout=300)
        answer = client.completions.create(model="starter", prompt=PROMPT, max_tokens=32, temperature=0)
        status = served.host.engine.status
        assert status is not None and status.offload and status.offload[0][0].startswith("Vulkan0")
        assert answer.choices[0].text == cpu_answer[0]
    finally:
        served.server.stop()
        served.host.close()


def test_without_a_vulkan_driver_the_same_build_runs_on_the_cpu(no_driver: None, starter_model: Path,
                                                                cpu_answer: tuple[str, list[int]]) -> None:
    hw = _hw_json()
    assert hw["gpus"] == [] and hw["runs_on"] == "the CPU" and hw["llama"]["gpu_offload"] is False  # type: ignore[index]
    with Engine() as engine:
        status = engine.load(starter_model, LoadOptions(n_ctx=512, n_gpu_layers=GPU_LAYERS_AUTO))
        assert engine.gpus == [] and status.offload == [] and status.gpu_note == ""
        assert _greedy(engine)[1] == cpu_answer[1]


def test_with_the_gpu_turned_off_no_gpu_library_is_even_loaded(lavapipe: str, starter_model: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTH_GPU", "off")
    clear_cache()
    hw = _hw_json()
    assert "Vulkan" not in hw["llama"]["backends"] and hw["llama"]["gpu_off"] is True  # type: ignore[index]
    assert hw["runs_on"] == "the CPU (the GPU is turned off)"
    with Engine() as engine:
        status = engine.load(starter_model, LoadOptions(n_ctx=512, n_gpu_layers=-1))
        assert status.offload == [] and engine.gpus == []
        maps = Path(f"/proc/{engine.pid}/maps").read_text()
    assert "ggml-vulkan" not in maps and "ggml-cpu-" in maps


# A Vulkan driver that crashes when the loader first talks to it: it exports the loader-driver interface's entry
# points (vk_icdNegotiateLoaderICDInterfaceVersion, vk_icdGetInstanceProcAddr: Khronos Vulkan-Loader,
# docs/LoaderDriverInterface.md) and aborts in them.
CRASHING_DRIVER = r"""
#include <stdlib.h>
__attribute__((visibility("default"))) int vk_icdNegotiateLoaderICDInterfaceVersion(unsigned int *version) {
    (void)version; abort();
}
__attribute__((visibility("default"))) void *vk_icdGetInstanceProcAddr(void *instance, const char *name) {
    (void)instance; (void)name; abort();
}
"""


@pytest.fixture
def crashing_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    source = tmp_path / "crash_icd.c"
    source.write_text(CRASHING_DRIVER)
    library = tmp_path / "libcrash_icd.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    manifest = tmp_path / "crash_icd.json"
    manifest.write_text(json.dumps({"file_format_version": "1.0.0",
                                    "ICD": {"library_path": str(library), "api_version": "1.3.0"}}))
    assert _vulkan_library()
    monkeypatch.setenv("VK_DRIVER_FILES", str(manifest))
    monkeypatch.setenv("VK_ICD_FILENAMES", str(manifest))
    monkeypatch.setenv("GGML_NO_BACKTRACE", "1")
    monkeypatch.setenv("HEARTH_GPU", "on")  # load the GPU backends as on a machine with a GPU device node
    clear_cache()
    ctypes.CDLL(str(library))  # it loads: the crash is the driver's answer, not a broken file
    return manifest


def test_a_driver_that_crashes_leaves_the_engine_on_the_cpu_with_one_sentence(
        crashing_driver: Path, starter_model: Path, cpu_answer: tuple[str, list[int]]) -> None:
    hw = _hw_json()
    llama = hw["llama"]
    assert llama["available"] is True and llama["gpu_crash"] == "SIGABRT"  # type: ignore[index]
    assert hw["runs_on"] == "the CPU (a GPU driver crashed when asked)"
    assert any("crashed when llama.cpp asked it" in n and "HEARTH_GPU=off" in n for n in hw["notes"])  # type: ignore[union-attr]
    with Engine() as engine:
        status = engine.load(starter_model, LoadOptions(n_ctx=512, n_gpu_layers=GPU_LAYERS_AUTO))
        assert engine.gpu_off and status.offload == []
        assert status.gpu_note.startswith("Running on the CPU: the GPU driver crashed when llama.cpp started (SIGABRT)")
        assert "Settings > System" in status.gpu_note and "HEARTH_GPU=off" in status.gpu_note
        assert _greedy(engine)[1] == cpu_answer[1]
        # The next load in this engine stays on the CPU and says so again.
        again = engine.load(starter_model, LoadOptions(n_ctx=512, n_gpu_layers=-1))
        assert again.offload == [] and again.gpu_note == status.gpu_note


def test_a_gpu_that_refuses_the_model_falls_back_to_the_cpu(lavapipe: str, starter_model: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           cpu_answer: tuple[str, list[int]]) -> None:
    # A driver that says its buffers can hold far less than the model needs: the weights' allocation fails
    # (GGML_VK_FORCE_MAX_BUFFER_SIZE stands for the driver's maxBufferSize; ggml-vulkan.cpp), as on a misreporting
    # driver or a GPU whose memory another program took.
    monkeypatch.setenv("GGML_VK_FORCE_MAX_BUFFER_SIZE", "4096")
    with Engine() as engine:
        status = engine.load(starter_model, LoadOptions(n_ctx=512, n_gpu_layers=-1))
        assert engine.gpu_off and status.offload == []
        assert status.gpu_note.startswith("Running on the CPU: the GPU (Vulkan0) could not load the model "
                                          "(unable to allocate Vulkan0 buffer). To keep the GPU off"), status.gpu_note
        assert _greedy(engine)[1] == cpu_answer[1]


def test_without_a_gpu_the_cpu_path_is_the_cpu_only_builds(lavapipe: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a machine without a GPU, with Mesa's drivers installed (as most Linux desktops have), models run on the CPU
    exactly as before: where no GPU device node exists, the GPU backends are not even loaded; where they are loaded
    (HEARTH_GPU=on), ggml passes over lavapipe, a Vulkan device of the CPU type, unless it is named."""
    from core.engine.backends import gpu_device_present

    monkeypatch.delenv("GGML_VK_VISIBLE_DEVICES")
    clear_cache()
    hw = detect_hardware()
    assert hw.usable_gpus == [] and hw.runs_on == "the CPU"
    assert hw.llama.no_gpu_device == (not gpu_device_present()) == ("Vulkan" not in hw.llama.backends)
    monkeypatch.setenv("HEARTH_GPU", "on")
    clear_cache()
    loaded = detect_hardware()
    assert "Vulkan" in loaded.llama.backends and loaded.usable_gpus == [] and loaded.runs_on == "the CPU"
