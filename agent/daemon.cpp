#include "agent/daemon.hpp"

#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cerrno>
#include <boost/asio/post.hpp>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <optional>

#include "agent/log.hpp"
#include "agent/netns_watch.hpp"
#include "agent/privileges.hpp"
#include "agent/state_file.hpp"
#include "audit/catalogue.hpp"
#include "audit/json_writer.hpp"
#include "audit/metrics.hpp"

namespace ipsec {

namespace {
std::string hostname() {
  char b[256] = {};
  if (::gethostname(b, sizeof b - 1) != 0) return "localhost";
  return b;
}
}  // namespace

// How often file outputs are checked for having been deleted or replaced.
constexpr std::chrono::seconds kOutputCheck{1};
// How often the flood limiter is asked for the summaries that are due (it
// answers at once when none is).
constexpr std::chrono::seconds kSummaryCheck{1};

Daemon::Daemon(Options opts, Loader reload)
    : opts_(std::move(opts)),
      policy_store_(opts_.state_dir),
      loader_(std::move(reload)),
      signals_(io_, SIGINT, SIGTERM, SIGHUP),
      output_timer_(io_),
      watchdog_timer_(io_),
      summary_timer_(io_),
      metrics_timer_(io_) {}

Result<std::vector<std::unique_ptr<Sink>>> Daemon::open_sinks(const Options& o) const {
  std::vector<std::unique_ptr<Sink>> v;
  for (const auto& spec : effective_outputs(o)) {
    auto s = open_sink(spec);
    if (!s) return s.error();
    v.push_back(std::move(*s));
  }
  return v;
}

void Daemon::arm_signals() {
  signals_.async_wait([this](const boost::system::error_code& ec, int s) {
    if (!ec) on_signal(s);
  });
}

void Daemon::arm_output_check() {
  output_timer_.expires_after(kOutputCheck);
  output_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    pipeline_->check_outputs();
    arm_output_check();
  });
}

void Daemon::arm_summaries() {
  summary_timer_.expires_after(kSummaryCheck);
  summary_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    pipeline_->write_due_summaries();
    arm_summaries();
  });
}

void Daemon::arm_metrics() {
  metrics_timer_.cancel();
  if (opts_.metrics_path.empty()) return;
  metrics_timer_.expires_after(std::chrono::seconds(opts_.metrics_interval_s));
  metrics_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    write_metrics(true);
    arm_metrics();
  });
}

void Daemon::write_metrics(bool up) {
  if (opts_.metrics_path.empty() || !pipeline_) return;
  MetricsInput in;
  in.stats = &pipeline_->stats();
  in.sinks = sink_metrics(pipeline_->sinks());
  in.up = up;
  in.start_time_seconds = start_time_;
  in.flood_keys = pipeline_->flood().keys();
  in.flood_held = pipeline_->flood().held();
  if (auto r = write_file_atomic(opts_.metrics_path, format_metrics(in)); !r) {
    if (!metrics_failing_) log(LogLevel::warning, "metrics: " + r.error().message);
    metrics_failing_ = true;
  } else {
    if (metrics_failing_) log(LogLevel::info, "metrics: " + opts_.metrics_path + " written again");
    metrics_failing_ = false;
  }
}

void Daemon::arm_watchdog(std::chrono::microseconds period) {
  watchdog_timer_.expires_after(period);
  watchdog_timer_.async_wait([this, period](const boost::system::error_code& ec) {
    if (ec) return;
    // From the event loop itself: a loop stuck in a handler stops the pings.
    sd_notify(0, "WATCHDOG=1");
    arm_watchdog(period);
  });
}

