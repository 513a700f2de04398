// `tessera tokenize VERB ...`: text to corpus (`encode`) and back (`decode`). Byte-level only for
// now (SentencePiece comes later). Bad options and inputs propagate as tessera::InputError or
// boost::program_options::error for main to report; the return value is the exit code.
#pragma once

namespace tessera {

// argv[0] is "tokenize", argv[1] the verb.
int tokenize_command(int argc, char** argv);

}  // namespace tessera
