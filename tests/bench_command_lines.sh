#!/usr/bin/env bash
# The benchmarks' command lines (bench/command_line.h), run as a user would: --help lists the
# options and exits 0; an unknown option, a value missing, malformed, below its least or outside
# its choices is named in one line on stderr with exit status 2, before any work starts.
#   tests/bench_command_lines.sh BIN_DIR
set -uo pipefail
bin=${1:?usage: tests/bench_command_lines.sh BIN_DIR}
failures=0
# Where a failure case points a bench's files: had a check let it run, it writes here (and the
# options keep it small).
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# expect STATUS PATTERN BENCH ARGS...: the bench exits with STATUS, and its output matches PATTERN
# (grep -E): a failure's one line, or --help's list with its wrapped lines joined.
expect() {
  local status=$1 pattern=$2 bench=$3
  shift 3
  local out rc
  out=$(timeout 20 "$bin/$bench" "$@" 2>&1)
  rc=$?
  local joined
  joined=$(tr '\n' ' ' <<<"$out" | tr -s ' ' | sed 's/ $//')
  if [ "$rc" -ne "$status" ] || ! grep -Eq -- "$pattern" <<<"$joined"; then
    echo "FAIL: $bench $*: expected exit $status and /$pattern/, found exit $rc:"
    sed 's/^/    /' <<<"$out" | head -n 20
    failures=$((failures + 1))
  elif [ "$status" -ne 0 ] && [ "$(wc -l <<<"$out")" -ne 1 ]; then
    echo "FAIL: $bench $*: expected one line, found:"
    sed 's/^/    /' <<<"$out"
    failures=$((failures + 1))
  elif [ -n "$(ls -A "$scratch")" ]; then  # refused, yet it began its work
    echo "FAIL: $bench $*: refused, but wrote into its --dir: $(ls -A "$scratch" | head -n 5)"
    rm -rf "${scratch:?}"/*
    failures=$((failures + 1))
  else
    echo "ok: $bench $* -> exit $rc"
  fi
}

benches=(bench_train_step bench_loader bench_parallel bench_checkpoint bench_tokenizer)
[ -x "$bin/bench_gpu_ops" ] && benches+=(bench_gpu_ops)
for b in "${benches[@]}"; do
  expect 0 "^usage: $b \[options\]" "$b" --help
  expect 2 "^$b: unrecognised option '--no_such_option' \($b --help lists the options\)$" \
    "$b" --no_such_option 1
done
expect 0 "--doc_tokens arg \(=1000\)" bench_loader --help
expect 0 "--vp arg \(=1\)" bench_parallel --help
expect 0 "--attention arg \(=cuda_cores\) [^(]*\(one of cuda_cores, tensor_cores, cudnn\)" \
  bench_train_step --help

expect 2 '^bench_loader: --tokens: expected a number, found "1e9x"' bench_loader --tokens 1e9x
expect 2 '^bench_loader: --tokens: expected 1 or more, found inf' bench_loader --tokens inf \
  --dir "$scratch"
expect 2 '^bench_loader: --seq_len: expected 1 or more, found 0' bench_loader --seq_len 0 \
  --tokens 1000 --dir "$scratch"
expect 2 "^bench_parallel: the required argument for option '--steps' is missing" \
  bench_parallel --steps
expect 2 '^bench_parallel: --tp: expected a whole number from -2\^31 to 2\^31 - 1, found "2x"' \
  bench_parallel --tp 2x
expect 2 '^bench_parallel: --zero: expected 0 or 1, found 2' bench_parallel --zero 2 --steps 1
expect 2 '^bench_parallel: --shape: expected one of small, 24x1024, found "big"' \
  bench_parallel --shape big
expect 2 '^bench_checkpoint: --blocks: expected 0 or more, found -1' bench_checkpoint --blocks -1 \
  --shape small --dir "$scratch"
expect 2 '^bench_train_step: --recompute: expected one of none, selective, full, found "some"' \
  bench_train_step --recompute some --shape small --steps 1 --warmup 0
expect 2 '^bench_train_step: --device: expected one of cpu, cuda, found "gpu"' \
  bench_train_step --device gpu --shape small --steps 1 --warmup 0
expect 2 '^bench_tokenizer: --megabytes: expected 1 or more, found 0' bench_tokenizer 0
expect 2 '^bench_tokenizer: too many positional options' bench_tokenizer 1 2

if [ "$failures" -ne 0 ]; then
  echo "bench_command_lines: $failures failed"
  exit 1
fi
echo "bench_command_lines: all passed"
