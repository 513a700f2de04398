// Typed errors. Libraries throw these with a message that names the file, option or rank, what
// was expected and what was found; the launcher catches once and maps each kind to an exit code
// (README, "Exit codes").
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace tessera {

// A user-supplied input is wrong: a config value, a corpus, a tokenizer model, a checkpoint.
struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// An InputError that one rank finds for all of them (a check the ranks share out, or one that
// rank 0 makes alone), not one about its own machine: reported without naming the rank's host.
struct SharedInputError : InputError {
  using InputError::InputError;
};

// A collective or transfer failed outside this rank: a peer gone, the network, a peer that never
// joined within the deadline. Not a contract of the program broken: exit 5, as the watchdog's.
struct CommunicationError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The program broke one of its own contracts (a shape mismatch between ops, a bad dtype).
struct InternalError : std::logic_error {
  using std::logic_error::logic_error;
};

[[noreturn]] void fail_internal(const char* file, int line, const std::string& what);

// InputError "OPTION: expected EXPECTED, found FOUND" unless `ok`: the one form of an option's
// check, for the model's and the launcher's options alike.
template <typename T>
void require(bool ok, const std::string& option, const std::string& expected, const T& found) {
  if (ok) return;
  std::ostringstream s;
  s << option << ": expected " << expected << ", found " << found;
  throw InputError(s.str());
}

}  // namespace tessera

// TESSERA_CHECK(cond, message): an internal contract; the message says what was found.
#define TESSERA_CHECK(cond, msg)                                      \
  do {                                                                \
    if (!(cond)) ::tessera::fail_internal(__FILE__, __LINE__, (msg)); \
  } while (0)
