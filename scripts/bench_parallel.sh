#!/usr/bin/env bash
# The parallel-layout figures of docs/PERFORMANCE.md: for each TP x PP x DP layout, ms/step and
# the bytes each rank sends by kind against the Megatron formulas (bench/parallel_bench.cpp),
# then the peak memory per rank of a 24-layer, d 1024 model on one rank and on TP 2 x PP 2, and
# of the small shape's activations on TP 2 with and without sequence parallelism, and the
# interleaved schedule on PP 2 with 1, 2 and 4 model chunks per stage.
#   scripts/bench_parallel.sh [BUILD_DIR] [THREADS_PER_RANK]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
THREADS="${2:-1}"
BENCH="$BUILD/bin/bench_parallel"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_mpi_yield_when_idle=1
# One thread per rank unless asked; no binding, so ranks with several threads keep their cores.
MPI=(mpirun --bind-to none)

echo "## layouts: shape small (8 x 256), global batch 16 x 128 tokens, micro-batch 2"
# tp pp dp zero sp (sequence parallelism)
for layout in "1 1 1 0 0" "2 1 1 0 0" "1 2 1 0 0" "1 1 2 0 0" "2 2 1 0 0" "2 2 2 0 0" \
  "2 2 2 1 0" "1 1 8 1 0" "2 1 1 0 1" "2 2 1 0 1" "2 2 2 0 1" "2 2 2 1 1"; do
  read -r tp pp dp zero sp <<<"$layout"
  echo
  "${MPI[@]}" -n $((tp * pp * dp)) "$BENCH" --tp "$tp" --pp "$pp" --zero "$zero" --sp "$sp" \
    --threads "$THREADS" --steps 5 --warmup 2
done

echo
echo "## memory: 24 layers x d 1024 (vocab 512, T 64), one step of 4 sequences"
one_out=$("${MPI[@]}" -n 1 "$BENCH" --shape 24x1024 --global 4 --micro 1 --steps 1 --warmup 1 \
  --threads "$THREADS")
echo "$one_out"
four_out=$("${MPI[@]}" -n 4 "$BENCH" --shape 24x1024 --tp 2 --pp 2 --global 4 --micro 1 \
  --steps 1 --warmup 1 --threads "$THREADS")
echo "$four_out"
rss() { sed -n 's/.*peak RSS of the largest rank \([0-9]*\) MB.*/\1/p'; }
one=$(rss <<<"$one_out")
four=$(rss <<<"$four_out")
echo "peak RSS per rank: 1 rank ${one} MB, TP 2 x PP 2 ${four} MB: ratio" \
  "$(awk -v a="$four" -v b="$one" 'BEGIN { printf "%.3f", a / b }') (target <= 0.35)"

echo
echo "## sequence parallelism: shape small on TP 2, one micro-batch of 16 x 128 tokens"
plain_out=$("${MPI[@]}" -n 2 "$BENCH" --tp 2 --global 16 --micro 16 --steps 3 --warmup 1 \
  --threads "$THREADS")
echo "$plain_out"
sp_out=$("${MPI[@]}" -n 2 "$BENCH" --tp 2 --sp 1 --global 16 --micro 16 --steps 3 --warmup 1 \
  --threads "$THREADS")
echo "$sp_out"
plain=$(rss <<<"$plain_out")
sp=$(rss <<<"$sp_out")
echo "peak RSS per rank on TP 2: ${plain} MB, with sequence parallelism ${sp} MB"

echo
echo "## interleaved schedule: shape small on PP 2, 8 microbatches of 2 sequences; 1, 2 and 4 chunks per stage"
for vp in 1 2 4; do
  echo
  "${MPI[@]}" -n 2 "$BENCH" --pp 2 --vp "$vp" --global 16 --micro 2 --steps 9 --warmup 2 \
    --threads "$THREADS"
done
