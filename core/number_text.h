// The shortest text of a double that reads back as the same double (std::to_chars): 0.97, 3e-04,
// 1e+20; where printf's %g shows 6 digits (two different values alike) and std::to_string 6
// decimals (0.970000, or 0.000000 for 1e-7).
#pragma once

#include <charconv>
#include <cstdlib>
#include <string>

namespace tessera {

inline std::string shortest_text(double v) {
  char buf[32];  // the longest shortest form, -2.2250738585072014e-308, takes 24
  return std::string(buf, std::to_chars(buf, buf + sizeof buf, v).ptr);
}

// Whether strtod reads `word` whole ("0.5", "1e3", but also "0x10", "inf", "nan", and "1e400" or
// "1e-400" beyond a double's range, where std::stod would throw), and the value it reads.
inline bool reads_as_number(const std::string& word, double* value = nullptr) {
  char* end = nullptr;
  const double v = std::strtod(word.c_str(), &end);
  if (value) *value = v;
  return !word.empty() && end == word.c_str() + word.size();
}

}  // namespace tessera
