"""Build the Linux installers: the PyInstaller folder, a .deb (/opt/hearth) and a .tar.gz of the same tree.

    python packaging/build_linux.py [--out dist] [--skip-freeze]

``make package`` runs it. The .deb's ``Depends`` is worked out from the files themselves: every
library an ELF file in the tree links (DT_NEEDED) that the tree does not carry must come from the
system, and each is mapped to its Debian package -- Qt's X11 libraries by desktop.preflight's table,
the rest by ``dpkg -S`` on the build machine. packaging/package_test.sh proves the list by installing
the .deb with apt in a bare Debian root.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from desktop.preflight import PACKAGES, ElfError, read_dynamic  # noqa: E402

INSTALL_DIR = "/opt/hearth"
DESKTOP_ENTRY = """[Desktop Entry]
Type=Application
Name=Hearth
GenericName=Local AI models
Comment=Run and fine-tune language models on this computer
Exec={exec} %F
Icon={icon}
Terminal=false
Categories=Development;Science;ArtificialIntelligence;
Keywords=LLM;AI;chat;GGUF;llama;fine-tune;
StartupWMClass=hearth
"""
# Libraries every Debian system has (Essential or glibc's own): no Depends line is needed for them,
# but the libc6 version floor is kept (the build machine's glibc is the oldest the app runs on).
_GLIBC = {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libutil.so.1",
          "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1", "libresolv.so.2"}


def version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def freeze(work: Path) -> Path:
    """Run PyInstaller on packaging/hearth.spec; the onedir folder."""
    dist = work / "dist"
    subprocess.run([sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
                    "--distpath", str(dist), "--workpath", str(work / "pyinstaller"),
                    str(ROOT / "packaging" / "hearth.spec")], check=True, cwd=ROOT)
    return dist / "hearth"


def _elf_files(tree: Path) -> list[Path]:
    found = []
    for path in tree.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as f:
                if f.read(4) == b"\x7fELF":
                    found.append(path)
    return found


# Qt plugins that load only when their desktop asks for them: the GTK look (platformthemes) and the
# native Wayland platform (Qt falls back to X11 through XWayland without it). What only they link
# goes to Recommends, so a system without GTK or Wayland libraries still installs the app.
_OPTIONAL_PLUGIN_DIRS = {"platformthemes", "wayland-decoration-client", "wayland-graphics-integration-client",
                         "wayland-shell-integration", "wayland-graphics-integration-server"}
_OPTIONAL_PACKAGES = {"libgtk-3.so.0": "libgtk-3-0", "libgdk-3.so.0": "libgtk-3-0",
                      "libwayland-cursor.so.0": "libwayland-cursor0", "libwayland-egl.so.1": "libwayland-egl1",
                      "libwayland-client.so.0": "libwayland-client0"}


def _optional(path: Path) -> bool:
    if path.name.startswith(("libqwayland", "libQt6Wayland", "libQt6Wl")):  # Qt's Wayland client and its plugins
        return True
    return "plugins" in path.parts and path.parent.name in _OPTIONAL_PLUGIN_DIRS


def system_libraries(tree: Path) -> tuple[set[str], set[str]]:
    """Sonames the tree's ELF files link but the tree does not carry: (required, only by optional plugins)."""
    carried = {p.name for p in tree.rglob("*") if p.is_file()}
    required: set[str] = set()
    optional: set[str] = set()
    for path in _elf_files(tree):
        try:
            needed = read_dynamic(path).needed
        except ElfError:
            continue
        (optional if _optional(path) else required).update(n for n in needed if n not in carried)
    return required, optional - required


def _dpkg_owner(soname: str) -> str | None:
    found = subprocess.run(["dpkg", "-S", f"*/{soname}"], capture_output=True, text=True, check=False)
    for line in found.stdout.splitlines():
        package = line.split(":", 1)[0].split(",")[0].strip()
        if package and "-dev" not in package:
            return package.split(":")[0]
    return None


def depends(tree: Path) -> tuple[list[str], list[str]]:
    """The .deb's Depends (one Debian package per system library the tree links) and Recommends."""
    packages: set[str] = set()
    unknown = []
    required, optional = system_libraries(tree)
    recommends = sorted({_OPTIONAL_PACKAGES.get(s) or PACKAGES.get(s, ("",))[0] or _dpkg_owner(s) or "" for s in optional} - {""})
    for soname in sorted(required):
        if soname in _GLIBC:
            continue
        if soname in PACKAGES:
            packages.add(PACKAGES[soname][0])
        elif owner := _dpkg_owner(soname):
            packages.add(owner)
        else:
            unknown.append(soname)
    if unknown:
        raise SystemExit(f"no Debian package is known for {', '.join(unknown)}: add them to desktop.preflight.PACKAGES")
    glibc = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libc6"], capture_output=True, text=True,
                           check=False).stdout.split("-")[0]
    # Qt brings no fonts and finds them through fontconfig: its configuration and at least one font
    # (fontconfig-config depends on fonts-dejavu-core or another font) must be on the system.
    packages.add("fontconfig-config")
    return [f"libc6 (>= {glibc})" if glibc else "libc6", *sorted(packages)], recommends


