#include "audit/correlator.hpp"

#include <gtest/gtest.h>

using namespace ipsec;
using namespace std::chrono_literals;

namespace {
using Clock = ChangeCorrelator::Clock;

Event change(EventKind k, Source s, const char* src, const char* dst, std::optional<std::uint32_t> spi = {}) {
  Event e;
  e.kind = k;
  e.source = s;
  e.src = IpAddress::parse(src);
  e.dst = IpAddress::parse(dst);
  e.spi = spi;
  if (s == Source::kernel_audit) {
    e.kernel = AuditHeader{100, 5, 42};
    e.audit = KernelAuditFields{};
    e.audit->op = "SAD-add";
    e.audit->auid = 1000;
  } else {
    e.netns = "a";
  }
  return e;
}
}  // namespace

TEST(Correlator, OneAndOneMergeWhicheverComesFirst) {
  for (bool audit_first : {false, true}) {
    ChangeCorrelator c(200ms);
    const auto t0 = Clock::time_point{} + 1s;
    auto x = change(EventKind::sa_added, Source::xfrm, "10.0.0.1", "10.0.0.2", 0x1001);
    auto a = change(EventKind::sa_added, Source::kernel_audit, "10.0.0.1", "10.0.0.2", 0x1001);
    c.add(audit_first ? a : x, t0);
    c.add(audit_first ? x : a, t0 + 5ms);
    EXPECT_TRUE(c.take_ready(t0 + 100ms).empty());
    auto out = c.take_ready(t0 + 250ms);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].source, Source::xfrm);
    EXPECT_EQ(*out[0].netns, "a");
    EXPECT_EQ(*out[0].audit->auid, 1000u);
    EXPECT_EQ(out[0].kernel->serial, 42u);
    EXPECT_EQ(*out[0].correlation, Correlation::matched);
    EXPECT_EQ(c.pending(), 0u);
  }
}

TEST(Correlator, DifferentSpiDoesNotMatch) {
  ChangeCorrelator c(200ms);
  const auto t0 = Clock::time_point{} + 1s;
  c.add(change(EventKind::sa_added, Source::xfrm, "10.0.0.1", "10.0.0.2", 1), t0);
  c.add(change(EventKind::sa_added, Source::kernel_audit, "10.0.0.1", "10.0.0.2", 2), t0);
  auto out = c.take_ready(t0 + 1s);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(*out[0].correlation, Correlation::none);
  EXPECT_EQ(*out[1].correlation, Correlation::unmatched);
}

// An inbound and an outbound policy with one selector: two XFRM messages and
// two audit lines that say the same. Who made them is known; each change is
// written once, paired in arrival order.
TEST(Correlator, IdenticalInAndOutPoliciesArePairedInOrder) {
  ChangeCorrelator c(200ms);
  const auto t0 = Clock::time_point{} + 1s;
  auto in = change(EventKind::policy_added, Source::xfrm, "10.0.0.1", "10.0.0.2");
  in.message = "in";
  auto out_ = change(EventKind::policy_added, Source::xfrm, "10.0.0.1", "10.0.0.2");
  out_.message = "out";
  auto a1 = change(EventKind::policy_added, Source::kernel_audit, "10.0.0.1", "10.0.0.2");
  auto a2 = a1;
  a2.kernel->serial = 43;
  c.add(in, t0);
  c.add(out_, t0 + 1ms);
  c.add(a1, t0 + 2ms);
  c.add(a2, t0 + 3ms);
  auto out = c.take_ready(t0 + 1s);
  ASSERT_EQ(out.size(), 2u) << "each change once";
  EXPECT_EQ(out[0].message, "in");
  EXPECT_EQ(out[0].kernel->serial, 42u);
  EXPECT_EQ(out[1].message, "out");
  EXPECT_EQ(out[1].kernel->serial, 43u);
  for (const auto& e : out) {
    EXPECT_EQ(*e.correlation, Correlation::paired);
    EXPECT_EQ(*e.audit->auid, 1000u);
    EXPECT_EQ(e.source, Source::xfrm);
  }
  EXPECT_EQ(c.pending(), 0u);
}

