// The order of a corpus' samples in one epoch: a pseudo-random permutation of [0, n) evaluated
// at one position at a time, in constant time and memory. No order is built, stored or shared,
// so an epoch of 10^9 samples starts as fast as one of ten, on every rank at once.
//
// A Feistel network of twelve rounds over the smallest domain [0, 2^b) that holds n (b >= 2),
// a value cut into its high floor(b/2) bits a and low ceil(b/2) bits b. Round r maps (a, b) to
// (b, a xor F_r(b)), the halves swapping widths, where F_r(b) is mix64(b xor K_r) cut to a's
// width, mix64 is SplitMix64's output function and K_r = mix64(seed xor mix64(stream xor
// mix64(r))): whatever F is, a round is undone by a = b' xor F(a'), so the network is a bijection
// of the domain. Cycle walking (Black and Rogaway, "Ciphers with arbitrary finite domains",
// 2002) makes it one of [0, n): a value >= n goes through the network again until it falls
// below n, at most 2 passes on average from n = 3 on (n fills over half of the domain). Integer
// arithmetic only, so it is the same on every machine (docs/FORMATS.md). Twelve rounds, not the
// four of Luby and Rackoff's bound: with four or six, samples land measurably unevenly over seeds
// in small domains (EveryPositionAndPairOfPositionsIsUniformOverSeeds). A pass costs about 35 ns,
// against about 1 us to copy a sample of 2049 tokens.
#pragma once

#include <array>
#include <cstdint>

namespace tessera {

class SamplePermutation {
 public:
  SamplePermutation(int64_t n, uint64_t seed, uint64_t stream);
  int64_t size() const { return static_cast<int64_t>(n_); }
  // The element at `position`, 0 <= position < size().
  int64_t operator()(int64_t position) const;

 private:
  uint64_t encrypt(uint64_t x) const;
  uint64_t n_;
  int high_bits_, low_bits_;  // the domain is [0, 2^(high + low)), the smallest holding n
  static constexpr int kRounds = 12;
  std::array<uint64_t, kRounds> round_key_;
};

}  // namespace tessera
