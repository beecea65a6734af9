// Writes records of every event kind through the real JsonWriter to stdout,
// twice each: once with every packet field set, once bare. The schema test
// validates them against docs/schema/ipsec-audit-1.schema.json.
#include <chrono>
#include <cstdio>

#include "audit/catalogue.hpp"
#include "audit/json_writer.hpp"
#include "audit/normalize.hpp"

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
    for (const Event* e : {&full, &bare}) {
      line.clear();
      w.write(*e, line);
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
  return 0;
}
