// IpAddress: an IPv4 or IPv6 address as a value. Formatting is canonical
// (RFC 5952 for IPv6: lower case, longest zero run compressed), whatever
// spelling the kernel used (audit writes IPv6 fully expanded).
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <cstring>
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
  // Writes the canonical text (what inet_ntop writes, without calling it) to
  // `out`, which holds at least kMaxText bytes; returns its length. No NUL.
  static constexpr std::size_t kMaxText = 46;
  std::size_t format(char* out) const;
  void append_to(std::string& out) const;
  bool is_unspecified() const;
  friend bool operator==(const IpAddress& a, const IpAddress& b) {
    return a.family == b.family && std::memcmp(a.bytes.data(), b.bytes.data(), a.bytes.size()) == 0;
  }
  // Family, then the bytes as unsigned (what a defaulted <=> gives), in one
  // memcmp: addresses are map keys on the per-change path.
  friend std::strong_ordering operator<=>(const IpAddress& a, const IpAddress& b) {
    if (a.family != b.family) return a.family <=> b.family;
    return std::memcmp(a.bytes.data(), b.bytes.data(), a.bytes.size()) <=> 0;
  }
};

const char* family_name(Family f);

}  // namespace ipsec
