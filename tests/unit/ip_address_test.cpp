#include "xfrm/ip_address.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

using namespace ipsec;

TEST(IpAddress, CanonicalRfc5952) {
  EXPECT_EQ(IpAddress::parse("fd00:0000:0000:0000:0000:0000:0000:0001")->to_string(), "fd00::1");
  EXPECT_EQ(IpAddress::parse("2001:0DB8:0000:0000:0001:0000:0000:0001")->to_string(), "2001:db8::1:0:0:1");
  EXPECT_EQ(IpAddress::parse("0000:0000:0000:0000:0000:0000:0000:0000")->to_string(), "::");
  EXPECT_EQ(IpAddress::parse("10.0.0.1")->to_string(), "10.0.0.1");
}

TEST(IpAddress, Rejects) {
  EXPECT_FALSE(IpAddress::parse(""));
  EXPECT_FALSE(IpAddress::parse("10.0.0"));
  EXPECT_FALSE(IpAddress::parse("10.0.0.256"));
  EXPECT_FALSE(IpAddress::parse("fd00::1::2"));
  EXPECT_FALSE(IpAddress::parse(std::string(200, '1')));
  EXPECT_FALSE(IpAddress::parse(std::string_view("10.0.0.1\0", 9)));
}

TEST(IpAddress, Ipv4ParseMatchesInetPton) {
  // parse() reads IPv4 itself: what it takes and refuses is inet_pton's.
  for (const char* t : {"10.0.0.1", "0.0.0.0", "255.255.255.255", "1.2.3.4", "01.2.3.4", "1.2.3.04", "1.2.3.0",
                        "256.1.1.1", "1.2.3", "1.2.3.4.5", "1..2.3", ".1.2.3", "1.2.3.", "1.2.3.4 ", " 1.2.3.4",
                        "1.2.3.a", "1.2.3.-4", "1.2.3.1000", "00.0.0.0", "0.0.0.00", "127.1", "0x1.2.3.4",
                        "1.2.3.4/24", "", ".", "1", "199.99.9.255"}) {
    unsigned char want[4] = {};
    const bool ok = inet_pton(AF_INET, t, want) == 1;
    const auto got = IpAddress::parse(t);
    ASSERT_EQ(got.has_value(), ok) << "'" << t << "'";
    if (ok) {
      EXPECT_EQ(got->family, Family::inet) << t;
      EXPECT_EQ(std::memcmp(got->bytes.data(), want, 4), 0) << t;
    }
  }
}

TEST(IpAddress, UnspecifiedAndOrdering) {
  EXPECT_TRUE(IpAddress::parse("0.0.0.0")->is_unspecified());
  EXPECT_TRUE(IpAddress::parse("::")->is_unspecified());
  EXPECT_FALSE(IpAddress::parse("::1")->is_unspecified());
  EXPECT_NE(*IpAddress::parse("10.0.0.1"), *IpAddress::parse("10.0.0.2"));
}

// The hand-written formatter against inet_ntop: every kind of zero run, the
// IPv4-mapped and IPv4-compatible forms, and many pseudo-random addresses
// whose words are drawn mostly from {0, 1, ffff, random} so runs are common.
namespace {
std::string ntop(const IpAddress& a) {
  char b[INET6_ADDRSTRLEN];
  return inet_ntop(a.family == Family::inet ? AF_INET : AF_INET6, a.bytes.data(), b, sizeof b);
}
}  // namespace

TEST(IpAddress, FormatterMatchesInetNtop) {
  for (const char* t : {"::", "::1", "::ffff:10.0.0.1", "::10.0.0.1", "::ffff:0:10.0.0.1", "::1:0:0:0:1", "1::",
                        "1:0:0:1:0:0:0:1", "1:0:0:0:1:0:0:1", "0:1:0:1:0:1:0:1", "fe80::1:2", "::ffff:0.0.0.0",
                        "::0.0.1.0", "::ffff", "1:2:3:4:5:6:7:8", "64:ff9b::192.0.2.1", "0.0.0.0",
                        "255.255.255.255", "10.20.30.40", "1.0.100.9"}) {
    auto a = IpAddress::parse(t);
    ASSERT_TRUE(a) << t;
    EXPECT_EQ(a->to_string(), ntop(*a)) << t;
  }
  std::uint64_t x = 0x9E3779B97F4A7C15ull;
  auto next = [&x] {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
  };
  for (int n = 0; n < 200000; ++n) {
    IpAddress a;
    a.family = (n % 5 == 0) ? Family::inet : Family::inet6;
    for (int i = 0; i < 8; ++i) {
      const auto r = next();
      const unsigned pick = r % 8;
      const unsigned w = pick < 4 ? 0 : pick == 4 ? 1 : pick == 5 ? 0xffff : static_cast<unsigned>((r >> 8) & 0xffff);
      a.bytes[2 * i] = static_cast<std::uint8_t>(w >> 8);
      a.bytes[2 * i + 1] = static_cast<std::uint8_t>(w);
    }
    if (a.family == Family::inet) std::fill(a.bytes.begin() + 4, a.bytes.end(), std::uint8_t{0});
    std::string s;
    a.append_to(s);
    ASSERT_EQ(s, ntop(a)) << n;
    ASSERT_LE(s.size(), IpAddress::kMaxText);
  }
}
