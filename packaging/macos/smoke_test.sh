#!/usr/bin/env bash
# macOS smoke test (release workflow): mount the .dmg, copy Hearth.app out as a user would, run the
# installed app's self-test (window, starter model, a few tokens, a screenshot), `hearth models` and
# `hearth chat`, with the app folder read-only.
set -euo pipefail
cd "$(dirname "$0")/../.."
DMG=$(ls dist/Hearth-*.dmg | head -1)
MNT=$(mktemp -d)
hdiutil attach "$DMG" -mountpoint "$MNT" -nobrowse -quiet
trap 'hdiutil detach "$MNT" -quiet || true' EXIT
DEST=$(mktemp -d)/Applications
mkdir -p "$DEST"
cp -R "$MNT/Hearth.app" "$DEST/"
chmod -R a-w "$DEST/Hearth.app"
BIN="$DEST/Hearth.app/Contents/MacOS/hearth"
export HEARTH_HOME=$(mktemp -d)
"$BIN" --version
"$BIN" --self-test "$PWD/dist/self-test-macos.png"
"$BIN" models
"$BIN" chat gemma-3-270m-q4_k_m -p "The capital of France is" --max-tokens 8
