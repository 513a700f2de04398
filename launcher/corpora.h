// Opening a run's corpora, for `tessera train` and `tessera eval`: the corpora of each blend, with
// every token id checked against the vocabulary before any work starts, once per version of each
// token file (an id-check record in the data cache spares the next run the pass), the pass
// shared by the ranks; and a check that every rank opened the same ones.
#pragma once

#include <string>
#include <vector>

#include "core/communicator.h"
#include "core/error.h"
#include "io/data_loader.h"
#include "io/token_corpus.h"
#include "launcher/config.h"

namespace tessera {

class CorpusOpener {
 public:
  // `cache_dir` holds the id-check records (empty: none). Rank `rank` of `world_size` checks one
  // slice of each corpus that has no record. Without `record`, no record is written (`tessera train
  // --check`, which writes nothing).
  CorpusOpener(std::string cache_dir, int rank, int world_size, bool record = true);

  // The corpora of `blend` (the option `option` gave), open, with every token id checked (a bad
  // one stops the run here, naming the file and the position). A corpus listed twice (by any
  // path) is refused: each copy would run its own epochs, so that its samples repeat within what
  // reads as one pass.
  std::vector<TokenCorpus> open(const std::vector<CorpusWeight>& blend, int64_t vocab,
                                const std::string& option);

  // Collective over the world of `world_size`: rank 0 records each corpus' id range made of every
  // rank's slice, once every rank's part is in.
  void record_id_ranges(Communicator& world);

 private:
  // A corpus whose token ids this rank checked a slice of, with the slice's range of ids.
  struct IdSlice {
    bool sliced = false;
    TokenCorpus::SliceIds ids;
  };
  std::string cache_dir_;
  int rank_, world_size_;
  bool record_;
  std::vector<IdSlice> slices_;
};

// The data cache of a run (--data.cache_dir, else RUN_DIR/data_cache). With `create`, created
// when missing: a --data.cache_dir that cannot be used is refused (its records would silently
// never be read), and when the default cannot, "" (the token ids are then checked at every
// start). Without, the directory when it is one already, else "".
std::string data_cache_dir(const TrainConfig& cfg, bool create = true);
// Its path, there or not.
std::string data_cache_path(const TrainConfig& cfg);
// The refusal of --data.cache_dir, which cannot be created or used for `why`.
InputError cache_dir_refusal(const TrainConfig& cfg, const std::string& why);

// Collective over `world`: every rank opened the same corpora, with the same weights and sizes
// (each expands a glob itself), when their streams' sequence keys (`key`: SampleStream's
// sequence_key, of every stream the rank reads) are the same. InputError naming `option` and
// this rank's `stream`, on every rank alike, otherwise.
void check_same_corpora(Communicator& world, const std::string& key, const std::string& option,
                        const SampleStream& stream);

}  // namespace tessera
