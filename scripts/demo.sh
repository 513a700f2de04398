#!/usr/bin/env bash
# The main job, from nothing: install, build, turn the fortunes database (English text shipped
# by Debian) into a byte-level corpus, train a small GPT on the CPU, and print the loss next to
# the corpus' unigram entropy, then a sample of generated text. About 5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh

DATA=data/fortunes
mkdir -p data
if [ ! -f "$DATA.idx" ]; then
  build/bin/tessera tokenize encode --input /usr/share/games/fortunes --output "$DATA"
fi
mkdir -p runs/demo
build/bin/tessera train --config configs/demo.ini --data.path "$DATA" --run.dir runs/demo "$@" \
  | tee runs/demo.log
