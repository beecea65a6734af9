// Writes records of every event kind through the real JsonWriter to stdout,
// twice each: once with every packet field set, once bare. The schema test
// validates them against docs/schema/ipsec-audit-1.schema.json.
#include <chrono>
#include <cstdio>
#include <vector>

#include "audit/catalogue.hpp"
#include "audit/flood_limiter.hpp"
#include "audit/json_writer.hpp"
#include "audit/nft_ruleset.hpp"
#include "audit/normalize.hpp"
#include "audit/pipeline.hpp"
#include "audit/policy.hpp"
#include "audit/sa_context.hpp"

int main() {
  using namespace ipsec;
  JsonWriter w("h");
  auto rec = parse_ipsec_audit_record(
      "audit(1795394846.080:25): op=SA-notfound src=fd00::1 dst=fd00::2 flowlbl=0x1 spi=1(0x1) seqno=2 x=y");
  if (!rec) return 1;
  std::string line;
  XfrmSa x;
  x.saddr = *IpAddress::parse("10.0.0.1");
  x.daddr = *IpAddress::parse("10.0.0.2");
  x.spi = 0x1001;
  x.proto = 50;
  x.reqid = 3;
  x.aead = XfrmAeadAlg{"rfc4106(gcm(aes))", 128};
  x.auth = XfrmAuthAlg{"hmac(sha256)", 128};
  x.enc = "cbc(aes)";
  x.comp = "deflate";
  x.lifetime.soft_byte_limit = ~0ULL;
  x.encap = XfrmEncap{2, 4500, 4500, *IpAddress::parse("0.0.0.0")};
  x.mark = XfrmMark{1, 0xffffffff};
  x.if_id = 7;
  x.selector.family = 2;
  x.selector.saddr = x.saddr;
  x.selector.daddr = x.daddr;
  x.selector.dport_mask = 0xffff;
  x.selector.dport = 500;
  const auto sa = std::make_shared<const SaContext>(
      SaContext{x, "vpn", SaDirection::unknown, DirectionSource::none, DirectionPending::no_policy});
  XfrmPolicy pol;
  pol.dir = 1;
  pol.index = 0x109;
  pol.selector = x.selector;
  XfrmTemplate tm;
  tm.proto = 50;
  tm.mode = 1;
  tm.reqid = 3;
  tm.spi = 0x1001;
  tm.saddr = x.saddr;
  tm.daddr = x.daddr;
  pol.templates = {tm};
  pol.mark = x.mark;
  pol.if_id = 7;
  const auto policy = std::make_shared<const XfrmPolicy>(pol);
  for (std::size_t i = 0; i < kEventKindCount; ++i) {
    Event full = event_from_ipsec_audit(*rec, std::chrono::system_clock::now());
    Event bare;
    full.kind = bare.kind = static_cast<EventKind>(i);
    if (full.kind == EventKind::events_lost)
      full.detail = bare.detail = {{"lost", {{"counter", "netlink_overrun"}, {"at_least", true}}}};
    if (full.kind == EventKind::output_failed || full.kind == EventKind::output_recovered) {
      NullSink sink;
      full.detail = bare.detail = {{"output", sink_json(sink)}};
      full.detail["output"]["lost"] = 3;
    }
    if (full.kind == EventKind::config_reloaded || full.kind == EventKind::config_rejected)
      full.detail = bare.detail = {{"config",
                                    {{"path", "/etc/ipsec-audit/ipsec-auditd.conf"},
                                     {"applied", {"outputs"}},
                                     {"restart_required", {"netns"}}}}};
    if (full.kind == EventKind::audit_policy_changed) {
      full.detail = bare.detail = {{"cause", "control-socket"},
                                   {"old", policy_json({true, true})},
                                   {"new", policy_json({false, true})},
                                   {"policy_file", "/var/lib/ipsec-audit/audit-policy.json"}};
      full.detail["changed_by"] = {{"uid", 0}, {"gid", 0}, {"pid", 4242}, {"comm", "ipsec-auditctl"}};
    }
    if (full.kind == EventKind::control_server_failed)
      full.detail = bare.detail = {
          {"control", {{"status", "failed"}, {"socket", "/run/ipsec-audit/control.sock"}, {"error", "bind: EACCES"}}}};
    if (full.kind == EventKind::kernel_audit_changed)
      full.detail = bare.detail = {{"kernel_audit", {{"enabled", 0}, {"failure", 1}, {"backlog_limit", 64}}},
                                   {"concerns", {"disabled", "backlog-limit-small"}}};
    // Records that name an SA carry a full one (marked, with an if_id, its
    // direction pending) and, as ambiguous or 4965 records do, candidates.
    if (full.kind != EventKind::incorrect_spi) full.sa = sa;
    full.sa_candidates = {SaCandidate{
        sa, full.kind == EventKind::incorrect_spi ? CandidateReason::other_mark_or_netns : CandidateReason::none}};
    if (full.kind != EventKind::incorrect_spi) full.sa_match = SaMatch::ambiguous;
    full.correlation = static_cast<Correlation>(i % 5);
    full.policy = policy;
    if (full.kind == EventKind::replay_check_failed) {
      full.replay_basis = ReplayBasis::unknown;
      full.replay_reason = "no watched SA has this destination and SPI";
    }
    if (full.kind == EventKind::replay_sequence_too_low) full.replay_basis = ReplayBasis::counter;
    if (full.audit) full.audit_candidates = {AuditCandidate{full.kernel, *full.audit}};
    for (const Event* e : {&full, &bare}) {
      line.clear();
      w.write(*e, line);
      std::fwrite(line.data(), 1, line.size(), stdout);
    }
  }
  // Flood summaries of every limited kind, one from the overflow key, and a
  // service-stopped with the per-kind accounting.
  {
    FloodConfig fc;
    fc.rate = 0;
    fc.burst = 1;
    fc.max_keys = 16;
    FloodLimiter flood(fc);
    Pipeline p("h");
    const auto t = FloodLimiter::Clock::now();
    for (std::size_t i = 0; i < kEventKindCount; ++i) {
      Event e = event_from_ipsec_audit(*rec, std::chrono::system_clock::now());
      e.kind = static_cast<EventKind>(i);
      if (!FloodLimiter::limited(e)) continue;
      if (e.kind != EventKind::incorrect_spi) e.sa = sa;
      for (int n = 0; n < 3; ++n) {
        (void)flood.admit(e, t);
        p.submit(e);
      }
    }
    Event e = event_from_ipsec_audit(*rec, std::chrono::system_clock::now());
    for (std::uint32_t spi = 0; spi < 40; ++spi) {
      e.spi = spi;
      (void)flood.admit(e, t);
    }
    std::vector<Event> sums;
    flood.flush(sums);
    for (const auto& s : sums) {
      line.clear();
      w.write(s, line);
      std::fwrite(line.data(), 1, line.size(), stdout);
    }
    Event stopped;
    stopped.kind = EventKind::service_stopped;
    stopped.detail = {{"records", records_json(p.stats())}};
    line.clear();
    w.write(stopped, line);
    std::fwrite(line.data(), 1, line.size(), stdout);
  }
  // NFLOG records: a predicted 4963 (with and without its policy, IPv4 and
  // IPv6) and a fragment summary.
  {
    NflogPacket p;
    IpPacketInfo ip;
    ip.src = x.saddr;
    ip.dst = x.daddr;
    ip.protocol = 17;
    ip.sport = 40000;
    ip.dport = 9999;
    p.ip = ip;
    const auto tag = parse_log_prefix("ipsec-audit:in:265");
    for (const auto& e : {cleartext_event(p, tag, policy, "b", "vb", std::chrono::system_clock::now()),
                          cleartext_event(NflogPacket{}, tag, nullptr, "b", "", std::chrono::system_clock::now())}) {
      line.clear();
      w.write(e, line);
      std::fwrite(line.data(), 1, line.size(), stdout);
    }
    FragmentAggregator agg;
    ip.protocol = 50;
    ip.fragment = ip.more_fragments = true;
    ip.spi = 0x1001;
    ip.seq = 9;
    agg.add("b", ip, "vb", std::chrono::system_clock::now());
    ip.family = Family::inet6;
    ip.src = *IpAddress::parse("fd00::1");
    ip.dst = *IpAddress::parse("fd00::2");
    ip.flow_label = 5;
    ip.fragment_offset = 8;
    agg.add("b", ip, "", std::chrono::system_clock::now());
    for (const auto& e : agg.flush(std::chrono::system_clock::now())) {
      line.clear();
      w.write(e, line);
      std::fwrite(line.data(), 1, line.size(), stdout);
    }
  }
  // A record the strict parser refused, kept with its raw text.
  line.clear();
  w.write(event_from_salvaged_ipsec_audit(
              salvage_ipsec_audit_record("audit(1.000:2): op=SPD-add auid=0 ses=1 subj=a (b) res=1 src=10.0.0.1"),
              std::chrono::system_clock::now()),
          line);
  std::fwrite(line.data(), 1, line.size(), stdout);
  // Counters and reconciliation: a 4963 aggregate, a loss per SA and one over
  // the watched namespaces, a change made while stopped, service-stopped's totals.
  {
    std::vector<Event> more(5);
    more[0].kind = EventKind::cleartext_packet_dropped;
    more[0].source = Source::counters;
    more[0].count = 5;
    more[0].netns = "vpn";
    more[0].detail = {{"counter", {{"name", "XfrmInTmplMismatch"}, {"value", 7}}}};
    more[1] = make_events_lost(Source::counters, 2, "integrity_failed", false, "2 lost");
    more[1].netns = "vpn";
    more[1].spi = 0x1001;
    more[1].detail["lost"].update({{"count", 2}, {"netns", "vpn"}, {"spi", 0x1001}, {"sa", "dst 10.0.0.2 proto 50"}});
    more[2] = make_events_lost(Source::counters, 1, "XfrmInNoStates", false, "1 lost");
    more[2].detail["lost"].update({{"count", 1}, {"scope", "watched-netns"}});
    more[3].kind = EventKind::policy_added;
    more[3].source = Source::xfrm;
    more[3].netns = "vpn";
    more[3].policy = policy;
    more[3].detail = {{"while_stopped", true}};
    more[4].kind = EventKind::service_stopped;
    more[4].detail = {{"counters",
                       {{"interval_ms", 10000},
                        {"netns", {{"vpn", {{"XfrmInTmplMismatch", 5}}}}},
                        {"reconciliation", {{"XfrmInNoStates", {{"counted", 1}, {"seen", 0}, {"lost", 1}}}}}}}};
    for (const auto& e : more) {
      line.clear();
      w.write(e, line);
      std::fwrite(line.data(), 1, line.size(), stdout);
    }
  }
  return 0;
}
