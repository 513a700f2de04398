// The one place where exceptions become messages and exit codes.
#include "launcher/exit_codes.h"

#include <boost/program_options/errors.hpp>
#include <filesystem>
#include <iostream>
#include <new>

#include "core/error.h"

namespace tessera {

ErrorReport report_error(std::exception_ptr error, const char* command) {
  try {
    std::rethrow_exception(error);
  } catch (const InputError& e) {
    return {kExitBadInput, std::string("tessera: error: ") + e.what()};
  } catch (const boost::program_options::error& e) {
    return {kExitBadInput,
            std::string("tessera: error: ") + e.what() + " (see tessera " + command + " --help)"};
  } catch (const std::filesystem::filesystem_error& e) {
    // A path the run cannot use (read-only, full, not a directory): its message names it.
    return {kExitBadInput, std::string("tessera: error: ") + e.what()};
  } catch (const std::bad_alloc&) {
    return {kExitBadInput,
            "tessera: error: out of memory (try a smaller --train.micro_batch or model, or more "
            "--parallel.tp / --parallel.pp)"};
  } catch (const std::exception& e) {
    return {kExitInternalError, std::string("tessera: internal error: ") + e.what()};
  }
}

int run_guarded(int (*command)(int, char**), int argc, char** argv) {
  try {
    return command(argc, argv);
  } catch (...) {
    const ErrorReport r = report_error(std::current_exception(), argv[0]);
    std::cerr << r.message << "\n";
    return r.code;
  }
}

}  // namespace tessera
