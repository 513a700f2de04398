#!/usr/bin/env bash
# Installs every system dependency of tessera from Debian 12's packages, non-interactively.
# Idempotent: when everything is already installed it only checks and returns.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git
  libopenmpi-dev openmpi-bin            # MPI (bootstrap, CPU communicator)
  libhdf5-dev hdf5-tools                # checkpoints; h5ls / h5dump for users
  libboost-program-options-dev          # options: INI + command line
  libgtest-dev googletest               # tests
  libopenblas-openmp-dev                # CPU GEMMs, on the same OpenMP threads as our loops
  fortunes fortunes-min                 # public-domain English text for the demo corpus
  libsentencepiece-dev                  # the SentencePiece tokenizer (BPE, unigram)
  nlohmann-json3-dev                    # JSONL text input
  clang-format                          # the committed .clang-format
  clang libclang-rt-14-dev              # libFuzzer for the corpus-reader fuzz target
  slurmctld slurmd slurm-client munge   # Slurm and its PMIx plugin: tests/slurm_test.sh
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "setup: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup: done"
