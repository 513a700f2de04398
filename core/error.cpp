// Internal-contract failures carry file:line, so a bug report points at the broken check.
#include "core/error.h"

namespace tessera {

void fail_internal(const char* file, int line, const std::string& what) {
  throw InternalError(std::string(file) + ":" + std::to_string(line) + ": " + what);
}

}  // namespace tessera
