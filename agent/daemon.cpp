#include "agent/daemon.hpp"

#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>

#include "agent/log.hpp"
#include "agent/netns_watch.hpp"
#include "audit/catalogue.hpp"

namespace ipsec {

namespace {
std::string hostname() {
  char b[256] = {};
  if (::gethostname(b, sizeof b - 1) != 0) return "localhost";
  return b;
}
}  // namespace

Daemon::Daemon(Options opts) : opts_(std::move(opts)), signals_(io_, SIGINT, SIGTERM, SIGHUP) {}

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
    j = {{"enabled", s.enabled}, {"lost", s.lost},
         {"backlog", s.backlog}, {"backlog_limit", s.backlog_limit},
         {"daemon_pid", s.pid},  {"receive_buffer", audit_->receive_buffer()}};
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
    for (const auto& err : pipeline_->reopen()) log(LogLevel::warning, "reopen failed: " + err);
    signals_.async_wait([this](const boost::system::error_code& ec, int s) {
      if (!ec) on_signal(s);
    });
    return;
  }
  sd_notify(0, "STOPPING=1");
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
  agent_event(EventKind::service_stopped, "IPsec audit stopped", std::move(d));
  io_.stop();
}

int Daemon::run() {
  pipeline_ = std::make_unique<Pipeline>(hostname());
  for (const auto& spec : effective_outputs(opts_)) {
    auto s = open_sink(spec);
    if (!s) {
      log(LogLevel::error, s.error().message);
      return 1;
    }
    pipeline_->add_sink(std::move(*s));
  }
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

  signals_.async_wait([this](const boost::system::error_code& e, int s) {
    if (!e) on_signal(s);
  });

  const auto& st = audit_->status();
  // The kernel multicasts audit records in the initial network namespace
  // only: elsewhere the join succeeds and no record ever arrives.
  const std::optional<bool> init_netns = in_initial_netns();
  if (init_netns == false)
    log(LogLevel::warning,
        "the agent runs outside the initial network namespace: the kernel sends audit records there only, so no "
        "kernel audit record (packet failures, who made a change) will arrive. Run it in the initial namespace and "
        "watch others with --netns.");
  const nlohmann::json agent_netns = {{"initial", init_netns ? nlohmann::json(*init_netns) : nlohmann::json("unknown")},
                                       {"label", own_netns_label()}};
  nlohmann::json xd = {{"netns_watched", xfrm_->watched()},
                       {"sas", xfrm_->sa_count()},
                       {"policies", xfrm_->policy_count()},
                       {"aevents", opts_.xfrm_aevents}};
  if (!xfrm_->missing().empty()) xd["netns_missing"] = xfrm_->missing();
  agent_event(EventKind::service_started,
              init_netns == false ? "IPsec audit started outside the initial network namespace: no kernel audit "
                                    "records (IPsec packet events) will arrive"
              : !st               ? "IPsec audit started; the kernel audit status cannot be read (no CAP_AUDIT_CONTROL)"
              : st->enabled != 0  ? "IPsec audit started"
                                  : "IPsec audit started, but kernel audit is disabled: no IPsec packet events will be "
                                    "recorded",
              {{"version", IPSEC_AUDIT_VERSION},
               {"kernel_audit", kernel_audit_detail()},
               {"agent_netns", agent_netns},
               {"xfrm", std::move(xd)}});
  sd_notify(0, "READY=1");
  log(LogLevel::info, "running");
  io_.run();
  return exit_code_;
}

}  // namespace ipsec
