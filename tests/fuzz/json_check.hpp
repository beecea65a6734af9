// Is `out` exactly one line of valid JSON? For the fuzz targets' invariant.
// Built without coverage instrumentation in the fuzz tree: the JSON parser's
// own branches are not what is being fuzzed, and would fill the corpus and
// take half of each run.
#pragma once

#include <string_view>

namespace ipsec::fuzz {

bool is_one_json_line(std::string_view out);

}  // namespace ipsec::fuzz
