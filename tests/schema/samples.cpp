// Writes records of every event kind through the real JsonWriter to stdout,
// twice each: once with every packet field set, once bare. The schema test
// validates them against docs/schema/ipsec-audit-1.schema.json.
#include <chrono>
#include <cstdio>

#include "audit/catalogue.hpp"
#include "audit/json_writer.hpp"
#include "audit/normalize.hpp"
#include "audit/pipeline.hpp"

int main() {
  using namespace ipsec;
  JsonWriter w("h");
  auto rec = parse_ipsec_audit_record(
      "audit(1795394846.080:25): op=SA-notfound src=fd00::1 dst=fd00::2 flowlbl=0x1 spi=1(0x1) seqno=2 x=y");
  if (!rec) return 1;
  std::string line;
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
    if (full.kind == EventKind::kernel_audit_changed)
      full.detail = bare.detail = {{"kernel_audit", {{"enabled", 0}, {"failure", 1}, {"backlog_limit", 64}}},
                                   {"concerns", {"disabled", "backlog-limit-small"}}};
    for (const Event* e : {&full, &bare}) {
      line.clear();
      w.write(*e, line);
      std::fwrite(line.data(), 1, line.size(), stdout);
    }
  }
  return 0;
}
