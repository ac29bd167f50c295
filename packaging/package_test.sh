#!/usr/bin/env bash
# `make package-test`: the installers' smoke test, on what `make package` built (dist/, build/package/).
#
# 1. A bare Debian root (debootstrap, minbase: no Python, no compiler) gets the .deb with
#    `apt-get install ./hearth_*.deb`, so a missing Depends fails here. As an ordinary user, with the
#    install folder read-only, it runs the installed app's self-test under Xvfb (window, starter model,
#    a few tokens, a screenshot), `hearth chat` and `hearth models`; nothing may be written under
#    /opt/hearth. Then `apt-get remove` must take the program away and leave the user's data.
# 2. makensis compiles the Windows installer script against the Linux tree (validity only).
# 3. The training pack: an install killed midway leaves nothing that is used; the next one succeeds;
#    the installed app's `hearth finetune` then runs a 2-step LoRA on the tiny fixture model.
# Needs root (debootstrap, chroot); installs the Debian tools it uses.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR=$PWD
PY=${PYTHON:-$ROOT_DIR/.venv/bin/python}
WORK=$ROOT_DIR/build/package-test
SHOTS=$ROOT_DIR/.screenshots
mkdir -p "$WORK" "$SHOTS"
say() { printf '\n== %s\n' "$*"; }
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo

