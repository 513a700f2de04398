#!/usr/bin/env bash
# Configures and builds tessera into build/ (Release). CUDA is built where nvcc is found
# (on PATH or in /usr/local/cuda); pass -DTESSERA_CUDA=OFF in CMAKE_ARGS to skip it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/nvcc_path.sh
JOBS="${JOBS:-$(nproc)}"
# shellcheck disable=SC2086
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-} >/dev/null
cmake --build build -j "$JOBS"
