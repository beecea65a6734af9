#include "xfrm/ip_address.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace ipsec {

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
  char buf[INET6_ADDRSTRLEN + 8];
  if (text.empty() || text.size() >= sizeof buf || text.find('\0') != std::string_view::npos) return std::nullopt;
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  IpAddress a;
  if (text.find(':') == std::string_view::npos) {
    if (inet_pton(AF_INET, buf, a.bytes.data()) != 1) return std::nullopt;
    a.family = Family::inet;
  } else {
    if (inet_pton(AF_INET6, buf, a.bytes.data()) != 1) return std::nullopt;
    a.family = Family::inet6;
  }
  return a;
}

IpAddress IpAddress::from_v4(const void* p) {
  IpAddress a;
  a.family = Family::inet;
  std::memcpy(a.bytes.data(), p, 4);
  return a;
}

IpAddress IpAddress::from_v6(const void* p) {
  IpAddress a;
  a.family = Family::inet6;
  std::memcpy(a.bytes.data(), p, 16);
  return a;
}

std::string IpAddress::to_string() const {
  char buf[INET6_ADDRSTRLEN];
  const int af = family == Family::inet ? AF_INET : AF_INET6;
  if (inet_ntop(af, bytes.data(), buf, sizeof buf) == nullptr) return {};
  return buf;
}

bool IpAddress::is_unspecified() const {
  const std::size_t n = family == Family::inet ? 4 : 16;
  return std::all_of(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n),
                     [](std::uint8_t b) { return b == 0; });
}

const char* family_name(Family f) { return f == Family::inet ? "inet" : "inet6"; }

}  // namespace ipsec
