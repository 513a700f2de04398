#!/usr/bin/env bash
# The one command to run on a GPU machine: build with CUDA, run the `gpu` tests (CUDA vs CPU
# twins), run the benchmarks, print what was measured. Prints every step's outcome and keeps
# going, so one run shows everything; exits non-zero if any step failed. Under 8 minutes.
#
#   scripts/gpu_check.sh                  configure and build build-gpu/ here, then run
#   scripts/gpu_check.sh --prebuilt DIR   run DIR/bin's binaries (made on another machine by
#                                         scripts/pack_gpu_bin.sh), skipping the build and the
#                                         CPU-only checks; libraries this machine lacks are
#                                         taken from DIR/lib or the Python packages' NCCL
#   scripts/gpu_check.sh --check-filters BINDIR
#                                         no GPU needed: that the three parts below divide
#                                         BINDIR/test_gpu's tests between them, none empty (a
#                                         CTest test, so that a renamed test cannot drop out)
set -uo pipefail
cd "$(dirname "$0")/.."

# The GPU tests in three parts, each run under its own timeout: every CUDA op and the model;
# cuDNN's attention (which builds its graphs); NCCL and the Trainer (which uses NCCL).
PART1_FILTER="-Nccl*:GpuTrainer*:*Cudnn*:*/cudnn"
PART2_FILTER="*Cudnn*:*/cudnn"
PART3_FILTER="Nccl*:GpuTrainer*"
if [ "${1:-}" = "--check-filters" ]; then
  count() { "$2"/test_gpu --gtest_list_tests --gtest_filter="$1" 2>/dev/null | grep -c "^  "; }
  all=$(count "*" "$2") p1=$(count "$PART1_FILTER" "$2") p2=$(count "$PART2_FILTER" "$2")
  p3=$(count "$PART3_FILTER" "$2")
  echo "test_gpu: $all tests; part 1: $p1, part 2: $p2, part 3: $p3"
  if [ "$p1" -gt 0 ] && [ "$p2" -gt 0 ] && [ "$p3" -gt 0 ] && [ $((p1 + p2 + p3)) -eq "$all" ]; then
    exit 0
  fi
  echo "the parts' filters must divide the tests between them, none empty"
  exit 1
fi
OUT_DIR="${OUT:-build-gpu/out}"
mkdir -p "$OUT_DIR"
status=0
step() { echo; echo "=== $* ==="; }
PREBUILT=""
case "${1:-}" in
  "") ;;
  --prebuilt)
    [ -n "${2:-}" ] && [ -d "$2/bin" ] || {
      echo "gpu_check.sh: --prebuilt DIR: expected a folder holding bin/ (scripts/pack_gpu_bin.sh), found '${2:-}'" >&2
      exit 2
    }
    PREBUILT="$(cd "$2" && pwd)" ;;
  *)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    if [ "$1" = "--help" ] || [ "$1" = "-h" ]; then exit 0; fi
    echo "gpu_check.sh: unknown argument '$1'" >&2
    exit 2 ;;
esac

# Where a shared library lives on this machine: the CUDA toolkit, the system, or a Python
# package (PyTorch's wheels carry NCCL and cuBLAS). Prints its folder, or nothing.
find_lib() {
  local d
  for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/lib/x86_64-linux-gnu; do
    [ -e "$d/$1" ] && { echo "$d"; return; }
  done
  d=$(find /opt /usr/local/lib /usr/lib/python3* -name "$1" -path "*nvidia*" 2>/dev/null | head -n 1)
  [ -n "$d" ] && dirname "$d"
}
step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || status=1
nvcc --version | tail -n 2
grep PRETTY_NAME /etc/os-release
echo "cores: $(nproc)"

