// Prometheus metrics for a fleet, in the text exposition format, for
// node_exporter's textfile collector (Debian's prometheus-node-exporter reads
// /var/lib/prometheus/node-exporter/*.prom). No HTTP server: the agent writes
// the file atomically (a temporary file renamed over it). Bounded
// cardinality: series per event kind, outcome, sink and loss counter; never
// per SPI or peer.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "audit/pipeline.hpp"
#include "xfrm/result.hpp"

namespace ipsec {

struct SinkMetrics {
  std::string name;
  bool healthy{true};
  std::uint64_t written{0}, failed{0};
};

struct MetricsInput {
  const PipelineStats* stats{nullptr};
  std::vector<SinkMetrics> sinks;
  bool up{true};                // false in the file written at a clean stop
  double start_time_seconds{0};  // Unix time the agent started
  std::size_t flood_keys{0};     // keys the flood limiter tracks now
  std::uint64_t flood_held{0};   // records held for summaries not written yet
};

std::vector<SinkMetrics> sink_metrics(const std::vector<std::unique_ptr<Sink>>& sinks);
std::string format_metrics(const MetricsInput& in);
// Writes `text` to `path` atomically: PATH.tmp (mode 0644), then rename. The
// temporary name does not end in .prom, so the collector never reads it.
Result<Unit> write_file_atomic(const std::string& path, std::string_view text);

}  // namespace ipsec
