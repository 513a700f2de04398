// The shortest text of a double that reads back as the same double (std::to_chars): 0.97, 3e-04,
// 1e+20; where printf's %g shows 6 digits (two different values alike) and std::to_string 6
// decimals (0.970000, or 0.000000 for 1e-7).
#pragma once

#include <charconv>
#include <string>

namespace tessera {

inline std::string shortest_text(double v) {
  char buf[32];  // the longest shortest form, -2.2250738585072014e-308, takes 24
  return std::string(buf, std::to_chars(buf, buf + sizeof buf, v).ptr);
}

}  // namespace tessera
