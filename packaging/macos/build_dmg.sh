#!/usr/bin/env bash
# macOS: Hearth.app (PyInstaller, packaging/hearth.spec makes the bundle on darwin) in a .dmg.
# Run by the release workflow on macos-14 (arm64) and macos-13 (x86-64), after `make setup-dev`
# built llama.cpp with Metal (llama-cpp-python turns it on for Apple machines).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
VERSION=$("$PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')
ARCH=$(uname -m)
"$PY" -m PyInstaller --noconfirm --log-level WARN --distpath build/package/dist --workpath build/package/pyinstaller \
    packaging/hearth.spec
APP=build/package/dist/Hearth.app
test -d "$APP"
mkdir -p dist build/package/dmg
rm -rf build/package/dmg/*
cp -R "$APP" build/package/dmg/
ln -s /Applications build/package/dmg/Applications   # drag-to-install
DMG="dist/Hearth-$VERSION-macos-$ARCH.dmg"
rm -f "$DMG"
hdiutil create -volname "Hearth $VERSION" -srcfolder build/package/dmg -ov -format UDZO "$DMG"
ls -l "$DMG"
