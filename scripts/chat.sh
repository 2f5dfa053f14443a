#!/usr/bin/env bash
# The main job from a fresh Debian 12 machine: install what is missing, build, and chat
# with the bundled demo model (or pass your own: scripts/chat.sh -m model.gguf).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh
exec build/tools/rwkv chat "$@"
