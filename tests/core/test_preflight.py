"""The X11 preflight: a real ELF reader, fake plugins built with the C compiler, the real PySide6 plugin.

The fake plugins are real shared objects: ``libqxcb.so`` linked against a stub library that is then
deleted, and a chain plugin → library beside it (found through ``$ORIGIN``, as PySide6's Qt libraries
are) → deleted stub. The module under test imports no Qt, so this runs with the core tests.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from desktop.preflight import (
    PLUGIN_NAME,
    ElfError,
    check,
    install_line,
    missing_libraries,
    pyside_xcb_plugin,
    read_dynamic,
    uses_xcb,
)

ROOT = Path(__file__).resolve().parents[2]
CC = shutil.which("cc") or shutil.which("gcc")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler to build the fake plugins")
STUB = "libhearth-gone.so.0"


def _cc(out: Path, source: str, *flags: str) -> Path:
    src = out.with_suffix(".c")
    src.write_text(source)
    assert CC is not None
    subprocess.run([CC, "-shared", "-fPIC", "-o", str(out), str(src), *flags], check=True, capture_output=True)
    return out


def _stub(folder: Path) -> Path:
    """``libhearth-gone.so`` (soname libhearth-gone.so.0) defining one function; the caller deletes it."""
    return _cc(folder / "libhearth-gone.so", "int hearth_gone(void) { return 7; }\n", f"-Wl,-soname,{STUB}")


def _user(out: Path, lib_dir: Path, lib: str, *extra: str) -> Path:
    return _cc(out, "int hearth_gone(void);\nint hearth_use(void) { return hearth_gone(); }\n",
               f"-L{lib_dir}", "-Wl,--no-as-needed", f"-l{lib}", *extra)


@pytest.fixture
def broken_plugin(tmp_path: Path) -> Path:
    """A folder with ``libqxcb.so`` that needs ``libhearth-gone.so.0``, which no longer exists."""
    build, plugins = tmp_path / "build", tmp_path / "platforms"
    build.mkdir()
    plugins.mkdir()
    _stub(build)
    _user(plugins / PLUGIN_NAME, build, "hearth-gone")
    shutil.rmtree(build)
    return plugins


@needs_cc
def test_the_elf_reader_finds_what_the_linker_wrote(tmp_path: Path) -> None:
    _stub(tmp_path)
    plugin = _user(tmp_path / "libuser.so", tmp_path, "hearth-gone", "-Wl,-rpath,$ORIGIN/../lib:/opt/x")
    info = read_dynamic(plugin)
    assert STUB in info.needed and "libc.so.6" in info.needed
    assert info.runpath == ["$ORIGIN/../lib", "/opt/x"]
    if shutil.which("readelf"):  # a second opinion from binutils
        out = subprocess.run(["readelf", "-d", str(plugin)], capture_output=True, text=True, check=True).stdout
        assert info.needed == re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out)
    assert read_dynamic(tmp_path / "libhearth-gone.so").runpath == []


def test_non_elf_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "text").write_text("not a library at all, but long enough to be read as a header........")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "cut").write_bytes(Path(sys.executable).resolve().read_bytes()[:100])  # header, half a table
    for name in ("text", "empty", "cut"):
        with pytest.raises(ElfError):
            read_dynamic(tmp_path / name)
    (tmp_path / "bare").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(61))  # no program headers: needs nothing
    assert read_dynamic(tmp_path / "bare").needed == []


@needs_cc
def test_a_deleted_library_is_reported(broken_plugin: Path) -> None:
    assert missing_libraries(broken_plugin / PLUGIN_NAME) == [STUB]


@needs_cc
def test_libraries_beside_the_plugin_are_followed(tmp_path: Path) -> None:
    """plugin → libhearth-qpa.so.6 (in its $ORIGIN run path, like libQt6XcbQpa) → the stub."""
    build, lib, plugins = tmp_path / "build", tmp_path / "lib", tmp_path / "plugins" / "platforms"
    for folder in (build, lib, plugins):
        folder.mkdir(parents=True)
    _stub(build)
    qpa = _user(lib / "libhearth-qpa.so.6", build, "hearth-gone", "-Wl,-soname,libhearth-qpa.so.6", "-Wl,-rpath,$ORIGIN")
    os.symlink(qpa.name, lib / "libhearth-qpa.so")
    plugin = _cc(plugins / PLUGIN_NAME, "int hearth_plugin(void) { return 1; }\n", f"-L{lib}",
                 "-Wl,--no-as-needed", "-lhearth-qpa", "-Wl,-rpath,$ORIGIN/../../lib")
    shutil.copy(build / "libhearth-gone.so", lib / STUB)  # present beside the Qt-like library: nothing missing
    assert missing_libraries(plugin) == []
    (lib / STUB).unlink()
    assert missing_libraries(plugin) == [STUB]


def test_the_line_names_debian_and_fedora_packages() -> None:
    line = install_line(["libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-randr.so.0", "libxcb-shape.so.0"])
    assert "\n" not in line
    assert "sudo apt install libxcb-cursor0 libxcb-icccm4 libxcb-randr0 libxcb-shape0 (Debian/Ubuntu)" in line
    assert "sudo dnf install xcb-util-cursor xcb-util-wm libxcb (Fedora)" in line
    unknown = install_line([STUB])
    assert f"install the package that provides {STUB}" in unknown and "apt install" not in unknown


@pytest.mark.parametrize("env, platform, expected", [
    ({"DISPLAY": ":0"}, "linux", True),
    ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "xcb"}, "linux", True),
    ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "xcb:no_shm"}, "linux", True),
    ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"}, "linux", False),
    ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "wayland"}, "linux", False),
    ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "wayland;xcb"}, "linux", False),
    ({}, "linux", False),
    ({"DISPLAY": ":0"}, "darwin", False),
    ({"DISPLAY": ":0"}, "win32", False),
])
def test_the_check_runs_only_when_qt_will_use_x11(env: dict[str, str], platform: str, expected: bool) -> None:
    assert uses_xcb(env, platform) is expected


@needs_cc
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11 on Linux only")
def test_check_reads_the_plugin_qt_would_load(broken_plugin: Path) -> None:
    env = {"DISPLAY": ":99", "QT_QPA_PLATFORM_PLUGIN_PATH": str(broken_plugin)}
    line = check(env)
    assert line is not None and STUB in line
    assert check({**env, "QT_QPA_PLATFORM": "offscreen"}) is None
    assert check({"DISPLAY": ":99", "QT_QPA_PLATFORM_PLUGIN_PATH": str(broken_plugin.parent)}) is None  # no plugin there


def _without_qt_settings() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("QT_QPA_PLATFORM", "QT_QPA_PLATFORM_PLUGIN_PATH", "WAYLAND_DISPLAY")}
    return {**env, "DISPLAY": ":99"}  # no X server answers there: Qt itself would abort


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)


needs_pyside = pytest.mark.skipif(importlib.util.find_spec("PySide6") is None, reason="PySide6 not installed")


@needs_cc
@needs_pyside
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11 on Linux only")
def test_hearth_prints_one_line_and_exits_2_instead_of_aborting(broken_plugin: Path) -> None:
    env = {**_without_qt_settings(), "QT_QPA_PLATFORM_PLUGIN_PATH": str(broken_plugin)}
    for args in (["-m", "core"], ["-m", "desktop.preflight"]):  # `hearth` and `make run`'s check
        result = _run(args, env)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("hearth: the window cannot open") and STUB in lines[0]
        assert "qt.qpa" not in result.stderr and result.stdout == ""


def _ldd_not_found(plugin: Path) -> set[str]:
    out = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True).stdout
    return set(re.findall(r"^\s*(\S+) => not found", out, flags=re.MULTILINE))


@needs_pyside
@pytest.mark.skipif(shutil.which("ldd") is None, reason="no ldd to compare with")
def test_the_real_plugin_agrees_with_ldd() -> None:
    plugin = pyside_xcb_plugin({})
    assert plugin is not None and plugin.name == PLUGIN_NAME
    assert set(missing_libraries(plugin)) == _ldd_not_found(plugin)


@needs_pyside
@pytest.mark.skipif(shutil.which("ldd") is None, reason="no ldd to compare with")
def test_hearth_on_this_machine(tmp_path: Path) -> None:
    """Where this machine lacks some of the plugin's libraries, ``hearth`` names their packages and exits 2."""
    plugin = pyside_xcb_plugin({})
    assert plugin is not None
    missing = _ldd_not_found(plugin)
    if not missing:
        pytest.skip("every library of the xcb plugin is installed here")
    result = _run(["-m", "core"], _without_qt_settings())
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert all(name in line for name in missing) and "sudo apt install" in line and "sudo dnf install" in line


def test_the_preflight_imports_no_qt() -> None:
    script = ("import sys\nimport desktop.preflight as p\np.check({'DISPLAY': ':99'})\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('PySide6', 'shiboken6')))\n")
    result = _run(["-c", script], dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
