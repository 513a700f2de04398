#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test that needs no GPU (CTest, label `gpu`
# excluded). The single test command of the README and of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cd build
ctest --output-on-failure -LE gpu -j "${TEST_JOBS:-$(nproc)}" --timeout 900
