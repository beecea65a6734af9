// ReplyAssembler (datagrams in -> more / complete / failed), the socket-level
// receive checks and SecureBuffer, without a kernel: bytes built here and a
// socketpair standing in for a netlink socket.
#include "xfrm/netlink_reply.hpp"

#include <gtest/gtest.h>
#include <linux/netlink.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "xfrm/netlink_socket.hpp"
#include "xfrm/secure_buffer.hpp"

using namespace ipsec;
using State = ReplyAssembler::State;

namespace {
using Buf = std::vector<std::uint8_t>;

void put(Buf& b, std::uint16_t type, std::uint16_t flags, std::uint32_t seq, const Buf& payload = {}) {
  nlmsghdr h{};
  h.nlmsg_len = static_cast<std::uint32_t>(NLMSG_LENGTH(payload.size()));
  h.nlmsg_type = type;
  h.nlmsg_flags = flags;
  h.nlmsg_seq = seq;
  const std::size_t at = b.size();
  b.resize(at + NLMSG_SPACE(payload.size()));
  std::memcpy(b.data() + at, &h, sizeof h);
  if (!payload.empty()) std::memcpy(b.data() + at + NLMSG_HDRLEN, payload.data(), payload.size());
}

Buf int_payload(int v) {
  Buf p(sizeof v);
  std::memcpy(p.data(), &v, sizeof v);
  return p;
}

// NLMSG_ERROR: the errno, then the request's header (as the kernel echoes it).
Buf error_payload(int err) {
  Buf p = int_payload(err);
  p.resize(p.size() + sizeof(nlmsghdr));
  return p;
}

constexpr std::uint16_t kNewPolicy = 0x13;  // XFRM_MSG_NEWPOLICY: any non-control type will do

struct Feed {
  ReplyAssembler a;
  int delivered{0};
  State feed(const Buf& d) {
    return a.on_datagram(Bytes(d), [&](const NetlinkMessage&) { ++delivered; });
  }
};
}  // namespace

TEST(ReplyAssembler, DumpCompletesAtDoneOnly) {
  Feed r{ReplyAssembler(7, ReplyKind::dump)};
  Buf d1;
  put(d1, kNewPolicy, NLM_F_MULTI, 7, Buf(8));
  put(d1, kNewPolicy, NLM_F_MULTI, 7, Buf(8));
  EXPECT_EQ(r.feed(d1), State::more);
  Buf d2;
  put(d2, kNewPolicy, NLM_F_MULTI, 7, Buf(8));
  put(d2, NLMSG_DONE, NLM_F_MULTI, 7, int_payload(0));
  EXPECT_EQ(r.feed(d2), State::complete);
  EXPECT_EQ(r.delivered, 3);
  EXPECT_EQ(r.a.messages(), 3u);
}

TEST(ReplyAssembler, DoneCarryingAnErrorFailsTheDump) {
  Feed r{ReplyAssembler(7, ReplyKind::dump)};
  Buf d;
  put(d, kNewPolicy, NLM_F_MULTI, 7, Buf(8));
  put(d, NLMSG_DONE, NLM_F_MULTI, 7, int_payload(-ENOBUFS));
  EXPECT_EQ(r.feed(d), State::failed);
  EXPECT_EQ(r.a.error().sys_errno, ENOBUFS);
}

TEST(ReplyAssembler, ErrorFailsTheDump) {
  Feed r{ReplyAssembler(7, ReplyKind::dump)};
  Buf d;
  put(d, kNewPolicy, NLM_F_MULTI, 7, Buf(8));
  put(d, NLMSG_ERROR, 0, 7, error_payload(-EPERM));
  EXPECT_EQ(r.feed(d), State::failed);
  EXPECT_EQ(r.a.error().sys_errno, EPERM);
  // Nothing after a failure changes it.
  Buf done;
  put(done, NLMSG_DONE, NLM_F_MULTI, 7, int_payload(0));
  EXPECT_EQ(r.feed(done), State::failed);
}

