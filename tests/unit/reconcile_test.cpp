// Reconciliation arithmetic and the state snapshot (round trip, the diff of
// changes made while the agent was stopped, what a bad file gives).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "audit/json_writer.hpp"
#include "audit/reconcile.hpp"
#include "audit/state_snapshot.hpp"

using namespace ipsec;
using nlohmann::json;

namespace {
LossKey host(const char* c) { return LossKey{c, std::nullopt, std::nullopt, ""}; }
LossKey per_sa(const char* c, std::uint32_t spi) { return LossKey{c, "b", spi, "10.0.0.2/esp"}; }
std::uint64_t total(const std::vector<Loss>& v) {
  std::uint64_t n = 0;
  for (const auto& l : v) n += l.count;
  return n;
}
}  // namespace

TEST(Reconcile, DeltaAndShortfall) {
  EXPECT_EQ(counter_delta(5, 9), 4u);
  EXPECT_EQ(counter_delta(9, 9), 0u);
  EXPECT_EQ(counter_delta(9, 3), 3u);  // reset: the new value is the rise
  EXPECT_EQ(shortfall(10, 7, 0), 3u);
  EXPECT_EQ(shortfall(10, 7, 3), 0u);
  EXPECT_EQ(shortfall(10, 12, 0), 0u);  // more records than counted: never negative
  EXPECT_EQ(shortfall(~0ULL, 0, 1), ~0ULL - 1);
}

TEST(Reconcile, RecordsGetOneIntervalToArrive) {
  Reconciler r;
  const auto k = host("XfrmInNoStates");
  r.counted(k, 5);                  // read at tick 1
  EXPECT_TRUE(r.settle().empty());  // compared at the next tick only
  r.seen(k, 5);                     // the records arrive after the read
  EXPECT_TRUE(r.settle().empty());
  r.counted(k, 3);
  r.seen(k, 1);
  EXPECT_TRUE(r.settle().empty());
  const auto l = r.settle();  // 8 counted, 6 seen
  ASSERT_EQ(l.size(), 1u);
  EXPECT_EQ(l[0].key, k);
  EXPECT_EQ(l[0].count, 2u);
  EXPECT_TRUE(r.settle().empty());  // written once
  r.seen(k, 2);                     // late records do not take a loss back
  r.counted(k, 4);
  r.settle();
  EXPECT_EQ(total(r.settle()), 2u);  // 12 counted, 8 seen, 2 lost before: 2 more
  EXPECT_EQ(r.totals()["XfrmInNoStates"], (json{{"counted", 12}, {"seen", 8}, {"lost", 4}, {"already_reported", 0}}));
}

// At stop the last interval is settled too: the counters read last, not the
// ones of the previous settle (the lab: a paused agent stopped right after).
TEST(Reconcile, FinalSettleTakesTheLastReading) {
  Reconciler r;
  const auto k = per_sa("replay", 0x1001);
  r.counted(k, 2000);
  r.seen(k, 120);
  const auto l = r.settle(true);
  ASSERT_EQ(l.size(), 1u);
  EXPECT_EQ(l[0].count, 1880u);
  EXPECT_TRUE(r.settle(true).empty());  // written once
  EXPECT_EQ(r.totals()["replay"]["lost"], 1880);
}

// An overrun writes "at least 1" at once; the shortfall that quantifies the
// same loss later writes only the rest: the events-lost counts sum to the
// loss, once.
TEST(Reconcile, OverrunThenShortfallCountsOnce) {
  Reconciler r;
  const auto k = per_sa("replay", 0x1001);
  r.reported(1);  // the audit socket's ENOBUFS: at least 1
  r.counted(k, 2000);
  r.seen(k, 120);
  EXPECT_TRUE(r.settle().empty());
  const auto l = r.settle();
  ASSERT_EQ(l.size(), 1u);
  EXPECT_EQ(l[0].shortfall, 1880u);
  EXPECT_EQ(l[0].already_reported, 1u);
  EXPECT_EQ(l[0].count, 1879u);
  EXPECT_EQ(1 + total(l), 1880u);
  EXPECT_EQ(r.totals()["replay"], (json{{"counted", 2000}, {"seen", 120}, {"lost", 1880}, {"already_reported", 1}}));
}

