// Which peers a group of point-to-point operations meets for the first time.
//
// NCCL connects two ranks on their first point-to-point group with each other, and only in the
// directions posted in that group; the two exchange their connection details assuming that both
// posted the same directions. When they did not (one rank's first group with the other holds a
// send and a receive, the other's a receive only, as a pipeline's first stage and second stage
// post them), NCCL fails with "Message truncated" between two ranks and hangs between more
// (NVIDIA/nccl issue 1279). NcclCommunicator therefore leads each group, for every peer met for
// the first time, with a one-element send to it and a receive from it: both ranks then connect
// both directions at their first contact, and the two small messages, the first each way between
// them, match each other.
#pragma once

#include <set>
#include <vector>

namespace tessera {

// Of a group's peers in posting order, those not in `met`: each once, in order of first
// appearance, never `self` (a rank's sends to itself are copies). Adds them to `met`.
inline std::vector<int> first_contacts(const std::vector<int>& peers, int self,
                                       std::set<int>& met) {
  std::vector<int> fresh;
  for (int peer : peers)
    if (peer != self && met.insert(peer).second) fresh.push_back(peer);
  return fresh;
}

}  // namespace tessera
