// --train.check_replicas: three checksums per rank, compared over the ranks that hold copies.
#include "launcher/replica_check.h"

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <vector>

#include "io/crc32c.h"
#include "launcher/cluster.h"
#include "launcher/trainer.h"

namespace tessera {

namespace {

// The three kinds of copies, in the order of a rank's checksums.
enum Copies : int { kTensorParallel, kDataParallel, kTiedEmbedding, kKinds };

// Whether p takes part in the comparison of `kind` on a rank of model `m`.
bool compared(const Param& p, int kind, const GPT& m) {
  switch (kind) {
    case kTensorParallel:
      return p.tp_replicated();
    case kDataParallel:
      return true;
    default:
      return &p == &m.wte;
  }
}

uint32_t value_crc(const Param& p) {
  if (p.value.device() == Device::CPU) return crc32c(p.value.raw(), p.value.bytes());
  const Tensor host = p.value.to(Device::CPU);
  return crc32c(host.raw(), host.bytes());
}

// Rank `rank`'s peer for `kind`, whose copies it must equal, or -1: TP rank 0 of its TP group,
// DP rank 0 of its DP group, the first stage's rank for the last stage's tied embedding.
int peer_of(const GridLayout& l, int rank, int kind) {
  GridCoord c = l.coord_of(rank);
  if (kind == kTensorParallel && c.tp > 0) {
    c.tp = 0;
    return l.rank_of(c);
  }
  if (kind == kDataParallel && c.dp > 0) {
    c.dp = 0;
    return l.rank_of(c);
  }
  if (kind == kTiedEmbedding && l.pp > 1 && c.pp == l.pp - 1) {
    c.pp = 0;
    return l.rank_of(c);
  }
  return -1;
}

// "TP ranks 0 and 1 of DP rank 0, stage 0": which copies world ranks `peer` and `rank` are.
std::string copies_of(const GridLayout& l, int peer, int rank, int kind) {
  const GridCoord a = l.coord_of(peer), b = l.coord_of(rank);
  std::string text;
  if (kind == kTensorParallel)
    text += "TP ranks " + std::to_string(a.tp) + " and " + std::to_string(b.tp) + " of DP rank " +
            std::to_string(b.dp) + ", stage " + std::to_string(b.pp);
  else if (kind == kDataParallel)
    text += "DP ranks " + std::to_string(a.dp) + " and " + std::to_string(b.dp) + " of TP rank " +
            std::to_string(b.tp) + ", stage " + std::to_string(b.pp);
  else
    text += "the first and the last stage (the LM head's tied copy) of TP rank " +
            std::to_string(b.tp) + ", DP rank " + std::to_string(b.dp);
  return text;
}

// Two copies that differ: world rank `rank`'s and its reference `peer`'s, of `kind`. `odd`: the
// ranks of their group (the peer and every rank compared with it) whose copy differs from one
// that more than half of the group hold; empty when no copy is held by more than half.
struct Mismatch {
  int rank = -1, peer = -1, kind = 0;
  size_t group_size = 0;
  std::vector<int> odd;
};

Mismatch mismatch_at(const GridLayout& l, const double* digests, int rank, int peer, int kind) {
  Mismatch m{rank, peer, kind, 0, {}};
  std::vector<int> group = {peer};
  for (int r = 0; r < l.world_size(); ++r)
    if (peer_of(l, r, kind) == peer) group.push_back(r);
  m.group_size = group.size();
  const auto digest_of = [&](int r) { return digests[r * kKinds + kind]; };
  for (const int candidate : group) {
    const auto agree = std::count_if(group.begin(), group.end(),
                                     [&](int r) { return digest_of(r) == digest_of(candidate); });
    if (2 * static_cast<size_t>(agree) <= group.size()) continue;
    for (const int r : group)
      if (digest_of(r) != digest_of(candidate)) m.odd.push_back(r);
    break;
  }
  return m;
}

// The first pair of copies that differ (by rank, then kind) in a group where more than half
// agree, so that the odd copy can be named; else the first pair that differs; else rank -1.
Mismatch find_mismatch(const GridLayout& l, const double* digests) {
  Mismatch first;
  for (int r = 0; r < l.world_size(); ++r)
    for (int k = 0; k < kKinds; ++k) {
      const int p = peer_of(l, r, k);
      if (p < 0 || digests[r * kKinds + k] == digests[p * kKinds + k]) continue;
      const Mismatch m = mismatch_at(l, digests, r, p, k);
      if (!m.odd.empty()) return m;
      if (first.rank < 0) first = m;
    }
  return first;
}

// A rank's line of the second round: its host, then "CRC NAME" per compared tensor.
struct RankTensors {
  std::string host;
  std::vector<std::pair<std::string, std::string>> crc_and_name;
};

RankTensors parse_rank_tensors(const std::string& text) {
  RankTensors r;
  std::istringstream in(text);
  std::getline(in, r.host);
  std::string crc, name;
  while (in >> crc >> name) r.crc_and_name.emplace_back(crc, name);
  return r;
}

}  // namespace

std::string replica_mismatch(Trainer& tr) {
  const GridLayout& l = tr.layout();
  Communicator& world = tr.host_world();
  if (l.world_size() == 1) return "";
  const GPT& model = tr.model();
  std::vector<uint32_t> crcs;
  for (const Param* p : tr.params()) crcs.push_back(value_crc(*p));

  Tensor mine({kKinds}, DType::F64), all({kKinds * l.world_size()}, DType::F64);
  for (int kind = 0; kind < kKinds; ++kind) {
    uint32_t digest = 0;
    for (size_t i = 0; i < crcs.size(); ++i)
      if (compared(*tr.params()[i], kind, model)) digest = crc32c(&crcs[i], sizeof crcs[i], digest);
    mine.data<double>()[kind] = digest;  // exact: a double holds every 32-bit value
  }
  world.all_gather(all, mine);
  const Mismatch m = find_mismatch(l, all.data<double>());
  if (m.rank < 0) return "";
  const int rank = m.rank, peer = m.peer, kind = m.kind;

  // Every rank saw the same difference: all name the first tensor that differs, from the two
  // ranks' lists of tensor checksums (broadcast by those two: a gather of every rank's list
  // would take hundreds of MB per rank at tens of thousands of ranks), and the odd copies' hosts.
  std::string text = host_name() + "\n";
  if (world.rank() == rank || world.rank() == peer)
    for (size_t i = 0; i < crcs.size(); ++i) {
      if (!compared(*tr.params()[i], kind, model)) continue;
      char crc[16];
      std::snprintf(crc, sizeof crc, "%08x", crcs[i]);
      text += std::string(crc) + " " + tr.params()[i]->name + "\n";
    }
  const RankTensors a = parse_rank_tensors(broadcast_string(world, text, peer));
  const RankTensors b = parse_rank_tensors(broadcast_string(world, text, rank));
  const std::vector<std::string> hosts = all_gather_strings(world, host_name());
  std::string tensor = "a tensor";
  for (size_t i = 0; i < a.crc_and_name.size() && i < b.crc_and_name.size(); ++i)
    if (a.crc_and_name[i] != b.crc_and_name[i]) {
      tensor = b.crc_and_name[i].second;
      break;
    }
  std::string message = tensor + " differs between world ranks " + std::to_string(peer) +
                        " (host " + a.host + ") and " + std::to_string(rank) + " (host " + b.host +
                        "), " + copies_of(l, peer, rank, kind) +
                        ", which must hold bitwise-equal copies";
  if (m.odd.empty())
    return message + "; with no copy held by more than half of the " +
           std::to_string(m.group_size) + " ranks, which is wrong cannot be told";
  std::string odd;
  for (const int r : m.odd)
    odd += (odd.empty() ? "" : ", ") + std::to_string(r) + " (host " +
           hosts[static_cast<size_t>(r)] + ")";
  return message + "; " + std::to_string(m.group_size - m.odd.size()) + " of the " +
         std::to_string(m.group_size) + " copies agree, the odd one" +
         (m.odd.size() > 1 ? "s are on world ranks " : " is on world rank ") + odd;
}

}  // namespace tessera
