// Small files in the state directory, written atomically: a temporary file
// in the same directory, fsync, rename over the old one, fsync the directory.
// A reader sees the old file or the new one, never a part.
#pragma once

#include <string>

#include "xfrm/result.hpp"

namespace ipsec {

Result<Unit> write_file_atomic(const std::string& path, const std::string& text);
// The whole file (at most `max` bytes); Errc::io with ENOENT when it is not there.
Result<std::string> read_small_file(const std::string& path, std::size_t max = 64 << 20);

}  // namespace ipsec