void Daemon::reload() {
  const std::string path = opts_.config_path.value_or("");
  auto reject = [&](const std::string& why) {
    log(LogLevel::warning, "config " + path + " rejected, the last good config runs on: " + why);
    agent_event(EventKind::config_rejected, "config " + path + " rejected, the last good config runs on: " + why,
                {{"config", {{"path", path}, {"reason", why}}}});
  };
  auto next = loader_();
  if (!next) {
    for (const auto& err : pipeline_->reopen()) log(LogLevel::warning, "reopen failed: " + err);
    reject(next.error().message);
    return;
  }
  std::vector<std::string> applied, restart;
  if (effective_outputs(*next) != effective_outputs(opts_)) {
    auto sinks = open_sinks(*next);
    if (!sinks) {
      for (const auto& err : pipeline_->reopen()) log(LogLevel::warning, "reopen failed: " + err);
      reject("outputs: " + sinks.error().message);
      return;
    }
    pipeline_->replace_sinks(std::move(*sinks));
    opts_.outputs = next->outputs;
    applied.emplace_back("outputs");
  } else {
    for (const auto& err : pipeline_->reopen()) log(LogLevel::warning, "reopen failed: " + err);
  }
  if (next->audit_status_interval_s != opts_.audit_status_interval_s) {
    if (audit_ && audit_->set_status_interval(std::chrono::seconds(next->audit_status_interval_s))) {
      opts_.audit_status_interval_s = next->audit_status_interval_s;
      applied.emplace_back("kernel_audit.status_interval_seconds");
    } else {
      restart.emplace_back("kernel_audit.status_interval_seconds");
    }
  }
  if (next->flood != opts_.flood) {
    pipeline_->set_flood(next->flood);
    opts_.flood = next->flood;
    applied.emplace_back("flood");
  }
  if (next->metrics_path != opts_.metrics_path || next->metrics_interval_s != opts_.metrics_interval_s) {
    opts_.metrics_path = next->metrics_path;
    opts_.metrics_interval_s = next->metrics_interval_s;
    metrics_failing_ = false;
    write_metrics(true);  // at once: a new path should not wait an interval
    arm_metrics();
    applied.emplace_back("metrics");
  }
  // Fixed at start: the sockets, namespaces and capabilities follow from them.
  if (next->enable_kernel_audit != opts_.enable_kernel_audit) restart.emplace_back("kernel_audit.enable");
  if (next->netns != opts_.netns) restart.emplace_back("netns");
  if (next->xfrm_aevents != opts_.xfrm_aevents) restart.emplace_back("xfrm_aevents");
  if (next->nflog_enable != opts_.nflog_enable || next->nflog_group != opts_.nflog_group ||
      next->fragment_interval_s != opts_.fragment_interval_s)
    restart.emplace_back("nflog");
  if (next->receive_buffer_bytes != opts_.receive_buffer_bytes) restart.emplace_back("receive_buffer_bytes");
  if (next->batch_delay_ms != opts_.batch_delay_ms) restart.emplace_back("batch.delay_ms");
  if (next->state_dir != opts_.state_dir) restart.emplace_back("state_dir");
  if (next->counters_interval_s != opts_.counters_interval_s) restart.emplace_back("counters.interval_seconds");
  if (next->control_socket != opts_.control_socket) restart.emplace_back("control_socket");
  if (next->control_group != opts_.control_group) restart.emplace_back("control_group");
  std::string msg = "config " + path + " reloaded";
  if (!restart.empty()) {
    msg += "; these settings changed but take effect only after a restart:";
    for (const auto& r : restart) msg += " " + r;
  }
  log(LogLevel::info, msg);
  agent_event(EventKind::config_reloaded, msg,
              {{"config", {{"path", path}, {"applied", applied}, {"restart_required", restart}}}});
}

void Daemon::agent_event(EventKind kind, std::string message, nlohmann::json detail) {
  Event e;
  e.kind = kind;
  e.source = Source::agent;
  e.time = std::chrono::system_clock::now();
  e.message = std::move(message);
  e.detail = std::move(detail);
  pipeline_->submit(e);
}

void Daemon::policy_event(const AuditPolicy& before, const AuditPolicy& now, std::string cause, std::string message,
                          nlohmann::json changed_by, std::string error) {
  Event e;
  e.kind = EventKind::audit_policy_changed;
  e.source = Source::agent;
  e.time = std::chrono::system_clock::now();
  e.message = std::move(message);
  e.detail = {{"cause", std::move(cause)},
              {"old", policy_json(before)},
              {"new", policy_json(now)},
              {"policy_file", policy_store_.path()}};
  if (!changed_by.is_null()) e.detail["changed_by"] = std::move(changed_by);
  if (!error.empty()) e.detail["error"] = std::move(error);
  // Before service-started: held until it is written, so that it comes first.
  if (started_)
    pipeline_->submit(e);
  else
    deferred_.push_back(std::move(e));
}

