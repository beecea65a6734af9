#include "tests/fuzz/json_check.hpp"

#include <nlohmann/json.hpp>

namespace ipsec::fuzz {

bool is_one_json_line(std::string_view out) {
  if (out.empty() || out.find('\n') != out.size() - 1) return false;
  return nlohmann::json::accept(out.substr(0, out.size() - 1));
}

}  // namespace ipsec::fuzz
