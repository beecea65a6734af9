// IpAddress: an IPv4 or IPv6 address as a value. Formatting is canonical
// (RFC 5952 for IPv6: lower case, longest zero run compressed), whatever
// spelling the kernel used (audit writes IPv6 fully expanded).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ipsec {

enum class Family : std::uint8_t { inet = 4, inet6 = 6 };

struct IpAddress {
  Family family{Family::inet};
  std::array<std::uint8_t, 16> bytes{};  // inet uses the first 4

  static std::optional<IpAddress> parse(std::string_view text);
  static IpAddress from_v4(const void* four_bytes);
  static IpAddress from_v6(const void* sixteen_bytes);
  std::string to_string() const;
  bool is_unspecified() const;
  friend bool operator==(const IpAddress&, const IpAddress&) = default;
  friend auto operator<=>(const IpAddress&, const IpAddress&) = default;
};

const char* family_name(Family f);

}  // namespace ipsec