// The same SA added in two watched netns (strongSwan on both ends of a lab
// tunnel): two XFRM messages, two identical audit lines. Before, 4 records.
TEST(Correlator, SameChangeInTwoNetnsIsWrittenOncePerNetns) {
  ChangeCorrelator c(200ms);
  const auto t0 = Clock::time_point{} + 1s;
  auto xa = change(EventKind::sa_added, Source::xfrm, "10.0.0.1", "10.0.0.2", 0x1001);
  auto xb = xa;
  xb.netns = "b";
  auto a = change(EventKind::sa_added, Source::kernel_audit, "10.0.0.1", "10.0.0.2", 0x1001);
  // Audit first, XFRM later, interleaved: the order of arrival decides nothing else.
  c.add(a, t0);
  c.add(xa, t0 + 1ms);
  c.add(a, t0 + 2ms);
  c.add(xb, t0 + 3ms);
  auto out = c.take_ready(t0 + 1s);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(*out[0].netns, "a");
  EXPECT_EQ(*out[1].netns, "b");
  for (const auto& e : out) EXPECT_EQ(*e.correlation, Correlation::paired);
}

// A second change that falls outside the first one's window is simply its own
// group: one record each, whatever the timing.
TEST(Correlator, SameChangeInTwoNetnsApartInTime) {
  ChangeCorrelator c(200ms);
  const auto t0 = Clock::time_point{} + 1s;
  auto xa = change(EventKind::sa_added, Source::xfrm, "10.0.0.1", "10.0.0.2", 0x1001);
  auto xb = xa;
  xb.netns = "b";
  auto a = change(EventKind::sa_added, Source::kernel_audit, "10.0.0.1", "10.0.0.2", 0x1001);
  c.add(xa, t0);
  c.add(a, t0 + 10ms);
  auto first = c.take_ready(t0 + 250ms);
  c.add(xb, t0 + 400ms);
  c.add(a, t0 + 420ms);
  auto second = c.take_ready(t0 + 1s);
  ASSERT_EQ(first.size(), 1u);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(*first[0].correlation, Correlation::matched);
  EXPECT_EQ(*second[0].correlation, Correlation::matched);
  EXPECT_EQ(*second[0].netns, "b");
}

// Two actors, two netns, one change each: who did which is not known. Each
// change is still written once, with both audit records as candidates.
TEST(Correlator, DifferentActorsAreAmbiguousButEachChangeIsWrittenOnce) {
  ChangeCorrelator c(200ms);
  const auto t0 = Clock::time_point{} + 1s;
  auto xa = change(EventKind::sa_deleted, Source::xfrm, "10.0.0.1", "10.0.0.2", 7);
  auto xb = xa;
  xb.netns = "b";
  auto a1 = change(EventKind::sa_deleted, Source::kernel_audit, "10.0.0.1", "10.0.0.2", 7);
  auto a2 = a1;
  a2.audit->auid = 0;
  a2.kernel->serial = 50;
  c.add(xa, t0);
  c.add(xb, t0);
  c.add(a1, t0 + 1ms);
  c.add(a2, t0 + 2ms);
  auto out = c.take_ready(t0 + 1s);
  ASSERT_EQ(out.size(), 2u);
  for (const auto& e : out) {
    EXPECT_EQ(e.source, Source::xfrm);
    EXPECT_EQ(*e.correlation, Correlation::ambiguous);
    EXPECT_FALSE(e.audit);
    ASSERT_EQ(e.audit_candidates.size(), 2u);
    EXPECT_EQ(*e.audit_candidates[0].audit.auid, 1000u);
    EXPECT_EQ(e.audit_candidates[1].kernel->serial, 50u);
  }
}

// More identical audit records than watched changes: the rest happened where
// the agent does not look (an unwatched netns) and stay on their own.
TEST(Correlator, ExtraIdenticalAuditRecordsAreUnmatched) {
  ChangeCorrelator c(200ms);
  const auto t0 = Clock::time_point{} + 1s;
  auto x = change(EventKind::policy_deleted, Source::xfrm, "10.0.0.1", "10.0.0.2");
  auto a = change(EventKind::policy_deleted, Source::kernel_audit, "10.0.0.1", "10.0.0.2");
  c.add(x, t0);
  c.add(x, t0);
  for (int i = 0; i < 3; ++i) c.add(a, t0 + 1ms);
  auto out = c.take_ready(t0 + 1s);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(*out[0].correlation, Correlation::paired);
  EXPECT_EQ(*out[1].correlation, Correlation::paired);
  EXPECT_EQ(*out[2].correlation, Correlation::unmatched);
  EXPECT_EQ(out[2].source, Source::kernel_audit);
}

