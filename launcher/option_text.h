// What Boost.Program_options reports of a bad value, said the way tessera's messages are: the
// option, what it takes, what was found. Shared by `tessera`'s commands and the benchmarks.
#pragma once

#include <boost/program_options.hpp>
#include <cstdint>
#include <string>
#include <typeinfo>

namespace tessera {

// Boost's "the argument ('abc') for option '--train.steps' is invalid" as
// `--train.steps: expected a whole number from -2^31 to 2^31 - 1, found "abc"`; Boost's own text
// for an option of another type, or one not in `all`.
inline std::string invalid_value_text(const boost::program_options::invalid_option_value& e,
                                      const boost::program_options::options_description& all) {
  namespace po = boost::program_options;
  const std::string what = e.what(), dashed = e.get_option_name();
  const size_t open = what.find("('"), close = what.rfind("')"),
               start = dashed.find_first_not_of('-');
  if (start == std::string::npos) return what;
  // Boost quotes the value it refused, unless it is empty ("steps =" in an INI file).
  const bool quoted = open != std::string::npos && close != std::string::npos && close > open;
  const std::string found = quoted ? what.substr(open + 2, close - open - 2) : "";
  const std::string name = dashed.substr(start);
  const po::option_description* d = all.find_nothrow(name, false);
  const auto* typed = d ? dynamic_cast<const po::typed_value_base*>(d->semantic().get()) : nullptr;
  if (!typed) return what;
  // Booleans fail as po::invalid_bool_value, whose message lists the words Boost takes.
  const std::type_info& type = typed->value_type();
  const char* expected = type == typeid(int)       ? "a whole number from -2^31 to 2^31 - 1"
                         : type == typeid(int64_t) ? "a whole number from -2^63 to 2^63 - 1"
                         : type == typeid(double)  ? "a number"
                                                   : nullptr;
  if (!expected) return what;
  return "--" + name + ": expected " + expected + ", found \"" + found + "\"";
}

}  // namespace tessera
