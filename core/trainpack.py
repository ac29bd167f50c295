"""The training pack: torch, transformers and peft, installed on demand into Hearth's own folder.

The installed app does not carry them (they are gigabytes). The first time a user fine-tunes, Hearth
offers to install them with pip into ``<data>/training-pack`` -- never into a system Python -- for the
torch build that fits the machine: the CPU build, the CUDA build when an NVIDIA driver answers, the
default build (with MPS) on Apple. Training jobs (``core.jobs``) then find them on ``sys.path``.

An install is all or nothing. pip writes into ``.partial-<pid>``; only after the packages import in
a fresh process is the folder renamed to ``pack`` with a ``ready.json`` inside. A killed or failed
install leaves only a ``.partial-*`` folder, which nothing reads and the next install removes.

A source checkout with the ``train`` extra needs no pack: what its Python imports is used, as before.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import HearthError
from core.paths import get_paths
from core.runtime import frozen, module_command

TORCH = "torch==2.13.0"  # the build this project's machines pin (packaging/constraints.txt)
# The pack's packages and their ranges: the ``train`` extra's, from Hearth's own metadata when present.
PACKAGES = ("torch", "transformers", "peft", "safetensors", "accelerate", "sentencepiece")
_FALLBACK = {
    "transformers": "transformers>=5.23,<6", "peft": "peft>=0.17", "safetensors": "safetensors>=0.4",
    "accelerate": "accelerate>=1.0", "sentencepiece": "sentencepiece>=0.2",
}
# PyTorch's own package indexes (https://pytorch.org/get-started/locally/): PyPI's Linux torch is the
# CUDA build (several GB), so a Linux machine without an NVIDIA driver takes the CPU index; Windows'
# PyPI torch is the CPU build, so a Windows machine with a driver takes a CUDA index.
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CUDA_INDEX = "https://download.pytorch.org/whl/cu128"
INDEX_ENV = "HEARTH_TORCH_INDEX"  # overrides the choice; empty = pip's own configuration only
ONLY_ENV = "HEARTH_TRAINPACK_ONLY"  # "1": ignore this Python's own torch (try the pack from a checkout; tests)
READY = "ready.json"


class TrainingPackError(HearthError):
    """The training pack is missing, or its install failed."""


@dataclass(frozen=True)
class TorchChoice:
    build: str  # "cpu", "cuda" or "default" (macOS: MPS)
    index_url: str | None  # an extra index for pip, or None
    reason: str  # in words, for the install dialog


def pack_root() -> Path:
    return get_paths().data / "training-pack"


def pack_dir() -> Path:
    return pack_root() / "pack"


def requirements() -> list[str]:
    """The pip requirements of the pack: torch pinned, the rest as the ``train`` extra says."""
    wanted = dict(_FALLBACK)
    try:
        from importlib.metadata import PackageNotFoundError, requires

        for req in requires("hearth") or []:
            if 'extra == "train"' not in req:
                continue
            spec = req.split(";")[0].strip()
            name = re.split(r"[<>=!~\[ ]", spec, maxsplit=1)[0].lower()
            if name in PACKAGES and name != "torch":
                wanted[name] = spec
    except PackageNotFoundError:
        pass
    return [TORCH, *(wanted[name] for name in PACKAGES if name != "torch")]


def choose_torch(*, system: str | None = None, nvidia_driver: bool | None = None) -> TorchChoice:
    """Which torch build fits this machine (the keywords replace what is detected, for tests)."""
    system = system or platform.system()
    if nvidia_driver is None:
        from core.hardware.gpus import nvidia_gpus

        gpus, _note = nvidia_gpus()
        nvidia_driver = bool(gpus)
    override = os.environ.get(INDEX_ENV)
    if system == "Darwin":
        choice = TorchChoice("default", None, "the standard build, which trains on Apple's GPU (MPS)")
    elif nvidia_driver:
        index = None if system == "Linux" else CUDA_INDEX
        choice = TorchChoice("cuda", index, "the CUDA build, for the NVIDIA GPU found")
    else:
        index = CPU_INDEX if system == "Linux" else None
        choice = TorchChoice("cpu", index, "the CPU build (no NVIDIA GPU found)")
    if override is not None:
        choice = TorchChoice(choice.build, override or None, choice.reason)
    return choice


def builtin() -> bool:
    """True when this Python already imports the training packages (a source install with ``train``)."""
    if frozen() or os.environ.get(ONLY_ENV) == "1":
        return False
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers", "peft"))


def ready() -> dict[str, Any] | None:
    """The installed pack's record, or None when there is none usable by this Python."""
    try:
        record = json.loads((pack_dir() / READY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("python") != _python_tag():
        return None  # built for another Python (an app upgrade changed it): install again
    return record


def available() -> bool:
    return builtin() or ready() is not None


def activate() -> bool:
    """Put the pack on ``sys.path`` when this Python lacks the packages; True when training can run."""
    if builtin():
        return True
    if ready() is None:
        return False
    site = str(pack_dir() / "site")
    if site not in sys.path:
        sys.path.append(site)  # after the app's own modules: the app's numpy and friends win
    importlib.invalidate_caches()
    return True


def require() -> None:
    """Raise a clear error when fine-tuning cannot run here yet."""
    if not activate():
        raise TrainingPackError(
            "Fine-tuning needs the training pack (torch, transformers and peft), which is not installed: "
            "install it with 'hearth training-pack install' or from the Fine-tune page."
        )


def _python_tag() -> str:
    return f"{sys.implementation.name}-{sys.version_info.major}.{sys.version_info.minor}-{platform.machine()}"


@dataclass
class InstallProgress:
    stage: str  # "resolve", "download", "install", "verify", "done"
    fraction: float
    message: str


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, between fork and exec
    """Linux: pip gets SIGKILL when its parent dies, so a killed install stops writing at once."""
    import ctypes
    import signal

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (linux/prctl.h)


def _clear_leftovers(root: Path) -> None:
    for old in root.glob(".partial-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            raise TrainingPackError("The training pack is being installed already; wait for it to finish.")
        shutil.rmtree(old, ignore_errors=True)
    for old in root.glob(".old-*"):
        shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    import psutil

    return bool(psutil.pid_exists(pid))


_COLLECTING = re.compile(r"^Collecting (\S+)")
_DOWNLOADING = re.compile(r"^\s*Downloading (\S+)(?: \(([\d.]+ [kMG]?B)\))?")


def install(
    progress: Callable[[InstallProgress], None] | None = None,
    *,
    should_stop: Callable[[], bool] | None = None,
    choice: TorchChoice | None = None,
) -> dict[str, Any]:
    """Install the pack (all or nothing) and return its record."""
    report = progress or (lambda _p: None)
    root = pack_root()
    root.mkdir(parents=True, exist_ok=True)
    _clear_leftovers(root)
    choice = choice or choose_torch()
    partial = root / f".partial-{os.getpid()}"
    partial.mkdir()
    reqs = requirements()
    args = ["install", "--target", str(partial / "site"), "--only-binary", ":all:", "--no-input",
            "--progress-bar", "off", "--no-warn-script-location", "--disable-pip-version-check", *reqs]
    if choice.index_url:
        args[1:1] = ["--extra-index-url", choice.index_url]
    report(InstallProgress("resolve", 0.02, f"Finding {', '.join(PACKAGES)} for {choice.reason}…"))
    log_lines: list[str] = []
    started = time.monotonic()
    proc = subprocess.Popen(module_command("pip", *args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace",
                            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONUNBUFFERED": "1"},
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    seen = 0
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            line = line.rstrip()
            log_lines.append(line)
            if should_stop is not None and should_stop():
                proc.terminate()
                break
            if m := _COLLECTING.match(line):
                seen += 1
                report(InstallProgress("download", min(0.75, 0.05 + 0.025 * seen), f"Getting {m[1]}…"))
            elif m := _DOWNLOADING.match(line):
                size = f" ({m[2]})" if m[2] else ""
                report(InstallProgress("download", min(0.75, 0.05 + 0.025 * seen),
                                       f"Downloading {Path(m[1]).name}{size}…"))
            elif line.startswith("Installing collected packages"):
                report(InstallProgress("install", 0.8, "Unpacking the packages…"))
        code = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if should_stop is not None and should_stop():
        shutil.rmtree(partial, ignore_errors=True)
        raise TrainingPackError("The training pack's install was stopped; nothing was installed.")
    if code != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise TrainingPackError(
            "The training pack could not be installed (pip exit code "
            f"{code}): {_pip_reason(log_lines)}. Check the network connection and free disk space, then try again."
        )
    report(InstallProgress("verify", 0.9, "Checking that the packages load…"))
    try:
        versions = verify(partial / "site")
    except TrainingPackError:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    record = {"python": _python_tag(), "torch_build": choice.build, "versions": versions,
              "bytes": _folder_size(partial), "installed_at": time.time(),
              "seconds": round(time.monotonic() - started, 1)}
    (partial / READY).write_text(json.dumps(record, indent=2), encoding="utf-8")
    final = pack_dir()
    if final.exists():
        final.rename(root / f".old-{os.getpid()}")
    partial.rename(final)
    shutil.rmtree(root / f".old-{os.getpid()}", ignore_errors=True)
    report(InstallProgress("done", 1.0, "The training pack is installed."))
    return record


_VERIFY = (
    "import json, sys\n"
    "sys.path.append(sys.argv[1])\n"
    "import torch, transformers, peft\n"
    "print(json.dumps({'torch': torch.__version__, 'transformers': transformers.__version__,"
    " 'peft': peft.__version__}))\n"
)


def verify(site: Path) -> dict[str, str]:
    """Import the packages from ``site`` in a fresh process; their versions, or a clear error."""
    from core.runtime import code_command

    done = subprocess.run(code_command(_VERIFY, str(site)), capture_output=True, text=True, timeout=600,
                          check=False)
    try:
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception):", line)]
        reason = (errors or lines or ["no output"])[-1]
        raise TrainingPackError(
            f"The training pack was downloaded but does not load ({reason}); nothing was installed. Try again."
        ) from None


def _pip_reason(lines: list[str]) -> str:
    for line in reversed(lines):
        if line.startswith("ERROR:"):
            return line.removeprefix("ERROR:").strip()
    return next((line for line in reversed(lines) if line.strip()), "pip said nothing")


def _folder_size(folder: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def download_size(choice: TorchChoice | None = None, timeout: float = 600) -> int | None:
    """Bytes pip would download for the pack (pip's dry-run report, each file's size asked), or None."""
    choice = choice or choose_torch()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="hearth-pack-size-") as tmp:
        report = Path(tmp) / "report.json"
        args = ["install", "--dry-run", "--ignore-installed", "--only-binary", ":all:", "--quiet",
                "--report", str(report), "--target", str(Path(tmp) / "t"), *requirements()]
        if choice.index_url:
            args[1:1] = ["--extra-index-url", choice.index_url]
        done = subprocess.run(module_command("pip", *args), capture_output=True, text=True, timeout=timeout,
                              check=False)
        if done.returncode != 0 or not report.exists():
            return None
        items = json.loads(report.read_text(encoding="utf-8")).get("install", [])
    total = 0
    for item in items:
        url = str((item.get("download_info") or {}).get("url", ""))
        size = _url_size(url)
        if size is None:
            return None
        total += size
    return total


def _url_size(url: str) -> int | None:
    from urllib.parse import unquote, urlparse
    from urllib.request import Request, urlopen

    parsed = urlparse(url)
    if parsed.scheme == "file":
        try:
            return os.path.getsize(unquote(parsed.path))
        except OSError:
            return None
    try:
        with urlopen(Request(url, method="HEAD"), timeout=30) as answer:
            return int(answer.headers.get("Content-Length") or 0)
    except (OSError, ValueError):
        return None


def remove() -> bool:
    """Delete the installed pack; True when there was one."""
    final = pack_dir()
    if not final.exists():
        return False
    trash = pack_root() / f".old-{os.getpid()}"
    final.rename(trash)  # one rename: the pack is gone for every reader at once
    shutil.rmtree(trash, ignore_errors=True)
    return True