// Many changes pending at once (a flush of thousands): keyed, not pairwise;
// every one decided, in order.
TEST(Correlator, ManyPendingChangesAreDecidedInOrder) {
  ChangeCorrelator c(200ms);
  const auto t0 = Clock::time_point{} + 1s;
  constexpr std::uint32_t kN = 5000;
  for (std::uint32_t spi = 1; spi <= kN; ++spi)
    c.add(change(EventKind::sa_deleted, Source::xfrm, "10.0.0.1", "10.0.0.2", spi), t0);
  for (std::uint32_t spi = kN; spi >= 1; --spi)
    c.add(change(EventKind::sa_deleted, Source::kernel_audit, "10.0.0.1", "10.0.0.2", spi), t0 + 1ms);
  auto out = c.take_ready(t0 + 1s);
  ASSERT_EQ(out.size(), kN);
  for (std::uint32_t i = 0; i < kN; ++i) {
    ASSERT_EQ(*out[i].spi, i + 1);
    ASSERT_EQ(*out[i].correlation, Correlation::matched);
  }
  EXPECT_EQ(c.pending(), 0u);
  EXPECT_FALSE(c.next_deadline());
}

TEST(Correlator, FlushBurstMatchesPerSaAndKeepsOrder) {
  ChangeCorrelator c(200ms);
  const auto t0 = Clock::time_point{} + 1s;
  for (std::uint32_t spi : {1u, 2u, 3u})
    c.add(change(EventKind::sa_deleted, Source::xfrm, "10.0.0.1", "10.0.0.2", spi), t0);
  for (std::uint32_t spi : {3u, 2u, 1u})
    c.add(change(EventKind::sa_deleted, Source::kernel_audit, "10.0.0.1", "10.0.0.2", spi), t0 + 1ms);
  auto out = c.take_ready(t0 + 1s);
  ASSERT_EQ(out.size(), 3u);
  for (std::uint32_t i = 0; i < 3; ++i) {
    EXPECT_EQ(*out[i].spi, i + 1);
    EXPECT_EQ(*out[i].correlation, Correlation::matched);
  }
}

TEST(Correlator, ShutdownDecidesEverything) {
  ChangeCorrelator c(200ms);
  const auto t0 = Clock::time_point{} + 1s;
  c.add(change(EventKind::sa_added, Source::xfrm, "10.0.0.1", "10.0.0.2", 1), t0);
  EXPECT_EQ(c.next_deadline(), t0 + 200ms);
  EXPECT_EQ(c.take_ready(t0, true).size(), 1u);
  EXPECT_FALSE(c.next_deadline());
}

TEST(Correlator, HardExpiryJoinsSadDeleteWithoutTheBystanderActor) {
  ChangeCorrelator c(200ms);
  const auto t0 = Clock::time_point{} + 1s;
  auto x = change(EventKind::sa_expired, Source::xfrm, "10.0.0.1", "10.0.0.2", 0x1004);
  x.detail = {{"expire", "hard"}};
  x.message = "hard lifetime expired";
  auto soft = change(EventKind::sa_expired, Source::xfrm, "10.0.0.1", "10.0.0.2", 0x1004);
  soft.detail = {{"expire", "soft"}};
  EXPECT_FALSE(ChangeCorrelator::accepts(soft));
  ASSERT_TRUE(ChangeCorrelator::accepts(x));
  auto a = change(EventKind::sa_deleted, Source::kernel_audit, "10.0.0.1", "10.0.0.2", 0x1004);
  a.audit->op = "SAD-delete";
  c.add(x, t0);
  c.add(a, t0 + 1ms);
  auto out = c.take_ready(t0 + 1s);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].kind, EventKind::sa_expired);
  EXPECT_EQ(*out[0].correlation, Correlation::matched);
  EXPECT_EQ(out[0].audit->op, "SAD-delete");
  EXPECT_FALSE(out[0].audit->auid) << "the task that happened to run is not the actor";
  EXPECT_EQ(out[0].kernel->serial, 42u);
}

