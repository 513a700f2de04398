#!/usr/bin/env bash
# Builds, here, the binaries that gpu_check.sh runs on a GPU (test_gpu, bench_train_step,
# bench_gpu_ops, tessera; CUDA ON, sm_80 + sm_90) and copies them into .gpu-bin/bin, with the
# libraries a non-Debian image may lack (Boost.Program_options; zstd and zlib, for text inputs)
# in .gpu-bin/lib, where gpu_check.sh looks for a library the image does not have. Copy .gpu-bin/
# along and run `scripts/gpu_check.sh --prebuilt .gpu-bin` there: no minutes go into building.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/nvcc_path.sh
BUILD="${BUILD:-build}"
targets=(test_gpu bench_train_step bench_gpu_ops tessera)
cmake -S . -B "$BUILD" -DTESSERA_CUDA=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target "${targets[@]}"
rm -rf .gpu-bin
mkdir -p .gpu-bin/bin .gpu-bin/lib
for t in "${targets[@]}"; do cp "$BUILD/bin/$t" .gpu-bin/bin/; done
cp -L /usr/lib/x86_64-linux-gnu/libboost_program_options.so.1.74.0 .gpu-bin/lib/
cp -L /usr/lib/x86_64-linux-gnu/libzstd.so.1 /usr/lib/x86_64-linux-gnu/libz.so.1 .gpu-bin/lib/
git rev-parse HEAD >.gpu-bin/COMMIT
git diff --quiet HEAD || echo "(with uncommitted changes)" >>.gpu-bin/COMMIT
du -sh .gpu-bin
