#!/usr/bin/env bash
# The one command to run on a GPU machine: build with CUDA, run the `gpu` tests (CUDA vs CPU
# twins), run the benchmarks, print what was measured. Prints every step's outcome and keeps
# going, so one run shows everything; exits non-zero if any step failed. Under 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-build-gpu/out}"
mkdir -p "$OUT_DIR"
status=0
step() { echo; echo "=== $* ==="; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || status=1
nvcc --version | tail -n 2
grep PRETTY_NAME /etc/os-release
echo "cores: $(nproc)"

EXTRA=()
# Boost.Program_options from .gpu-deps/ (scripts/fetch_gpu_deps.sh) when the image lacks it.
if ! ls /usr/lib/x86_64-linux-gnu/libboost_program_options.so >/dev/null 2>&1 &&
   ls .gpu-deps/*.deb >/dev/null 2>&1; then
  mkdir -p build-gpu/deps
  for f in .gpu-deps/*.deb; do dpkg -x "$f" build-gpu/deps; done
  EXTRA+=("-DBoost_DIR=$PWD/build-gpu/deps/usr/lib/x86_64-linux-gnu/cmake/Boost-1.74.0")
  echo "using Boost 1.74 from .gpu-deps/"
fi

step "configure (TESSERA_CUDA=ON, sm_80 + sm_90)"
if ! cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DTESSERA_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES="80;90" "${EXTRA[@]}" >"$OUT_DIR/configure.log" 2>&1; then
  grep -E "Could NOT find|CMake Error|not found" "$OUT_DIR/configure.log" | head -20
  echo "configure FAILED (full log: configure.log)"
  exit 1
fi

step "build"
if ! cmake --build build-gpu -j "$(nproc)" >"$OUT_DIR/build.log" 2>&1; then
  grep -E "error" "$OUT_DIR/build.log" | head -30
  echo "build FAILED"
  exit 1
fi

step "gpu tests: device memory, every CUDA op against its CPU twin, NCCL on one GPU"
# The binary itself, so each test's name and tolerance line shows; a hung kernel ends at 300 s.
timeout 300 build-gpu/bin/test_gpu 2>&1 | tee "$OUT_DIR/test_gpu.txt" | grep -E "^\[ +(OK|FAILED|PASSED|SKIPPED) |Failure|expected|element|error" | head -150
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

step "GPU training step: whole models on one GPU, bf16 with fp32 master weights, T 1024 (MFU)"
for shape in gpt2_124m gpt2_350m gpt2_1.3b; do
  timeout 150 build-gpu/bin/bench_train_step --device cuda --precision bf16 --shape "$shape" \
    --steps 5 --warmup 2 2>&1 | tee -a "$OUT_DIR/bench_train_step_gpu.txt" || status=1
done

step "GPU benchmark: one layer's ops at GPT-2 124M / 350M / 1.3B widths, T 1024, bf16"
timeout 240 build-gpu/bin/bench_gpu_ops --shape all --batch 8 --dtype bf16 2>&1 |
  tee "$OUT_DIR/bench_gpu_ops.txt" || status=1

step "CPU tests on this machine (sanity of the CUDA build)"
(cd build-gpu && timeout 180 ctest -L unit -j 8 2>&1 | tail -n 3) || status=1

step "multi-rank tests (MPI) on this machine's cores"
(cd build-gpu && OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
  timeout 120 ctest -R "test_comm|test_layouts|Mpirun" --output-on-failure 2>&1 | tail -n 5) ||
  status=1

step "checkpoint save/load against raw disk I/O, one core per rank (docs/PERFORMANCE.md)"
# Last: the GPU figures above matter most if the time runs out. (bench_parallel's CPU figures
# for this kind of machine are recorded already.)
for layout in "1" "4 --tp 2 --pp 2"; do
  read -r n rest <<<"$layout"
  # shellcheck disable=SC2086
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 120 mpirun --bind-to none \
    -n "$n" build-gpu/bin/bench_checkpoint $rest --dir "${TMPDIR:-/tmp}/tessera_ckpt_bench" \
    2>&1 | tee -a "$OUT_DIR/bench_checkpoint.txt" || status=1
done

echo
echo "gpu_check: $([ $status -eq 0 ] && echo PASSED || echo FAILED)"
exit $status
