# Sourced by the scripts that configure a CUDA build: the CUDA toolkit's own install leaves nvcc
# off PATH, where CMake looks for it; /usr/local/cuda/bin is added when nvcc is there.
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
