#include "agent/daemon.hpp"

#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>

#include "agent/log.hpp"
#include "agent/netns_watch.hpp"
#include "agent/privileges.hpp"
#include "audit/catalogue.hpp"

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

Daemon::Daemon(Options opts, Loader reload)
    : opts_(std::move(opts)),
      loader_(std::move(reload)),
      signals_(io_, SIGINT, SIGTERM, SIGHUP),
      output_timer_(io_),
      watchdog_timer_(io_) {}

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
  // Fixed at start: the sockets, namespaces and capabilities follow from them.
  if (next->enable_kernel_audit != opts_.enable_kernel_audit) restart.emplace_back("kernel_audit.enable");
  if (next->netns != opts_.netns) restart.emplace_back("netns");
  if (next->xfrm_aevents != opts_.xfrm_aevents) restart.emplace_back("xfrm_aevents");
  if (next->receive_buffer_bytes != opts_.receive_buffer_bytes) restart.emplace_back("receive_buffer_bytes");
  if (next->state_dir != opts_.state_dir) restart.emplace_back("state_dir");
  if (next->control_socket != opts_.control_socket) restart.emplace_back("control_socket");
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
  // The audit source first: it reads what is queued and hands it over, and
  // the tracker then decides and writes that too.
  if (audit_) audit_->stop();
  if (xfrm_)
    xfrm_->stop(std::move(done));
  else
    done();
}

void Daemon::critical(const std::string& why) {
  log(LogLevel::error, why);
  if (audit_) audit_->stop();
  if (xfrm_) xfrm_->abandon();
  agent_event(EventKind::critical_failure, "critical failure, the agent stops: " + why);
  exit_code_ = 1;
  sd_notify(0, "STOPPING=1");
  io_.stop();
}

void Daemon::on_signal(int signo) {
  if (signo == SIGHUP) {
    if (loader_ && opts_.config_path) {
      sd_notify(0, "RELOADING=1");
      reload();
      sd_notify(0, "READY=1");
    } else {
      for (const auto& err : pipeline_->reopen()) log(LogLevel::warning, "reopen failed: " + err);
    }
    arm_signals();
    return;
  }
  sd_notify(0, "STOPPING=1");
  output_timer_.cancel();
  watchdog_timer_.cancel();
  // 5479 comes last: after what the sockets had queued is written, and after
  // the kernel has answered what that needed (or not, within its deadline).
  stop_sources([this, signo] { write_stopped(signo); });
}

void Daemon::write_stopped(int signo) {
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
  nlohmann::json outs = nlohmann::json::array();
  for (const auto& sk : pipeline_->sinks()) outs.push_back(sink_json(*sk));
  d["outputs"] = std::move(outs);
  d["records"] = {{"submitted", pipeline_->stats().submitted}, {"suppressed", pipeline_->stats().suppressed}};
  agent_event(EventKind::service_stopped, "IPsec audit stopped", std::move(d));
  io_.stop();
}

int Daemon::run() {
  // A reader gone from a pipe or socket output is a failed write, not a death.
  std::signal(SIGPIPE, SIG_IGN);
  // A file-size limit is a failed (cut back) write too.
  std::signal(SIGXFSZ, SIG_IGN);
  pipeline_ = std::make_unique<Pipeline>(hostname());
  auto sinks = open_sinks(opts_);
  if (!sinks) {
    log(LogLevel::error, sinks.error().message);
    return 1;
  }
  pipeline_->replace_sinks(std::move(*sinks));
  std::error_code ec;
  std::filesystem::create_directories(opts_.state_dir, ec);
  if (ec) log(LogLevel::warning, "cannot create state directory " + opts_.state_dir + ": " + ec.message());

  XfrmTracker::Config xcfg;
  xcfg.netns = opts_.netns;
  xcfg.aevents = opts_.xfrm_aevents;
  xcfg.receive_buffer_bytes = opts_.receive_buffer_bytes;
  xfrm_ = std::make_unique<XfrmTracker>(
      io_, xcfg, [this](const Event& e) { pipeline_->submit(e); }, [this](const std::string& why) { critical(why); });
  if (auto r = xfrm_->start(); !r) {
    log(LogLevel::error, "XFRM tracking: " + r.error().message);
    agent_event(EventKind::critical_failure, "critical failure at start: XFRM tracking: " + r.error().message);
    return 1;
  }

  KernelAuditSource::Config acfg;
  acfg.enable_kernel_audit = opts_.enable_kernel_audit;
  acfg.status_interval = std::chrono::seconds(opts_.audit_status_interval_s);
  acfg.receive_buffer_bytes = opts_.receive_buffer_bytes;
  audit_ = std::make_unique<KernelAuditSource>(
      io_, acfg, [this](const Event& e) { xfrm_->on_audit_event(e); },
      [this](const std::string& why) { critical(why); });
  if (auto r = audit_->start(); !r) {
    log(LogLevel::error, r.error().message);
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

  // Everything that needs privilege is open: keep only what runs on.
  const auto want = required_capabilities(opts_);
  auto dropped = drop_privileges(want);
  if (!dropped) {
    log(LogLevel::error, "least privilege: " + dropped.error().message);
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
  std::uint64_t watchdog_usec = 0;
  if (sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec > 0)
    arm_watchdog(std::chrono::microseconds(watchdog_usec / 2));

  const auto& st = audit_->status();
  nlohmann::json xd = {{"netns_watched", xfrm_->watched()},
                       {"sas", xfrm_->sa_count()},
                       {"policies", xfrm_->policy_count()},
                       {"aevents", opts_.xfrm_aevents}};
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
               {"xfrm", std::move(xd)}});
  audit_->report_start_state();
  sd_notify(0, "READY=1");
  log(LogLevel::info, "running");
  io_.run();
  return exit_code_;
}

}  // namespace ipsec
