#!/usr/bin/env bash
# Downloads, here, the Debian packages that a GPU machine's image may lack (Boost's
# program_options library and headers, 10 MB; libzstd's headers and static library, 0.4 MB)
# into .gpu-deps/, so gpu_check.sh can unpack them there into a private prefix; such a machine
# may have no package registry of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu-deps
cd .gpu-deps
apt-get download libboost-program-options1.74-dev libboost-program-options1.74.0 libboost1.74-dev \
  libzstd-dev
ls -la
