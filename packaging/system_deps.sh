#!/usr/bin/env bash
# The Debian tools `make package` and `make package-test` use, installed when missing: dpkg-deb (dpkg),
# debootstrap (the bare root), Xvfb (the screen for the self-test), makensis (the Windows script),
# and the X11 libraries Qt's xcb plugin links, so that PyInstaller finds the same libraries on every
# build machine (what it finds is bundled; what it does not becomes a Depends of the .deb).
set -euo pipefail
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
need=()
for tool in dpkg-deb:dpkg debootstrap:debootstrap Xvfb:xvfb makensis:nsis; do
    command -v "${tool%%:*}" >/dev/null || need+=("${tool##*:}")
done
for lib in libxkbcommon-x11-0 libxcb-cursor0 libegl1 libgl1 libfontconfig1 libdbus-1-3; do
    dpkg-query -W -f='${Status}' "$lib" 2>/dev/null | grep -q "install ok installed" || need+=("$lib")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "Installing Debian packages: ${need[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null \
        || { $SUDO apt-get update -q >/dev/null && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null; }
fi
