// Pipeline: the last stage. Applies the audit policy, serialises each event
// once and hands it to every sink. Counts what it wrote and what the policy
// suppressed. Watches sink health: when a sink starts failing it writes one
// output-failed record (to the sinks that work), and when it works again one
// output-recovered record with the number of records it lost; a file deleted
// or replaced under a sink is reopened and said so. Single-threaded (runs on
// the agent's io_context).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "audit/event.hpp"
#include "audit/json_writer.hpp"
#include "audit/policy.hpp"
#include "audit/sink.hpp"

namespace ipsec {

struct PipelineStats {
  std::uint64_t submitted{0};
  std::uint64_t suppressed{0};  // switched off by the audit policy
  std::array<std::uint64_t, kEventKindCount> by_kind{};
};

class Pipeline {
 public:
  explicit Pipeline(std::string host) : writer_(std::move(host)) {}
  void add_sink(std::unique_ptr<Sink> s) { sinks_.push_back(std::move(s)); }
  // A reloaded config's outputs; the old sinks get what they hold, then close.
  void replace_sinks(std::vector<std::unique_ptr<Sink>> sinks) {
    flush();
    sinks_ = std::move(sinks);
  }
  void set_policy(AuditPolicy p) { policy_ = p; }
  const AuditPolicy& policy() const { return policy_; }

  void submit(const Event& e);

  // Batching. With a scheduler set (the agent posts to its io_context), line
  // sinks hold each record and the first record of a batch schedules one
  // flush(): everything submitted until that runs (one handler's records,
  // from any source or namespace) goes out with one write per line sink,
  // whole lines, in submit order. Without one, every record is written at
  // once. flush() may be called any time (stop, reload); it is idempotent.
  using FlushScheduler = std::function<void(std::function<void()>)>;
  void set_flush_scheduler(FlushScheduler f) { scheduler_ = std::move(f); }
  void flush();
  // A batch this large is written at once, without waiting for the flush.
  static constexpr std::size_t kMaxHeldBytes = 256 * 1024;
  // Reopens every file sink (SIGHUP); returns the errors, if any, as text.
  std::vector<std::string> reopen();
  // Timer (1 s): lets each sink notice a deleted or replaced file.
  void check_outputs();

  const PipelineStats& stats() const { return stats_; }
  const std::vector<std::unique_ptr<Sink>>& sinks() const { return sinks_; }

 private:
  void submit_health(const Sink& s, SinkTransition t);

  JsonWriter writer_;
  AuditPolicy policy_;
  std::vector<std::unique_ptr<Sink>> sinks_;
  PipelineStats stats_;
  std::string line_;  // reused: no allocation per record once warm
  FlushScheduler scheduler_;
  bool flush_scheduled_{false};
};

// The "output" detail of output-failed / output-recovered records and of
// service-stopped: a sink's name and counters.
nlohmann::json sink_json(const Sink& s);

}  // namespace ipsec
