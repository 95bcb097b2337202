#!/usr/bin/env bash
# Installs the Debian packages blocklab needs, if any is missing. Debian 12, as root.
# Arguments name more packages, for targets that need them (make bench-twin: python3-torch).
set -euo pipefail
packages=(
  cmake g++ make
  libtorch-dev            # libtorch 1.13 C++ frontend
  libopenblas-dev         # without it libtorch's matmul falls back to reference BLAS, ~40x slower
  libjemalloc-dev         # allocator without page-fault storms on fresh activation buffers
  libgloo-dev             # headers of the Gloo collectives that libtorch's c10d engine (blocklab launch) uses
  libcli11-dev libtomlplusplus-dev nlohmann-json3-dev libfmt-dev zlib1g-dev libpng-dev libgtest-dev
  dataset-fashion-mnist   # /usr/share/datasets/fashion-mnist
  fortunes                # /usr/share/games/fortunes: the language models' default corpus
  libjs-dygraphs          # the charting library `blocklab report` inlines into its pages
  chromium                # a real browser for the report tests (headless)
  "$@"
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
