// Daemon: owns the io_context and every source, timer, signal and sink of
// ipsec-auditd. Single-threaded: all handlers run on the io_context thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "agent/control_server.hpp"
#include "agent/batch_ticker.hpp"
#include "agent/kernel_audit_source.hpp"
#include "agent/netfilter_source.hpp"
#include "agent/options.hpp"
#include "agent/policy_store.hpp"
#include "agent/xfrm_tracker.hpp"
#include "audit/pipeline.hpp"

namespace ipsec {

class Daemon {
 public:
  // Reads the config file again and applies the command line over it (SIGHUP).
  using Loader = std::function<Result<Options>()>;
  explicit Daemon(Options opts, Loader reload = {});
  // Runs until SIGTERM/SIGINT (exit 0) or a critical failure (exit 1).
  int run();

 private:
  void on_signal(int signo);
  void arm_signals();
  void reload();
  void arm_output_check();
  void arm_summaries();
  void arm_metrics();
  void write_metrics(bool up);
  void arm_watchdog(std::chrono::microseconds period);
  Result<std::vector<std::unique_ptr<Sink>>> open_sinks(const Options& o) const;
  void critical(const std::string& why);
  void agent_event(EventKind kind, std::string message, nlohmann::json detail = nullptr);
  nlohmann::json kernel_audit_detail() const;
  void stop_sources(std::function<void()> done);
  void write_stopped(int signo);
  // The audit policy file, at start (records wait for service-started) and
  // on SIGHUP: applied if good, the running policy kept if not.
  void load_policy(bool at_start);
  void policy_event(const AuditPolicy& before, const AuditPolicy& now, std::string cause, std::string message,
                    nlohmann::json changed_by = nullptr, std::string error = {});
  void start_control();
  ControlReply on_control(const ControlRequest& r, const ControlPeer& peer);
  nlohmann::json status_json() const;
  nlohmann::json check_json() const;
  // The state snapshot (state_dir/state-snapshot.json): written at a clean
  // stop, compared with the tables at start, then removed.
  std::string snapshot_path() const;
  void write_snapshot();
  void report_changes_while_stopped();
  // io_context::run, with the BatchTicker's ticks in between.
  void run_loop();

  Options opts_;
  PolicyStore policy_store_;
  Loader loader_;
  // One thread: a post from a handler goes to the thread's own queue, with no
  // epoll_ctl on the reactor's interrupter (one per flush, issue 17).
  boost::asio::io_context io_{1};
  boost::asio::signal_set signals_;
  boost::asio::steady_timer output_timer_;
  boost::asio::steady_timer watchdog_timer_;
  boost::asio::steady_timer summary_timer_;
  boost::asio::steady_timer metrics_timer_;
  double start_time_{0};        // Unix time, for ipsec_audit_start_time_seconds
  bool metrics_failing_{false};  // a failed metrics write is logged once per episode
  std::string capabilities_;  // what was kept, for service-started
  std::unique_ptr<Pipeline> pipeline_;
  std::unique_ptr<BatchTicker> ticker_;  // batch.delay_ms: sources, correlator and outputs per tick
  std::unique_ptr<XfrmTracker> xfrm_;
  std::unique_ptr<KernelAuditSource> audit_;
  std::unique_ptr<ControlServer> control_;
  nlohmann::json control_state_;  // {"status": "listening"|"failed", ...}
  std::chrono::system_clock::time_point started_at_;
  bool started_{false};          // service-started is written
  std::vector<Event> deferred_;  // agent records made before it
  std::unique_ptr<NetfilterSource> netfilter_;
  int exit_code_{0};
};

}  // namespace ipsec
