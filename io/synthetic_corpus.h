// A corpus made from nothing, for tests and benchmarks that must not depend on files: each
// document is a walk over the vocabulary where the next token is (7 t + 3) mod V with
// probability 3/4 and uniform otherwise, so a model has something to learn (the loss can fall
// from ln V towards about 0.25 ln V + 0.56). Deterministic in the seed.
#pragma once

#include <cstdint>
#include <string>

namespace tessera {

// Writes PREFIX.bin / PREFIX.idx (Megatron format, io/indexed_dataset.h).
void write_synthetic_corpus(const std::string& prefix, int64_t vocab_size, int64_t documents,
                            int64_t tokens_per_document, uint64_t seed);

}  // namespace tessera
