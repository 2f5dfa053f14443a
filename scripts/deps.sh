#!/usr/bin/env bash
# Installs the Debian 12 packages the project needs, only those missing. Idempotent; run as
# root (or with sudo available). Nothing else is downloaded, ever.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git      # toolchain
  libgtest-dev libgmock-dev libbenchmark-dev            # tests, micro-benchmarks
  nlohmann-json3-dev libcli11-dev libcpp-httplib-dev    # JSON, command line, HTTP server
  libvulkan-dev glslc mesa-vulkan-drivers vulkan-tools  # Vulkan backend, lavapipe for tests
  clang libclang-rt-14-dev                              # libFuzzer target
  clang-format                                          # the .clang-format check of test.sh
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
