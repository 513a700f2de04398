// Named ranges of the host's work for profilers: NVTX ranges, which Nsight Systems (`nsys
// profile`) draws on each thread's timeline above the kernels that work launched, so that a
// timeline reads as steps, microbatches, layers, the optimizer and the gradient reduction. Built
// in when the compiler finds NVTX's headers (they come with the CUDA toolkit); without them a
// range is nothing. With no profiler listening, opening and closing a range are calls of NVTX's
// empty functions.
#pragma once

#include <cstdint>

namespace tessera {

// A range open for this object's lifetime, or until end(), on the calling thread. `name` is shown
// as the range's text and must stay valid while the constructor runs; `index` >= 0 is shown as
// its payload (the step, the microbatch or the layer).
class ProfileRange {
 public:
  explicit ProfileRange(const char* name, int64_t index = -1);
  ~ProfileRange() { end(); }
  void end();
  ProfileRange(const ProfileRange&) = delete;
  ProfileRange& operator=(const ProfileRange&) = delete;

 private:
  bool open_ = true;
};

}  // namespace tessera
