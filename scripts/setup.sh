#!/usr/bin/env bash
# Installs every system dependency of tessera from Debian 12's packages, non-interactively, and,
# where the CUDA toolkit is, the cuDNN frontend's C++ headers from PyPI's nvidia-cudnn-frontend
# wheel (cuDNN's fused attention, --gpu.attention cudnn) into /opt/cudnn-frontend.
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
  zlib1g-dev libzstd-dev                # gzip and zstd text input, read as it is
  clang-format                          # the committed .clang-format
  clang libclang-rt-14-dev              # libFuzzer for the corpus-reader fuzz target
  slurmctld slurmd slurm-client munge   # Slurm and its PMIx plugin: tests/slurm_test.sh
  python3-pip                           # fetches the cuDNN frontend's headers (below)
)
CUDNN_FRONTEND_VERSION=1.32.0
CUDNN_FRONTEND_DIR=/opt/cudnn-frontend

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
else
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The cuDNN frontend is header-only C++; its PyPI wheel carries the headers under include/. Only
# those are unpacked (the wheel's Python module is not installed). Without them CUDA builds still
# build, and --gpu.attention cudnn is refused with a message.
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  if [ "$(cat "$CUDNN_FRONTEND_DIR/VERSION" 2>/dev/null)" = "$CUDNN_FRONTEND_VERSION" ]; then
    echo "setup: cuDNN frontend $CUDNN_FRONTEND_VERSION headers present"
  else
    echo "setup: installing the cuDNN frontend $CUDNN_FRONTEND_VERSION headers"
    wheel_dir=$(mktemp -d)
    if python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
         --platform manylinux_2_28_x86_64 -d "$wheel_dir" \
         "nvidia-cudnn-frontend==$CUDNN_FRONTEND_VERSION"; then
      $SUDO rm -rf "$CUDNN_FRONTEND_DIR"
      $SUDO mkdir -p "$CUDNN_FRONTEND_DIR"
      $SUDO python3 -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith("include/")])' \
        "$wheel_dir"/*.whl "$CUDNN_FRONTEND_DIR"
      echo "$CUDNN_FRONTEND_VERSION" | $SUDO tee "$CUDNN_FRONTEND_DIR/VERSION" >/dev/null
    else
      echo "setup: warning: could not fetch nvidia-cudnn-frontend; builds will lack cuDNN attention"
    fi
    rm -rf "$wheel_dir"
  fi
fi
echo "setup: done"
