#include "agent/options.hpp"

#include <nlohmann/json.hpp>

#include <cctype>
#include <charconv>
#include <cstring>

namespace ipsec {

std::string usage() {
  return R"(Usage: ipsec-auditd [OPTIONS]
Turns the kernel's IPsec (XFRM/ESP) audit stream into JSON audit records.

  --foreground            run attached to the terminal: echo records to stdout
                          as well (the agent never forks; under systemd run it
                          without this flag)
  --config FILE           JSON config file (default: none; the packaged one is
                          /etc/ipsec-audit/ipsec-auditd.conf)
  --output SPEC           where records go; repeatable. SPEC is jsonl:/PATH
                          (JSON Lines file), journald (structured fields and a
                          MESSAGE_ID per event), syslog (RFC 5424 to /dev/log),
                          stdout or null. Default: jsonl:/var/log/ipsec-audit/events.jsonl
                          (and stdout with --foreground)
  --state-dir DIR         state directory (default /var/lib/ipsec-audit)
  --control-socket PATH   control socket for ipsec-auditctl
                          (default /run/ipsec-audit/control.sock, mode 0660)
  --control-group GROUP   chgrp the control socket to GROUP; its members may
                          change the audit policy (uid 0 always may). Others
                          who can connect may only read it
  --enable-kernel-audit   turn kernel audit on (AUDIT_SET enabled=1) if it is
                          off; the kernel writes IPsec packet records only while
                          it is on. Put back as it was on a clean stop.
  --netns NAME|PATH       track the SAD/SPD of network namespace NAME (under
                          /run/netns) or PATH (/proc/PID/ns/net, a bind
                          mount); repeatable; one not there yet is watched
                          when it appears. 'all' follows every name there,
                          plus the agent's own. Default: the agent's own
  --xfrm-aevents          also join the XFRM AEVENTS group. Costly: once anyone
                          listens, the kernel sends a message every 2 packets
                          per SA. Off by default
  --receive-buffer BYTES  receive buffer of each netlink socket (default 8 MiB;
                          set with SO_RCVBUFFORCE, else capped by rmem_max)
  --audit-status-interval SECONDS
                          how often to read the kernel audit status (enabled,
                          failure mode, backlog limit) and its 'lost' counter
                          (default 5). 0: never (and CAP_AUDIT_CONTROL is dropped)
  --batch-delay-ms MS     while records flow, read the sockets and write the
                          outputs once per MS (0..1000, default 50): a record
                          waits at most MS. 0: read and write each at once
  --correlation-window-ms MS
                          how long the XFRM message and the kernel audit record
                          of one SAD/SPD change wait for each other (0..5000,
                          default 250)
  --help                  this text
  --version               the version

Signals: SIGHUP reloads the config file (a bad one is refused and the last
good one runs on) and reopens the outputs; SIGTERM/SIGINT stop.

Capabilities: after start-up the agent keeps only CAP_AUDIT_READ and
CAP_NET_ADMIN, plus CAP_AUDIT_CONTROL when the kernel audit status is polled or
--enable-kernel-audit is given, plus CAP_SYS_ADMIN when --netns names other
namespaces; every other capability is dropped (effective, permitted,
inheritable, ambient and, where allowed, bounding) and the process is made
non-dumpable. It runs as root or as a user given those as ambient capabilities.

Exit status: 0 clean stop, 1 runtime failure, 2 bad option or config.
)";
}

std::vector<OutputSpec> effective_outputs(const Options& o) {
  if (!o.outputs.empty()) return o.outputs;
  std::vector<OutputSpec> v{OutputSpec{OutputSpec::Kind::jsonl, kDefaultJsonl}};
  if (o.foreground) v.push_back(OutputSpec{OutputSpec::Kind::stdout_, {}});
  return v;
}

namespace {
// A plain name (/run/netns/NAME) or an absolute path to a namespace file.
bool valid_netns_spec(std::string_view v) {
  if (v.empty() || v == "." || v == ".." || v.find('\0') != std::string_view::npos) return false;
  return v.front() == '/' || v.find('/') == std::string_view::npos;
}

// A group name (as useradd takes them) or a number.
bool valid_group(std::string_view g) {
  if (g.empty() || g.size() > 64 || g.front() == '-') return false;
  for (const char c : g)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' || c == '$')) return false;
  return true;
}

bool parse_int(std::string_view s, int lo, int hi, int* out) {
  int v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size() || v < lo || v > hi) return false;
  *out = v;
  return true;
}

