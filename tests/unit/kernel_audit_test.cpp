#include "xfrm/kernel_audit.hpp"

#include <gtest/gtest.h>
#include <linux/netlink.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <string_view>

#include <cstring>
#include <vector>

using namespace ipsec;

TEST(KernelAudit, GetRequestFraming) {
  auto req = build_audit_get(42);
  ASSERT_EQ(req.size(), NLMSG_HDRLEN);
  int n = 0;
  auto w = for_each_netlink_message(Bytes(req), [&](const NetlinkMessage& m) {
    EXPECT_EQ(m.type, kAuditGet);
    EXPECT_EQ(m.seq, 42u);
    EXPECT_TRUE(m.flags & NLM_F_REQUEST);
    ++n;
    return true;
  });
  ASSERT_TRUE(w);
  EXPECT_EQ(n, 1);
}

TEST(KernelAudit, SetEnabledCarriesMask) {
  auto req = build_audit_set_enabled(7, true);
  ASSERT_GE(req.size(), NLMSG_HDRLEN + 8u);
  std::uint32_t mask = 0, enabled = 0;
  std::memcpy(&mask, req.data() + NLMSG_HDRLEN, 4);
  std::memcpy(&enabled, req.data() + NLMSG_HDRLEN + 4, 4);
  EXPECT_EQ(mask, 1u);
  EXPECT_EQ(enabled, 1u);
}

TEST(KernelAudit, StatusParseShortAndFull) {
  std::vector<std::uint8_t> p(40, 0);
  const std::uint32_t vals[] = {0, 1, 1, 0, 0, 64, 3, 2};
  std::memcpy(p.data(), vals, sizeof vals);
  auto s = parse_audit_status(p);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->enabled, 1u);
  EXPECT_EQ(s->backlog_limit, 64u);
  EXPECT_EQ(s->lost, 3u);
  EXPECT_EQ(s->backlog, 2u);
  EXPECT_FALSE(parse_audit_status(Bytes(p.data(), 31)));
  EXPECT_TRUE(parse_audit_status(Bytes(p.data(), 32)));
}

TEST(NetlinkFraming, RejectsBadLengths) {
  std::vector<std::uint8_t> b(32, 0);
  nlmsghdr h{};
  h.nlmsg_len = 8;  // shorter than a header
  std::memcpy(b.data(), &h, sizeof h);
  EXPECT_FALSE(for_each_netlink_message(Bytes(b), [](const NetlinkMessage&) { return true; }));
  h.nlmsg_len = 64;  // beyond the datagram
  std::memcpy(b.data(), &h, sizeof h);
  EXPECT_FALSE(for_each_netlink_message(Bytes(b), [](const NetlinkMessage&) { return true; }));
  h.nlmsg_len = 20;
  std::memcpy(b.data(), &h, sizeof h);
  int n = 0;
  EXPECT_TRUE(for_each_netlink_message(Bytes(b), [&](const NetlinkMessage& m) {
    EXPECT_EQ(m.payload.size(), 4u);
    ++n;
    return true;
  }));
  EXPECT_EQ(n, 1);  // the 8 trailing bytes are shorter than a header: padding
}

TEST(KernelAudit, RecordTextStripsNul) {
  const char raw[] = "audit(1.000:1): op=x\n";  // includes the NUL
  auto t = audit_record_text(Bytes(reinterpret_cast<const std::uint8_t*>(raw), sizeof raw));
  EXPECT_EQ(t, "audit(1.000:1): op=x");
}

#include <fstream>
#include <iterator>
#include <optional>
#include <string>

#include "xfrm/audit_record.hpp"

// Datagrams recorded from the real kernel through NetlinkSocket (see
// tests/fixtures/audit/README.md), through the same framing and parser path
// as the agent.
TEST(KernelAuditFixture, SpdAddDeleteAndFlush) {
  std::ifstream in(std::string(FIXTURE_DIR) + "/audit/spd-add-delete.bin", std::ios::binary);
  ASSERT_TRUE(in);
  const std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<IpsecAuditRecord> recs;
  int others = 0;
  auto walk = for_each_netlink_message(Bytes(bytes), [&](const NetlinkMessage& m) {
    if (m.type != kAuditMacIpsecEvent) {
      ++others;
      return true;
    }
    auto r = parse_ipsec_audit_record(audit_record_text(m.payload));
    EXPECT_TRUE(r) << r.error().message;
    if (r) recs.push_back(*r);
    return true;
  });
  ASSERT_TRUE(walk) << walk.error().message;
  EXPECT_GT(others, 0) << "SYSCALL/PROCTITLE/EOE records are in the stream and skipped";
  ASSERT_GE(recs.size(), 6u);  // the first six are ours; a concurrent session's SAD/SPD records follow
  EXPECT_EQ(recs[0].op, "SPD-add");
  EXPECT_EQ(recs[0].src->to_string(), "10.0.0.1");
  EXPECT_EQ(*recs[0].res, 1);
  EXPECT_EQ(*recs[0].auid, 4294967295u);
  EXPECT_EQ(recs[1].src->to_string(), "fd00::1");
  EXPECT_EQ(*recs[2].src_prefixlen, 16);
  EXPECT_EQ(*recs[2].dst_prefixlen, 24);
  EXPECT_EQ(recs[3].op, "SPD-delete");
  // The flush: two records under one serial.
  EXPECT_EQ(recs[4].header.serial, recs[5].header.serial);
  EXPECT_EQ(recs[4].op, "SPD-delete");
}

