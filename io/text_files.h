// Real text into documents for the tokenizer. An input is a file or a directory (its regular
// files, not recursively, in byte order of their names, skipping symlinks and the fortune
// package's `.dat`/`.u8` companions). Fortune files split into one document per entry; other
// files are one document each. Bytes pass through unchanged apart from overstrike removal.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace tessera {

// Throws InputError naming an input that does not exist, or a directory with no files in it.
// Documents that are empty or only whitespace are dropped.
std::vector<std::string> read_documents(const std::vector<std::string>& inputs);

// Entries of a fortune file: text between lines that hold only "%". Text without such a line is
// one entry. Each entry keeps its own line endings.
std::vector<std::string> split_fortunes(std::string_view text);

// Undoes terminal overstriking as a line printer would show it: a backspace moves back one
// column and the next character overwrites it; an underscore never wins over a letter
// ("_\bX", "X\b_" and "X\bX" all give "X"; "___\b\b\babc" gives "abc").
std::string remove_overstrike(std::string_view text);

}  // namespace tessera
