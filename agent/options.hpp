// ipsec-auditd options: command line and config file, as pure functions
// (text in, Options or a one-line error out). The command line overrides the
// config file.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "audit/flood_limiter.hpp"
#include "audit/sink.hpp"
#include "xfrm/result.hpp"

namespace ipsec {

inline constexpr const char* kDefaultConfig = "/etc/ipsec-audit/ipsec-auditd.conf";
inline constexpr const char* kDefaultJsonl = "/var/log/ipsec-audit/events.jsonl";
inline constexpr const char* kDefaultStateDir = "/var/lib/ipsec-audit";
inline constexpr const char* kDefaultControlSocket = "/run/ipsec-audit/control.sock";

struct Options {
  bool foreground{false};
  bool help{false};
  bool version{false};
  std::optional<std::string> config_path;
  std::vector<OutputSpec> outputs;  // empty: the embedded default
  std::string state_dir{kDefaultStateDir};
  std::string control_socket{kDefaultControlSocket};
  // Group (name or number) the control socket is chgrp'd to; its members may
  // change the audit policy (uid 0 always may). "": none.
  std::string control_group;
  bool enable_kernel_audit{false};
  int audit_status_interval_s{5};  // 0: no status polling (no CAP_AUDIT_CONTROL kept)
  // How often /proc/net/xfrm_stat of each watched netns is read and the
  // counters reconciled with the records (config counters.interval_seconds); 0: never.
  int counters_interval_s{10};
  int receive_buffer_bytes{8 << 20};
  // Network namespaces whose SAD/SPD are tracked: "" is the agent's own,
  // "all" every name under /run/netns (followed) plus the agent's own.
  std::vector<std::string> netns{""};
  bool xfrm_aevents{false};
  // Packet-record flood limits (config "flood"): applied live on SIGHUP.
  FloodConfig flood;
  // Prometheus textfile (config "metrics"): empty is off.
  std::string metrics_path;
  int metrics_interval_s{15};
  // Per watched netns: the agent's nftables table and its NFLOG subscriber
  // (predicted 4963 records, ESP fragment summaries). Group 4963 by default:
  // NFLOG groups are per netns, and one listener per group.
  bool nflog_enable{true};
  int nflog_group{4963};
  int fragment_interval_s{10};
  // Batching (config batch.delay_ms, issue 17): while records flow, the
  // sockets are read, the correlator's due records released and the outputs
  // written once per this period (one wake-up, one recvmmsg per busy socket,
  // one write per output). A record waits at most one period. 0: read and
  // write each record at once.
  int batch_delay_ms{50};
  // How long the two halves of a SAD/SPD change (XFRM message, kernel audit
  // record) wait for each other (--correlation-window-ms; benchmarks use 0 to
  // time the path of records that need no partner).
  int correlation_window_ms{250};
};

// Outputs to use: the configured ones, or jsonl:kDefaultJsonl (+ stdout in
// the foreground).
std::vector<OutputSpec> effective_outputs(const Options& o);

// Starts from `base` (the config file's settings) and overrides them.
Result<Options> parse_command_line(int argc, char** argv, Options base = {});
// Applies a JSON config document to `o`. Unknown keys and bad values are an
// error naming the key.
Result<Unit> apply_config(std::string_view json_text, Options& o);

std::string usage();

}  // namespace ipsec