// The kernel's `lost` rise (records the kernel dropped, reported as it is)
// and the shortfall of the same records: nothing new to write; a report is
// used once, across pairings, and only for shortfalls found after it.
TEST(Reconcile, KernelLostMatchesShortfallsOnce) {
  Reconciler r;
  const auto a = host("XfrmInNoStates");
  const auto b = per_sa("integrity_failed", 0x1001);
  r.counted(a, 10);
  r.seen(a, 6);
  r.counted(b, 5);
  r.seen(b, 2);
  r.reported(5);
  EXPECT_TRUE(r.settle().empty());
  const auto l = r.settle();  // shortfalls 3 (b) and 4 (a); 5 reported before
  ASSERT_EQ(l.size(), 2u);
  EXPECT_EQ(l[0].shortfall + l[1].shortfall, 7u);
  EXPECT_EQ(l[0].already_reported + l[1].already_reported, 5u);
  EXPECT_EQ(total(l), 2u);
  r.counted(a, 1);
  r.settle();
  EXPECT_EQ(total(r.settle()), 1u);  // the report is used up
  r.reported(3);                     // a report after the shortfalls: nothing to match, kept for later ones
  EXPECT_TRUE(r.settle(true).empty());
}

// A report no shortfall matched within three settles was about other audit
// records (the kernel's `lost` counts every type): it must not hide a later
// IPsec loss.
TEST(Reconcile, UnmatchedReportsExpire) {
  Reconciler r;
  const auto k = host("XfrmInNoStates");
  r.reported(4);
  r.settle();
  r.settle();
  r.counted(k, 2);                   // read at the third tick
  EXPECT_TRUE(r.settle().empty());   // the third settle: the report ages out
  const auto l = r.settle();         // 2 counted, none seen
  ASSERT_EQ(l.size(), 1u);
  EXPECT_EQ(l[0].count, 2u);
  EXPECT_EQ(l[0].already_reported, 0u);
  r.reported(1);
  r.settle();
  r.counted(k, 3);
  r.settle();
  EXPECT_EQ(total(r.settle()), 2u);  // within its three settles: matched
}

TEST(Reconcile, ClosedPairingSettlesTwiceThenGoes) {
  Reconciler r;
  const auto k = per_sa("integrity_failed", 0x1001);
  r.counted(k, 3);
  r.seen(k, 1);
  r.close(k);
  EXPECT_TRUE(r.settle().empty());  // settles the baseline before the final stats
  const auto l = r.settle();
  ASSERT_EQ(l.size(), 1u);
  EXPECT_EQ(l[0].count, 2u);
  EXPECT_EQ(l[0].key.spi, 0x1001u);
  EXPECT_TRUE(r.entries().empty());
  EXPECT_EQ(r.totals()["integrity_failed"]["lost"], 2);  // still in the totals
}

TEST(Reconcile, CloseIfPicks) {
  Reconciler r;
  r.counted(per_sa("replay", 1), 1);
  r.counted(per_sa("replay", 2), 1);
  r.close_if([](const LossKey& k) { return k.spi == 1u; });
  r.settle();
  r.settle();
  ASSERT_EQ(r.entries().size(), 1u);
  EXPECT_EQ(r.entries().begin()->first.spi, 2u);
}

namespace {
XfrmSa sa(std::uint32_t spi, const char* dst = "10.0.0.2") {
  XfrmSa s;
  s.saddr = *IpAddress::parse("10.0.0.1");
  s.daddr = *IpAddress::parse(dst);
  s.spi = spi;
  s.proto = 50;
  s.reqid = 1;
  s.mode = 0;
  s.aead = XfrmAeadAlg{"rfc4106(gcm(aes))", 128};
  s.stats.integrity_failed = 4;
  s.selector.family = 2;
  return s;
}
XfrmPolicy pol(std::uint32_t index, std::uint8_t dir) {
  XfrmPolicy p;
  p.index = index;
  p.dir = dir;
  p.priority = 100;
  p.selector.family = 2;
  p.selector.saddr = IpAddress::parse("10.0.0.1");
  p.selector.daddr = IpAddress::parse("10.0.0.2");
  p.selector.prefixlen_s = p.selector.prefixlen_d = 32;
  p.selector.dport = 7777;
  p.selector.dport_mask = 0xffff;
  p.selector.proto = 17;
  XfrmTemplate t;
  t.proto = 50;
  t.reqid = 1;
  t.daddr = *IpAddress::parse("10.0.0.2");
  t.saddr = *IpAddress::parse("10.0.0.1");
  p.templates.push_back(t);
  return p;
}
}  // namespace

