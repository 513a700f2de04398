#!/usr/bin/env bash
# The main job, from nothing: install, build, turn the fortunes database (English text shipped
# by Debian) into a byte-level corpus, train a small GPT on the CPU as 4 MPI ranks (tensor-
# parallel 2 x pipeline-parallel 2), and print the loss next to the corpus' unigram entropy,
# then a sample of generated text. About 5 minutes of training on 2 cores, after the setup and
# the build (minutes more the first time). Another layout:
#   RANKS=8 TP=2 PP=2 ./scripts/demo.sh      (DP = RANKS / (TP x PP))
#   RANKS=1 TP=1 PP=1 ./scripts/demo.sh      (one process)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh

DATA=data/fortunes
mkdir -p data
if [ ! -f "$DATA.idx" ]; then
  build/bin/tessera tokenize encode --input /usr/share/games/fortunes --output "$DATA"
fi
RANKS=${RANKS:-4} TP=${TP:-2} PP=${PP:-2}
# As root (containers) Open MPI wants to be told twice; more ranks than cores are fine, and
# waiting ranks give their core to the others instead of spinning.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_mpi_yield_when_idle=1
mkdir -p runs/demo
mpirun -n "$RANKS" build/bin/tessera train --config configs/demo.ini --data.path "$DATA" \
  --run.dir runs/demo --parallel.tp "$TP" --parallel.pp "$PP" "$@" | tee runs/demo.log
