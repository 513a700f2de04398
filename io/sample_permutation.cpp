#include "io/sample_permutation.h"

#include <utility>

#include "core/error.h"

namespace tessera {

namespace {

// SplitMix64's output function (Steele, Lea and Flood 2014): a bijection of 64-bit words whose
// every output bit depends on every input bit.
uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

SamplePermutation::SamplePermutation(int64_t n, uint64_t seed, uint64_t stream)
    : n_(static_cast<uint64_t>(n)) {
  TESSERA_CHECK(n >= 1, "SamplePermutation: needs at least one element");
  int bits = 2;  // the domain [0, 2^bits): two halves of at least one bit
  while (bits < 64 && (uint64_t{1} << bits) < n_) ++bits;
  high_bits_ = bits / 2;
  low_bits_ = bits - high_bits_;
  for (int r = 0; r < kRounds; ++r)
    round_key_[static_cast<size_t>(r)] =
        mix64(seed ^ mix64(stream ^ mix64(static_cast<uint64_t>(r))));
}

uint64_t SamplePermutation::encrypt(uint64_t x) const {
  // x = (a, b): a the high `ha` bits, b the low `hb`. A round maps (a, b) to (b, a ^ F(b)), so
  // the halves swap widths; inverting it needs only F, so every round is a bijection.
  int ha = high_bits_, hb = low_bits_;
  uint64_t a = x >> hb, b = x & ((uint64_t{1} << hb) - 1);
  for (const uint64_t key : round_key_) {
    const uint64_t next = a ^ (mix64(b ^ key) & ((uint64_t{1} << ha) - 1));
    a = b;
    b = next;
    std::swap(ha, hb);
  }
  return (a << hb) | b;
}

int64_t SamplePermutation::operator()(int64_t position) const {
  TESSERA_CHECK(position >= 0 && static_cast<uint64_t>(position) < n_,
                "SamplePermutation: position out of range");
  uint64_t x = static_cast<uint64_t>(position);
  do x = encrypt(x);
  while (x >= n_);
  return static_cast<int64_t>(x);
}

}  // namespace tessera
