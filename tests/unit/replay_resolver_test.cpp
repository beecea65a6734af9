// ReplayResolver without ESP: what it does when the SA's counters cannot be
// read (namespace gone, GETSA refused), how flush/abandon end, and when a
// batch is decided under a BatchTicker (at a tick, its GETSA answered in
// the tick). The counter-based classification itself is classify_replay's
// (its own tests) and the ESP lab's.
#include "agent/replay_resolver.hpp"

#include <gtest/gtest.h>
#include <linux/netlink.h>
#include <unistd.h>

#include <cstdlib>

#include "agent/batch_ticker.hpp"
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
  explicit Fixture(std::chrono::milliseconds coalesce = std::chrono::milliseconds(1)) : r(make(coalesce)) {}
  ReplayResolver make(std::chrono::milliseconds coalesce) {
    return ReplayResolver{io, coalesce, [this](const Event& e) { out.push_back(e); },
                          [this](const void*, const XfrmSa&, std::vector<Event>&) { ++refreshed; }, getsa};
  }
  boost::asio::io_context io;
  std::vector<Event> out;
  int refreshed{0};
  std::uint64_t getsa{0};
  ReplayResolver r;
};

// The daemon's ticker (50 ms) with the resolver's tick in it, as XfrmTracker
// runs it; `during` runs inside the next tick, before the resolver's part.
struct Ticked {
  explicit Ticked(ReplayResolver& r) : resolver(r) {
    r.set_ticker(&ticker);
    ticker.set_tick([this] {
      if (during) during();
      during = nullptr;
      return resolver.tick(ticker.now());
    });
  }
  // Runs the next tick (at the time it is due: no clock is waited for).
  void tick() { ASSERT_TRUE(ticker.run_if_due(ticker.next())); }
  ReplayResolver& resolver;
  BatchTicker ticker{std::chrono::milliseconds(50)};
  std::function<void()> during;
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

// Batched: no timer of its own; a batch is decided at the first tick at
// least the coalescing interval (20 ms) after its first record: records
// drained by one tick (50 ms) are decided at the next.
TEST(ReplayResolver, BatchedDecidesAtTheTickThatReadTheRecords) {
  Fixture f(std::chrono::milliseconds(20));
  Ticked t(f.r);
  std::weak_ptr<NetlinkRequester> gone;
  const ReplayResolver::Source src{&f, "vpn", gone};
  t.ticker.wake();
  t.during = [&] {  // the audit source's drain, before the resolver's part of the tick
    f.r.add(replay_event(4), src, some_sa());
    f.r.add(replay_event(5), src, some_sa());
  };
  t.tick();
  ASSERT_EQ(f.out.size(), 2u);  // decided together at the end of that tick, not a period later
  EXPECT_FALSE(f.r.holding());
  for (const auto& e : f.out) EXPECT_EQ(e.replay_basis, ReplayBasis::unknown);  // the namespace is gone
  EXPECT_EQ(f.io.poll(), 0u);  // no timer was set
  EXPECT_TRUE(t.ticker.ticking());  // idle ticks until it stops
}

// A record added outside a tick (not drained by one) waits `coalesce` for
// its companions and is decided at the first tick past it.
TEST(ReplayResolver, BatchedOutsideATickWaitsTheInterval) {
  Fixture f(std::chrono::seconds(10));  // far longer than this test's own run, however busy the machine
  Ticked t(f.r);
  f.r.add(replay_event(6), ReplayResolver::Source{&f, "vpn", {}}, some_sa());
  EXPECT_TRUE(t.ticker.ticking());  // the add woke the ticker
  const auto now = BatchTicker::Clock::now();
  EXPECT_TRUE(f.r.tick(now));  // not due yet: still held
  EXPECT_TRUE(f.out.empty());
  EXPECT_FALSE(f.r.tick(now + std::chrono::seconds(11)));  // past the interval: decided, none left
  ASSERT_EQ(f.out.size(), 1u);
  EXPECT_EQ(*f.out[0].seq, 6u);
  EXPECT_EQ(f.io.poll(), 0u);  // no timer was set
}

// Batched, at stop: what is held is decided by flush, not left to a tick.
TEST(ReplayResolver, BatchedFlushDecidesWhatIsHeld) {
  Fixture f(std::chrono::milliseconds(20));
  Ticked t(f.r);
  t.ticker.wake();
  t.during = [&] { f.r.add(replay_event(4), ReplayResolver::Source{&f, "vpn", {}}, some_sa()); };
  t.tick();
  bool done = false;
  f.r.flush([&] { done = true; });
  EXPECT_TRUE(done);
  ASSERT_EQ(f.out.size(), 1u);
  EXPECT_FALSE(f.r.holding());
}

// In a namespace of its own: the batch read by a tick gets its GETSA and the
// answer in that tick (the kernel replies inside sendmsg), with nothing left
// waiting. With an SA there (a kernel with ESP) the records are classified
// from its counters; without, the refusal decides them: basis unknown.
TEST(ReplayResolver, BatchedGetsaIsAnsweredInTheTick) {
  if (std::getenv("IPSEC_AUDIT_NETNS_TESTS") == nullptr || geteuid() != 0)
    GTEST_SKIP() << "set IPSEC_AUDIT_NETNS_TESTS=1 and run as root";
  const std::string name = "rt-unit-" + std::to_string(getpid());
  ASSERT_EQ(std::system(("ip netns add " + name).c_str()), 0);
  const bool esp =
      std::system(("ip -n " + name +
                   " xfrm state add src 10.0.0.1 dst 10.0.0.2 proto esp spi 0x1001 reqid 1 mode transport "
                   "replay-window 32 auth-trunc 'hmac(sha256)' "
                   "0x0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20 128 "
                   "enc 'cbc(aes)' 0x0102030405060708090a0b0c0d0e0f10 2>/dev/null")
                      .c_str()) == 0;
  {
    Fixture f(std::chrono::milliseconds(20));
    Ticked t(f.r);
    auto sock = open_netlink_socket_in_netns(name, NETLINK_XFRM);
    ASSERT_TRUE(sock);
    auto rq = NetlinkRequester::create(f.io, std::move(*sock), std::chrono::milliseconds(2000));
    ASSERT_TRUE(rq);
    const ReplayResolver::Source src{&f, name, *rq};
    t.ticker.wake();
    t.during = [&] { f.r.add(replay_event(4), src, some_sa()); };
    t.tick();  // read by this tick: its GETSA and answer in the same tick
    ASSERT_EQ(f.out.size(), 1u);
    EXPECT_EQ(f.getsa, 1u);
    if (esp) {
      EXPECT_EQ(f.refreshed, 1);
      EXPECT_NE(f.out[0].replay_basis, ReplayBasis::unknown);
    } else {
      EXPECT_EQ(f.refreshed, 0);
      EXPECT_EQ(f.out[0].replay_basis, ReplayBasis::unknown);
    }
    EXPECT_TRUE((*rq)->idle());
    EXPECT_EQ(f.io.poll(), 0u);  // no read, deadline or timer armed
  }
  EXPECT_EQ(std::system(("ip netns del " + name).c_str()), 0);
}