TEST(StateSnapshot, RoundTripKeepsIdentityOnly) {
  StateSnapshot s;
  XfrmSa marked = sa(0x1002, "fd00::2");
  marked.mark = XfrmMark{7, 0xff};
  marked.if_id = 9;
  s["b"] = NetnsTables{{sa(0x1001), marked}, {pol(8, 0)}};
  s[""] = NetnsTables{};
  const std::string text = snapshot_text(s);
  EXPECT_EQ(text.find("gcm"), std::string::npos);  // no algorithm, no key
  EXPECT_EQ(text.find("integrity"), std::string::npos);
  auto back = parse_snapshot(text);
  ASSERT_TRUE(back) << back.error().message;
  ASSERT_EQ(back->size(), 2u);
  const auto& b = back->at("b");
  ASSERT_EQ(b.sas.size(), 2u);
  EXPECT_EQ(b.sas[0].spi, 0x1001u);
  EXPECT_FALSE(b.sas[0].aead.has_value());
  EXPECT_EQ(b.sas[1].daddr, *IpAddress::parse("fd00::2"));
  EXPECT_EQ(b.sas[1].mark, (XfrmMark{7, 0xff}));
  EXPECT_EQ(b.sas[1].if_id, 9u);
  ASSERT_EQ(b.policies.size(), 1u);
  EXPECT_EQ(b.policies[0], pol(8, 0));  // a policy holds no secret: kept whole, but for lifetimes
}

TEST(StateSnapshot, BadFilesAreErrorsNotCrashes) {
  for (const char* bad : {"", "{", "[]", "{\"format\":\"other\"}", "{\"format\":\"ipsec-audit-state/1\"}",
                          R"({"format":"ipsec-audit-state/1","netns":{"b":{"sas":[{"daddr":"x"}],"policies":[]}}})",
                          R"({"format":"ipsec-audit-state/1","netns":{"b":{"sas":[],"policies":[{"index":-1}]}}})",
                          R"({"format":"ipsec-audit-state/1","netns":{"b":{"sas":{},"policies":[]}}})",
                          R"({"format":"ipsec-audit-state/1","netns":{"b":[]}})",
                          R"({"format":"ipsec-audit-state/1","netns":{"b":{"sas":[1],"policies":[]}}})"}) {
    auto r = parse_snapshot(bad);
    EXPECT_FALSE(r) << bad;
  }
  std::string cut = snapshot_text(StateSnapshot{{"b", NetnsTables{{sa(1)}, {pol(8, 0)}}}});
  for (std::size_t n = 0; n + 1 < cut.size(); n += 7) EXPECT_FALSE(parse_snapshot(cut.substr(0, n)));
}

TEST(StateSnapshot, ChangesWhileStoppedAreTheDiff) {
  NetnsTables before{{sa(0x1001), sa(0x1002)}, {pol(8, 0), pol(16, 1)}};
  NetnsTables now{{sa(0x1002), sa(0x1003)}, {pol(16, 1), pol(24, 0)}};
  const auto events = changes_while_stopped("b", before, now, std::chrono::system_clock::time_point{});
  std::map<EventKind, std::vector<std::uint32_t>> got;
  for (const auto& e : events) {
    EXPECT_EQ(e.detail.value("while_stopped", false), true);
    EXPECT_FALSE(e.detail.contains("resync"));
    EXPECT_NE(e.message.find("while the agent was stopped"), std::string::npos);
    std::string line;
    JsonWriter("h").write(e, line);
    const json j = json::parse(line);
    EXPECT_EQ(j["while_stopped"], true);
    EXPECT_EQ(j["netns"], "b");
    if (e.sa) got[e.kind].push_back(j["sa"]["spi"].get<std::uint32_t>());
    if (e.policy) got[e.kind].push_back(j["policy"]["index"].get<std::uint32_t>());
  }
  EXPECT_EQ(got[EventKind::sa_deleted], std::vector<std::uint32_t>{0x1001});
  EXPECT_EQ(got[EventKind::sa_added], std::vector<std::uint32_t>{0x1003});
  EXPECT_EQ(got[EventKind::policy_deleted], std::vector<std::uint32_t>{8});
  EXPECT_EQ(got[EventKind::policy_added], std::vector<std::uint32_t>{24});
  EXPECT_EQ(events.size(), 4u);
  EXPECT_TRUE(changes_while_stopped("b", now, now, {}).empty());
}