Error bad(std::string msg) { return make_error(Errc::malformed, std::move(msg)); }

}  // namespace

Result<Options> parse_command_line(int argc, char** argv, Options base) {
  Options o = std::move(base);
  bool outputs_given = false, netns_given = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    std::string_view val;
    bool has_inline = false;
    if (a.substr(0, 2) == "--") {
      if (auto eq = a.find('='); eq != std::string_view::npos) {
        val = a.substr(eq + 1);
        a = a.substr(0, eq);
        has_inline = true;
      }
    }
    auto take = [&](std::string_view name) -> Result<std::string_view> {
      if (has_inline) return val;
      if (i + 1 >= argc) return bad(std::string(name) + " needs a value");
      return std::string_view(argv[++i]);
    };
    auto flag_only = [&]() -> Result<Unit> {
      if (has_inline) return bad(std::string(a) + " takes no value");
      return Unit{};
    };
    if (a == "--help" || a == "-h") {
      if (auto f = flag_only(); !f) return f.error();
      o.help = true;
    } else if (a == "--version") {
      if (auto f = flag_only(); !f) return f.error();
      o.version = true;
    } else if (a == "--foreground" || a == "-f") {
      if (auto f = flag_only(); !f) return f.error();
      o.foreground = true;
    } else if (a == "--enable-kernel-audit") {
      if (auto f = flag_only(); !f) return f.error();
      o.enable_kernel_audit = true;
    } else if (a == "--config") {
      auto v = take(a);
      if (!v) return v.error();
      o.config_path = std::string(*v);
    } else if (a == "--output") {
      auto v = take(a);
      if (!v) return v.error();
      auto spec = parse_output_spec(*v);
      if (!spec) return bad("--output: " + spec.error().message);
      if (!outputs_given) o.outputs.clear();
      outputs_given = true;
      o.outputs.push_back(*spec);
    } else if (a == "--netns") {
      auto v = take(a);
      if (!v) return v.error();
      if (!valid_netns_spec(*v)) return bad("--netns takes a name under /run/netns, an absolute path, or all");
      if (!netns_given) o.netns.clear();
      netns_given = true;
      o.netns.emplace_back(*v);
    } else if (a == "--receive-buffer") {
      auto v = take(a);
      if (!v) return v.error();
      if (!parse_int(*v, 4096, 1 << 30, &o.receive_buffer_bytes))
        return bad("--receive-buffer must be 4096..1073741824 bytes");
    } else if (a == "--xfrm-aevents") {
      if (auto f = flag_only(); !f) return f.error();
      o.xfrm_aevents = true;
    } else if (a == "--state-dir") {
      auto v = take(a);
      if (!v) return v.error();
      if (v->empty() || v->front() != '/') return bad("--state-dir must be an absolute path");
      o.state_dir = std::string(*v);
    } else if (a == "--control-socket") {
      auto v = take(a);
      if (!v) return v.error();
      if (v->empty() || v->front() != '/') return bad("--control-socket must be an absolute path");
      if (v->size() >= 108) return bad("--control-socket path is longer than a Unix socket path can be");
      o.control_socket = std::string(*v);
    } else if (a == "--control-group") {
      auto v = take(a);
      if (!v) return v.error();
      if (!valid_group(*v)) return bad("--control-group takes a group name or number");
      o.control_group = std::string(*v);
    } else if (a == "--batch-delay-ms") {
      auto v = take(a);
      if (!v) return v.error();
      if (!parse_int(*v, 0, 1000, &o.batch_delay_ms)) return bad("--batch-delay-ms must be 0..1000");
    } else if (a == "--correlation-window-ms") {
      auto v = take(a);
      if (!v) return v.error();
      if (!parse_int(*v, 0, 5000, &o.correlation_window_ms)) return bad("--correlation-window-ms must be 0..5000");
    } else if (a == "--audit-status-interval") {
      auto v = take(a);
      if (!v) return v.error();
      if (!parse_int(*v, 0, 3600, &o.audit_status_interval_s))
        return bad("--audit-status-interval must be 0..3600 seconds");
    } else {
      return bad("unknown option '" + std::string(argv[i]) + "' (see --help)");
    }
  }
  return o;
}

