#include "audit/catalogue.hpp"

#include <array>

namespace ipsec {
namespace {

using K = EventKind;
constexpr auto S = AuditClass::success;
constexpr auto F = AuditClass::failure;

constexpr std::array<CatalogueEntry, kEventKindCount> kTable{{
    {K::integrity_check_failed, "integrity-check-failed", 4960, S},
    {K::replay_check_failed, "replay-check-failed", 4961, S},
    {K::replay_sequence_too_low, "replay-sequence-too-low", 4962, S},
    {K::cleartext_packet_dropped, "cleartext-packet-dropped", 4963, S},
    {K::incorrect_spi, "incorrect-spi", 4965, S},
    {K::sequence_overflow, "sequence-overflow", std::nullopt, S},
    {K::fragment_received, "fragment-received", std::nullopt, S},
    {K::service_started, "service-started", 5478, S},
    {K::service_stopped, "service-stopped", 5479, S},
    {K::interface_list_failed, "interface-list-failed", 5480, F},
    {K::control_server_failed, "control-server-failed", 5483, F},
    {K::critical_failure, "critical-failure", 5484, F},
    {K::filter_refresh_failed, "filter-refresh-failed", 5485, F},
    {K::sa_added, "sa-added", std::nullopt, S},
    {K::sa_deleted, "sa-deleted", std::nullopt, S},
    {K::policy_added, "policy-added", std::nullopt, S},
    {K::policy_deleted, "policy-deleted", std::nullopt, S},
    {K::events_lost, "events-lost", std::nullopt, F, true},
    {K::kernel_ipsec_event, "kernel-ipsec-event", std::nullopt, S},
    {K::sa_expired, "sa-expired", std::nullopt, S},
    {K::policy_expired, "policy-expired", std::nullopt, S},
    {K::policy_default_changed, "policy-default-changed", std::nullopt, S},
    {K::acquire, "acquire", std::nullopt, S},
    {K::nat_mapping_changed, "nat-mapping-changed", std::nullopt, S},
    {K::sa_migrated, "sa-migrated", std::nullopt, S},
    {K::audit_policy_changed, "audit-policy-changed", std::nullopt, S, true},
    {K::config_reloaded, "config-reloaded", std::nullopt, S},
    {K::config_rejected, "config-rejected", std::nullopt, F},
    {K::kernel_audit_changed, "kernel-audit-changed", std::nullopt, F, true},
    {K::output_failed, "output-failed", std::nullopt, F, true},
    {K::output_recovered, "output-recovered", std::nullopt, S, true},
}};

constexpr bool table_in_enum_order() {
  for (std::size_t i = 0; i < kTable.size(); ++i)
    if (static_cast<std::size_t>(kTable[i].kind) != i) return false;
  return true;
}
static_assert(table_in_enum_order(), "kTable must list the kinds in enum order");

// journald MESSAGE_ID per kind (docs/journald.md): 128-bit, fixed forever, so
// `journalctl MESSAGE_ID=...` finds a kind of record on every host. Random
// when made; never reuse or change one. Enum order, like kTable.
constexpr std::array<std::string_view, kEventKindCount> kMessageIds{{
    "48219ede04a7441a825d33e0fdde8037",  // integrity-check-failed
    "3abdb711c058448ba8326da155f9e3e0",  // replay-check-failed
    "5e4b73d6d73f4f71826d5d0391acc463",  // replay-sequence-too-low
    "8be8ae1d3c654da88a83a9ac0650e654",  // cleartext-packet-dropped
    "1219886462664bd6afbf53d1a6bf6133",  // incorrect-spi
    "cfc2b9acac4149f890f602f8b05c571a",  // sequence-overflow
    "042c7e2d2ea7413db098e7b2c634b015",  // fragment-received
    "391ce8a7e331419dae27c0e7e2413bef",  // service-started
    "8bb7cfdd13244b318d8968f19c8dfd9c",  // service-stopped
    "b46ccaf2ac834d43b655d2c65a49cb0c",  // interface-list-failed
    "5145c926a6b848769ccec3c9ccddac26",  // control-server-failed
    "4d4b1cd6a11b47379c109645ace34c97",  // critical-failure
    "3b0fafc67484408d8cdc3836933443cd",  // filter-refresh-failed
    "438b15a527284e23bf7d2e35f22646f2",  // sa-added
    "c050fafbd6cd4fc8ab0d5b3971767011",  // sa-deleted
    "4ef9279805624be887bc9f1934fec6de",  // policy-added
    "31951218ac7d428f8d7afaae057f3080",  // policy-deleted
    "b98cb9afa5074f40867fe48e6f026c49",  // events-lost
    "b6672e67e36c4b5c82444d8f92fdfd9f",  // kernel-ipsec-event
    "5f9a32884ad4410b99b86324292dd9e9",  // sa-expired
    "58e8384360d0425b9502707cc6619c4b",  // policy-expired
    "c6b6f802cc48468d90942babf934dcc6",  // policy-default-changed
    "35d95153d8b04e9cafebeb4be894d83d",  // acquire
    "ac741a72344e405aa5e3d91b5fd9b8bc",  // nat-mapping-changed
    "b4cb7c642f4a495694ccc921a3ea9a07",  // sa-migrated
    "2621106bbc8747fbba997531d5e03ffc",  // audit-policy-changed
    "7b2b6640bc554ed69029c66dfefaf828",  // config-reloaded
    "43ae497b081c4771bcdfd00af17ac031",  // config-rejected
    "26d72055927a4c5ea2c91c222bbb0743",  // kernel-audit-changed
    "12a6b56ec0bb42428b9bb0a18efcdf53",  // output-failed
    "f58cc157dbdd4b6199ade396cc6af57b",  // output-recovered
}};

constexpr bool message_ids_complete() {
  for (std::size_t i = 0; i < kMessageIds.size(); ++i) {
    if (kMessageIds[i].size() != 32) return false;
    for (std::size_t j = 0; j < i; ++j)
      if (kMessageIds[j] == kMessageIds[i]) return false;
  }
  return true;
}
static_assert(message_ids_complete(), "every kind needs its own 32-hex-digit MESSAGE_ID");

}  // namespace

bool is_packet_event(EventKind k) {
  switch (k) {
    case EventKind::integrity_check_failed:
    case EventKind::replay_check_failed:
    case EventKind::replay_sequence_too_low:
    case EventKind::cleartext_packet_dropped:
    case EventKind::incorrect_spi:
    case EventKind::sequence_overflow:
    case EventKind::fragment_received:
      return true;
    default:
      return false;
  }
}

const CatalogueEntry& catalogue(EventKind k) { return kTable[static_cast<std::size_t>(k)]; }

std::string_view journal_message_id(EventKind k) { return kMessageIds[static_cast<std::size_t>(k)]; }

std::optional<EventKind> event_kind_from_name(std::string_view name) {
  for (const auto& e : kTable)
    if (e.name == name) return e.kind;
  return std::nullopt;
}

std::string_view source_name(Source s) {
  switch (s) {
    case Source::kernel_audit:
      return "kernel-audit";
    case Source::xfrm:
      return "xfrm";
    case Source::nflog:
      return "nflog";
    case Source::counters:
      return "counters";
    case Source::agent:
      return "agent";
  }
  return "agent";
}

std::string_view audit_class_name(AuditClass c) { return c == AuditClass::success ? "success" : "failure"; }

}  // namespace ipsec
