// The event catalogue: for each EventKind its record name, its Windows
// "Audit IPsec Driver" event ID (where one exists) and its audit class.
// Classes follow Microsoft's own (S)/(F) labels for that subcategory: packet
// drops and service start/stop are Success, service faults are Failure.
#pragma once

#include <optional>
#include <string_view>

#include "audit/event.hpp"

namespace ipsec {

struct CatalogueEntry {
  EventKind kind;
  std::string_view name;
  std::optional<int> windows_id;
  AuditClass audit_class;
  // Records about the audit trail itself (loss, policy changes, kernel audit
  // switched off, failing outputs): written whatever the Success/Failure
  // switches say.
  bool always_written{false};
};

const CatalogueEntry& catalogue(EventKind k);
// The packet events: 4960-4965, sequence-overflow, fragment-received.
bool is_packet_event(EventKind k);
std::optional<EventKind> event_kind_from_name(std::string_view name);
// The journald MESSAGE_ID of a kind: 32 lowercase hex digits, stable.
std::string_view journal_message_id(EventKind k);
std::string_view source_name(Source s);
std::string_view audit_class_name(AuditClass c);

}  // namespace ipsec
