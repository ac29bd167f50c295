"""Does the window add cost to a fine-tune? The Fine-tune page against ``hearth finetune --docs``, in one run.

On the starter model (Gemma 3 270M Q4_K_M) and the handbook fixture (six files, about 1,450 tokens), with no
settings (the planner's defaults, as a user who clicks the button gets):

1. ``hearth finetune STARTER --docs HANDBOOK --out cli-cold``: the first fine-tune of this base, which also
   converts the GGUF for training (timed apart; the estimate made before it counts the conversion);
2. the window: the Fine-tune page offscreen, the folder dropped on it, **Teach it my documents** clicked;
   wall time from the click to the finished view;
3. ``hearth finetune`` again on the same folder (warm, like the window's run).

Ratio = window / warm command line (target <= 1.05). Each estimate the page (or ``estimate_cost``) shows
before a run is set against that run's measured time (target: within x1.5). Takes about 15 minutes here.

    .venv/bin/python bench/finetune_gui.py [--home DIR] [--skip-cold]

``--home`` reuses a HEARTH_HOME of an earlier run (its converted base is cached); ``--skip-cold`` then leaves
out the first command-line run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
HANDBOOK = ROOT / "tests" / "fixtures" / "handbook"


def estimate(base: str) -> float:
    from core.finetune.cost import estimate_cost
    from core.finetune.data.scan import scan_documents
    from core.finetune.launch import spec_from_inputs

    scan = scan_documents([str(HANDBOOK)])
    spec = spec_from_inputs(base=base, docs=[str(HANDBOOK)], name="estimate-only")
    return estimate_cost(spec, scan).total_seconds


def run_cli(base: str, name: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "core", "finetune", base, "--docs", str(HANDBOOK), "--out", name, "--json"],
                   check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - started


def run_window(base_entry_name: str, name: str) -> tuple[float, float]:
    """(seconds from the click to the finished view, the estimate the page showed)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from core.library import Library
    from desktop.models.library import LibraryTableModel
    from desktop.ops import Executor
    from desktop.views.finetune_page import FinetunePage

    app = QApplication.instance() or QApplication([])
    model = LibraryTableModel()
    model.set_entries(Library(discover_hf_cache=False).models(include_discovered=False))
    pool = Executor(3, "bench-finetune")
    page = FinetunePage(model, pool)
    page.resize(1180, 820)
    page.show()

    def wait(condition: object, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not condition():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {what}")
            app.processEvents()
            time.sleep(0.01)

    wait(lambda: page.form.base_name() == base_entry_name, 60, "the base model")
    page.form.add_paths([str(HANDBOOK)])
    wait(lambda: page.form.scan is not None and bool(page.form.name_edit.text()), 60, "the scan")
    page.form.name_edit.setText(name)
    wait(lambda: page.form.start_button.isEnabled() and page.form.estimate is not None, 120, "the estimate")
    shown = page.form.estimate.total_seconds if page.form.estimate else float("nan")
    started = time.perf_counter()
    page.form.start_button.click()
    wait(lambda: page.view() == "result", 3600, "the finished view")
    seconds = time.perf_counter() - started
    page.shutdown()
    pool.shutdown(wait=False)
    return seconds, shown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--home", type=Path, help="reuse this HEARTH_HOME")
    parser.add_argument("--skip-cold", action="store_true", help="no first (converting) command-line run")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="hearth-bench-gui-"))
    os.environ["HEARTH_HOME"] = str(home)
    os.environ["HF_HUB_OFFLINE"] = "1"
    from bench.common import starter_model_path
    from core.library import Library

    library = Library(discover_hf_cache=False)
    present = [m for m in library.models(include_discovered=False) if Path(m.path).name == starter_model_path().name]
    base = present[0].name if present else library.import_file(starter_model_path(), mode="link").name
    print(f"base {base}, documents {HANDBOOK.relative_to(ROOT)}, HEARTH_HOME {home}, {os.cpu_count()} CPUs\n")

    stamp = time.strftime("%H%M%S")
    if not args.skip_cold:
        cold_estimate = estimate(base)
        cold = run_cli(base, f"cli-cold-{stamp}")
        print(f"command line, cold (converts the GGUF): {cold:7.1f} s  estimate {cold_estimate:6.0f} s "
              f"(measured/estimate {cold / cold_estimate:.2f})", flush=True)
    window, shown = run_window(base, f"window-{stamp}")
    print(f"window, click -> finished:              {window:7.1f} s  estimate {shown:6.0f} s "
          f"(measured/estimate {window / shown:.2f})", flush=True)
    warm_estimate = estimate(base)
    warm = run_cli(base, f"cli-warm-{stamp}")
    print(f"command line, warm:                     {warm:7.1f} s  estimate {warm_estimate:6.0f} s "
          f"(measured/estimate {warm / warm_estimate:.2f})")
    print(f"\nwindow / command line (warm): {window / warm:.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()