void Daemon::load_policy(bool at_start) {
  const AuditPolicy cur = pipeline_->policy();
  const auto l = policy_store_.load();
  switch (l.state) {
    case PolicyLoad::State::loaded:
      if (at_start)
        log(LogLevel::info, "audit policy: " + std::string(policy_label(l.policy)) + " (" + policy_store_.path() + ")");
      if (l.policy != cur) {
        pipeline_->set_policy(l.policy);
        if (!at_start) {
          const std::string msg = "audit policy changed from " + std::string(policy_label(cur)) + " to " +
                                  std::string(policy_label(l.policy)) + ": " + policy_store_.path() +
                                  " was changed on disk (read on SIGHUP)";
          log(LogLevel::info, msg);
          policy_event(cur, l.policy, "policy-file-changed", msg);
        }
      }
      return;
    case PolicyLoad::State::missing: {
      const AuditPolicy def{};
      if (auto w = policy_store_.save(def); !w)
        log(LogLevel::warning, "no audit policy file, and the default cannot be written: " + w.error().message);
      else
        log(LogLevel::info, "no audit policy file: the default, Success and Failure, written to " + policy_store_.path());
      if (def != cur) {
        pipeline_->set_policy(def);
        const std::string msg = "audit policy changed from " + std::string(policy_label(cur)) +
                                " to Success and Failure: " + policy_store_.path() + " was removed (the default)";
        log(LogLevel::info, msg);
        policy_event(cur, def, "policy-file-missing", msg);
      }
      return;
    }
    case PolicyLoad::State::rejected: {
      const std::string msg = "audit policy file rejected, the " + std::string(at_start ? "default" : "running") +
                              " policy (" + std::string(policy_label(cur)) + ") stays: " + l.error;
      log(LogLevel::warning, msg);
      policy_event(cur, cur, "policy-file-rejected", msg, nullptr, l.error);
      return;
    }
  }
}

void Daemon::start_control() {
  ControlServer::Config c;
  c.path = opts_.control_socket;
  c.group = opts_.control_group;
  control_ = std::make_unique<ControlServer>(
      io_, c, [this](const ControlRequest& r, const ControlPeer& p) { return on_control(r, p); });
  if (auto r = control_->start(); !r) {
    control_.reset();
    control_state_ = {{"status", "failed"}, {"socket", opts_.control_socket}, {"error", r.error().message}};
    log(LogLevel::error, "control socket: " + r.error().message + "; auditing continues without it");
    return;
  }
  control_state_ = {{"status", "listening"},
                    {"socket", opts_.control_socket},
                    {"group", opts_.control_group.empty() ? nlohmann::json(nullptr) : nlohmann::json(opts_.control_group)}};
}

ControlReply Daemon::on_control(const ControlRequest& r, const ControlPeer& peer) {
  const AuditPolicy cur = pipeline_->policy();
  switch (r.cmd) {
    case ControlCommand::get: {
      ControlReply rep;
      rep.result = {{"policy", policy_json(cur)}};
      return rep;
    }
    case ControlCommand::set: {
      if (!peer.may_change)
        return ControlReply::error(ControlErrorCode::refused,
                                   "changing the audit policy needs uid 0" +
                                       (opts_.control_group.empty() ? std::string()
                                                                    : " or membership of group " + opts_.control_group) +
                                       " (you are uid " + std::to_string(peer.uid) + ")");
      AuditPolicy next = cur;
      if (r.success) next.success = *r.success;
      if (r.failure) next.failure = *r.failure;
      ControlReply rep;
      if (next == cur) {
        rep.result = {{"policy", policy_json(cur)}, {"changed", false}};
        return rep;
      }
      if (auto w = policy_store_.save(next); !w) {
        log(LogLevel::warning, "audit policy not changed, it cannot be saved: " + w.error().message);
        return ControlReply::error(ControlErrorCode::internal,
                                   "the audit policy was not changed: it cannot be saved: " + w.error().message);
      }
      pipeline_->set_policy(next);
      const std::string msg = "audit policy changed from " + std::string(policy_label(cur)) + " to " +
                              std::string(policy_label(next)) + " by uid " + std::to_string(peer.uid) + " (" +
                              (peer.comm.empty() ? std::string("?") : printable(peer.comm)) + ", pid " +
                              std::to_string(peer.pid) + ")";
      log(LogLevel::info, msg);
      policy_event(cur, next, "control-socket", msg, peer.json());
      rep.result = {{"policy", policy_json(next)}, {"previous", policy_json(cur)}, {"changed", true}};
      return rep;
    }
    case ControlCommand::status: {
      ControlReply rep;
      rep.result = status_json();
      return rep;
    }
    case ControlCommand::check: {
      ControlReply rep;
      rep.result = check_json();
      return rep;
    }
  }
  return ControlReply::error(ControlErrorCode::internal, "unknown command");
}

