#include "audit/normalize.hpp"

#include <charconv>
#include <cstdio>
#include <string_view>

#include "audit/catalogue.hpp"

namespace ipsec {

void append_hex(std::string& out, std::uint32_t v) {
  static constexpr char kHex[] = "0123456789abcdef";
  char b[10];
  char* p = b + sizeof b;
  do {
    *--p = kHex[v & 0xF];
    v >>= 4;
  } while (v != 0);
  *--p = 'x';
  *--p = '0';
  out.append(p, static_cast<std::size_t>(b + sizeof b - p));
}

std::string spi_hex(std::uint32_t spi) {
  std::string s;
  append_hex(s, spi);
  return s;
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
  if (e.spi) {
    m += " on SPI ";
    append_hex(m, *e.spi);
  }
  if (e.src) {
    m += " from ";
    e.src->append_to(m);
  }
  if (e.dst) {
    m += " to ";
    e.dst->append_to(m);
  }
  if (e.seq) {
    m += ", sequence number ";
    char b[16];
    auto [p, ec] = std::to_chars(b, b + sizeof b, *e.seq);
    (void)ec;
    m.append(b, p);
  }
  if (e.flow_label) {
    m += ", flow label ";
    append_hex(m, *e.flow_label);
  }
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
  return event_from_ipsec_audit(IpsecAuditRecord(rec), received);
}

Event event_from_ipsec_audit(IpsecAuditRecord&& rec, std::chrono::system_clock::time_point received) {
  Event e;
  e.source = Source::kernel_audit;
  e.time = received;
  e.kernel = rec.header;
  e.src = rec.src;
  e.dst = rec.dst;
  e.spi = rec.spi;
  e.seq = rec.seqno;
  e.flow_label = rec.flowlbl;
  e.audit.emplace();
  KernelAuditFields& a = *e.audit;
  a.auid = rec.auid;
  a.ses = rec.ses;
  a.subj = std::move(rec.subj);
  a.res = rec.res;
  a.src_prefixlen = rec.src_prefixlen;
  a.dst_prefixlen = rec.dst_prefixlen;
  a.other = std::move(rec.other);

  const OpMap* hit = nullptr;
  for (const auto& m : kOps)
    if (m.op == rec.op) hit = &m;
  // A change the kernel refused (res=0) did not happen: never report it as done.
  const bool refused = rec.res && *rec.res == 0;
  // Built in place, one allocation: the verb phrase and at most about 150
  // bytes of flow (two IPv6 addresses, SPI, sequence number, flow label).
  e.message.reserve(224 + rec.op.size());
  if (hit != nullptr && !refused) {
    e.kind = hit->kind;
    e.message = hit->what;
  } else {
    e.kind = EventKind::kernel_ipsec_event;
    e.message = "kernel IPsec audit event ";
    e.message += rec.op;
    if (refused) e.message += " (refused by the kernel, res=0)";
  }
  if (e.kind == EventKind::replay_check_failed) e.replay_detail = "unknown";
  append_flow(e.message, e);
  a.op = std::move(rec.op);
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
