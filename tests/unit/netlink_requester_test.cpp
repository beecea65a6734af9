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
      [](std::uint32_t seq) {
        std::vector<std::uint8_t> b(NLMSG_SPACE(sizeof(xfrm_usersa_flush)));
        auto* h = reinterpret_cast<nlmsghdr*>(b.data());
        h->nlmsg_len = static_cast<std::uint32_t>(b.size());
        h->nlmsg_type = XFRM_MSG_FLUSHSA;
        h->nlmsg_flags = NLM_F_REQUEST;
        h->nlmsg_seq = seq;
        return b;
      },
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
