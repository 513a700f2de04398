#!/usr/bin/env bash
# The one command to run on a GPU machine: build with CUDA, run the `gpu` tests (CUDA vs CPU
# twins), run the benchmarks, print what was measured. Prints every step's outcome and keeps
# going, so one run shows everything; exits non-zero if any step failed. Each step's timeout is
# cut to what is left of GPU_CHECK_SECONDS (default 480 after the build), and the summary is
# printed however the run ends. Into $OUT (default build-gpu/out) go two files, rewritten after
# every step: summary.txt and logs.tgz (every step's whole log).
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
source scripts/nvcc_path.sh

# The GPU tests in three parts, each run under its own timeout: every CUDA op and the model;
# cuDNN's attention (which builds its graphs); NCCL and the Trainer (which uses NCCL).
PART1_FILTER="-*Nccl*:GpuTrainer*:*Cudnn*:*/cudnn"
PART2_FILTER="*Cudnn*:*/cudnn"
PART3_FILTER="*Nccl*:GpuTrainer*"
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
    awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"
    if [ "$1" = "--help" ] || [ "$1" = "-h" ]; then exit 0; fi
    echo "gpu_check.sh: unknown argument '$1'" >&2
    exit 2 ;;
esac
OUT_DIR="${OUT:-build-gpu/out}"
# Logs and scratch data (the corpus, the runs' directories) live outside $OUT, of which only a
# few files come back from a lent machine; keep() packs the logs there after every step.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tessera_gpu_check.XXXXXX") || exit 2
LOG_DIR="$WORK/logs"
mkdir -p "$OUT_DIR" "$LOG_DIR"
# The figures to read first, printed last: test verdicts, MFU per shape and attention kernel.
summary() {
  echo
  echo "=== summary ==="
  for f in test_gpu_ops test_gpu_cudnn test_gpu_nccl; do
    [ -e "$LOG_DIR/$f.txt" ] || { echo "$f: not run"; continue; }
    grep -h -E "^\[  (PASSED|FAILED|SKIPPED) " "$LOG_DIR/$f.txt" | sed "s/^/$f: /" | grep . ||
      echo "$f: no verdict (timed out or crashed?) after: $(grep -v '^ *$' "$LOG_DIR/$f.txt" | tail -n 1)"
  done
  awk '/^shape /{shape = $2 " B " $6} /^bf16 attention on/{att = $4}
       /^dgelu epilogue on/{att = att "+dgelu"}
       /^\| [0-9]/{printf "step %-11s %-19s %8s ms  %8s tokens/s  MFU %s\n", shape, att, $2, $10, $14}
       /^gelu epilogue GEMMs fused/{print "  " $0}' \
    "$LOG_DIR/bench_train_step_gpu.txt" 2>/dev/null
  grep -h -m 1 "^cuDNN " "$LOG_DIR/bench_gpu_ops.txt" 2>/dev/null
  grep -H -m 1 "^matmul_gelu_backward: " "$LOG_DIR"/*.txt 2>/dev/null | sed "s|^$LOG_DIR/||"
  grep -H -E "final loss|^peak GPU memory" "$LOG_DIR"/train_*.txt 2>/dev/null | sed "s|^$LOG_DIR/||"
  tail -n 1 "$LOG_DIR/sample.txt" 2>/dev/null | sed "s/^/sample.txt: /"
  awk '/bf16 attention on/{att = $NF} /^dgelu epilogue on/{att = att "+dgelu"}
       /^GPT-2/{shape = $1 " " $2} /^\| attention backward \|/{bwd = $5}
       /cuDNN not deterministic/{printf "layer %-12s cudnn attention backward %s ms, %s ms not deterministic\n", shape, bwd, $8}
       /^layer forward/{printf "layer %-12s %-19s %s ms  layer MFU %s\n", shape, att, $5, $(NF-3)}
       /^gelu epilogue GEMMs fused/{print "  " $0}' \
    "$LOG_DIR/bench_gpu_ops.txt" 2>/dev/null
}

status=0
step() { keep; echo; echo "=== $* ==="; }
keep() {
  summary >"$OUT_DIR/summary.txt" 2>&1
  tar czf "$OUT_DIR/logs.tgz" -C "$WORK" logs 2>/dev/null
}
# The summary and the verdict, in summary.txt too, however the script ends: a signal from
# outside (a lease's own limit) is a failure, whatever had passed.
finish() {
  keep
  echo "gpu_check$([ -n "$PREBUILT" ] && echo " (prebuilt)"): $([ $status -eq 0 ] && echo PASSED || echo FAILED)" >>"$OUT_DIR/summary.txt"
  cat "$OUT_DIR/summary.txt"
  rm -rf "$WORK"
  exit $status
}
trap finish EXIT
trap 'status=1; echo "gpu_check: stopped by a signal"; exit 1' TERM INT HUP

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
if command -v nvcc >/dev/null; then nvcc --version | tail -n 2; else echo "nvcc: none found"; fi
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
  # A binary that cannot load fails its own steps; the others still run.
  for b in "$BIN"/*; do
    missing=$(ldd "$b" | awk '/not found/ {print $1}' | tr '\n' ' ')
    [ -z "$missing" ] || { status=1; echo "$(basename "$b") cannot load: $missing"; }
  done
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
# libzstd's headers (and its static library, so that nothing more is loaded) likewise.
if [ ! -e /usr/include/zstd.h ] && ls .gpu-deps/libzstd-dev_*.deb >/dev/null 2>&1; then
  mkdir -p build-gpu/deps
  dpkg -x .gpu-deps/libzstd-dev_*.deb build-gpu/deps
  EXTRA+=("-DTESSERA_ZSTD_INCLUDE=$PWD/build-gpu/deps/usr/include"
    "-DTESSERA_ZSTD=$PWD/build-gpu/deps/usr/lib/x86_64-linux-gnu/libzstd.a")
  echo "using libzstd from .gpu-deps/"
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
      -DCMAKE_CUDA_ARCHITECTURES="80;90" "${EXTRA[@]}" >"$LOG_DIR/configure.log" 2>&1; then
  grep -E "Could NOT find|CMake Error|not found" "$LOG_DIR/configure.log" | head -20
  echo "configure FAILED (full log: configure.log in logs.tgz)"
  status=1
  exit 1
fi

step "build"
if ! cmake --build build-gpu -j "$(nproc)" >"$LOG_DIR/build.log" 2>&1; then
  grep -E "error" "$LOG_DIR/build.log" | head -30
  echo "build FAILED"
  status=1
  exit 1
fi
fi


# The overall deadline, from here (after any build): each step's timeout is cut to what is left,
# and a step with under 5 s left is skipped. The benchmarks leave kReserve seconds to the tests
# and runs after them.
DEADLINE=$((SECONDS + ${GPU_CHECK_SECONDS:-480}))
limit() {  # SECONDS [RESERVE] -> that, or what is left less RESERVE (0: skip)
  local left=$((DEADLINE - SECONDS - 15 - ${2:-0}))
  if [ "$left" -lt 5 ]; then echo 0; elif [ "$1" -lt "$left" ]; then echo "$1"; else echo "$left"; fi
}
kReserve=150
out_of_time() { status=1; echo "skipped: out of time (GPU_CHECK_SECONDS)"; }

# The test binary itself, so each test's name and tolerance line shows. The ops first, then
# the benchmarks, then NCCL and the Trainer (which uses NCCL): a hang in one part is killed at
# its timeout, and what is left of the deadline goes on.
# The whole log goes to its file first: `head` in the same pipe as the tests would end them
# with SIGPIPE once it has its lines.
gpu_tests() {  # NAME TIMEOUT FILTER
  local rc=0 t
  t=$(limit "$2")
  [ "$t" -gt 0 ] || { out_of_time; return; }
  timeout -k 10 "$t" "$BIN"/test_gpu --gtest_filter="$3" >"$LOG_DIR/$1.txt" 2>&1 || rc=$?
  grep -E "^\[ +(FAILED|PASSED|SKIPPED) |Failure|expected|element|error|SKIP" "$LOG_DIR/$1.txt" |
    head -60
  if [ "$rc" -ne 0 ]; then
    status=1
    echo "test_gpu ($3): FAILED or timed out (exit $rc); its last lines:"
    tail -n 5 "$LOG_DIR/$1.txt"
  fi
}

step "gpu tests, part 1: device memory, every CUDA op against its CPU twin, the model"
gpu_tests test_gpu_ops 120 "$PART1_FILTER"

step "GPU training step: whole models on one GPU, bf16 with fp32 master weights, T 1024 (MFU)"
# The largest micro-batch that fits (by estimate), on the opt-in kernels (tensor-core attention,
# the DGELU epilogue); then 350M on the default kernels for comparison.
for run in "gpt2_124m tensor_cores on" "gpt2_350m tensor_cores on" "gpt2_1.3b tensor_cores on" \
  "gpt2_350m cuda_cores off" "gpt2_350m cudnn on" "gpt2_1.3b cudnn on"; do
  read -r shape kernels dgelu <<<"$run"
  t=$(limit 75 "$kReserve")
  [ "$t" -gt 0 ] || { out_of_time; break; }
  # Line-buffered, so that a run killed at its timeout keeps what it printed; the model is built
  # on the host, on every core.
  timeout -k 10 "$t" stdbuf -oL "$BIN"/bench_train_step --device cuda --precision bf16 \
    --shape "$shape" --attention "$kernels" --dgelu_epilogue "$dgelu" --steps 5 --warmup 2 \
    --threads "$(nproc)" 2>&1 | tee -a "$LOG_DIR/bench_train_step_gpu.txt" || status=1
done

step "GPU benchmark: one layer's ops at GPT-2 124M / 350M / 1.3B widths, T 1024, bf16"
for run in "tensor_cores on" "cuda_cores off" "cudnn on"; do
  read -r kernels dgelu <<<"$run"
  t=$(limit 75 "$kReserve")
  [ "$t" -gt 0 ] || { out_of_time; break; }
  timeout -k 10 "$t" stdbuf -oL "$BIN"/bench_gpu_ops --shape all --batch 8 --dtype bf16 \
    --attention "$kernels" --dgelu_epilogue "$dgelu" 2>&1 | tee -a "$LOG_DIR/bench_gpu_ops.txt" ||
    status=1
done

step "gpu tests, part 2: cuDNN's fused attention against the CPU twin and in the model (builds its graphs)"
gpu_tests test_gpu_cudnn 120 "$PART2_FILTER"

step "gpu tests, part 3: the NCCL communicator on one GPU, the Trainer on the GPU"
gpu_tests test_gpu_nccl 90 "$PART3_FILTER"

# The program as users run it (the watchdog armed, NCCL groups, the log), on a byte-level corpus
# of this repository's own sources, with the default kernels and with the opt-in ones.
step "tessera train on the GPU, bf16: default kernels, then tensor-core attention + DGELU, then cuDNN"
t=$(limit 60)
if [ "$t" -eq 0 ]; then
  out_of_time
elif ! timeout -k 5 "$t" "$BIN"/tessera tokenize encode --input core/ops/*.cpp core/ops/*.cu \
    docs/*.md --output "$WORK/corpus" >"$LOG_DIR/tokenize.txt" 2>&1; then
  status=1
  echo "tokenize FAILED"
  tail -n 3 "$LOG_DIR/tokenize.txt"
fi
# The small model of every `tessera train` below, on that corpus.
SMALL_RUN=(--data.path "$WORK/corpus" --train.device cuda --model.d_model 256 --model.layers 4
  --model.heads 4 --model.d_ff 1024 --model.seq_len 256 --train.global_batch 16)
for run in "default" "opt_in --gpu.attention tensor_cores --gpu.dgelu_epilogue true" \
  "cudnn --gpu.attention cudnn --gpu.dgelu_epilogue true"; do
  read -r name flags <<<"$run"
  t=$(limit 90)
  [ "$t" -gt 0 ] || { out_of_time; break; }
  # tessera saves and stops at SIGTERM only between steps: -k kills what does not.
  # shellcheck disable=SC2086
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout -k 10 "$t" "$BIN"/tessera \
    train "${SMALL_RUN[@]}" --train.micro_batch 16 --train.steps 200 --optim.lr 1e-3 \
    --optim.warmup 20 --train.log_interval 50 --checkpoint.interval 200 \
    --run.dir "$WORK/train_$name" $flags >"$LOG_DIR/train_$name.txt" 2>&1 </dev/null
  rc=$?
  echo "tessera train ($name): exit $rc"
  grep -E "^gpu:|final loss|^peak GPU memory" "$LOG_DIR/train_$name.txt"
  [ $rc -eq 0 ] || { status=1; tail -n 5 "$LOG_DIR/train_$name.txt"; }
done
# The default run's checkpoint (bf16 masters saved as float32) back on the GPU, greedy.
t=$(limit 60)
if [ "$t" -gt 0 ]; then
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout -k 10 "$t" "$BIN"/tessera \
    sample --checkpoint "$WORK/train_default/checkpoints" --prompt "void " --sample.tokens 80 \
    --sample.top_k 1 --train.device cuda >"$LOG_DIR/sample.txt" 2>&1 </dev/null ||
    { status=1; echo "tessera sample on the GPU: FAILED"; }
  tail -n 3 "$LOG_DIR/sample.txt"
else
  out_of_time
fi
# The same checkpoint's loss over the run's held-out samples (about 14; the run's validation at
# step 200 read them over and over for its 4 x 16): the two losses below should be close.
t=$(limit 60)
if [ "$t" -gt 0 ]; then
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout -k 10 "$t" "$BIN"/tessera \
    eval --checkpoint "$WORK/train_default/checkpoints" --train.micro_batch 2 \
    --train.device cuda >"$LOG_DIR/eval.txt" 2>&1 </dev/null ||
    { status=1; echo "tessera eval on the GPU: FAILED"; }
  grep "^validation | step 200" "$LOG_DIR/train_default.txt"
  tail -n 2 "$LOG_DIR/eval.txt"
else
  out_of_time
fi

# Two ranks, pipeline 2: on one GPU both see the same one and must be refused by name before
# NCCL starts; on two or more, the stages' NCCL sends and receives run (docs/GPU.md), and the
# tied embedding's two copies are checked equal every 5 steps.
gpus=$(nvidia-smi -L 2>/dev/null | grep -c "^GPU")
step "two ranks (--parallel.pp 2) on $gpus GPU(s)"
t=$(limit 90)
if ! command -v mpirun >/dev/null; then
  status=1
  echo "mpirun: not on this machine"
elif [ "$t" -eq 0 ]; then
  out_of_time
else
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout -k 10 "$t" mpirun \
    --bind-to none -n 2 "$BIN"/tessera train "${SMALL_RUN[@]}" --train.micro_batch 4 \
    --train.steps 20 --parallel.pp 2 --train.log_interval 10 --checkpoint.interval 0 \
    --train.check_replicas 5 --run.dir "$WORK/train_pp2" >"$LOG_DIR/train_pp2.txt" 2>&1 </dev/null
  rc=$?
  if [ "$gpus" -le 1 ]; then
    if [ $rc -ne 0 ] && grep -q "both use the GPU at PCI" "$LOG_DIR/train_pp2.txt"; then
      echo "refused by name (exit $rc), as it should be"
    else
      status=1
      echo "two ranks on one GPU: exit $rc, without the message naming the shared GPU"
      tail -n 5 "$LOG_DIR/train_pp2.txt"
    fi
  else
    echo "tessera train, pp 2: exit $rc"
    grep -E "final loss" "$LOG_DIR/train_pp2.txt"
    [ $rc -eq 0 ] || { status=1; tail -n 5 "$LOG_DIR/train_pp2.txt"; }
  fi
fi

[ -n "$PREBUILT" ] && exit $status  # finish() prints the summary

step "CPU tests on this machine (sanity of the CUDA build)"
t=$(limit 180)
if [ "$t" -gt 0 ]; then
  (cd build-gpu && timeout -k 10 "$t" ctest -L unit -j 8 2>&1 | tail -n 3) || status=1
else
  out_of_time
fi

step "multi-rank tests (MPI) on this machine's cores"
t=$(limit 120)
if [ "$t" -gt 0 ]; then
  (cd build-gpu && OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    timeout -k 10 "$t" ctest -R "test_comm|test_layouts|Mpirun" --output-on-failure 2>&1 |
    tail -n 5) || status=1
else
  out_of_time
fi

step "checkpoint save/load against raw disk I/O, one core per rank (docs/PERFORMANCE.md)"
# Last: the GPU figures above matter most if the time runs out. (bench_parallel's CPU figures
# for this kind of machine are recorded already.)
for layout in "1" "4 --tp 2 --pp 2"; do
  read -r n rest <<<"$layout"
  t=$(limit 120)
  [ "$t" -gt 0 ] || { out_of_time; break; }
  # shellcheck disable=SC2086
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout -k 10 "$t" mpirun \
    --bind-to none -n "$n" build-gpu/bin/bench_checkpoint $rest --dir "$WORK/ckpt_bench" \
    2>&1 </dev/null | tee -a "$LOG_DIR/bench_checkpoint.txt" || status=1
done
exit $status  # finish() prints the summary