// kauditd may deliver a change's audit record after the window (310 ms seen
// on a loaded machine, issue 14's strongSwan lab): while kernel audit is on,
// the XFRM message waits for it rather than being written "none" and the
// audit record again "unmatched" (one change written twice).
namespace {
Event stamped(Event e, std::int64_t ms) {  // the time the agent got it / the kernel stamped it
  if (e.source == Source::kernel_audit)
    e.kernel = AuditHeader{ms / 1000, static_cast<std::uint32_t>(ms % 1000), 7};
  else
    e.time = std::chrono::system_clock::time_point(std::chrono::milliseconds(ms));
  return e;
}
}  // namespace

TEST(Correlator, LateAuditRecordIsJoinedWhileAuditIsExpected) {
  ChangeCorrelator c(250ms);
  c.set_audit_expected(true);
  const auto t0 = Clock::time_point{} + 1s;
  c.add(stamped(change(EventKind::policy_added, Source::xfrm, "0.0.0.0", "0.0.0.0"), 1'000'000), t0);
  EXPECT_TRUE(c.take_ready(t0 + 300ms).empty());
  EXPECT_EQ(c.next_deadline(), t0 + 5000ms);  // waiting: looked at again on audit, else at the limit
  c.add(stamped(change(EventKind::policy_added, Source::kernel_audit, "0.0.0.0", "0.0.0.0"), 999'985), t0 + 311ms);
  auto out = c.take_ready(t0 + 311ms);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(*out[0].correlation, Correlation::matched);
  EXPECT_EQ(c.pending(), 0u);
}

TEST(Correlator, LateAuditRecordWithoutExpectationIsWrittenAlone) {
  ChangeCorrelator c(250ms);  // kernel audit off or unknown: the window alone
  const auto t0 = Clock::time_point{} + 1s;
  c.add(stamped(change(EventKind::policy_added, Source::xfrm, "0.0.0.0", "0.0.0.0"), 1'000'000), t0);
  auto out = c.take_ready(t0 + 300ms);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(*out[0].correlation, Correlation::none);
}

TEST(Correlator, AuditStreamPastTheChangeDecidesItWithoutTheLimit) {
  ChangeCorrelator c(250ms);
  c.set_audit_expected(true);
  const auto t0 = Clock::time_point{} + 1s;
  c.add(stamped(change(EventKind::sa_added, Source::xfrm, "10.0.0.1", "10.0.0.2", 1), 1'000'000), t0);
  EXPECT_FALSE(c.audit_seen(AuditHeader{1000, 20, 8}));  // not waiting yet
  EXPECT_TRUE(c.take_ready(t0 + 300ms).empty());         // 20 ms later: within the slack
  EXPECT_TRUE(c.audit_seen(AuditHeader{1000, 120, 9}));  // a record stamped 120 ms after it
  auto out = c.take_ready(t0 + 301ms);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(*out[0].correlation, Correlation::none);
}

TEST(Correlator, LostAuditRecordEndsTheWaitAtTheLimit) {
  ChangeCorrelator c(250ms, 2000ms);
  c.set_audit_expected(true);
  const auto t0 = Clock::time_point{} + 1s;
  c.add(stamped(change(EventKind::sa_deleted, Source::xfrm, "10.0.0.1", "10.0.0.2", 1), 1'000'000), t0);
  c.add(stamped(change(EventKind::sa_deleted, Source::xfrm, "10.0.0.1", "10.0.0.2", 2), 1'000'010), t0 + 10ms);
  c.add(stamped(change(EventKind::sa_deleted, Source::kernel_audit, "10.0.0.1", "10.0.0.2", 2), 1'000'010),
        t0 + 20ms);
  EXPECT_TRUE(c.take_ready(t0 + 1999ms).empty());  // the head waits; the one behind it keeps its place
  auto out = c.take_ready(t0 + 2000ms);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(*out[0].spi, 1u);
  EXPECT_EQ(*out[0].correlation, Correlation::none);
  EXPECT_EQ(*out[1].spi, 2u);
  EXPECT_EQ(*out[1].correlation, Correlation::matched);
}

// A flush audits each entry inside the syscall, under one serial, and sends
// its one FLUSH message at the end: the audit records come first and wait
// for the XFRM side rather than stand alone after the window.
TEST(Correlator, FlushAuditRecordsWaitForTheFlushMessage) {
  ChangeCorrelator c(250ms);
  c.set_audit_expected(true);
  const auto t0 = Clock::time_point{} + 1s;
  for (std::uint32_t spi = 1; spi <= 3; ++spi) {
    auto a = change(EventKind::sa_deleted, Source::kernel_audit, "10.0.0.1", "10.0.0.2", spi);
    a.kernel = AuditHeader{1000, 0, 77};
    c.add(a, t0);
  }
  auto lone = change(EventKind::sa_deleted, Source::kernel_audit, "10.0.0.9", "10.0.0.2", 9);
  lone.kernel = AuditHeader{1000, 0, 78};  // one change of its own (e.g. an unwatched netns)
  c.add(lone, t0 + 1ms);
  EXPECT_TRUE(c.take_ready(t0 + 400ms).empty());
  for (std::uint32_t spi = 1; spi <= 3; ++spi)
    c.add(stamped(change(EventKind::sa_deleted, Source::xfrm, "10.0.0.1", "10.0.0.2", spi), 1'000'400),
          t0 + 400ms);
  auto out = c.take_ready(t0 + 400ms);
  ASSERT_EQ(out.size(), 4u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(*out[static_cast<std::size_t>(i)].correlation, Correlation::matched);
  EXPECT_EQ(*out[3].correlation, Correlation::unmatched);
}

// In a saturated bring-up the agent can read a change's audit record more
// than the window before the XFRM message that was queued ahead of it (the
// 1,000-tunnel lab batch wrote 31 changes twice, `none` plus `unmatched`).
// A lone audit record waits until every XFRM socket was read past its arrival.
TEST(Correlator, LoneAuditRecordWaitsForTheXfrmSocketsToBeReadPastIt) {
  ChangeCorrelator c(250ms);
  c.set_audit_expected(true);
  const auto t0 = Clock::time_point{} + 1s;
  EXPECT_FALSE(c.xfrm_read_up_to(t0 - 1ms));  // read empty before the audit record came
  c.add(stamped(change(EventKind::sa_added, Source::kernel_audit, "10.0.0.1", "10.0.0.2", 1), 1'000'000), t0);
  EXPECT_TRUE(c.take_ready(t0 + 300ms).empty());  // the XFRM side lags: its message may be queued
  EXPECT_TRUE(c.awaits_xfrm());
  EXPECT_EQ(c.next_deadline(), t0 + 5000ms);
  c.add(stamped(change(EventKind::sa_added, Source::xfrm, "10.0.0.1", "10.0.0.2", 1), 999'990), t0 + 900ms);
  auto out = c.take_ready(t0 + 900ms);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(*out[0].correlation, Correlation::matched);
  EXPECT_EQ(c.pending(), 0u);
}

// A change in an unwatched netns is audit-only: once the XFRM sockets were
// read empty after it came, it is written alone, without waiting longer.
TEST(Correlator, AuditOnlyChangeIsReleasedOnceTheXfrmSocketsAreReadPastIt) {
  ChangeCorrelator c(250ms);
  c.set_audit_expected(true);
  const auto t0 = Clock::time_point{} + 1s;
  c.xfrm_read_up_to(t0 - 1ms);
  c.add(stamped(change(EventKind::policy_deleted, Source::kernel_audit, "10.0.0.1", "10.0.0.2"), 1'000'000), t0);
  EXPECT_FALSE(c.xfrm_read_up_to(t0 + 100ms));  // read past it inside the window
  auto out = c.take_ready(t0 + 250ms);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(*out[0].correlation, Correlation::unmatched);

  c.add(stamped(change(EventKind::policy_added, Source::kernel_audit, "10.0.0.1", "10.0.0.2"), 1'001'000),
        t0 + 1s);
  EXPECT_TRUE(c.take_ready(t0 + 1300ms).empty());  // not read past it yet
  EXPECT_TRUE(c.xfrm_read_up_to(t0 + 1400ms));      // now: look again
  out = c.take_ready(t0 + 1400ms);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(*out[0].correlation, Correlation::unmatched);

  // XFRM sockets never read empty (a flood, or records lost): the limit ends it.
  c.add(stamped(change(EventKind::policy_added, Source::kernel_audit, "10.0.0.3", "10.0.0.2"), 1'002'000),
        t0 + 2s);
  EXPECT_TRUE(c.take_ready(t0 + 6999ms).empty());
  out = c.take_ready(t0 + 7000ms);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(*out[0].correlation, Correlation::unmatched);
}