BIN=build-gpu/bin
[ -n "$PREBUILT" ] && cat "$PREBUILT/COMMIT" 2>/dev/null
if [ -n "$PREBUILT" ]; then
  step "prebuilt binaries from $PREBUILT (no build here)"
  BIN="$PREBUILT/bin"
  libpath="/usr/local/cuda/lib64:/usr/local/cuda/lib"
  # cuBLASLt and cuDNN are opened with dlopen, so ldd does not list them.
  for lib in libcublasLt.so.13 libcudnn.so.9 $(ldd "$BIN"/* | awk '/not found/ {print $1}' | sort -u); do
    dir=$(find_lib "$lib")
    [ -z "$dir" ] && [ -e "$PREBUILT/lib/$lib" ] && dir="$PREBUILT/lib"
    echo "$lib: ${dir:-MISSING}"
    [ -n "$dir" ] && libpath="$libpath:$dir"
  done
  export LD_LIBRARY_PATH="$libpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  if ldd "$BIN"/* | grep "not found"; then echo "prebuilt binaries cannot load"; exit 1; fi
else
EXTRA=()
# Boost.Program_options from .gpu-deps/ (scripts/fetch_gpu_deps.sh) when the image lacks it.
if ! ls /usr/lib/x86_64-linux-gnu/libboost_program_options.so >/dev/null 2>&1 &&
   ls .gpu-deps/*.deb >/dev/null 2>&1; then
  mkdir -p build-gpu/deps
  for f in .gpu-deps/*.deb; do dpkg -x "$f" build-gpu/deps; done
  EXTRA+=("-DBoost_DIR=$PWD/build-gpu/deps/usr/lib/x86_64-linux-gnu/cmake/Boost-1.74.0")
  echo "using Boost 1.74 from .gpu-deps/"
fi

if [ ! -e /usr/local/cuda/include/nccl.h ]; then
  nccl_lib=$(find_lib libnccl.so.2)
  if [ -n "$nccl_lib" ]; then
    EXTRA+=("-DNCCL_LIBRARY=$nccl_lib/libnccl.so.2" "-DNCCL_INCLUDE_DIR=$nccl_lib/../include")
    echo "using NCCL from $nccl_lib"
  fi
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
fi

# The figures to read first, printed last: test verdicts, MFU per shape and attention kernel.
summary() {
  echo
  echo "=== summary ==="
  for f in test_gpu_ops test_gpu_cudnn test_gpu_nccl; do
    grep -h -E "^\[  (PASSED|FAILED) " "$OUT_DIR/$f.txt" 2>/dev/null | sed "s/^/$f: /"
  done
  awk '/^shape /{shape = $2 " B " $6} /^bf16 attention on/{att = $4}
       /^dgelu epilogue on/{att = att "+dgelu"}
       /^\| [0-9]/{printf "step %-11s %-19s %8s ms  %8s tokens/s  MFU %s\n", shape, att, $2, $10, $14}' \
    "$OUT_DIR/bench_train_step_gpu.txt" 2>/dev/null
  grep -h -m 1 "^cuDNN " "$OUT_DIR/bench_gpu_ops.txt" 2>/dev/null
  grep -H -E "final loss|^peak GPU memory" "$OUT_DIR"/train_*.txt 2>/dev/null | sed "s|^$OUT_DIR/||"
  tail -n 1 "$OUT_DIR/sample.txt" 2>/dev/null | sed "s/^/sample.txt: /"
  awk '/bf16 attention on/{att = $NF} /^dgelu epilogue on/{att = att "+dgelu"}
       /^GPT-2/{shape = $1 " " $2} /^\| attention backward \|/{bwd = $5}
       /cuDNN not deterministic/{printf "layer %-12s cudnn attention backward %s ms, %s ms not deterministic\n", shape, bwd, $8}
       /^layer forward/{printf "layer %-12s %-19s %s ms  layer MFU %s\n", shape, att, $5, $(NF-3)}' \
    "$OUT_DIR/bench_gpu_ops.txt" 2>/dev/null
}

# The test binary itself, so each test's name and tolerance line shows. The ops first, then
# the benchmarks, then NCCL and the Trainer (which uses NCCL): a hang in one part (killed by
# its timeout) costs only that part.
# The whole log goes to its file first: `head` in the same pipe as the tests would end them
# with SIGPIPE once it has its lines.
gpu_tests() {  # NAME TIMEOUT FILTER
  local rc=0
  timeout "$2" "$BIN"/test_gpu --gtest_filter="$3" >"$OUT_DIR/$1.txt" 2>&1 || rc=$?
  grep -E "^\[ +(OK|FAILED|PASSED|SKIPPED) |Failure|expected|element|error" "$OUT_DIR/$1.txt" |
    head -120
  [ "$rc" -eq 0 ] || { status=1; echo "test_gpu ($3): FAILED or timed out (exit $rc)"; }
}

step "gpu tests, part 1: device memory, every CUDA op against its CPU twin, the model"
gpu_tests test_gpu_ops 120 "$PART1_FILTER"

step "GPU training step: whole models on one GPU, bf16 with fp32 master weights, T 1024 (MFU)"
# The largest micro-batch that fits (by estimate), on the opt-in kernels (tensor-core attention,
# the DGELU epilogue); then 350M on the default kernels for comparison.
for run in "gpt2_124m tensor_cores on" "gpt2_350m tensor_cores on" "gpt2_1.3b tensor_cores on" \
  "gpt2_350m cuda_cores off" "gpt2_350m cudnn on" "gpt2_1.3b cudnn on"; do
  read -r shape kernels dgelu <<<"$run"
  timeout 75 "$BIN"/bench_train_step --device cuda --precision bf16 --shape "$shape" \
    --attention "$kernels" --dgelu_epilogue "$dgelu" --steps 5 --warmup 2 2>&1 |
    tee -a "$OUT_DIR/bench_train_step_gpu.txt" || status=1
done

step "GPU benchmark: one layer's ops at GPT-2 124M / 350M / 1.3B widths, T 1024, bf16"
for run in "tensor_cores on" "cuda_cores off" "cudnn on"; do
  read -r kernels dgelu <<<"$run"
  timeout 75 "$BIN"/bench_gpu_ops --shape all --batch 8 --dtype bf16 --attention "$kernels" \
    --dgelu_epilogue "$dgelu" 2>&1 | tee -a "$OUT_DIR/bench_gpu_ops.txt" || status=1
done

step "gpu tests, part 2: cuDNN's fused attention against the CPU twin and in the model (builds its graphs)"
gpu_tests test_gpu_cudnn 120 "$PART2_FILTER"

step "gpu tests, part 3: the NCCL communicator on one GPU, the Trainer on the GPU"
gpu_tests test_gpu_nccl 90 "$PART3_FILTER"

# The program as users run it (the watchdog armed, NCCL groups, the log), on a byte-level corpus
# of this repository's own sources, with the default kernels and with the opt-in ones.
step "tessera train on the GPU, bf16: default kernels, then tensor-core attention + DGELU, then cuDNN"
if ! "$BIN"/tessera tokenize encode --input core/ops/*.cpp core/ops/*.cu docs/*.md \
    --output "$OUT_DIR/corpus" >"$OUT_DIR/tokenize.txt" 2>&1; then
  status=1
  echo "tokenize FAILED"
  tail -n 3 "$OUT_DIR/tokenize.txt"
fi
# The small model of every `tessera train` below, on that corpus.
SMALL_RUN=(--data.path "$OUT_DIR/corpus" --train.device cuda --model.d_model 256 --model.layers 4
  --model.heads 4 --model.d_ff 1024 --model.seq_len 256 --train.global_batch 16)
for run in "default" "opt_in --gpu.attention tensor_cores --gpu.dgelu_epilogue true" \
  "cudnn --gpu.attention cudnn --gpu.dgelu_epilogue true"; do
  read -r name flags <<<"$run"
  # shellcheck disable=SC2086
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 90 "$BIN"/tessera train \
    "${SMALL_RUN[@]}" --train.micro_batch 16 --train.steps 200 --optim.lr 1e-3 --optim.warmup 20 \
    --train.log_interval 50 --checkpoint.interval 200 --run.dir "$OUT_DIR/train_$name" $flags \
    >"$OUT_DIR/train_$name.txt" 2>&1
  rc=$?
  echo "tessera train ($name): exit $rc"
  grep -E "^gpu:|final loss|^peak GPU memory" "$OUT_DIR/train_$name.txt"
  [ $rc -eq 0 ] || { status=1; tail -n 5 "$OUT_DIR/train_$name.txt"; }
done
# The default run's checkpoint (bf16 masters saved as float32) back on the GPU, greedy.
OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 60 "$BIN"/tessera sample \
  --checkpoint "$OUT_DIR/train_default/checkpoints" --prompt "void " --sample.tokens 80 \
  --sample.top_k 1 --train.device cuda >"$OUT_DIR/sample.txt" 2>&1 ||
  { status=1; echo "tessera sample on the GPU: FAILED"; }
tail -n 3 "$OUT_DIR/sample.txt"

# Two ranks, pipeline 2: on one GPU both see the same one and must be refused by name before
# NCCL starts; on two or more, the stages' NCCL sends and receives run (docs/GPU.md), and the
# tied embedding's two copies are checked equal every 5 steps.
gpus=$(nvidia-smi -L 2>/dev/null | grep -c "^GPU")
step "two ranks (--parallel.pp 2) on $gpus GPU(s)"
OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 90 mpirun --bind-to none -n 2 \
  "$BIN"/tessera train "${SMALL_RUN[@]}" --train.micro_batch 4 --train.steps 20 --parallel.pp 2 \
  --train.log_interval 10 --checkpoint.interval 0 --train.check_replicas 5 \
  --run.dir "$OUT_DIR/train_pp2" \
  >"$OUT_DIR/train_pp2.txt" 2>&1
rc=$?
if [ "$gpus" -le 1 ]; then
  if [ $rc -ne 0 ] && grep -q "both use the GPU at PCI" "$OUT_DIR/train_pp2.txt"; then
    echo "refused by name (exit $rc), as it should be"
  else
    status=1
    echo "two ranks on one GPU: exit $rc, without the message naming the shared GPU"
    tail -n 5 "$OUT_DIR/train_pp2.txt"
  fi
else
  echo "tessera train, pp 2: exit $rc"
  grep -E "final loss" "$OUT_DIR/train_pp2.txt"
  [ $rc -eq 0 ] || { status=1; tail -n 5 "$OUT_DIR/train_pp2.txt"; }
fi

if [ -n "$PREBUILT" ]; then
  summary
  echo
  echo "gpu_check (prebuilt): $([ $status -eq 0 ] && echo PASSED || echo FAILED)"
  exit $status
fi

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

summary
echo
echo "gpu_check: $([ $status -eq 0 ] && echo PASSED || echo FAILED)"
exit $status
