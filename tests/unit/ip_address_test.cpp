#include "xfrm/ip_address.hpp"

#include <gtest/gtest.h>

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

TEST(IpAddress, UnspecifiedAndOrdering) {
  EXPECT_TRUE(IpAddress::parse("0.0.0.0")->is_unspecified());
  EXPECT_TRUE(IpAddress::parse("::")->is_unspecified());
  EXPECT_FALSE(IpAddress::parse("::1")->is_unspecified());
  EXPECT_NE(*IpAddress::parse("10.0.0.1"), *IpAddress::parse("10.0.0.2"));
}
