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

}  // namespace

const CatalogueEntry& catalogue(EventKind k) { return kTable[static_cast<std::size_t>(k)]; }

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
