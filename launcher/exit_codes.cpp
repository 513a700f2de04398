// The one place where exceptions become messages and exit codes.
#include "launcher/exit_codes.h"

#include <boost/program_options/errors.hpp>
#include <iostream>
#include <new>

#include "core/error.h"

namespace tessera {

int run_guarded(int (*command)(int, char**), int argc, char** argv) {
  try {
    return command(argc, argv);
  } catch (const InputError& e) {
    std::cerr << "tessera: error: " << e.what() << "\n";
    return kExitBadInput;
  } catch (const boost::program_options::error& e) {
    std::cerr << "tessera: error: " << e.what() << " (see tessera " << argv[0] << " --help)\n";
    return kExitBadInput;
  } catch (const std::bad_alloc&) {
    std::cerr << "tessera: error: out of memory (try a smaller --train.micro_batch or model)\n";
    return kExitBadInput;
  } catch (const std::exception& e) {
    std::cerr << "tessera: internal error: " << e.what() << "\n";
    return kExitInternalError;
  }
}

}  // namespace tessera
