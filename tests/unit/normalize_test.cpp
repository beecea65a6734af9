#include "audit/normalize.hpp"

#include <gtest/gtest.h>

#include "audit/catalogue.hpp"

using namespace ipsec;

namespace {
Event from(const char* text) {
  auto r = parse_ipsec_audit_record(text);
  EXPECT_TRUE(r) << text;
  return event_from_ipsec_audit(*r, std::chrono::system_clock::time_point{});
}
}  // namespace

TEST(Normalize, OpsMapToCatalogue) {
  struct Case {
    const char* op;
    EventKind kind;
    std::optional<int> id;
  } cases[] = {
      {"SA-icv-failure", EventKind::integrity_check_failed, 4960},
      {"SA-replayed-pkt", EventKind::replay_check_failed, 4961},
      {"SA-notfound", EventKind::incorrect_spi, 4965},
      {"SA-replay-overflow", EventKind::sequence_overflow, std::nullopt},
      {"SAD-add", EventKind::sa_added, std::nullopt},
      {"SAD-delete", EventKind::sa_deleted, std::nullopt},
      {"SPD-add", EventKind::policy_added, std::nullopt},
      {"SPD-delete", EventKind::policy_deleted, std::nullopt},
      {"SA-brand-new", EventKind::kernel_ipsec_event, std::nullopt},
  };
  for (const auto& c : cases) {
    const std::string text = std::string("audit(1.000:1): op=") + c.op + " src=10.0.0.1 dst=10.0.0.2";
    const Event e = from(text.c_str());
    EXPECT_EQ(e.kind, c.kind) << c.op;
    EXPECT_EQ(catalogue(e.kind).windows_id, c.id) << c.op;
    EXPECT_EQ(e.source, Source::kernel_audit);
    EXPECT_EQ(e.audit->op, c.op);
  }
}

TEST(Normalize, ReplayDetailUnknownUntilSaCounters) {
  const Event e = from("audit(1.000:1): op=SA-replayed-pkt src=10.0.0.1 dst=10.0.0.2 spi=4097(0x1001) seqno=1");
  ASSERT_TRUE(e.replay_detail);
  EXPECT_EQ(*e.replay_detail, "unknown");
  EXPECT_EQ(*e.spi, 4097u);
  EXPECT_EQ(*e.seq, 1u);
  EXPECT_NE(e.message.find("0x1001"), std::string::npos);
}

TEST(Normalize, RefusedChangeIsNotReportedAsDone) {
  const Event e = from("audit(1.000:1): op=SAD-add auid=0 ses=1 subj=u res=0 src=10.0.0.1 dst=10.0.0.2 spi=1(0x1)");
  EXPECT_EQ(e.kind, EventKind::kernel_ipsec_event);
  EXPECT_NE(e.message.find("refused"), std::string::npos);
}

TEST(Catalogue, ClassesFollowMicrosoftLabels) {
  for (auto k : {EventKind::integrity_check_failed, EventKind::replay_check_failed, EventKind::replay_sequence_too_low,
                 EventKind::cleartext_packet_dropped, EventKind::incorrect_spi, EventKind::service_started,
                 EventKind::service_stopped})
    EXPECT_EQ(catalogue(k).audit_class, AuditClass::success) << catalogue(k).name;
  for (auto k : {EventKind::interface_list_failed, EventKind::control_server_failed, EventKind::critical_failure,
                 EventKind::filter_refresh_failed, EventKind::events_lost})
    EXPECT_EQ(catalogue(k).audit_class, AuditClass::failure) << catalogue(k).name;
  EXPECT_EQ(catalogue(EventKind::replay_sequence_too_low).windows_id, 4962);
  EXPECT_EQ(catalogue(EventKind::filter_refresh_failed).windows_id, 5485);
  EXPECT_EQ(event_kind_from_name("incorrect-spi"), EventKind::incorrect_spi);
  EXPECT_FALSE(event_kind_from_name("nope"));
}

TEST(Normalize, UnparsableRecordIsKeptAsKernelIpsecEventWithRawText) {
  const char* text =
      "audit(1795394816.900:8): op=SAD-add auid=0 ses=3 subj=/usr/sbin/charon (enforce) res=1 src=10.0.0.1 "
      "dst=10.0.0.2 spi=4097(0x1001)";
  ASSERT_FALSE(parse_ipsec_audit_record(text));
  const Event e = event_from_salvaged_ipsec_audit(salvage_ipsec_audit_record(text), std::chrono::system_clock::time_point{});
  EXPECT_EQ(e.kind, EventKind::kernel_ipsec_event);
  EXPECT_EQ(e.source, Source::kernel_audit);
  EXPECT_EQ(e.audit->op, "SAD-add");
  EXPECT_EQ(*e.audit->subj, "/usr/sbin/charon (enforce)");
  EXPECT_EQ(*e.spi, 4097u);
  EXPECT_EQ(e.kernel->serial, 8u);
  EXPECT_EQ(e.detail["unparsed"]["text"], text);
  EXPECT_FALSE(e.detail["unparsed"]["problem"].get<std::string>().empty());
  EXPECT_NE(e.message.find("not fully understood"), std::string::npos);
}

TEST(Normalize, UnparsableReplayRecordIsNotClassified) {
  const char* text = "audit(1.000:1): op=SA-replayed-pkt src=10.0.0.1 dst=10.0.0.2 junk spi=1(0x1) seqno=5";
  const Event e = event_from_salvaged_ipsec_audit(salvage_ipsec_audit_record(text), std::chrono::system_clock::time_point{});
  EXPECT_EQ(e.kind, EventKind::kernel_ipsec_event);
  EXPECT_FALSE(e.replay_detail);
  EXPECT_EQ(*e.seq, 5u);
}
