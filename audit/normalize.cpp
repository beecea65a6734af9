#include "audit/normalize.hpp"

#include <cstdio>
#include <string_view>

#include "audit/catalogue.hpp"

namespace ipsec {

std::string spi_hex(std::uint32_t spi) {
  char b[16];
  std::snprintf(b, sizeof b, "0x%x", spi);
  return b;
}

namespace {

struct OpMap {
  std::string_view op;
  EventKind kind;
  const char* what;  // the message's verb phrase
};

constexpr OpMap kOps[] = {
    {"SA-icv-failure", EventKind::integrity_check_failed, "ESP integrity check (ICV) failed"},
    {"SA-replayed-pkt", EventKind::replay_check_failed, "ESP anti-replay check failed (replayed sequence number)"},
    {"SA-notfound", EventKind::incorrect_spi, "ESP packet with no matching SA (incorrect SPI)"},
    {"SA-replay-overflow", EventKind::sequence_overflow, "ESP outbound sequence number overflow"},
    {"SAD-add", EventKind::sa_added, "SA added"},
    {"SAD-delete", EventKind::sa_deleted, "SA deleted"},
    {"SPD-add", EventKind::policy_added, "policy added"},
    {"SPD-delete", EventKind::policy_deleted, "policy deleted"},
};

}  // namespace

void append_flow(std::string& m, const Event& e) {
  if (e.spi) m += " on SPI " + spi_hex(*e.spi);
  if (e.src) m += " from " + e.src->to_string();
  if (e.dst) m += " to " + e.dst->to_string();
  if (e.seq) m += ", sequence number " + std::to_string(*e.seq);
  if (e.flow_label) m += ", flow label " + spi_hex(*e.flow_label);
}

Event make_events_lost(Source source, std::uint64_t count, const char* counter, bool at_least, std::string message) {
  Event e;
  e.kind = EventKind::events_lost;
  e.source = source;
  e.time = std::chrono::system_clock::now();
  e.count = count;
  e.message = std::move(message);
  e.detail = {{"lost", {{"counter", counter}, {"at_least", at_least}}}};
  return e;
}

Event event_from_ipsec_audit(const IpsecAuditRecord& rec, std::chrono::system_clock::time_point received) {
  Event e;
  e.source = Source::kernel_audit;
  e.time = received;
  e.kernel = rec.header;
  e.src = rec.src;
  e.dst = rec.dst;
  e.spi = rec.spi;
  e.seq = rec.seqno;
  e.flow_label = rec.flowlbl;
  e.audit =
      KernelAuditFields{rec.op, rec.auid, rec.ses, rec.subj, rec.res, rec.src_prefixlen, rec.dst_prefixlen, rec.other};

  const OpMap* hit = nullptr;
  for (const auto& m : kOps)
    if (m.op == rec.op) hit = &m;
  // A change the kernel refused (res=0) did not happen: never report it as done.
  const bool refused = rec.res && *rec.res == 0;
  if (hit != nullptr && !refused) {
    e.kind = hit->kind;
    e.message = hit->what;
  } else {
    e.kind = EventKind::kernel_ipsec_event;
    e.message = "kernel IPsec audit event " + rec.op + (refused ? " (refused by the kernel, res=0)" : "");
  }
  if (e.kind == EventKind::replay_check_failed) e.replay_detail = "unknown";
  append_flow(e.message, e);
  return e;
}

Event event_from_salvaged_ipsec_audit(const SalvagedAuditRecord& rec, std::chrono::system_clock::time_point received) {
  Event e = event_from_ipsec_audit(rec.fields, received);
  e.kind = EventKind::kernel_ipsec_event;
  e.replay_detail.reset();
  if (!rec.header) e.kernel.reset();
  const std::string op = rec.fields.op.empty() ? std::string("(no op)") : rec.fields.op;
  e.message = "kernel IPsec audit event " + op + " not fully understood (" + rec.problem + ")";
  append_flow(e.message, e);
  e.detail = {{"unparsed", {{"text", rec.text}, {"problem", rec.problem}}}};
  return e;
}

}  // namespace ipsec