nlohmann::json Daemon::status_json() const {
  std::string started;
  append_rfc3339(started, started_at_);
  nlohmann::json netns = nlohmann::json::array();
  std::size_t sas = 0, policies = 0;
  nlohmann::json missing = nlohmann::json::array();
  if (xfrm_) {
    for (const auto& w : xfrm_->watched_netns())
      netns.push_back({{"spec", w.spec}, {"label", w.label}, {"ready", w.ready}});
    sas = xfrm_->sa_count();
    policies = xfrm_->policy_count();
    missing = xfrm_->missing();
  }
  nlohmann::json ka_src = {{"subscribed", audit_ && audit_->subscribed()}};
  nlohmann::json lost = {{"kernel_audit_lost", 0}, {"kernel_audit_overruns", 0}, {"xfrm_overruns", 0}};
  if (audit_) {
    const auto& st = audit_->stats();
    ka_src["ipsec_records"] = st.ipsec_records;
    ka_src["parse_errors"] = st.parse_errors;
    lost["kernel_audit_lost"] = st.kernel_lost;
    lost["kernel_audit_overruns"] = st.overruns;
  }
  if (xfrm_) lost["xfrm_overruns"] = xfrm_->stats().overruns;
  std::uint64_t output_lost = 0;
  nlohmann::json sinks = nlohmann::json::array();
  for (const auto& sk : pipeline_->sinks()) {
    sinks.push_back(sink_json(*sk));
    output_lost += sk->stats().failed;
  }
  lost["output_records_lost"] = output_lost;
  // Every events-lost record written, summed by the counter it names
  // (kernel audit, socket overruns, the kernel counters' reconciliation).
  nlohmann::json by_counter = nlohmann::json::object();
  for (const auto& [name, n] : pipeline_->stats().lost) by_counter[name] = n;
  lost["records_by_counter"] = std::move(by_counter);
  const auto& ps = pipeline_->stats();
  nlohmann::json control = control_state_;
  if (control_) control["clients"] = control_->clients();
  return {{"started_at", started},
          {"version", IPSEC_AUDIT_VERSION},
          {"pid", ::getpid()},
          {"policy", policy_json(pipeline_->policy())},
          {"sources",
           {{"kernel_audit", std::move(ka_src)},
            {"xfrm",
             {{"netns_watched", std::move(netns)},
              {"netns_missing", std::move(missing)},
              {"sas", sas},
              {"policies", policies},
              {"aevents", opts_.xfrm_aevents}}}}},
          {"kernel_audit", kernel_audit_detail()},
          {"records", records_json(ps, true)},
          {"events_lost", std::move(lost)},
          {"sinks", std::move(sinks)},
          {"control", std::move(control)}};
}

nlohmann::json Daemon::check_json() const {
  nlohmann::json conds = nlohmann::json::array();
  bool all = true;
  auto cond = [&](const char* name, bool pass, std::string detail) {
    all = all && pass;
    conds.push_back({{"name", name}, {"pass", pass}, {"detail", std::move(detail)}});
  };
  const AuditPolicy p = pipeline_->policy();
  cond("policy", p.success && p.failure,
       "IPsec Driver: " + std::string(policy_label(p)) +
           (p.success && p.failure ? "" : " (CIS 17.9.1 wants Success and Failure: ipsec-auditctl enable)"));
  cond("agent", true, "ipsec-auditd " IPSEC_AUDIT_VERSION " answers (pid " + std::to_string(::getpid()) + ")");
  const auto& st = audit_ ? audit_->status() : std::optional<AuditStatus>{};
  if (!st)
    cond("kernel-audit", false,
         "kernel audit status unknown (status polling is off or not permitted): cannot tell it is enabled");
  else
    cond("kernel-audit", st->enabled != 0,
         "kernel audit enabled=" + std::to_string(st->enabled) +
             (st->enabled != 0 ? "" : " (no IPsec packet records: auditctl -e 1, or kernel_audit.enable in the config)"));
  // Every configured source: the kernel audit group joined, every
  // configured network namespace watched with its first dump in.
  std::vector<std::string> bad;
  if (!audit_ || !audit_->subscribed()) bad.emplace_back("kernel audit multicast group not joined");
  std::vector<XfrmTracker::WatchedNetns> watched;
  if (xfrm_) watched = xfrm_->watched_netns();
  std::string ok_list;
  for (const auto& spec : opts_.netns) {
    const std::string want = spec == "all" ? "" : spec;
    bool found = false;
    for (const auto& w : watched)
      if (w.spec == want && w.ready) found = true;
    const std::string shown = want.empty() ? "(own)" : want;
    if (found)
      ok_list += (ok_list.empty() ? "" : ", ") + shown;
    else
      bad.push_back("netns " + shown + " not watched");
  }
  if (xfrm_)
    for (const auto& m : xfrm_->missing()) bad.push_back("netns " + m + " not there");
  std::string detail;
  if (bad.empty()) {
    detail = "kernel audit joined; netns watched: " + ok_list;
  } else {
    for (const auto& b : bad) detail += (detail.empty() ? "" : "; ") + b;
  }
  cond("sources", bad.empty(), detail);
  return {{"compliant", all}, {"benchmark", "CIS 17.9.1: Audit IPsec Driver is Success and Failure"},
          {"conditions", std::move(conds)}};
}