TEST(ReplyAssembler, AckInsteadOfDoneFailsADump) {
  Feed r{ReplyAssembler(7, ReplyKind::dump)};
  Buf d;
  put(d, NLMSG_ERROR, 0, 7, error_payload(0));
  EXPECT_EQ(r.feed(d), State::failed);
}

TEST(ReplyAssembler, TruncatedDatagramFailsTheDump) {
  Feed r{ReplyAssembler(7, ReplyKind::dump)};
  Buf d1;
  put(d1, kNewPolicy, NLM_F_MULTI, 7, Buf(8));
  EXPECT_EQ(r.feed(d1), State::more);
  Buf big;
  put(big, kNewPolicy, NLM_F_MULTI, 7, Buf(400));
  EXPECT_EQ(r.a.on_truncated(Bytes(big).first(64)), State::failed);
  EXPECT_EQ(r.a.error().code, Errc::truncated);
}

TEST(ReplyAssembler, TruncatedHeadTooShortToNameItsSequenceFails) {
  ReplyAssembler a(7, ReplyKind::dump);
  const Buf head(8, 0);
  EXPECT_EQ(a.on_truncated(Bytes(head)), State::failed);
}

TEST(ReplyAssembler, TruncatedLateReplyToAnotherRequestIsIgnored) {
  ReplyAssembler a(7, ReplyKind::dump);
  Buf big;
  put(big, kNewPolicy, NLM_F_MULTI, 6, Buf(400));
  EXPECT_EQ(a.on_truncated(Bytes(big).first(64)), State::more);
}

TEST(ReplyAssembler, BrokenFramingFailsTheDump) {
  Feed r{ReplyAssembler(7, ReplyKind::dump)};
  Buf d;
  put(d, kNewPolicy, NLM_F_MULTI, 7, Buf(8));
  Buf bad = d;
  nlmsghdr h{};
  std::memcpy(&h, bad.data(), sizeof h);
  h.nlmsg_len = 4000;  // runs past the datagram
  std::memcpy(bad.data(), &h, sizeof h);
  EXPECT_EQ(r.feed(bad), State::failed);
}

TEST(ReplyAssembler, InterruptedDumpFails) {
  Feed r{ReplyAssembler(7, ReplyKind::dump)};
  Buf d;
  put(d, kNewPolicy, NLM_F_MULTI | NLM_F_DUMP_INTR, 7, Buf(8));
  EXPECT_EQ(r.feed(d), State::failed);
}

TEST(ReplyAssembler, OtherSequenceNumbersAreSkipped) {
  Feed r{ReplyAssembler(7, ReplyKind::dump)};
  Buf d;
  put(d, kNewPolicy, NLM_F_MULTI, 6, Buf(8));
  put(d, NLMSG_DONE, NLM_F_MULTI, 6, int_payload(-EINTR));
  put(d, NLMSG_ERROR, 0, 6, error_payload(-EPERM));
  EXPECT_EQ(r.feed(d), State::more);
  EXPECT_EQ(r.delivered, 0);
}

TEST(ReplyAssembler, RequestWithAckCompletesAfterReplyAndAck) {
  Feed r{ReplyAssembler(3, ReplyKind::reply_and_ack)};
  Buf ack;
  put(ack, NLMSG_ERROR, 0, 3, error_payload(0));
  EXPECT_EQ(r.feed(ack), State::more);  // AUDIT_GET: the reply may follow the ACK
  Buf reply;
  put(reply, 1000, 0, 3, Buf(16));
  EXPECT_EQ(r.feed(reply), State::complete);
  EXPECT_EQ(r.delivered, 1);

  Feed plain{ReplyAssembler(4, ReplyKind::ack)};
  Buf ack4;
  put(ack4, NLMSG_ERROR, 0, 4, error_payload(0));
  EXPECT_EQ(plain.feed(ack4), State::complete);
}

