#include "xfrm/xfrm_stat.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

using namespace ipsec;

namespace {
std::string fixture(const std::string& name) {
  std::ifstream in(std::string(FIXTURE_DIR) + "/xfrm_stat/" + name, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

TEST(XfrmStat, Debian61NetnsB) {
  auto s = parse_xfrm_stat(fixture("debian-6.1-netns-b.txt"));
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->counters.size(), 28u);
  EXPECT_EQ(s->get("XfrmInTmplMismatch"), 2u);
  EXPECT_EQ(s->get("XfrmInNoPols"), 2u);
  EXPECT_EQ(s->get("XfrmInPolBlock"), 0u);
  EXPECT_EQ(s->get("XfrmInNoStates"), 2u);
  EXPECT_EQ(s->get("XfrmInStateSeqError"), 6u);
  EXPECT_EQ(s->get("XfrmOutStateDirError"), std::nullopt);  // newer kernels only
}

TEST(XfrmStat, Debian61NetnsA) {
  auto s = parse_xfrm_stat(fixture("debian-6.1-netns-a.txt"));
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->get("XfrmOutStateSeqError"), 2u);
  EXPECT_EQ(s->get("XfrmOutNoStates"), 2u);
}

TEST(XfrmStat, NewerKernelHasMoreNames) {
  auto s = parse_xfrm_stat(fixture("host-6.x.txt"));
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_GE(s->counters.size(), 28u);
  EXPECT_TRUE(s->get("XfrmInTmplMismatch").has_value());
}

TEST(XfrmStat, LargeValuesAndSpaces) {
  auto s = parse_xfrm_stat("XfrmInNoPols 18446744073709551615\nXfrmInPolBlock\t \t7  \n\n");
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->get("XfrmInNoPols"), 18446744073709551615ull);
  EXPECT_EQ(s->get("XfrmInPolBlock"), 7u);
}

TEST(XfrmStat, EmptyIsNoCounters) {
  auto s = parse_xfrm_stat("");
  ASSERT_TRUE(s);
  EXPECT_TRUE(s->counters.empty());
}

TEST(XfrmStat, Rejects) {
  for (const char* bad : {"XfrmInNoPols\n", "XfrmInNoPols x\n", "XfrmInNoPols -1\n", "XfrmInNoPols 1 2\n",
                          " 5\n", "XfrmInNoPols 1\nXfrmInNoPols 2\n", "XfrmIn\x01Pols 1\n",
                          "XfrmInNoPols 18446744073709551616\n", "XfrmInNoPols5\n", "XfrmInNoPols 0x10\n"}) {
    auto s = parse_xfrm_stat(bad);
    EXPECT_FALSE(s) << bad;
  }
  std::string many;
  for (int i = 0; i < 300; ++i) many += "C" + std::to_string(i) + " 1\n";
  EXPECT_FALSE(parse_xfrm_stat(many));
}

TEST(XfrmStat, ReadsAnOpenFileAgain) {
  char path[] = "/tmp/xfrm_stat_testXXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  const std::string text = fixture("debian-6.1-netns-b.txt");
  ASSERT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  for (int i = 0; i < 2; ++i) {  // the second read starts from the top again
    auto s = read_xfrm_stat(fd);
    ASSERT_TRUE(s) << s.error().message;
    EXPECT_EQ(s->get("XfrmInTmplMismatch"), 2u);
  }
  ::close(fd);
  ::unlink(path);
}
