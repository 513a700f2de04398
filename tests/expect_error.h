// expect_input_error: a call must throw tessera::InputError whose message names every one of
// the given parts (the file, option or value a user needs to see).
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "core/error.h"

namespace tessera::test_support {

inline void expect_input_error(const std::function<void()>& fn,
                               const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "expected an InputError";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    for (const auto& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << msg << "\nlacks: " << p;
  }
}

}  // namespace tessera::test_support