DEB=$(ls dist/hearth_*.deb | head -1)
APP=$ROOT_DIR/build/package/dist/hearth
VERSION=$("$PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')
[ -f "$DEB" ] && [ -x "$APP/hearth" ] || { echo "run 'make package' first" >&2; exit 2; }

bash packaging/system_deps.sh

# -- 1. the .deb in a bare Debian root --------------------------------------------------------------
CHROOT=$WORK/root
MIRROR=$(grep -h -m1 -oE '^URIs: *\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | head -1)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
cleanup() {
    for m in tmp/.X11-unix dev/shm dev/pts dev proc; do
        mountpoint -q "$CHROOT/$m" 2>/dev/null && $SUDO umount -l "$CHROOT/$m" || true
    done
    [ -n "${XVFB_PID:-}" ] && kill "$XVFB_PID" 2>/dev/null || true
}
trap cleanup EXIT
if [ ! -f "$WORK/root.tar" ]; then
    say "debootstrap $SUITE (minbase) from $MIRROR"
    $SUDO rm -rf "$CHROOT"
    $SUDO debootstrap --variant=minbase "$SUITE" "$CHROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log"; exit 1; }
    $SUDO tar -C "$CHROOT" -cf "$WORK/root.tar" .   # a pristine copy: later runs start from it
else
    say "a fresh Debian root from the saved debootstrap"
    $SUDO rm -rf "$CHROOT" && mkdir -p "$CHROOT" && $SUDO tar -C "$CHROOT" -xf "$WORK/root.tar"
fi
in_root() { $SUDO chroot "$CHROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
$SUDO cp /etc/resolv.conf "$CHROOT/etc/resolv.conf"
$SUDO mount -t proc proc "$CHROOT/proc"
$SUDO mount --bind /dev "$CHROOT/dev"
$SUDO mount --bind /dev/pts "$CHROOT/dev/pts"
$SUDO mount -t tmpfs -o mode=1777 tmpfs "$CHROOT/dev/shm"   # multiprocessing's semaphores live there
for tool in python3 gcc cc; do
    if in_root sh -c "command -v $tool" >/dev/null; then echo "the bare root has $tool: not a clean system" >&2; exit 1; fi
done

say "apt-get install ./$(basename "$DEB") in the bare root"
$SUDO cp "$DEB" "$CHROOT/tmp/"
in_root apt-get update -q >/dev/null
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "/tmp/$(basename "$DEB")" \
    >"$WORK/apt-install.log" 2>&1 || { tail -30 "$WORK/apt-install.log"; exit 1; }
grep -E "^(Setting up|The following NEW)" "$WORK/apt-install.log" | head -3
in_root dpkg-query -W -f='installed ${Package} ${Version}\n' hearth
in_root sh -c 'test -x /opt/hearth/hearth && test -L /usr/bin/hearth && test -f /usr/share/applications/hearth.desktop'
[ "$(in_root hearth --version)" = "hearth $VERSION" ] || { echo "hearth --version is not $VERSION" >&2; exit 1; }

in_root useradd --create-home --shell /bin/sh tester
in_root chmod -R a-w /opt/hearth   # read-only for everyone (the tester is no owner anyway)
$SUDO touch "$CHROOT/tmp/before-run"
sleep 1
mkdir -p "$CHROOT/tmp/.X11-unix" 2>/dev/null || $SUDO mkdir -p "$CHROOT/tmp/.X11-unix"
DISPLAY_NUM=:$((90 + RANDOM % 9))
Xvfb "$DISPLAY_NUM" -screen 0 1280x820x24 -nolisten tcp >"$WORK/xvfb.log" 2>&1 &
XVFB_PID=$!
sleep 2
$SUDO mount --bind /tmp/.X11-unix "$CHROOT/tmp/.X11-unix"
as_tester() { in_root runuser -u tester -- env HOME=/home/tester DISPLAY="$DISPLAY_NUM" XDG_RUNTIME_DIR=/tmp "$@"; }

say "hearth --self-test (installed app, Xvfb $DISPLAY_NUM)"
as_tester hearth --self-test /home/tester/self-test.png
$SUDO cp "$CHROOT/home/tester/self-test.png" "$SHOTS/installed-self-test.png"
echo "screenshot: $SHOTS/installed-self-test.png"

say "hearth models / hearth chat (installed app)"
as_tester hearth models
answer=$(as_tester hearth chat gemma-3-270m-q4_k_m -p "The capital of France is" --max-tokens 8 2>/dev/null || true)
echo "chat answered: $answer"
[ -n "$(echo "$answer" | tr -d '[:space:]')" ] || { echo "hearth chat answered nothing" >&2; exit 1; }

say "an image in hearth chat (the installed app's libmtmd and Pillow)"
VISION=$WORK/vision
rm -rf "$VISION" && mkdir -p "$VISION"
"$PY" -c "import sys; from pathlib import Path; sys.path.insert(0, '$ROOT_DIR')
from tests.fixtures.tiny_vision import write_test_image, write_tiny_vision_model
write_tiny_vision_model(Path('$VISION')); write_test_image(Path('$VISION/picture.jpg'), 'jpeg', seed=1)"
$SUDO rm -rf "$CHROOT/tmp/vision" && $SUDO cp -r "$VISION" "$CHROOT/tmp/vision" && $SUDO chmod -R a+rX "$CHROOT/tmp/vision"
as_tester hearth import /tmp/vision/tiny-vision-llama.gguf --mmproj /tmp/vision/mmproj-tiny-vision.gguf --name tiny-vision
stats=$(as_tester hearth chat tiny-vision --image /tmp/vision/picture.jpg -p "What is in the picture?" --max-tokens 4 2>&1 >/dev/null || true)
echo "$stats" | tail -1
echo "$stats" | grep -q "image tokens" || { echo "the installed app did not read the image" >&2; exit 1; }

say "a model split across another machine (the installed app's RPC backend: hearth rpc-worker, hearth workers)"
RPC_PORT=$((50200 + RANDOM % 500))
as_tester hearth rpc-worker --port "$RPC_PORT" >"$WORK/rpc-worker.log" 2>&1 &
for _ in $(seq 60); do grep -q "Starting RPC server" "$WORK/rpc-worker.log" && break; sleep 1; done
head -3 "$WORK/rpc-worker.log" | grep -v "^load_backend" || true
as_tester hearth workers add "127.0.0.1:$RPC_PORT" --name other-pc
as_tester hearth workers use always
split=$(as_tester hearth chat gemma-3-270m-q4_k_m -p "The capital of France is" --max-tokens 4 2>&1 >/dev/null || true)
$SUDO pkill -f "hearth rpc-worker --port $RPC_PORT" || true
echo "$split" | grep "split:" || { echo "$split" | tail -5; echo "the installed app did not split the model" >&2; exit 1; }
as_tester hearth workers remove other-pc

written=$(in_root find /opt/hearth -newer /tmp/before-run | head -5)
[ -z "$written" ] || { echo "the app wrote inside /opt/hearth: $written" >&2; exit 1; }
echo "nothing written under /opt/hearth"

say "apt-get remove: the program goes, the user's data stays"
in_root chmod -R u+w /opt/hearth
in_root env DEBIAN_FRONTEND=noninteractive apt-get remove -y -q hearth >/dev/null
in_root sh -c 'test ! -e /opt/hearth && test ! -e /usr/bin/hearth && test ! -e /usr/share/applications/hearth.desktop' \
    || { echo "apt-get remove left files of the program" >&2; exit 1; }
in_root sh -c 'ls /home/tester/.local/share/Hearth/models/*.gguf' >/dev/null \
    || { echo "the user's data went with the program" >&2; exit 1; }
echo "removed; the user's models are still in ~/.local/share/Hearth"
cleanup; trap - EXIT

# -- 2. the Windows installer script compiles ------------------------------------------------------
say "makensis packaging/windows/hearth.nsi"
makensis -V2 -DFAST -DVERSION="$VERSION" -DAPPDIR="$APP" -DOUTFILE="$WORK/hearth-$VERSION-windows-setup-check.exe" \
    packaging/windows/hearth.nsi
rm -f "$WORK/hearth-$VERSION-windows-setup-check.exe"

# -- 3. the training pack, installed by the installed app ------------------------------------------
say "training pack: an install killed midway, then a real one, then a 2-step LoRA"
"$PY" packaging/trainpack_test.py --app "$APP/hearth" --work "$WORK/trainpack"
say "package-test passed"
