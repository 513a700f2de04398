// The synthetic corpus: a mostly predictable walk over the vocabulary.
#include "io/synthetic_corpus.h"

#include <vector>

#include "io/indexed_dataset.h"

namespace tessera {

void write_synthetic_corpus(const std::string& prefix, int64_t vocab_size, int64_t documents,
                            int64_t tokens_per_document, uint64_t seed) {
  IndexedDatasetWriter w(prefix, token_dtype_for_vocab(vocab_size));
  uint64_t state = seed * 0x9E3779B97F4A7C15ULL + 1;
  std::vector<int32_t> doc(static_cast<size_t>(tokens_per_document));
  for (int64_t d = 0; d < documents; ++d) {
    int64_t t = d % vocab_size;
    for (auto& x : doc) {
      state = state * 6364136223846793005ULL + 1442695040888963407ULL;  // Knuth's MMIX LCG
      t = (state >> 62) != 0
              ? (7 * t + 3) % vocab_size
              : static_cast<int64_t>((state >> 20) % static_cast<uint64_t>(vocab_size));
      x = static_cast<int32_t>(t);
    }
    w.add_document(doc);
  }
  w.finish();
}

}  // namespace tessera
