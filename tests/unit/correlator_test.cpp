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
    EXPECT_EQ(*out[0].correlation, "matched");
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
  EXPECT_EQ(*out[0].correlation, "none");
  EXPECT_EQ(*out[1].correlation, "unmatched");
}

TEST(Correlator, IdenticalInAndOutPoliciesAreAmbiguous) {
  ChangeCorrelator c(200ms);
  const auto t0 = Clock::time_point{} + 1s;
  c.add(change(EventKind::policy_added, Source::xfrm, "10.0.0.1", "10.0.0.2"), t0);
  c.add(change(EventKind::policy_added, Source::xfrm, "10.0.0.1", "10.0.0.2"), t0 + 1ms);
  c.add(change(EventKind::policy_added, Source::kernel_audit, "10.0.0.1", "10.0.0.2"), t0 + 2ms);
  c.add(change(EventKind::policy_added, Source::kernel_audit, "10.0.0.1", "10.0.0.2"), t0 + 3ms);
  auto out = c.take_ready(t0 + 1s);
  ASSERT_EQ(out.size(), 4u);
  for (const auto& e : out) EXPECT_EQ(*e.correlation, "ambiguous");
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
    EXPECT_EQ(*out[i].correlation, "matched");
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
  EXPECT_EQ(*out[0].correlation, "matched");
  EXPECT_EQ(out[0].audit->op, "SAD-delete");
  EXPECT_FALSE(out[0].audit->auid) << "the task that happened to run is not the actor";
  EXPECT_EQ(out[0].kernel->serial, 42u);
}
