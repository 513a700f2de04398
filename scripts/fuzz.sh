#!/usr/bin/env bash
# Fuzzes the corpus readers (Megatron .idx/.bin and llm.c shards) for a bounded time:
#   scripts/fuzz.sh SECONDS BUILD_DIR
# Builds fuzz/corpus_readers_fuzz.cpp with clang (libFuzzer + AddressSanitizer + UBSan) straight
# from the reader sources into BUILD_DIR, recompiling only what is older than its sources, then
# runs it for SECONDS seconds on a work corpus in BUILD_DIR seeded from fuzz/seeds/. Prints a
# one-line summary; on a crash, hang, leak or sanitizer report prints the report and the input
# that caused it (saved under BUILD_DIR/artifacts/) and exits non-zero. Works from any directory.
# CTest runs it as `fuzz_corpus_readers` (label fuzz); FUZZ_CXX overrides the compiler.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: scripts/fuzz.sh SECONDS BUILD_DIR" >&2
  exit 2
fi
secs=$1
if ! [[ $secs =~ ^[0-9]+$ ]] || [ "$secs" -eq 0 ]; then
  echo "fuzz.sh: SECONDS must be a positive whole number, found '$secs'" >&2
  exit 2
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

cxx=${FUZZ_CXX:-}
if [ -z "$cxx" ]; then
  for c in clang++ clang++-14; do
    if command -v "$c" >/dev/null; then
      cxx=$c
      break
    fi
  done
fi
if [ -z "$cxx" ] || ! command -v "$cxx" >/dev/null; then
  echo "fuzz.sh: ${cxx:-clang++} not found; libFuzzer needs clang (scripts/setup.sh installs" \
    "clang and libclang-rt-14-dev)" >&2
  exit 1
fi
if ! compgen -G "$("$cxx" -print-runtime-dir)/libclang_rt.fuzzer*.a" >/dev/null; then
  echo "fuzz.sh: $cxx has no libFuzzer runtime in $("$cxx" -print-runtime-dir); install" \
    "libclang-rt-14-dev (scripts/setup.sh does)" >&2
  exit 1
fi

mkdir -p "$2"
build=$(cd "$2" && pwd)

# The target and everything it links: the two readers and the core files they use.
sources=(fuzz/corpus_readers_fuzz.cpp io/indexed_dataset.cpp io/llmc_shard.cpp io/mapped_file.cpp
  core/error.cpp core/dtype.cpp)
headers=(io/indexed_dataset.h io/llmc_shard.h io/mapped_file.h core/error.h core/dtype.h)
flags=(-std=c++20 -O1 -g -fno-omit-frame-pointer "-fsanitize=fuzzer,address,undefined"
  -fno-sanitize-recover=all -Wall -Wextra -I"$root")
bin=$build/corpus_readers_fuzz

# An object is stale when its source, a header or this script (the flags) is newer.
newer_than() {
  local target=$1 f
  shift
  [ -e "$target" ] || return 0
  for f in "$@"; do [ "$f" -nt "$target" ] && return 0; done
  return 1
}

build_start=$(date +%s)
mkdir -p "$build/obj"
objects=() pids=() stale=()
for src in "${sources[@]}"; do
  obj=$build/obj/$(basename "${src%.cpp}").o
  objects+=("$obj")
  deps=("$root/$src" "${BASH_SOURCE[0]}")
  for h in "${headers[@]}"; do deps+=("$root/$h"); done
  if newer_than "$obj" "${deps[@]}"; then
    stale+=("$src")
    "$cxx" "${flags[@]}" -c "$root/$src" -o "$obj.tmp" && mv "$obj.tmp" "$obj" &
    pids+=($!)
  fi
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
if [ "$failed" -ne 0 ]; then
  echo "fuzz.sh: compiling the fuzz target failed (see above)" >&2
  exit 1
fi
if newer_than "$bin" "${objects[@]}"; then
  "$cxx" "${flags[@]}" "${objects[@]}" -o "$bin.tmp"
  mv "$bin.tmp" "$bin"
fi
build_s=$(($(date +%s) - build_start))
if [ ${#stale[@]} -gt 0 ]; then
  echo "fuzz.sh: built $bin in ${build_s} s (compiled ${stale[*]})"
fi

# A writable corpus that keeps what earlier runs found, topped up with the committed seeds.
corpus=$build/corpus artifacts=$build/artifacts log=$build/fuzz.log
mkdir -p "$corpus" "$artifacts"
for seed in "$root"/fuzz/seeds/*; do
  [ -e "$corpus/$(basename "$seed")" ] || cp "$seed" "$corpus/"
done
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
# The target writes its files under TMPDIR: on tmpfs where there is one (several times faster
# than a disk), removed when this script ends, also after a crash.
shm=/tmp
if [ -d /dev/shm ] && [ -w /dev/shm ]; then shm=/dev/shm; fi
TMPDIR=$(mktemp -d "$shm/tessera_fuzz.XXXXXX")
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT

run_start=$(date +%s)
set +e
"$bin" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -max_len=4096 \
  -dict="$root/fuzz/corpus_readers.dict" -artifact_prefix="$artifacts/" -print_final_stats=1 \
  "$corpus" >"$log" 2>&1
rc=$?
set -e
run_s=$(($(date +%s) - run_start))

runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -n 1 || true)
cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$last")
ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
summary="${runs:-?} runs in ${run_s} s, coverage ${cov:-?} edges / ${ft:-?} features,"
summary+=" corpus ${corp:-?} inputs"

if [ "$rc" -ne 0 ]; then
  tail -n 80 "$log" >&2
  echo "fuzz.sh: FAILED (libFuzzer exit $rc) after $summary; full log $log" >&2
  sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | while read -r a; do
    echo "fuzz.sh: reproduce with: $bin $a" >&2
  done
  exit 1  # not libFuzzer's 77, which CTest conventions read as "skipped"
fi
echo "fuzz.sh: no failure: $summary (build ${build_s} s)"
