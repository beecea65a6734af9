// ReplayResolver without ESP: what it does when the SA's counters cannot be
// read (namespace gone, GETSA refused), and how flush/abandon end. The
// counter-based classification itself is classify_replay's (its own tests)
// and the ESP lab's.
#include "agent/replay_resolver.hpp"

#include <gtest/gtest.h>
#include <linux/netlink.h>
#include <unistd.h>

#include <cstdlib>

#include "xfrm/netns.hpp"

using namespace ipsec;

namespace {
Event replay_event(std::uint32_t seq) {
  Event e;
  e.kind = EventKind::replay_check_failed;
  e.source = Source::kernel_audit;
  e.seq = seq;
  e.detail = nlohmann::json::object();
  return e;
}

XfrmSa some_sa() {
  XfrmSa sa;
  sa.daddr = *IpAddress::parse("10.0.0.2");
  sa.saddr = *IpAddress::parse("10.0.0.1");
  sa.spi = 0x1001;
  sa.proto = 50;
  return sa;
}

struct Fixture {
  boost::asio::io_context io;
  std::vector<Event> out;
  int refreshed{0};
  std::uint64_t getsa{0};
  ReplayResolver r{io, std::chrono::milliseconds(1), [this](const Event& e) { out.push_back(e); },
                   [this](const void*, const XfrmSa&, std::vector<Event>&) { ++refreshed; }, getsa};
};
}  // namespace

TEST(ReplayResolver, GoneNamespaceGivesUnknownBasisNeverAGuess) {
  Fixture f;
  std::weak_ptr<NetlinkRequester> gone;  // expired: the namespace's watcher is gone
  f.r.add(replay_event(4), ReplayResolver::Source{&f, "vpn", gone}, some_sa());
  f.r.add(replay_event(5), ReplayResolver::Source{&f, "vpn", gone}, some_sa());
  EXPECT_TRUE(f.out.empty());  // held for the coalescing interval
  f.io.run();
  ASSERT_EQ(f.out.size(), 2u);
  for (const auto& e : f.out) {
    EXPECT_EQ(e.replay_basis, ReplayBasis::unknown);
    EXPECT_EQ(e.kind, EventKind::replay_check_failed);
  }
  EXPECT_EQ(f.getsa, 0u);
  EXPECT_EQ(f.refreshed, 0);
}

TEST(ReplayResolver, FlushDecidesWhatIsHeldThenCallsDone) {
  Fixture f;
  bool done = false;
  f.r.flush([&] { done = true; });
  EXPECT_TRUE(done);  // nothing held: at once

  Fixture g;
  g.r.add(replay_event(4), ReplayResolver::Source{&g, "vpn", {}}, some_sa());
  bool done2 = false;
  g.r.flush([&] { done2 = true; });
  EXPECT_TRUE(done2);
  ASSERT_EQ(g.out.size(), 1u);
  EXPECT_EQ(g.out[0].replay_basis, ReplayBasis::unknown);
}

TEST(ReplayResolver, AbandonDecidesEverythingNow) {
  Fixture f;
  f.r.add(replay_event(4), ReplayResolver::Source{&f, "a", {}}, some_sa());
  f.r.add(replay_event(9), ReplayResolver::Source{&f, "b", {}}, some_sa());
  f.r.abandon();
  EXPECT_EQ(f.out.size(), 2u);
  f.io.run();  // the cancelled timers decide nothing twice
  EXPECT_EQ(f.out.size(), 2u);
}

// With a real requester in a namespace of its own: the kernel has no such SA
// (ESRCH), so the basis is unknown, and the GETSA went out without blocking.
TEST(ReplayResolver, RefusedGetsaGivesUnknownBasis) {
  if (std::getenv("IPSEC_AUDIT_NETNS_TESTS") == nullptr || geteuid() != 0)
    GTEST_SKIP() << "set IPSEC_AUDIT_NETNS_TESTS=1 and run as root";
  const std::string name = "rr-unit-" + std::to_string(getpid());
  ASSERT_EQ(std::system(("ip netns add " + name).c_str()), 0);
  {
    Fixture f;
    auto sock = open_netlink_socket_in_netns(name, NETLINK_XFRM);
    ASSERT_TRUE(sock);
    auto rq = NetlinkRequester::create(f.io, std::move(*sock), std::chrono::milliseconds(2000));
    ASSERT_TRUE(rq);
    f.r.add(replay_event(4), ReplayResolver::Source{&f, name, *rq}, some_sa());
    f.io.run();
    ASSERT_EQ(f.out.size(), 1u);
    EXPECT_EQ(f.out[0].replay_basis, ReplayBasis::unknown);
    EXPECT_EQ(f.getsa, 1u);
    EXPECT_EQ(f.refreshed, 0);
  }
  EXPECT_EQ(std::system(("ip netns del " + name).c_str()), 0);
}
