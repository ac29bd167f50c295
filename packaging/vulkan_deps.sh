#!/usr/bin/env bash
# What llama.cpp's Vulkan backend (ggml-vulkan: AMD, Intel and NVIDIA GPUs) needs to compile on Linux,
# installed when missing, and the CMake arguments that point the build at it.
#
#   bash packaging/vulkan_deps.sh             the build's tools; prints the CMake arguments (last line of stdout)
#   bash packaging/vulkan_deps.sh --runtime   also lavapipe (Debian's mesa-vulkan-drivers), the Vulkan device
#                                             on the CPU that the tests run the backend on
#
# The tools: glslc (compiles the shaders to SPIR-V), the Vulkan loader's development files and the SPIR-V
# headers (Debian: glslc, libvulkan-dev, spirv-headers). ggml-vulkan also uses VK_EXT_layer_settings,
# which Vulkan-Headers 1.3.239 (Debian 12's libvulkan-dev) lacks: then the headers of Debian 13's
# libvulkan-dev (1.4.309, checked by its SHA-256 from Debian's Packages index) are unpacked into Hearth's
# cache and given to CMake as Vulkan_INCLUDE_DIR. Headers only: the program links the system's loader
# (libvulkan.so.1), which forwards any extension structure it does not know to the driver.
set -euo pipefail

HEADERS_VERSION=1.4.309.0-1
HEADERS_URL="http://deb.debian.org/debian/pool/main/v/vulkan-loader/libvulkan-dev_${HEADERS_VERSION}_amd64.deb"
HEADERS_SHA256=8d329d465e16168afff58b1bd0dd6db46aac2cc3f56054a481b25a04e90b345a
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/hearth/vulkan-headers-$HEADERS_VERSION"
SYSTEM_HEADER=/usr/include/vulkan/vulkan_core.h

say() { echo "vulkan: $*" >&2; }

need=()
command -v glslc >/dev/null || need+=(glslc)
[ -f "$SYSTEM_HEADER" ] || need+=(libvulkan-dev)
compgen -G "/usr/share/cmake/SPIRV-Headers/SPIRV-HeadersConfig.cmake" >/dev/null \
    || compgen -G "/usr/lib/*/cmake/SPIRV-Headers/SPIRV-HeadersConfig.cmake" >/dev/null || need+=(spirv-headers)
if [ "${1:-}" = --runtime ] && ! compgen -G "/usr/share/vulkan/icd.d/lvp_icd*.json" >/dev/null; then
    need+=(mesa-vulkan-drivers)
fi
if [ ${#need[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null; then
        say "missing ${need[*]}: install your system's packages for them (or build without Vulkan: HEARTH_VULKAN=off)"
        exit 1
    fi
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
    say "installing Debian packages: ${need[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null 2>&1 \
        || { $SUDO apt-get update -q >/dev/null 2>&1 \
             && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null; } \
        || { say "could not install ${need[*]}: run 'sudo apt-get install ${need[*]}', or build without Vulkan: HEARTH_VULKAN=off"; exit 1; }
fi

include=""
if ! grep -q "VK_EXT_layer_settings" "$SYSTEM_HEADER"; then
    if [ ! -f "$CACHE/usr/include/vulkan/vulkan_core.h" ]; then
        say "the system's Vulkan headers are too old for llama.cpp: fetching Vulkan-Headers $HEADERS_VERSION (Debian)"
        tmp="$(mktemp -d)"
        trap 'rm -rf "$tmp"' EXIT
        curl -fsSL --retry 3 -o "$tmp/headers.deb" "$HEADERS_URL" \
            || { say "could not download $HEADERS_URL"; exit 1; }
        echo "$HEADERS_SHA256  $tmp/headers.deb" | sha256sum -c --quiet - \
            || { say "the downloaded headers do not match their checksum"; exit 1; }
        dpkg-deb -x "$tmp/headers.deb" "$tmp/root"
        mkdir -p "$CACHE/usr"
        rm -rf "$CACHE/usr/include"
        mv "$tmp/root/usr/include" "$CACHE/usr/include"
    fi
    include="-DVulkan_INCLUDE_DIR=$CACHE/usr/include"
fi
echo "$include"
