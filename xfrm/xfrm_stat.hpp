// /proc/net/xfrm_stat: the XFRM MIB counters of one network namespace
// (net/xfrm/xfrm_proc.c prints one "%-24s\t%lu\n" line per counter; the set
// of names grows with the kernel: 28 in 6.1, more later). Pure parser from
// text, and a reader for an already open file.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "xfrm/result.hpp"

namespace ipsec {

struct XfrmStat {
  std::map<std::string, std::uint64_t, std::less<>> counters;
  // nullopt when this kernel has no counter of that name.
  std::optional<std::uint64_t> get(std::string_view name) const {
    auto it = counters.find(name);
    if (it == counters.end()) return std::nullopt;
    return it->second;
  }
};

// Each non-empty line: a name (letters and digits), blanks, a decimal
// unsigned 64-bit value. Anything else, a repeated name, or more than 256
// lines is Errc::malformed / Errc::out_of_range with the line quoted.
Result<XfrmStat> parse_xfrm_stat(std::string_view text);

// Reads the whole of an open xfrm_stat file from its start (the fd may be
// read again for the next reading: proc files are regenerated each time) and
// parses it. At most 16 KiB.
Result<XfrmStat> read_xfrm_stat(int fd);

}  // namespace ipsec