def _arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def build_deb(app: Path, out: Path, work: Path) -> Path:
    ver, arch = version(), _arch()
    root = work / "deb"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(app, root / INSTALL_DIR.lstrip("/"), symlinks=True)
    (root / "usr" / "bin").mkdir(parents=True)
    os.symlink(f"{INSTALL_DIR}/hearth", root / "usr" / "bin" / "hearth")  # `hearth` on PATH
    apps = root / "usr" / "share" / "applications"
    apps.mkdir(parents=True)
    (apps / "hearth.desktop").write_text(DESKTOP_ENTRY.format(exec=f"{INSTALL_DIR}/hearth", icon="hearth"))
    icons = root / "usr" / "share" / "icons" / "hicolor" / "scalable" / "apps"
    icons.mkdir(parents=True)
    shutil.copy(ROOT / "resources" / "icons" / "hearth.svg", icons / "hearth.svg")
    control = root / "DEBIAN"
    control.mkdir()
    deps, recommends = depends(app)
    (control / "control").write_text(
        f"Package: hearth\nVersion: {ver}\nArchitecture: {arch}\nMaintainer: Hearth <hearth@localhost>\n"
        f"Installed-Size: {_size(root) // 1024}\nDepends: {', '.join(deps)}\n"
        + (f"Recommends: {', '.join(recommends)}\n" if recommends else "")
        + "Section: science\nPriority: optional\n"
        "Homepage: https://github.com/hearth-app/hearth\n"
        "Description: run and fine-tune language models on this computer\n"
        " Hearth finds models on the Hugging Face Hub, says which file fits this machine, chats with\n"
        " them through llama.cpp and teaches them your documents. A starter model is included.\n"
    )
    # The window's icon cache and menu are refreshed by the desktop's triggers (hicolor, desktop-file-utils).
    # Nothing else to do on install: the app writes only to the user's own folders (platformdirs).
    deb = out / f"hearth_{ver}_{arch}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z6", "--build", str(root), str(deb)],
                   check=True, stdout=subprocess.DEVNULL)
    return deb


def build_tarball(app: Path, out: Path) -> Path:
    ver = version()
    machine = os.uname().machine
    name = f"hearth-{ver}-linux-{machine}"
    tarball = out / f"{name}.tar.gz"
    entry = DESKTOP_ENTRY.format(exec="HEARTH_DIR/hearth", icon="HEARTH_DIR/hearth.svg")
    script = (
        "#!/bin/sh\n# Adds Hearth to this user's application menu, pointing at this folder.\nset -e\n"
        'here="$(cd "$(dirname "$0")" && pwd)"\nmkdir -p "$HOME/.local/share/applications"\n'
        'sed "s|HEARTH_DIR|$here|g" "$here/hearth.desktop" > "$HOME/.local/share/applications/hearth.desktop"\n'
        'echo "Hearth is in your application menu; run $here/hearth from a terminal."\n'
    )
    with tarfile.open(tarball, "w:gz", compresslevel=6) as tar:
        tar.add(app, arcname=name)
        for file_name, text, mode in (("hearth.desktop", entry, 0o644), ("install-desktop-entry.sh", script, 0o755)):
            staged = out / f".{file_name}"
            staged.write_text(text)
            staged.chmod(mode)
            tar.add(staged, arcname=f"{name}/{file_name}")
            staged.unlink()
        tar.add(ROOT / "resources" / "icons" / "hearth.svg", arcname=f"{name}/hearth.svg")
    return tarball


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "package")
    parser.add_argument("--skip-freeze", action="store_true", help="reuse the PyInstaller folder of the last build")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    app = args.work / "dist" / "hearth" if args.skip_freeze else freeze(args.work)
    print(f"app folder   {app} ({_size(app) / 2**20:.0f} MB)")
    for artifact in (build_deb(app, args.out, args.work), build_tarball(app, args.out)):
        print(f"{artifact.name:<40} {artifact.stat().st_size / 2**20:8.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