TEST(ReplyAssembler, RequestRefused) {
  Feed r{ReplyAssembler(3, ReplyKind::reply_and_ack)};
  Buf err;
  put(err, NLMSG_ERROR, 0, 3, error_payload(-ESRCH));
  EXPECT_EQ(r.feed(err), State::failed);
  EXPECT_EQ(r.a.error().sys_errno, ESRCH);
}

// A datagram that is not from the kernel (here: from a socketpair peer, no
// netlink address) is rejected and wiped: it could hold an SA message all the same.
TEST(NetlinkReceive, RejectedDatagramIsWiped) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
  const std::string secret = "pretend-this-is-an-SA-key-0123456789";
  ASSERT_EQ(::send(sv[1], secret.data(), secret.size(), 0), static_cast<ssize_t>(secret.size()));
  std::vector<std::uint8_t> buf(256, 0xAA);
  const auto r = NetlinkSocket::receive_from(sv[0], buf);
  EXPECT_EQ(r.status, NetlinkSocket::RecvStatus::rejected);
  for (std::size_t i = 0; i < secret.size(); ++i) ASSERT_EQ(buf[i], 0) << "byte " << i << " not wiped";
  ::close(sv[0]);
  ::close(sv[1]);
}

// recvmmsg: every datagram queued (fewer than the slots) in one call, each
// checked and, not being from the kernel, rejected and wiped in its slot;
// then nothing is left.
TEST(NetlinkReceive, ManyInOneCallEachCheckedAndWiped) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
  const std::string secret = "pretend-this-is-an-SA-key-0123456789";
  for (int i = 0; i < 3; ++i) ASSERT_EQ(::send(sv[1], secret.data(), secret.size(), 0), static_cast<ssize_t>(secret.size()));
  constexpr std::size_t kSlot = 64;
  std::vector<std::uint8_t> buf(4 * kSlot, 0xAA);
  std::vector<NetlinkSocket::Received> got(4);
  ASSERT_EQ(NetlinkSocket::receive_many_from(sv[0], buf, kSlot, got), 3u);
  for (std::size_t d = 0; d < 3; ++d) {
    EXPECT_EQ(got[d].status, NetlinkSocket::RecvStatus::rejected);
    for (std::size_t i = 0; i < secret.size(); ++i) ASSERT_EQ(buf[d * kSlot + i], 0) << "slot " << d << " byte " << i;
  }
  EXPECT_EQ(buf[3 * kSlot], 0xAA) << "the unused slot is untouched";
  EXPECT_EQ(NetlinkSocket::receive_many_from(sv[0], buf, kSlot, got), 0u);
  EXPECT_EQ(got[0].status, NetlinkSocket::RecvStatus::again);
  ::close(sv[0]);
  ::close(sv[1]);
}

TEST(SecureBuffer, PageAlignedExcludedFromCoreDumpsAndWiped) {
  SecureBuffer b(5000);
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(b.data()) % page, 0u);
  EXPECT_EQ(b.size() % page, 0u);
  EXPECT_GE(b.size(), 5000u);
  EXPECT_TRUE(b.dontdump());
  // The kernel's view: the mapping carries VmFlags "dd" (do not dump).
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool in_ours = false, dd = false;
  char start[32];
  std::snprintf(start, sizeof start, "%lx-", static_cast<unsigned long>(reinterpret_cast<std::uintptr_t>(b.data())));
  while (std::getline(smaps, line)) {
    if (line.rfind(start, 0) == 0) in_ours = true;
    else if (in_ours && line.rfind("VmFlags:", 0) == 0) {
      dd = line.find(" dd") != std::string::npos;
      break;
    }
  }
  EXPECT_TRUE(in_ours);
  EXPECT_TRUE(dd) << line;
  std::memset(b.data(), 0x5A, 100);
  b.wipe(100);
  for (std::size_t i = 0; i < 100; ++i) ASSERT_EQ(b.data()[i], 0);
  SecureBuffer moved = std::move(b);
  EXPECT_EQ(b.data(), nullptr);
  EXPECT_NE(moved.data(), nullptr);
}
