// Files of the data cache (`--data.cache_dir`: the id-check records), which every rank of every
// node may write at the same moment, on a file system shared between nodes.
#pragma once

#include <cstddef>
#include <string>

namespace tessera {

// Writes `bytes` of `data` to a temporary file of a unique name beside `path` (host, pid and a
// counter: a pid alone repeats across nodes; mode 0666 less the umask, so that other users of a
// shared cache read it) and publishes it as `path`. Without `replace`, by link(2): a file
// already there stays, since another process may be reading it; true then too, the content
// being the same by construction. With `replace` (the file there is damaged), by rename(2). False
// when the write or the publishing fails; no temporary file is left either way.
bool publish_cache_file(const std::string& path, const void* data, size_t bytes, bool replace);

}  // namespace tessera