Result<Unit> apply_config(std::string_view text, Options& o) {
  using nlohmann::json;
  json doc = json::parse(text.begin(), text.end(), nullptr, false);
  if (doc.is_discarded()) return bad("config is not valid JSON");
  if (!doc.is_object()) return bad("config must be a JSON object");
  for (auto& [k, v] : doc.items()) {
    if (k == "outputs") {
      if (!v.is_array()) return bad("config key 'outputs' must be an array of strings");
      std::vector<OutputSpec> outs;
      for (auto& s : v) {
        if (!s.is_string()) return bad("config key 'outputs' must be an array of strings");
        auto spec = parse_output_spec(s.get<std::string>());
        if (!spec) return bad("config key 'outputs': " + printable(spec.error().message, 200));
        outs.push_back(*spec);
      }
      o.outputs = std::move(outs);
    } else if (k == "state_dir" || k == "control_socket") {
      if (!v.is_string() || v.get<std::string>().empty() || v.get<std::string>().front() != '/')
        return bad("config key '" + k + "' must be an absolute path");
      if (k == "control_socket" && v.get<std::string>().size() >= 108)
        return bad("config key 'control_socket' is longer than a Unix socket path can be");
      (k == "state_dir" ? o.state_dir : o.control_socket) = v.get<std::string>();
    } else if (k == "control_group") {
      if (!v.is_string() || !valid_group(v.get<std::string>()))
        return bad("config key 'control_group' must be a group name or number");
      o.control_group = v.get<std::string>();
    } else if (k == "kernel_audit") {
      if (!v.is_object()) return bad("config key 'kernel_audit' must be an object");
      for (auto& [kk, vv] : v.items()) {
        if (kk == "enable") {
          if (!vv.is_boolean()) return bad("config key 'kernel_audit.enable' must be true or false");
          o.enable_kernel_audit = vv.get<bool>();
        } else if (kk == "status_interval_seconds") {
          if (!vv.is_number_integer() || vv.get<long long>() < 0 || vv.get<long long>() > 3600)
            return bad("config key 'kernel_audit.status_interval_seconds' must be 0..3600");
          o.audit_status_interval_s = vv.get<int>();
        } else {
          return bad("unknown config key 'kernel_audit." + printable(kk) + "'");
        }
      }
    } else if (k == "counters") {
      if (!v.is_object()) return bad("config key 'counters' must be an object");
      for (auto& [kk, vv] : v.items()) {
        if (kk == "interval_seconds") {
          if (!vv.is_number_integer() || vv.get<long long>() < 0 || vv.get<long long>() > 3600)
            return bad("config key 'counters.interval_seconds' must be 0..3600");
          o.counters_interval_s = vv.get<int>();
        } else {
          return bad("unknown config key 'counters." + printable(kk) + "'");
        }
      }
    } else if (k == "netns") {
      if (!v.is_array() || v.empty()) return bad("config key 'netns' must be a non-empty array of names");
      std::vector<std::string> names;
      for (auto& n : v) {
        if (!n.is_string()) return bad("config key 'netns' must be a non-empty array of names");
        const auto name = n.get<std::string>();
        if (!name.empty() && !valid_netns_spec(name))  // "" is the agent's own
          return bad("config key 'netns': '" + printable(name) + "' is not a name under /run/netns or an absolute path");
        names.push_back(name);
      }
      o.netns = std::move(names);
    } else if (k == "nflog") {
      if (!v.is_object()) return bad("config key 'nflog' must be an object");
      for (auto& [kk, vv] : v.items()) {
        if (kk == "enable") {
          if (!vv.is_boolean()) return bad("config key 'nflog.enable' must be true or false");
          o.nflog_enable = vv.get<bool>();
        } else if (kk == "group") {
          if (!vv.is_number_integer() || vv.get<long long>() < 1 || vv.get<long long>() > 65535)
            return bad("config key 'nflog.group' must be 1..65535");
          o.nflog_group = vv.get<int>();
        } else if (kk == "fragment_interval_seconds") {
          if (!vv.is_number_integer() || vv.get<long long>() < 1 || vv.get<long long>() > 3600)
            return bad("config key 'nflog.fragment_interval_seconds' must be 1..3600");
          o.fragment_interval_s = vv.get<int>();
        } else {
          return bad("unknown config key 'nflog." + printable(kk) + "'");
        }
      }
    } else if (k == "xfrm_aevents") {
      if (!v.is_boolean()) return bad("config key 'xfrm_aevents' must be true or false");
      o.xfrm_aevents = v.get<bool>();
    } else if (k == "batch") {
      if (!v.is_object()) return bad("config key 'batch' must be an object");
      for (auto& [kk, vv] : v.items()) {
        if (kk == "delay_ms") {
          if (!vv.is_number_integer() || vv.get<long long>() < 0 || vv.get<long long>() > 1000)
            return bad("config key 'batch.delay_ms' must be 0..1000");
          o.batch_delay_ms = vv.get<int>();
        } else {
          return bad("unknown config key 'batch." + printable(kk) + "'");
        }
      }
    } else if (k == "receive_buffer_bytes") {
      if (!v.is_number_integer() || v.get<long long>() < 4096 || v.get<long long>() > (1LL << 30))
        return bad("config key 'receive_buffer_bytes' must be 4096..1073741824");
      o.receive_buffer_bytes = v.get<int>();
    } else if (k == "flood") {
      if (!v.is_object()) return bad("config key 'flood' must be an object");
      for (auto& [kk, vv] : v.items()) {
        if (kk == "rate") {
          if (!vv.is_number() || vv.get<double>() < 0 || vv.get<double>() > 1e6)
            return bad("config key 'flood.rate' must be a number of records per second, 0..1000000");
          o.flood.rate = vv.get<double>();
        } else if (kk == "burst") {
          if (!vv.is_number_integer() || vv.get<long long>() < 1 || vv.get<long long>() > 1000000)
            return bad("config key 'flood.burst' must be 1..1000000");
          o.flood.burst = vv.get<std::uint32_t>();
        } else if (kk == "interval_seconds") {
          if (!vv.is_number_integer() || vv.get<long long>() < 1 || vv.get<long long>() > 86400)
            return bad("config key 'flood.interval_seconds' must be 1..86400");
          o.flood.interval = std::chrono::seconds(vv.get<long long>());
        } else if (kk == "max_keys") {
          if (!vv.is_number_integer() || vv.get<long long>() < 16 || vv.get<long long>() > (1LL << 20))
            return bad("config key 'flood.max_keys' must be 16..1048576");
          o.flood.max_keys = vv.get<std::size_t>();
        } else {
          return bad("unknown config key 'flood." + printable(kk) + "'");
        }
      }
    } else if (k == "metrics") {
      if (!v.is_object()) return bad("config key 'metrics' must be an object");
      for (auto& [kk, vv] : v.items()) {
        if (kk == "path") {
          if (vv.is_null()) {
            o.metrics_path.clear();
            continue;
          }
          const std::string path = vv.is_string() ? vv.get<std::string>() : std::string();
          if (path.empty() || path.front() != '/' || path.back() == '/' || path.find('\0') != std::string::npos)
            return bad("config key 'metrics.path' must be an absolute file path, or null");
          if (path.size() < 6 || path.compare(path.size() - 5, 5, ".prom") != 0)
            return bad("config key 'metrics.path' must end in .prom (node_exporter's textfile collector reads only those)");
          o.metrics_path = path;
        } else if (kk == "interval_seconds") {
          if (!vv.is_number_integer() || vv.get<long long>() < 1 || vv.get<long long>() > 3600)
            return bad("config key 'metrics.interval_seconds' must be 1..3600");
          o.metrics_interval_s = vv.get<int>();
        } else {
          return bad("unknown config key 'metrics." + printable(kk) + "'");
        }
      }
    } else {
      return bad("unknown config key '" + printable(k) + "'");
    }
  }
  return Unit{};
}

}  // namespace ipsec
