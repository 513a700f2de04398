// expect_input_error / expect_internal_error / expect_communication_error: a call must throw
// tessera::InputError (a user's mistake), InternalError (a broken contract) or CommunicationError
// (a peer or the network) whose message names every one of the given parts (the file, option, op
// or value a reader needs to see).
#pragma once

#include <gtest/gtest.h>

#include <concepts>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"

namespace tessera::test_support {

template <typename Error>
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts,
                  const char* kind) {
  try {
    fn();
    ADD_FAILURE() << "expected an " << kind;
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << msg << "\nlacks: " << p;
  }
}

inline void expect_input_error(const std::function<void()>& fn,
                               const std::vector<std::string>& parts) {
  expect_error<InputError>(fn, parts, "InputError");
}

inline void expect_internal_error(const std::function<void()>& fn,
                                  const std::vector<std::string>& parts) {
  expect_error<InternalError>(fn, parts, "InternalError");
}

inline void expect_communication_error(const std::function<void()>& fn,
                                       const std::vector<std::string>& parts) {
  expect_error<CommunicationError>(fn, parts, "CommunicationError");
}
// One part: a string (a braced list of parts takes the overload above).
template <typename Part>
requires std::convertible_to<const Part&, std::string>
void expect_internal_error(const std::function<void()>& fn, const Part& part) {
  expect_internal_error(fn, std::vector<std::string>{std::string(part)});
}

}  // namespace tessera::test_support
