"""Before the window opens on Linux/X11: are the system libraries Qt's xcb plugin links installed?

Without them (``libxcb-cursor0``, ``libxcb-icccm4``, ``libxcb-keysyms1`` … are not on every fresh
desktop install) Qt prints a few cryptic lines and aborts the process (SIGABRT) while creating the
QApplication. This module imports nothing from Qt: it reads the plugin's ELF dynamic section for the
libraries it needs, follows the Qt libraries PySide6 ships beside it, and tries to load each system
library with ``ctypes``; when one is missing it says in one line which packages to install.

``python -m desktop.preflight`` runs the check (``make run`` does, before starting the app).
"""

from __future__ import annotations

import ctypes
import importlib.util
import mmap
import os
import re
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

EXIT_MISSING = 2
PLUGIN_NAME = "libqxcb.so"

# soname → (Debian/Ubuntu package, Fedora package): what Qt 6's xcb plugin and the Qt libraries it
# loads link against (the DT_NEEDED entries of PySide6's libqxcb.so, libQt6XcbQpa.so.6, libQt6Gui.so.6).
# fmt: off
PACKAGES: dict[str, tuple[str, str]] = {
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libxcb-glx.so.0": ("libxcb-glx0", "libxcb"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-xinerama.so.0": ("libxcb-xinerama0", "libxcb"),
    "libxcb-xinput.so.0": ("libxcb-xinput0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libX11.so.6": ("libx11-6", "libX11"),
    "libSM.so.6": ("libsm6", "libSM"),
    "libICE.so.6": ("libice6", "libICE"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libGLX.so.0": ("libglx0", "libglvnd-glx"),
    "libOpenGL.so.0": ("libopengl0", "libglvnd-opengl"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libgthread-2.0.so.0": ("libglib2.0-0", "glib2"),
}
# fmt: on

# ELF constants: System V ABI, generic ABI ("gABI", https://refspecs.linuxfoundation.org/elf/gabi4+/),
# chapter 4 (ELF header: e_ident, e_phoff, e_phentsize, e_phnum; program header) and chapter 5
# ("Dynamic Section": PT_DYNAMIC holds (d_tag, d_val) pairs ending with DT_NULL; DT_STRTAB is the
# *virtual address* of the string table, mapped to a file offset through the PT_LOAD segments).
_PT_LOAD, _PT_DYNAMIC = 1, 2
_DT_NULL, _DT_NEEDED, _DT_STRTAB, _DT_STRSZ, _DT_RPATH, _DT_RUNPATH = 0, 1, 5, 10, 15, 29
_DLOPEN_MISSING = re.compile(r"^(\S+?): cannot open shared object file")


class ElfError(ValueError):
    """The file is not an ELF shared object this reader understands."""


@dataclass(frozen=True)
class ElfDynamic:
    """The dynamic linking needs of one ELF file: sonames (DT_NEEDED) and search paths (DT_RUNPATH/DT_RPATH)."""

    needed: list[str] = field(default_factory=list)
    runpath: list[str] = field(default_factory=list)


def read_dynamic(path: Path) -> ElfDynamic:
    """Read the DT_NEEDED sonames and the run path of an ELF file (32 or 64 bit, either byte order)."""
    with path.open("rb") as handle:
        try:  # mapped, not read: Qt's libraries are megabytes and only their headers matter here
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError as exc:  # an empty file cannot be mapped
            raise ElfError(f"{path} is empty") from exc
    with data:
        return _parse_dynamic(path, data)


def _parse_dynamic(path: Path, data: mmap.mmap) -> ElfDynamic:
    if data[:4] != b"\x7fELF" or len(data) < 52:
        raise ElfError(f"{path} is not an ELF file")
    wide = {1: False, 2: True}.get(data[4])
    order = {1: "<", 2: ">"}.get(data[5])
    if wide is None or order is None:
        raise ElfError(f"{path}: unknown ELF class or byte order")
    try:
        if wide:
            phoff, = struct.unpack_from(order + "Q", data, 0x20)
            phentsize, phnum = struct.unpack_from(order + "HH", data, 0x36)
        else:
            phoff, = struct.unpack_from(order + "I", data, 0x1C)
            phentsize, phnum = struct.unpack_from(order + "HH", data, 0x2A)
        loads: list[tuple[int, int, int]] = []  # (vaddr, filesz, offset)
        dynamic: tuple[int, int] | None = None  # (offset, filesz)
        for i in range(phnum):
            at = phoff + i * phentsize
            if wide:
                p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(order + "IIQQQQ", data, at)
            else:
                p_type, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(order + "IIIII", data, at)
            if p_type == _PT_LOAD:
                loads.append((p_vaddr, p_filesz, p_offset))
            elif p_type == _PT_DYNAMIC:
                dynamic = (p_offset, p_filesz)
        if dynamic is None:
            return ElfDynamic()  # statically linked: needs nothing
        entry = struct.Struct(order + ("qQ" if wide else "iI"))
        tags: list[tuple[int, int]] = []
        offset, size = dynamic
        for at in range(offset, offset + size - entry.size + 1, entry.size):
            tag, value = entry.unpack_from(data, at)
            if tag == _DT_NULL:
                break
            tags.append((tag, value))
    except struct.error as exc:
        raise ElfError(f"{path} is truncated ({exc})") from exc
    strtab = next((v for t, v in tags if t == _DT_STRTAB), None)
    if strtab is None:
        raise ElfError(f"{path} has a dynamic section without a string table")
    base = next((off + strtab - vaddr for vaddr, filesz, off in loads if vaddr <= strtab < vaddr + filesz), None)
    if base is None:
        raise ElfError(f"{path}: the string table lies outside every loaded segment")
    strsz = next((v for t, v in tags if t == _DT_STRSZ), len(data) - base)

    def string(index: int) -> str:
        if index >= strsz:
            raise ElfError(f"{path}: a dynamic entry points past the string table")
        end = data.find(b"\0", base + index)
        return data[base + index : end if end >= 0 else len(data)].decode("utf-8", "replace")

    needed = [string(v) for t, v in tags if t == _DT_NEEDED]
    # DT_RUNPATH wins over DT_RPATH when both are present (gABI ch. 5, "Shared Object Dependencies").
    paths = [v for t, v in tags if t == _DT_RUNPATH] or [v for t, v in tags if t == _DT_RPATH]
    runpath = [p for v in paths for p in string(v).split(":") if p]
    return ElfDynamic(needed, runpath)


def _search_dirs(path: Path, runpath: list[str]) -> list[Path]:
    origin = str(path.resolve().parent)
    return [Path(p.replace("$ORIGIN", origin).replace("${ORIGIN}", origin)) for p in runpath]


def _load_failure(soname: str) -> str | None:
    """None when the system's loader finds ``soname`` (and what it needs); else the library that is missing."""
    try:
        ctypes.CDLL(soname, mode=os.RTLD_LAZY | os.RTLD_LOCAL)
    except OSError as exc:
        match = _DLOPEN_MISSING.match(str(exc))
        return match[1] if match else soname
    return None


def missing_libraries(plugin: Path) -> list[str]:
    """Sonames the plugin (or a library shipped beside it, followed through its run path) needs but cannot load.

    Libraries found in a run-path folder (PySide6's own Qt libraries, ``$ORIGIN/../../lib``) are read in
    turn; every other soname is loaded with the system's loader, as Qt's would.
    """
    missing: list[str] = []
    seen: set[str] = set()
    queue = [plugin]
    while queue:
        current = queue.pop(0)
        info = read_dynamic(current)
        dirs = _search_dirs(current, info.runpath)
        for soname in info.needed:
            if soname in seen:
                continue
            seen.add(soname)
            local = next((d / soname for d in dirs if (d / soname).is_file()), None)
            if local is not None:
                queue.append(local)
                continue
            failed = _load_failure(soname)
            if failed and failed not in missing:
                missing.append(failed)
    return missing


def pyside_xcb_plugin(env: Mapping[str, str] | None = None) -> Path | None:
    """The xcb plugin Qt would load: from ``QT_QPA_PLATFORM_PLUGIN_PATH`` when set, else PySide6's own."""
    env = os.environ if env is None else env
    custom = env.get("QT_QPA_PLATFORM_PLUGIN_PATH")
    if custom:
        candidate = Path(custom) / PLUGIN_NAME
        return candidate if candidate.is_file() else None
    spec = importlib.util.find_spec("PySide6")  # finds the package without importing Qt
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "Qt" / "plugins" / "platforms" / PLUGIN_NAME
        if candidate.is_file():
            return candidate
    return None


def uses_xcb(env: Mapping[str, str] | None = None, platform: str = sys.platform) -> bool:
    """Whether Qt will start on X11: Linux with a DISPLAY and no other platform asked for.

    Qt on GNOME ignores a Wayland session and uses xcb (qguiapplication.cpp,
    ``createPlatformIntegration``), so an unset ``QT_QPA_PLATFORM`` counts as xcb.
    """
    env = os.environ if env is None else env
    if not platform.startswith("linux") or not env.get("DISPLAY"):
        return False
    asked = (env.get("QT_QPA_PLATFORM") or "").strip()
    first = asked.split(";")[0].split(":")[0].strip().lower()
    return first in ("", "xcb")


def install_line(missing: list[str]) -> str:
    """One line: what is missing and the apt and dnf commands that install it."""
    debian = list(dict.fromkeys(PACKAGES[s][0] for s in missing if s in PACKAGES))
    fedora = list(dict.fromkeys(PACKAGES[s][1] for s in missing if s in PACKAGES))
    unknown = [s for s in missing if s not in PACKAGES]
    how = []
    if debian:
        how.append(f"install {'it' if len(debian) == 1 else 'them'} with: sudo apt install {' '.join(debian)} "
                   f"(Debian/Ubuntu) or sudo dnf install {' '.join(fedora)} (Fedora)")
    if unknown:
        how.append(f"install the package that provides {', '.join(unknown)} ('apt-file search' or 'dnf provides' finds it)")
    return (
        f"hearth: the window cannot open: Qt's X11 plugin needs {', '.join(missing)}, which "
        f"{'is' if len(missing) == 1 else 'are'} not installed; {'; '.join(how)}. "
        "On a Wayland desktop QT_QPA_PLATFORM=wayland also works; the terminal commands need none of this "
        "('hearth --help')."
    )


def check(env: Mapping[str, str] | None = None) -> str | None:
    """The line to print when the window cannot open on this X11 system, else None (nothing to say)."""
    if not uses_xcb(env):
        return None
    plugin = pyside_xcb_plugin(env)
    if plugin is None:
        return None  # no PySide6 (the caller says so) or no xcb plugin to check
    try:
        missing = missing_libraries(plugin)
    except (OSError, ElfError):
        return None  # an unreadable plugin: let Qt say what is wrong
    return install_line(missing) if missing else None


def main() -> int:
    line = check()
    if line:
        print(line, file=sys.stderr)
        return EXIT_MISSING
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
