// Prints the metrics of a pipeline that saw a little of everything (a flood
// summarised, a switch off, loss, a failing output), for the Prometheus
// client's own parser (tools/check-metrics.py) to read.
#include <cstdio>

#include "audit/metrics.hpp"

int main() {
  using namespace ipsec;
  Pipeline p("h");
  p.add_sink(std::make_unique<NullSink>());
  FloodConfig fc;
  fc.rate = 0;
  fc.burst = 2;
  p.set_flood(fc);
  for (std::uint32_t i = 0; i < 10; ++i) {
    Event e;
    e.kind = EventKind::incorrect_spi;
    e.source = Source::kernel_audit;
    e.spi = 7;
    e.seq = i;
    p.submit(e);
  }
  p.set_policy(AuditPolicy{false, true});
  Event sa;
  sa.kind = EventKind::sa_added;
  p.submit(sa);
  Event lost;
  lost.kind = EventKind::events_lost;
  lost.count = 5;
  lost.detail = {{"lost", {{"counter", "kernel_audit_lost"}}}};
  p.submit(lost);
  p.flush_summaries();
  MetricsInput in;
  in.stats = &p.stats();
  in.sinks = sink_metrics(p.sinks());
  in.sinks.push_back(SinkMetrics{"jsonl:/var/log/\"odd\\name\nx", false, 3, 4});
  in.start_time_seconds = 1800000000.5;
  in.flood_keys = p.flood().keys();
  const std::string text = format_metrics(in);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}
