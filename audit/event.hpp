// The one typed event that flows sources -> normaliser -> policy -> sinks.
// A value type: copyable, no I/O, no pointers into source buffers.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "audit/sa_context.hpp"
#include "xfrm/audit_record.hpp"
#include "xfrm/ip_address.hpp"

namespace ipsec {

// Order and names are the catalogue (catalogue.cpp); append only.
enum class EventKind : std::uint8_t {
  integrity_check_failed,
  replay_check_failed,
  replay_sequence_too_low,
  cleartext_packet_dropped,
  incorrect_spi,
  sequence_overflow,
  fragment_received,
  service_started,
  service_stopped,
  interface_list_failed,
  control_server_failed,
  critical_failure,
  filter_refresh_failed,
  sa_added,
  sa_deleted,
  policy_added,
  policy_deleted,
  events_lost,
  kernel_ipsec_event,  // a MAC_IPSEC_EVENT op this agent does not know: kept, not dropped
  sa_expired,
  policy_expired,
  policy_default_changed,
  acquire,
  nat_mapping_changed,
  sa_migrated,
  audit_policy_changed,  // the Success/Failure switch changed (ipsec-auditctl)
  config_reloaded,       // SIGHUP: a new config was applied
  config_rejected,       // SIGHUP: the new config was refused, the last good one runs on
  kernel_audit_changed,  // kernel audit state (enabled, failure mode, backlog) changed or is unsafe
  output_failed,         // a sink failed (disk full, journald gone, file replaced)
  output_recovered,      // a failed sink works again
};
inline constexpr std::size_t kEventKindCount = static_cast<std::size_t>(EventKind::output_recovered) + 1;

enum class AuditClass : std::uint8_t { success, failure };

enum class Source : std::uint8_t { kernel_audit, xfrm, nflog, counters, agent };

// What the kernel audit record said beyond the RFC 4303 fields: who made an
// SAD/SPD change, and fields this agent does not interpret.
struct KernelAuditFields {
  std::string op;
  std::optional<std::uint32_t> auid, ses;
  std::optional<std::string> subj;
  std::optional<std::int32_t> res;
  std::optional<std::uint8_t> src_prefixlen, dst_prefixlen;
  std::vector<std::pair<std::string, std::string>> other;
};

// How a kernel audit SAD/SPD record was joined with the XFRM message for the
// same change.
enum class Correlation : std::uint8_t {
  matched,    // one XFRM message, one audit record
  paired,     // several of each, the audit records identical in all they say: joined in arrival order
  ambiguous,  // several, the audit records differ (who did which is unknown): see audit_candidates
  none,       // no audit record came (e.g. kernel audit off)
  unmatched,  // no XFRM message came (e.g. an unwatched netns)
};
const char* correlation_name(Correlation c);

// One of the kernel audit records an ambiguous change may belong to.
struct AuditCandidate {
  std::optional<AuditHeader> kernel;
  KernelAuditFields audit;
};

// How a replay record was classified 4961 / 4962 (the record's replay_basis).
enum class ReplayBasis : std::uint8_t {
  counter,   // the SA's per-SA counters moved by exactly these records
  inferred,  // the sequence number against the replay window read afterwards
  unknown,   // no SA counters: see replay_reason
};
const char* replay_basis_name(ReplayBasis b);

// Why an inferred replay record was classified as it was (the record's
// `replay_inference` object; ReplayResolver). Typed, not in `detail`: one
// per inferred record on the replay path.
struct ReplayInference {
  std::uint64_t window_top{0};
  std::uint64_t window{0};
  std::uint64_t records{0};
  std::uint64_t replay_delta{0};         // the SA's `replay` counter, after - before
  std::uint64_t replay_window_delta{0};  // its `replay_window` counter, after - before
};

struct Event {
  EventKind kind{EventKind::kernel_ipsec_event};
  Source source{Source::agent};
  std::chrono::system_clock::time_point time{};  // when the agent received it
  std::optional<AuditHeader> kernel;             // kernel time and audit serial
  std::optional<IpAddress> src, dst;
  std::optional<std::uint32_t> spi, seq, flow_label;
  std::uint64_t count{1};
  std::string message;
  std::optional<KernelAuditFields> audit;
  // "unknown" until per-SA counters can tell 4961 from 4962.
  std::optional<std::string> replay_detail;
  // Replay records once the tracker has decided them; the reason when unknown.
  std::optional<ReplayBasis> replay_basis;
  std::optional<std::string> replay_reason;
  std::optional<ReplayInference> replay_inference;  // written among `detail`'s keys, in key order
  // The network namespace an XFRM-derived event happened in.
  std::optional<std::string> netns;
  // The SA the event concerns (the record's `sa` object), shared by every
  // event on that state of the SA; never holds key material.
  std::shared_ptr<const SaContext> sa;
  // Packet events: how the SA was picked among several with the event's
  // (dst, SPI), and the SAs it was picked from or, on incorrect-spi, the SAs
  // with that (dst, SPI) the kernel did not match.
  SaMatch sa_match{SaMatch::none};
  // The policy a policy record or an ACQUIRE is about (the record's `policy`
  // object).
  std::shared_ptr<const XfrmPolicy> policy;
  std::vector<SaCandidate> sa_candidates;
  // How a kernel audit SAD/SPD record was joined with the XFRM message for the
  // same change (ChangeCorrelator); the audit records it could not tell apart
  // when it was ambiguous.
  std::optional<Correlation> correlation;
  std::vector<AuditCandidate> audit_candidates;
  // Rare, agent-made detail (service status, loss counters); null when unused.
  nlohmann::json detail;
};

}  // namespace ipsec
