// Byte counts of memory estimates, summed in 128 bits: the option bounds allow shapes past 2^63
// bytes (2^20-wide layers over 2^24 tokens). Such a count is given back as INT64_MAX.
#pragma once

#include <cstdint>
#include <limits>

namespace tessera {

using WideBytes = __int128;

constexpr int64_t saturated_bytes(WideBytes bytes) {
  return bytes > std::numeric_limits<int64_t>::max() ? std::numeric_limits<int64_t>::max()
                                                     : static_cast<int64_t>(bytes);
}

}  // namespace tessera
