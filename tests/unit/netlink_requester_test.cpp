// NetlinkRequester against the real kernel, in a namespace of its own (needs
// root: run with IPSEC_AUDIT_NETNS_TESTS=1, as ctest does). Nothing here
// depends on timing: the deadline case waits for a reply that never comes.
#include "agent/netlink_requester.hpp"

#include <gtest/gtest.h>
#include <linux/netlink.h>
#include <linux/xfrm.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "xfrm/netns.hpp"
#include "xfrm/xfrm_message.hpp"
#include "xfrm/xfrm_request.hpp"

using namespace ipsec;

namespace {
// A flush without NLM_F_ACK: the kernel sends nothing back.
std::vector<std::uint8_t> flush_without_ack(std::uint32_t seq) {
  std::vector<std::uint8_t> b(NLMSG_SPACE(sizeof(xfrm_usersa_flush)));
  auto* h = reinterpret_cast<nlmsghdr*>(b.data());
  h->nlmsg_len = static_cast<std::uint32_t>(b.size());
  h->nlmsg_type = XFRM_MSG_FLUSHSA;
  h->nlmsg_flags = NLM_F_REQUEST;
  h->nlmsg_seq = seq;
  return b;
}

class RequesterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::getenv("IPSEC_AUDIT_NETNS_TESTS") == nullptr || geteuid() != 0)
      GTEST_SKIP() << "set IPSEC_AUDIT_NETNS_TESTS=1 and run as root";
    name_ = "nr-unit-" + std::to_string(getpid());
    ASSERT_EQ(std::system(("ip netns add " + name_).c_str()), 0);
  }
  void TearDown() override {
    if (!name_.empty()) (void)std::system(("ip netns del " + name_).c_str());
  }
  std::shared_ptr<NetlinkRequester> requester(std::chrono::milliseconds timeout = std::chrono::milliseconds(2000)) {
    auto sock = open_netlink_socket_in_netns(name_, NETLINK_XFRM);
    EXPECT_TRUE(sock);
    auto r = NetlinkRequester::create(io_, std::move(*sock), timeout);
    EXPECT_TRUE(r);
    return *r;
  }
  boost::asio::io_context io_;
  std::string name_;
};
}  // namespace

TEST_F(RequesterTest, DumpsInOrderWithoutBlocking) {
  ASSERT_EQ(std::system(("for i in $(seq 1 300); do echo \"xfrm policy add src 10.1.$((i / 250)).$((i % 250))/32 "
                         "dst 10.2.0.1/32 dir out\"; done | ip -n " + name_ + " -batch -")
                            .c_str()),
            0);
  auto rq = requester();
  int policies = 0, sas = 0, done = 0;
  std::vector<int> order;
  rq->request([](std::uint32_t seq) { return build_xfrm_dump_sa(seq); }, ReplyKind::dump,
              [&](const NetlinkMessage&) { ++sas; },
              [&](const Result<Unit>& r) {
                EXPECT_TRUE(r) << r.error().message;
                order.push_back(1);
                ++done;
              });
  rq->request([](std::uint32_t seq) { return build_xfrm_dump_policy(seq); }, ReplyKind::dump,
              [&](const NetlinkMessage& m) {
                auto p = parse_xfrm_message(m);
                if (p && std::holds_alternative<XfrmNewPolicy>(*p)) ++policies;
              },
              [&](const Result<Unit>& r) {
                EXPECT_TRUE(r) << r.error().message;
                order.push_back(2);
                ++done;
              });
  // Nothing is answered inside request(): the callbacks come from the loop.
  EXPECT_EQ(done, 0);
  io_.run();
  EXPECT_EQ(done, 2);
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
  EXPECT_EQ(sas, 0);
  EXPECT_EQ(policies, 300);
  EXPECT_TRUE(rq->idle());
}

TEST_F(RequesterTest, RefusedRequestFails) {
  auto rq = requester();
  std::optional<Result<Unit>> got;
  // GETSA for an SA that does not exist: ESRCH.
  rq->request([](std::uint32_t seq) { return build_xfrm_get_sa(seq, XfrmSaRef{*IpAddress::parse("10.9.9.9"), 0x1234, 50, std::nullopt, std::nullopt}); },
              ReplyKind::reply_and_ack, [](const NetlinkMessage&) {}, [&](const Result<Unit>& r) { got = r; });
  io_.run();
  ASSERT_TRUE(got);
  ASSERT_FALSE(*got);
  EXPECT_EQ(got->error().sys_errno, ESRCH);
}

TEST_F(RequesterTest, NoReplyEndsAtTheDeadlineAndTheNextRequestStillWorks) {
  auto rq = requester(std::chrono::milliseconds(50));
  std::optional<Result<Unit>> first, second;
  // A flush without NLM_F_ACK: the kernel sends nothing back, so waiting for
  // an ACK can only end at the deadline.
  rq->request(
      flush_without_ack,
      ReplyKind::ack, [](const NetlinkMessage&) {}, [&](const Result<Unit>& r) { first = r; });
  rq->request([](std::uint32_t seq) { return build_xfrm_dump_policy(seq); }, ReplyKind::dump,
              [](const NetlinkMessage&) {}, [&](const Result<Unit>& r) { second = r; });
  io_.run();
  ASSERT_TRUE(first && second);
  ASSERT_FALSE(*first);
  EXPECT_EQ(first->error().sys_errno, ETIMEDOUT);
  EXPECT_TRUE(*second);
}