// AUDIT_GET replies recorded from the real kernel (tests/fixtures/audit/README.md).
TEST(KernelAuditFixture, StatusReplyAndAck) {
  auto read = [](const char* name) {
    std::ifstream in(std::string(FIXTURE_DIR) + "/audit/" + name, std::ios::binary);
    return std::vector<std::uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  const auto reply = read("status-get-reply.bin");
  std::optional<Result<AuditStatus>> st;
  ASSERT_TRUE(for_each_netlink_message(Bytes(reply), [&](const NetlinkMessage& m) {
    EXPECT_EQ(m.type, kAuditGet);
    st = parse_audit_status(m.payload);
    return true;
  }));
  ASSERT_TRUE(st && *st) << (st ? (*st).error().message : "no message");
  EXPECT_EQ((**st).enabled, 0u);
  EXPECT_EQ((**st).failure, 1u);
  EXPECT_EQ((**st).backlog_limit, 64u);

  const auto ack = read("status-get-ack.bin");
  int acks = 0;
  ASSERT_TRUE(for_each_netlink_message(Bytes(ack), [&](const NetlinkMessage& m) {
    EXPECT_EQ(m.type, NLMSG_ERROR);
    auto e = parse_netlink_error(m.payload);
    EXPECT_TRUE(e && *e == 0);
    ++acks;
    return true;
  }));
  EXPECT_EQ(acks, 1);
}

// The audit socket's BPF filter, run by the kernel: attached to one end of an
// AF_UNIX datagram pair (which takes SO_ATTACH_FILTER like a netlink socket),
// it must pass MAC_IPSEC_EVENT datagrams whole and drop every other type.
namespace {
std::vector<std::uint8_t> nl_datagram(std::uint16_t type, std::string_view text) {
  std::vector<std::uint8_t> b(NLMSG_HDRLEN + text.size(), 0);
  nlmsghdr h{};
  h.nlmsg_len = static_cast<std::uint32_t>(b.size());
  h.nlmsg_type = type;
  std::memcpy(b.data(), &h, sizeof h);
  std::memcpy(b.data() + NLMSG_HDRLEN, text.data(), text.size());
  return b;
}
}  // namespace

TEST(KernelAudit, IpsecFilterKeepsOnlyMacIpsecEvent) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
  ASSERT_TRUE(attach_audit_ipsec_filter(sv[1])) << std::strerror(errno);
  const std::string rec = "audit(1795394826.304:15): op=SA-icv-failure src=10.0.0.1 dst=10.0.0.2 spi=4097(0x1001)";
  struct Case {
    std::uint16_t type;
    bool kept;
  };
  // 1415 and its byte-swapped twin 0x8705, neighbours, SYSCALL, USER, EOE,
  // NLMSG_ERROR / NLMSG_DONE (never sent on the multicast socket), AUDIT_GET.
  const Case cases[] = {{1415, true},  {0x8705, false}, {1414, false}, {1416, false}, {1300, false}, {1107, false},
                        {1320, false}, {NLMSG_ERROR, false}, {NLMSG_DONE, false}, {kAuditGet, false}, {1415, true}};
  for (const auto& c : cases) {
    const auto d = nl_datagram(c.type, rec);
    ASSERT_EQ(::send(sv[0], d.data(), d.size(), 0), static_cast<ssize_t>(d.size()));
    std::uint8_t got[512];
    const ssize_t n = ::recv(sv[1], got, sizeof got, 0);
    if (c.kept) {
      ASSERT_EQ(n, static_cast<ssize_t>(d.size())) << c.type;
      EXPECT_EQ(std::memcmp(got, d.data(), d.size()), 0);
    } else {
      EXPECT_EQ(n, -1) << c.type << " passed the filter";
      EXPECT_EQ(errno, EAGAIN);
    }
  }
  // Too short to hold nlmsg_type: dropped.
  const std::uint8_t stub[3] = {1, 2, 3};
  ASSERT_EQ(::send(sv[0], stub, sizeof stub, 0), 3);
  std::uint8_t got[16];
  EXPECT_EQ(::recv(sv[1], got, sizeof got, 0), -1);
  ::close(sv[0]);
  ::close(sv[1]);
}

TEST(KernelAudit, IpsecFilterProgramIsSmall) { EXPECT_EQ(audit_ipsec_filter_program().size(), 4u); }