nlohmann::json Daemon::kernel_audit_detail() const {
  nlohmann::json j = {{"status", "unknown"}};
  if (audit_ && audit_->status()) {
    const auto& s = *audit_->status();
    j = audit_status_json(s);
    j["receive_buffer"] = audit_->receive_buffer();
  }
  return j;
}

void Daemon::stop_sources(std::function<void()> done) {
  if (!xfrm_) {
    if (audit_) audit_->stop();
    if (netfilter_) netfilter_->stop();
    done();
    return;
  }
  // The counters and SA stats first: every packet they count had its audit
  // record queued by then, and the audit source's stop waits for kauditd's
  // queue to be empty and reads its socket, so the last reconciliation
  // compares like with like (no interval left out, no loss invented).
  xfrm_->read_final_counters([this, done = std::move(done)]() mutable {
    // The audit source first: it reads what is queued and hands it over, and
    // the tracker then decides and writes that too.
    if (audit_) audit_->stop();
    // Before the tracker: its tables name the policies of the last packets.
    if (netfilter_) netfilter_->stop();
    xfrm_->stop([this, done = std::move(done)] {
      xfrm_->reconcile_final();
      done();
    });
  });
}

std::string Daemon::snapshot_path() const { return opts_.state_dir + "/state-snapshot.json"; }

void Daemon::write_snapshot() {
  // Only at a clean stop: a snapshot left by a crash would make the next
  // start write changes the agent did record as made while it was stopped.
  if (auto r = write_file_atomic(snapshot_path(), snapshot_text(xfrm_->snapshot())); !r)
    log(LogLevel::warning, "state snapshot not written (the next start cannot tell what changed while the agent "
                           "was stopped): " + r.error().message);
}

void Daemon::report_changes_while_stopped() {
  const std::string path = snapshot_path();
  auto text = read_small_file(path);
  if (!text) {
    log(text.error().sys_errno == ENOENT ? LogLevel::info : LogLevel::warning,
        "no state snapshot of the last clean stop (" + text.error().message +
            "): changes made while the agent was stopped are not known");
    return;
  }
  // Used once: after a crash the next start finds none rather than an old one.
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    log(LogLevel::warning, "cannot remove " + path + ": " + std::strerror(errno));
  auto snap = parse_snapshot(*text);
  if (!snap) {
    log(LogLevel::warning, path + " is not a usable state snapshot, changes made while the agent was stopped are not "
                               "known: " + snap.error().message);
    return;
  }
  xfrm_->report_changes_while_stopped(*snap);
}

void Daemon::critical(const std::string& why) {
  log(LogLevel::error, why);
  if (control_) control_->stop();
  if (audit_) audit_->stop();
  if (netfilter_) netfilter_->stop();
  if (xfrm_) xfrm_->abandon();
  pipeline_->flush_summaries();
  agent_event(EventKind::critical_failure, "critical failure, the agent stops: " + why);
  write_metrics(false);
  exit_code_ = 1;
  sd_notify(0, "STOPPING=1");
  io_.stop();
}

