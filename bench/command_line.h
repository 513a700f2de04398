// The benchmarks' command lines, read by Boost.Program_options as `tessera`'s own: `--help`
// lists every option with its default (and its choices), and an unknown option, a value missing
// or malformed, or a value outside what an option takes is named in one line on stderr with exit
// status 2, before any work starts (and before MPI does, where a benchmark uses it: under mpirun
// every rank says so).
#pragma once

#include <algorithm>
#include <boost/program_options.hpp>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/error.h"
#include "launcher/option_text.h"

namespace tessera::bench {

class CommandLine {
 public:
  CommandLine(std::string program, const std::string& summary)
      : program_(std::move(program)),
        options_("usage: " + program_ + " [options]\n" + summary + "\n\noptions") {
    options_.add_options()("help", "list the options with their defaults, and exit");
  }

  // `--name VALUE` into `value`, whose value now is the default.
  template <typename T>
  CommandLine& add(const char* name, T& value, const char* help) {
    options_.add_options()(name, boost::program_options::value(&value)->default_value(value), help);
    return *this;
  }
  // The same, for a number from `least` to `most` (a finite one, for a floating-point option).
  template <typename T>
  CommandLine& add(const char* name, T& value, const char* help, std::type_identity_t<T> least,
                   std::type_identity_t<T> most = std::numeric_limits<T>::max()) {
    add(name, value, help);
    checks_.push_back([name, &value, least, most] {
      std::ostringstream bounds;
      if (most == std::numeric_limits<T>::max())
        bounds << least << " or more";
      else
        bounds << least << (most == least + 1 ? " or " : " to ") << most;
      require(value >= least && value <= most, "--" + std::string(name), bounds.str(), value);
    });
    return *this;
  }
  // The same, for a word that must be one of `choices`, which --help lists.
  CommandLine& add(const char* name, std::string& value, const std::vector<std::string>& choices,
                   const std::string& help) {
    std::string listed;
    for (const std::string& c : choices) listed += (listed.empty() ? "" : ", ") + c;
    options_.add_options()(name, boost::program_options::value(&value)->default_value(value),
                           (help + " (one of " + listed + ")").c_str());
    checks_.push_back([name, &value, choices, listed] {
      require(std::find(choices.begin(), choices.end(), value) != choices.end(),
              "--" + std::string(name), "one of " + listed, "\"" + value + "\"");
    });
    return *this;
  }
  // The option that a word without an option before it gives (`bench_tokenizer 64`).
  CommandLine& positional(const char* name) {
    positional_.add(name, 1);
    return *this;
  }

  // Reads argv into the options' variables. Prints the list and exits 0 on --help; prints what
  // is wrong and exits 2 on bad input.
  void parse(int argc, char** argv) {
    namespace po = boost::program_options;
    po::variables_map vm;
    try {
      po::store(po::command_line_parser(argc, argv)
                    .options(options_)
                    .positional(positional_)
                    .style(tessera::command_line_style())
                    .run(),
                vm);
      if (vm.count("help")) {
        std::cout << options_ << "\n";
        std::exit(0);
      }
      po::notify(vm);
    } catch (const po::error& e) {
      fail(option_error_text(e, options_));
    }
    try {
      for (const auto& check : checks_) check();
    } catch (const InputError& e) {  // require's "--NAME: expected ..., found ..."
      fail(e.what());
    }
  }

  [[noreturn]] void fail(const std::string& problem) const {
    std::fprintf(stderr, "%s: %s (%s --help lists the options)\n", program_.c_str(),
                 problem.c_str(), program_.c_str());
    std::exit(2);
  }

 private:
  std::string program_;
  boost::program_options::options_description options_;
  boost::program_options::positional_options_description positional_;
  std::vector<std::function<void()>> checks_;  // each a require() of an option's value
};

}  // namespace tessera::bench
