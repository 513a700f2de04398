// A fresh, empty directory per test: TEMP/PREFIX_PID_TESTNAME, so that tests run in parallel
// (ctest -j) and by several users never share files. The caller removes it in TearDown. And
// flip_bits, the damage a test does to a file.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <ios>
#include <string>

namespace tessera::test_support {

inline std::filesystem::path fresh_test_dir(const std::string& prefix) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() /
      (prefix + "_" + std::to_string(::getpid()) + "_" +
       ::testing::UnitTest::GetInstance()->current_test_info()->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// XORs the byte at `offset` from `from` (std::ios::beg or std::ios::end) of `file` with `mask`.
inline void flip_bits(const std::filesystem::path& file, std::streamoff offset,
                      std::ios::seekdir from, char mask) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(offset, from);
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ mask);
  f.seekp(offset, from);
  f.write(&c, 1);
  ASSERT_TRUE(f.good()) << "could not change a byte of " << file;
}

}  // namespace tessera::test_support