void Daemon::on_signal(int signo) {
  if (signo == SIGHUP) {
    if (loader_ && opts_.config_path) {
      sd_notify(0, "RELOADING=1");
      reload();
      load_policy(false);
      sd_notify(0, "READY=1");
    } else {
      for (const auto& err : pipeline_->reopen()) log(LogLevel::warning, "reopen failed: " + err);
      load_policy(false);
    }
    arm_signals();
    return;
  }
  sd_notify(0, "STOPPING=1");
  output_timer_.cancel();
  watchdog_timer_.cancel();
  if (control_) control_->stop();
  summary_timer_.cancel();
  metrics_timer_.cancel();
  // 5479 comes last: after what the sockets had queued is written, and after
  // the kernel has answered what that needed (or not, within its deadline).
  stop_sources([this, signo] { write_stopped(signo); });
}

void Daemon::write_stopped(int signo) {
  pipeline_->flush();  // the outputs' counters below include every held record
  nlohmann::json d = {{"signal", signo == SIGTERM ? "SIGTERM" : "SIGINT"}};
  if (audit_) {
    const auto& st = audit_->stats();
    d["kernel_audit_stats"] = {{"ipsec_records", st.ipsec_records},
                               {"parse_errors", st.parse_errors},
                               {"overruns", st.overruns},
                               {"kernel_lost", st.kernel_lost}};
  }
  if (xfrm_) {
    const auto& xs = xfrm_->stats();
    d["xfrm_stats"] = {{"messages", xs.messages},
                       {"parse_errors", xs.parse_errors},
                       {"overruns", xs.overruns},
                       {"resyncs", xs.resyncs},
                       {"getsa_requests", xs.getsa_requests}};
  }
  if (xfrm_) {
    d["counters"] = xfrm_->counter_detail();
    write_snapshot();
  }
  if (netfilter_) {
    const auto& ns = netfilter_->stats();
    d["nflog_stats"] = {{"packets", ns.packets},
                        {"parse_errors", ns.parse_errors},
                        {"overruns", ns.overruns},
                        {"applies", ns.applies},
                        {"reapplies", ns.reapplies}};
  }
  nlohmann::json outs = nlohmann::json::array();
  for (const auto& sk : pipeline_->sinks()) outs.push_back(sink_json(*sk));
  d["outputs"] = std::move(outs);
  // Every summary still held is written before 5479, so that its counts add up.
  pipeline_->flush_summaries();
  d["records"] = records_json(pipeline_->stats());
  agent_event(EventKind::service_stopped, "IPsec audit stopped", std::move(d));
  write_metrics(false);
  io_.stop();
}

namespace {
// io_context::run_one_until reads its clock before the wait and again after
// a wait that ran no handler. This clock reads none: its first now() is the
// time the loop has read at this wake-up (set in `given`), any later one says
// the deadline is reached; the loop then reads the time itself at its next
// turn and waits again if the tick is not due (a wait cut short).
struct NoReadClock {
  using duration = std::chrono::steady_clock::duration;
  using rep = duration::rep;
  using period = duration::period;
  using time_point = std::chrono::time_point<NoReadClock, duration>;
  [[maybe_unused]] static constexpr bool is_steady = true;
  static inline std::optional<time_point> given;  // the loop's thread only
  static time_point now() noexcept {
    if (!given) return time_point::max();
    const time_point t = *given;
    given.reset();
    return t;
  }
  static time_point from(std::chrono::steady_clock::time_point t) { return time_point(t.time_since_epoch()); }
};
}  // namespace

void Daemon::run_loop() {
  // While the ticker ticks, the wait for its next tick is the timeout of the
  // loop's own epoll_wait (run_one_until): no timer is set per tick. One
  // clock read per wake-up (LoopClock): the due check, the tick's records
  // (flood limiter) and the wait after the tick all use it; a tick's
  // duration makes the next wake-up that much later, never the grid.
  LoopClock& clock = ticker_->clock();
  clock.set_caching(true);
  while (!io_.stopped()) {
    if (ticker_->ticking()) {
      const auto now = clock.now();
      if (ticker_->run_if_due(now) && !ticker_->ticking()) {
        clock.new_wakeup();
        continue;  // idle: the next wait has no deadline
      }
      clock.new_wakeup();
      NoReadClock::given = NoReadClock::from(now);
      io_.run_one_until(NoReadClock::from(ticker_->next()));
      NoReadClock::given.reset();
    } else {
      clock.new_wakeup();
      if (io_.run_one() == 0) break;  // no work left (cannot happen while the signals are waited for)
    }
  }
  clock.set_caching(false);
}

