// Counter-based random numbers (Philox-4x32-10, Salmon et al. 2011). A value depends only on
// (seed, stream, counter), so a parameter's initial value is a function of the seed, the
// parameter's global name and the element's global index: every parallel layout starts from
// the same weights (docs/DESIGN.md, invariant 1), whatever slice of the tensor a rank holds.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace tessera {

std::array<uint32_t, 4> philox4x32(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

// FNV-1a of a name with the 64-bit prime but the start value 1469598103934665603 (not FNV's
// standard 14695981039346656037, and kept: every stream of weights and orders derives from it):
// the stream id of a named tensor.
uint64_t name_hash(std::string_view name);

// A standard normal for element `index` of stream `stream` (Box-Muller on one Philox block).
double philox_normal(uint64_t seed, uint64_t stream, uint64_t index);
// A uniform in [0, 1) for element `index` of stream `stream`.
double philox_uniform(uint64_t seed, uint64_t stream, uint64_t index);

}  // namespace tessera
