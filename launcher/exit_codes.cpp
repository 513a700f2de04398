// The one place where exceptions become messages and exit codes.
#include "launcher/exit_codes.h"

#include <algorithm>
#include <boost/program_options/errors.hpp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <new>

#include "core/error.h"
#include "core/out_of_memory.h"
#include "io/text_files.h"

namespace tessera {

namespace {

// The length of the valid UTF-8 sequence of two to four bytes at `s`, not a C1 control
// (U+0080..U+009F, which a terminal may act on); 0 for anything else.
size_t utf8_length(const unsigned char* s, size_t left) {
  if (s[0] == 0xC2 && left > 1 && s[1] < 0xA0) return 0;
  const size_t n = utf8_sequence_length(s, left);
  return n >= 2 ? n : 0;
}

}  // namespace

std::string printable(const std::string& text, size_t max_line) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  std::string out, line;
  // A long line keeps its head and its tail, where a message's advice is; the cut lands on a
  // character boundary.
  const auto end_line = [&] {
    if (line.size() > max_line) {
      size_t head = max_line / 2, tail = line.size() - max_line / 2;
      while (head > 0 && (static_cast<unsigned char>(line[head]) & 0xC0) == 0x80) --head;
      while (tail < line.size() && (static_cast<unsigned char>(line[tail]) & 0xC0) == 0x80) ++tail;
      // Nor inside a \xHH: a cut 1 to 3 characters past its backslash moves to either end.
      const auto escape_before = [&](size_t at) -> size_t {
        for (size_t k = 1; k <= 3 && k <= at; ++k)
          if (line.compare(at - k, 2, "\\x") == 0) return k;
        return 0;
      };
      head -= escape_before(head);
      if (const size_t k = escape_before(tail)) tail += 4 - k;
      line = line.substr(0, head) + " ... (" + std::to_string(tail - head) + " bytes cut) ... " +
             line.substr(tail);
    }
    out += line;
    line.clear();
  };
  for (size_t i = 0; i < text.size();) {
    const size_t n = s[i] < 0x80 ? 1 : utf8_length(s + i, text.size() - i);  // 0: invalid
    if (s[i] == '\n') {
      end_line();
      out += '\n';
    } else if (n > 1 || (n == 1 && (s[i] == '\t' || (s[i] >= 0x20 && s[i] < 0x7F)))) {
      line.append(text, i, n);
    } else {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02X", s[i]);
      line += hex;
    }
    i += std::max<size_t>(n, 1);
  }
  end_line();
  return out;
}

namespace {

// Which exit code and message `error` means, as the exception says it.
ErrorReport classify(std::exception_ptr error, const char* command) {
  try {
    std::rethrow_exception(error);
  } catch (const SharedInputError& e) {
    return {kExitBadInput, std::string("tessera: error: ") + e.what(), false};
  } catch (const InputError& e) {
    return {kExitBadInput, std::string("tessera: error: ") + e.what()};
  } catch (const boost::program_options::error& e) {
    return {kExitBadInput,
            std::string("tessera: error: ") + e.what() + " (see tessera " + command + " --help)"};
  } catch (const std::filesystem::filesystem_error& e) {
    // A path the run cannot use (read-only, full, not a directory): its message names it.
    return {kExitBadInput, std::string("tessera: error: ") + e.what()};
  } catch (const CommunicationError& e) {
    // A peer gone or the network: the watchdog's code for a collective that cannot complete.
    return {kExitHang, std::string("tessera: error: ") + e.what()};
  } catch (const std::bad_alloc& e) {
    // What could not be allocated, when the allocation said (OutOfMemory; with `tessera train`,
    // also what the rank was estimated to need).
    const auto* known = dynamic_cast<const OutOfMemory*>(&e);
    const std::string what = known ? std::string(": ") + known->what() : "";
    // The training options help a run that trains, or one that loads a trained model.
    const bool train = !std::strcmp(command, "train");
    const bool model = train || !std::strcmp(command, "sample") || !std::strcmp(command, "eval");
    return {kExitBadInput,
            model ? "tessera: error: out of memory" + what +
                        " (try a smaller --train.micro_batch or model, " +
                        (train ? "more --parallel.tp / --parallel.pp, or --train.recompute)"
                               : "or more --parallel.tp / --parallel.pp)")
                  : "tessera: error: out of memory in tessera " + std::string(command) + what};
  } catch (const std::exception& e) {
    return {kExitInternalError, std::string("tessera: internal error: ") + e.what()};
  } catch (...) {
    // Called from catch blocks: an exception escaping here would end the rank by std::terminate,
    // without the abort that tells the others.
    return {kExitInternalError,
            "tessera: internal error: an exception that is not a std::exception"};
  }
}

}  // namespace

ErrorReport report_error(std::exception_ptr error, const char* command) {
  ErrorReport r = classify(error, command);
  r.message = printable(r.message);
  return r;
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
