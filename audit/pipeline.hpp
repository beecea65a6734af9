// Pipeline: the last stage. Applies the audit policy, then the flood limiter
// (packet records past their key's rate are held for a summary record),
// serialises each record once and hands it to every sink. Counts, per event
// kind, what it received, wrote, suppressed and summarised (docs/DESIGN.md,
// "Floods"). Watches sink health: when a sink starts failing it writes one
// output-failed record (to the sinks that work), and when it works again one
// output-recovered record with the number of records it lost; a file deleted
// or replaced under a sink is reopened and said so. Single-threaded (runs on
// the agent's io_context).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "audit/event.hpp"
#include "audit/flood_limiter.hpp"
#include "audit/json_writer.hpp"
#include "audit/policy.hpp"
#include "audit/sink.hpp"

namespace ipsec {

struct PipelineStats {
  using PerKind = std::array<std::uint64_t, kEventKindCount>;
  std::uint64_t submitted{0};
  std::uint64_t suppressed{0};  // switched off by the audit policy
  PerKind by_kind{};            // records written to the sinks, summaries included
  // Per kind, in records: received = written + suppressed + summarised at
  // every moment. written: received records written as themselves;
  // summarised: received records held by the flood limiter, each carried in
  // the `count` of a summary record (written within flood.interval_seconds,
  // or at stop). Summary records are written too; they are counted in
  // `summaries`, not in `written` (their records are in `summarised`).
  PerKind received{}, written{}, suppressed_by_kind{}, summarised{}, summaries{};
  // events-lost records seen, by their lost.counter: the sum of their counts.
  // At most kMaxLostCounters names; any further one is added to "other".
  std::vector<std::pair<std::string, std::uint64_t>> lost;
  static constexpr std::size_t kMaxLostCounters = 32;
};

class Pipeline {
 public:
  explicit Pipeline(std::string host) : writer_(std::move(host)) {}
  void add_sink(std::unique_ptr<Sink> s) {
    flush();  // the held batch belongs to the sinks it was held for
    sinks_.push_back(std::move(s));
    note_sinks();
  }
  // A reloaded config's outputs; the old sinks get what they hold, then close.
  void replace_sinks(std::vector<std::unique_ptr<Sink>> sinks) {
    flush();
    sinks_ = std::move(sinks);
    note_sinks();
  }
  void set_policy(AuditPolicy p) { policy_ = p; }
  const AuditPolicy& policy() const { return policy_; }
  void set_flood(const FloodConfig& c) { flood_.configure(c); }
  const FloodLimiter& flood() const { return flood_; }
  // The limiter's time (steady clock); tests set a fake one.
  void set_clock(std::function<FloodLimiter::Clock::time_point()> now) { now_ = std::move(now); }

  void submit(const Event& e);
  // Timer (1 s): writes the flood summaries that are due, evicts idle keys.
  void write_due_summaries();
  // At stop, before service-stopped: writes every summary still held.
  void flush_summaries();

  // Batching. With a scheduler set (the agent posts to its io_context), the
  // records for the line sinks are serialised straight into one held batch
  // (no copy per sink) and the first record of a batch schedules one
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
  void write(const Event& e);
  void write_summaries();
  void count_lost(const Event& e);
  void note_sinks();
  void flush_batch();
  void schedule_flush();
  // The flood limiter's time: read once per batch when batching.
  FloodLimiter::Clock::time_point limiter_now();

  JsonWriter writer_;
  AuditPolicy policy_;
  std::vector<std::unique_ptr<Sink>> sinks_;
  PipelineStats stats_;
  FloodLimiter flood_;
  std::function<FloodLimiter::Clock::time_point()> now_{[] { return FloodLimiter::Clock::now(); }};
  std::vector<Event> due_;  // summaries to write, reused
  std::string line_;        // reused: no allocation per record once warm
  std::string batch_;       // the held records of the line sinks (batching)
  std::uint64_t batch_records_{0};
  bool line_sinks_{false};  // a sink batches_lines()
  FlushScheduler scheduler_;
  bool flush_scheduled_{false};
  std::optional<FloodLimiter::Clock::time_point> batch_now_;  // this batch's limiter time
};

// The "output" detail of output-failed / output-recovered records and of
// service-stopped: a sink's name and counters.
nlohmann::json sink_json(const Sink& s);
// The "records" detail of service-stopped: submitted and suppressed, and per
// event kind received (only kinds that had any) = written + suppressed +
// summarised, with the summary records written.
// `every_kind`: all kinds, with zeros (the control socket's status, whose
// readers look a kind up by name).
nlohmann::json records_json(const PipelineStats& st, bool every_kind = false);

}  // namespace ipsec
