"""The training pack through the installed app (part of packaging/package_test.sh).

    python packaging/trainpack_test.py --app build/package/dist/hearth/hearth --work build/package-test/trainpack

1. ``hearth finetune`` without the pack refuses with a clear message (no traceback).
2. ``hearth training-pack install`` is killed (SIGKILL) while pip fetches torch: the pack is not
   installed afterwards and nothing half-written is used.
3. The next install succeeds, and ``hearth training-pack`` says so.
4. The installed app's ``hearth finetune`` runs a 2-step LoRA on the tiny fixture model with it.
The pack comes from the package registries this machine reaches: pip's own configuration, and
``HEARTH_TORCH_INDEX=""`` so the CPU build of torch 2.13.0 that lies on this machine's disk is taken
instead of PyTorch's CPU index, which is out of reach here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    home = args.work / "home"
    home.mkdir(parents=True)
    env = {**os.environ, "HEARTH_HOME": str(home), "HEARTH_TORCH_INDEX": "", "HF_HUB_OFFLINE": "1",
           "QT_QPA_PLATFORM": "offscreen"}
    env.pop("PYTHONPATH", None)
    app = str(args.app)

    def hearth(*a: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([app, *a], env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
        if check and done.returncode != 0:
            raise SystemExit(f"hearth {' '.join(a)} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
        return done

    def status() -> dict[str, object]:
        return dict(json.loads(hearth("training-pack", "--json").stdout))

    from tests.fixtures.tiny_hf import write_tiny_chat_llama

    model = write_tiny_chat_llama(args.work / "tiny-chat.gguf")
    hearth("import", str(model), "--name", "tiny-chat")
    docs = args.work / "docs"
    shutil.copytree(ROOT / "tests" / "fixtures" / "handbook", docs)

    refused = hearth("finetune", "tiny-chat", "--docs", str(docs), "--max-steps", "2", "--out", "pack-check", check=False)
    assert refused.returncode != 0 and "training pack" in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
    print(f"without the pack: {refused.stderr.strip().splitlines()[-1]}")

    assert status()["installed"] is False
    started = time.monotonic()
    proc = subprocess.Popen([app, "training-pack", "install"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    partial_root = home / "data" / "training-pack"
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    # Midway: a second after pip starts writing the packages (its "Installing collected packages" stage).
    grown = 0
    unpacking_at = None
    while proc.poll() is None and time.monotonic() - started < 900:
        if unpacking_at is None and any("Unpacking" in line for line in lines):
            unpacking_at = time.monotonic()
        if unpacking_at is not None and time.monotonic() - unpacking_at > 1.0:
            break
        time.sleep(0.1)
    partial = next(partial_root.glob(".partial-*"), None)
    grown = sum(f.stat().st_size for f in partial.rglob("*") if f.is_file()) if partial else 0
    assert proc.poll() is None, f"the install ended before it could be killed: {lines[-3:]}"
    killed_at = f"{grown / 2**20:.0f} MB in its folder, last said: {lines[-1].strip() if lines else ''}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1)  # pip, its child, dies with it (PR_SET_PDEATHSIG)
    print(f"killed the install after {time.monotonic() - started:.1f} s at: {killed_at}")
    after = status()
    assert after["installed"] is False, after
    assert not (partial_root / "pack").exists()
    refused = hearth("finetune", "tiny-chat", "--docs", str(docs), "--max-steps", "2", "--out", "pack-check", check=False)
    assert refused.returncode != 0 and "training pack" in refused.stderr, refused.stderr
    print("after the kill: not installed, and fine-tuning still asks for the pack")

    started = time.monotonic()
    installed = hearth("training-pack", "install")
    print(installed.stdout.strip(), f"({time.monotonic() - started:.0f} s)")
    record = status()
    assert record["installed"] is True, record
    assert not list(partial_root.glob(".partial-*")), "the killed install's folder was left behind"
    size = sum(f.stat().st_size for f in (partial_root / "pack").rglob("*") if f.is_file())
    print(f"training pack on disk: {size / 2**20:.0f} MB")

    started = time.monotonic()
    hearth("finetune", "tiny-chat", "--docs", str(docs), "--max-steps", "2", "--out", "pack-lora", "--json")
    listed = json.loads(hearth("adapters", "--json").stdout)
    names = [a.get("name") for a in listed]
    assert "pack-lora" in names, listed
    print(f"2-step LoRA through the installed app: done in {time.monotonic() - started:.0f} s; adapters: {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