TEST_F(RequesterTest, ClosedRequesterCallsNothingBack) {
  auto rq = requester();
  bool called = false;
  rq->request([](std::uint32_t seq) { return build_xfrm_dump_policy(seq); }, ReplyKind::dump,
              [](const NetlinkMessage&) {}, [&](const Result<Unit>&) { called = true; });
  rq->close();
  io_.run();
  EXPECT_FALSE(called);
}

namespace {
// One SA in the test's namespace (a test key, not a secret). False when the
// kernel has no ESP (a container host without the xfrm modules).
bool add_sa(const std::string& ns) {
  return std::system(("ip -n " + ns +
                      " xfrm state add src 10.0.0.1 dst 10.0.0.2 proto esp spi 0x1001 reqid 1 mode transport "
                      "replay-window 32 auth-trunc 'hmac(sha256)' "
                      "0x0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20 128 "
                      "enc 'cbc(aes)' 0x0102030405060708090a0b0c0d0e0f10 2>/dev/null")
                         .c_str()) == 0;
}
XfrmSaRef the_sa() { return XfrmSaRef{*IpAddress::parse("10.0.0.2"), 0x1001, 50, std::nullopt, std::nullopt}; }
}  // namespace

// The XFRM kernel answers a GETSA inside sendmsg (the ACK or the error
// too): request_now reads it in the call, with nothing left for the loop.
TEST_F(RequesterTest, RefusedGetsaIsAnsweredInsideRequestNow) {
  auto rq = requester();
  std::optional<Result<Unit>> got;
  EXPECT_TRUE(rq->request_now(
      [](std::uint32_t seq) {
        return build_xfrm_get_sa(seq, XfrmSaRef{*IpAddress::parse("10.9.9.9"), 0x1234, 50, std::nullopt, std::nullopt});
      },
      ReplyKind::reply_and_ack, [](const NetlinkMessage&) {}, [&](const Result<Unit>& r) { got = r; }));
  ASSERT_TRUE(got);
  ASSERT_FALSE(*got);
  EXPECT_EQ(got->error().sys_errno, ESRCH);
  EXPECT_TRUE(rq->idle());
  EXPECT_EQ(io_.poll(), 0u);  // no read or deadline was armed
}

TEST_F(RequesterTest, GetsaIsAnsweredInsideRequestNow) {
  if (!add_sa(name_)) GTEST_SKIP() << "this kernel cannot add an ESP SA";
  auto rq = requester();
  std::optional<Result<Unit>> got;
  int newsa = 0;
  EXPECT_TRUE(rq->request_now([](std::uint32_t seq) { return build_xfrm_get_sa(seq, the_sa()); },
                              ReplyKind::reply_and_ack,
                              [&](const NetlinkMessage& m) {
                                auto p = parse_xfrm_message(m);
                                if (p && std::holds_alternative<XfrmNewSa>(*p)) ++newsa;
                              },
                              [&](const Result<Unit>& r) { got = r; }));
  ASSERT_TRUE(got);
  EXPECT_TRUE(*got);
  EXPECT_EQ(newsa, 1);
  EXPECT_TRUE(rq->idle());
  EXPECT_EQ(io_.poll(), 0u);
}

// Behind a request in flight it waits its turn; with no reply at all it
// falls back to the asynchronous read and ends at the deadline.
TEST_F(RequesterTest, RequestNowFallsBackToTheLoop) {
  auto rq = requester(std::chrono::milliseconds(50));
  std::vector<int> order;
  rq->request([](std::uint32_t seq) { return build_xfrm_dump_policy(seq); }, ReplyKind::dump,
              [](const NetlinkMessage&) {}, [&](const Result<Unit>&) { order.push_back(1); });
  std::optional<Result<Unit>> got;
  EXPECT_FALSE(rq->request_now([](std::uint32_t seq) { return build_xfrm_get_sa(seq, the_sa()); },
                               ReplyKind::reply_and_ack, [](const NetlinkMessage&) {},
                               [&](const Result<Unit>& r) {
                                 got = r;
                                 order.push_back(2);
                               }));
  EXPECT_TRUE(order.empty());
  io_.run();
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
  ASSERT_TRUE(got);
  ASSERT_FALSE(*got);  // no such SA
  EXPECT_EQ(got->error().sys_errno, ESRCH);

  // A flush without NLM_F_ACK gets no reply: not done in the call, then
  // the deadline.
  io_.restart();
  got.reset();
  EXPECT_FALSE(rq->request_now(
      flush_without_ack,
      ReplyKind::ack, [](const NetlinkMessage&) {}, [&](const Result<Unit>& r) { got = r; }));
  EXPECT_FALSE(got);
  // Until the deadline (run() would go on: the read stays armed until the
  // requester is closed).
  while (!got && io_.run_one() > 0) {
  }
  ASSERT_TRUE(got);
  ASSERT_FALSE(*got);
  EXPECT_EQ(got->error().sys_errno, ETIMEDOUT);
  rq->close();
}