int Daemon::run() {
  // A reader gone from a pipe or socket output is a failed write, not a death.
  std::signal(SIGPIPE, SIG_IGN);
  // A file-size limit is a failed (cut back) write too.
  std::signal(SIGXFSZ, SIG_IGN);
  start_time_ = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  pipeline_ = std::make_unique<Pipeline>(hostname());
  pipeline_->set_flood(opts_.flood);
  auto sinks = open_sinks(opts_);
  if (!sinks) {
    log(LogLevel::error, sinks.error().message);
    return 1;
  }
  pipeline_->replace_sinks(std::move(*sinks));
  std::error_code ec;
  std::filesystem::create_directories(opts_.state_dir, ec);
  if (ec) log(LogLevel::warning, "cannot create state directory " + opts_.state_dir + ": " + ec.message());
  started_at_ = std::chrono::system_clock::now();
  // Before any source runs: no record is judged by a policy not yet read.
  load_policy(true);

  // Batched work under a stream (issue 17): one tick per batch.delay_ms while
  // records flow; 0 reads and writes each record at once.
  ticker_ = std::make_unique<BatchTicker>(std::chrono::milliseconds(opts_.batch_delay_ms));
  // The flood limiter's time: the loop's, read once per wake-up, not per record.
  pipeline_->set_clock([this] { return ticker_->clock().now(); });
  ticker_->set_tick([this] {
    bool busy = false;
    if (audit_) busy = audit_->tick() || busy;
    if (xfrm_) busy = xfrm_->tick() || busy;
    pipeline_->flush();
    return busy;
  });

  XfrmTracker::Config xcfg;
  xcfg.netns = opts_.netns;
  xcfg.aevents = opts_.xfrm_aevents;
  xcfg.receive_buffer_bytes = opts_.receive_buffer_bytes;
  xcfg.counters_interval = std::chrono::seconds(opts_.counters_interval_s);
  xcfg.correlation_window = std::chrono::milliseconds(opts_.correlation_window_ms);
  xfrm_ = std::make_unique<XfrmTracker>(
      io_, xcfg, [this](const Event& e) { pipeline_->submit(e); }, [this](const std::string& why) { critical(why); });
  xfrm_->set_ticker(ticker_.get());
  if (auto r = xfrm_->start(); !r) {
    log(LogLevel::error, "XFRM tracking: " + r.error().message);
    agent_event(EventKind::critical_failure, "critical failure at start: XFRM tracking: " + r.error().message);
    return 1;
  }

  // Before the privileges go: it enters the namespaces and talks to nf_tables.
  NetfilterSource::Config ncfg;
  ncfg.enable = opts_.nflog_enable;
  ncfg.group = static_cast<std::uint16_t>(opts_.nflog_group);
  ncfg.receive_buffer_bytes = opts_.receive_buffer_bytes;
  ncfg.fragment_interval = std::chrono::seconds(opts_.fragment_interval_s);
  netfilter_ = std::make_unique<NetfilterSource>(
      io_, ncfg,
      [this] {
        std::vector<NetfilterSource::Spd> v;
        for (auto& [ns, table] : xfrm_->spds()) v.push_back({ns, table});
        return v;
      },
      [this](const Event& e) { pipeline_->submit(e); });
  xfrm_->set_spd_listener([this] { netfilter_->spd_changed(); });
  // An overrun of the audit socket is read (and reported) before a
  // reconciliation could count the same records again.
  xfrm_->set_before_settle([this] {
    if (audit_) audit_->read_queued();
  });
  netfilter_->start();

  KernelAuditSource::Config acfg;
  acfg.enable_kernel_audit = opts_.enable_kernel_audit;
  acfg.status_interval = std::chrono::seconds(opts_.audit_status_interval_s);
  acfg.receive_buffer_bytes = opts_.receive_buffer_bytes;
  audit_ = std::make_unique<KernelAuditSource>(
      io_, acfg, [this](Event&& e) { xfrm_->on_audit_event(std::move(e)); },
      [this](const std::string& why) { critical(why); }, ticker_.get());
  if (auto r = audit_->start(); !r) {
    log(LogLevel::error, r.error().message);
    netfilter_->stop();
    agent_event(EventKind::critical_failure, "critical failure at start: " + r.error().message);
    return 1;
  }

  // The kernel multicasts audit records in the initial network namespace
  // only: elsewhere the join succeeds and no record ever arrives. (Read
  // before the capabilities go: it looks at /proc/1/ns/net.)
  const std::optional<bool> init_netns = in_initial_netns();
  if (init_netns == false)
    log(LogLevel::warning,
        "the agent runs outside the initial network namespace: the kernel sends audit records there only, so no "
        "kernel audit record (packet failures, who made a change) will arrive. Run it in the initial namespace and "
        "watch others with --netns.");
  // SAD/SPD changes wait for their kernel audit records only when those come.
  xfrm_->set_audit_reaches_us(init_netns != false);
  xfrm_->set_audit_expected(init_netns != false && audit_->status() && audit_->status()->enabled != 0);
  const nlohmann::json agent_netns = {{"initial", init_netns ? nlohmann::json(*init_netns) : nlohmann::json("unknown")},
                                      {"label", own_netns_label()}};

  arm_signals();

  // The control socket before the capabilities go (a chgrp to the control
  // group needs CAP_CHOWN when the agent is not a member of it).
  start_control();

  // Everything that needs privilege is open: keep only what runs on.
  const auto want = required_capabilities(opts_);
  auto dropped = drop_privileges(want);
  if (!dropped) {
    log(LogLevel::error, "least privilege: " + dropped.error().message);
    netfilter_->stop();
    agent_event(EventKind::critical_failure, "critical failure at start: least privilege: " + dropped.error().message);
    return 1;
  }
  capabilities_ = capability_names(dropped->kept);
  log(LogLevel::info, "capabilities kept: " + capabilities_ +
                          (dropped->bounding_dropped ? "" : " (bounding set left as it was: no CAP_SETPCAP)"));
  if (!dropped->missing.empty())
    log(LogLevel::warning,
        "capabilities this configuration wants but the agent was not given: " + capability_names(dropped->missing));

  arm_output_check();
  arm_summaries();
  std::uint64_t watchdog_usec = 0;
  if (sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec > 0)
    arm_watchdog(std::chrono::microseconds(watchdog_usec / 2));

  const auto& st = audit_->status();
  nlohmann::json xd = {{"netns_watched", xfrm_->watched()},
                       {"sas", xfrm_->sa_count()},
                       {"policies", xfrm_->policy_count()},
                       {"aevents", opts_.xfrm_aevents}};
  xd["nflog"] = netfilter_->status();
  if (!xfrm_->missing().empty()) xd["netns_missing"] = xfrm_->missing();
  agent_event(EventKind::service_started,
              init_netns == false ? "IPsec audit started outside the initial network namespace: no kernel audit "
                                    "records (IPsec packet events) will arrive"
              : !st && opts_.audit_status_interval_s == 0 && !opts_.enable_kernel_audit
                  ? "IPsec audit started; kernel audit status polling is off"
              : !st              ? "IPsec audit started; the kernel audit status cannot be read (no CAP_AUDIT_CONTROL)"
              : st->enabled != 0 ? "IPsec audit started"
                                 : "IPsec audit started, but kernel audit is disabled: no IPsec packet events will be "
                                   "recorded",
              {{"version", IPSEC_AUDIT_VERSION},
               {"capabilities", capabilities_},
               {"kernel_audit", kernel_audit_detail()},
               {"agent_netns", agent_netns},
               {"xfrm", std::move(xd)},
               {"audit_policy", policy_json(pipeline_->policy())},
               {"control", control_state_}});
  started_ = true;
  if (!control_)
    agent_event(EventKind::control_server_failed,
                "the control server cannot be set up, auditing continues without it (ipsec-auditctl gets no answer): " +
                    control_state_.value("error", std::string()),
                {{"control", control_state_}});
  for (auto& e : deferred_) pipeline_->submit(e);
  deferred_.clear();
  audit_->report_start_state();
  report_changes_while_stopped();
  write_metrics(true);
  arm_metrics();
  sd_notify(0, "READY=1");
  log(LogLevel::info, "running");
  // From here records are batched: each handler's records go out with one
  // write per line output, flushed right after it (one post per batch); a
  // tick's records are flushed at the tick's end, with no post.
  pipeline_->set_flush_scheduler([this](std::function<void()> f) {
    if (ticker_ && ticker_->in_tick()) return;
    boost::asio::post(io_, std::move(f));
  });
  run_loop();
  // Stopped (signal or critical failure): nothing held may stay unwritten.
  pipeline_->set_flush_scheduler({});
  pipeline_->flush();
  return exit_code_;
}

}  // namespace ipsec
