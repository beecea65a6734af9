// ipsec-auditctl: get and set the IPsec Driver audit policy (Success /
// Failure), check CIS 17.9.1 compliance, show the agent's status, read the
// audit log. Talks to ipsec-auditd over its control socket
// (docs/control-protocol.md).
//
// Exit status: 0 ok; 1 check not compliant (or the agent reported an error);
// 2 bad usage; 3 the agent does not answer; 4 refused.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "agent/options.hpp"
#include "audit/control_protocol.hpp"
#include "audit/log_query.hpp"

namespace {

using nlohmann::json;
using namespace ipsec;

constexpr int kOk = 0, kCheckFailed = 1, kUsage = 2, kNoAnswer = 3, kRefused = 4;
constexpr auto kTimeout = std::chrono::seconds(5);

const char* kUsageText = R"(Usage: ipsec-auditctl [--socket PATH] [--json] COMMAND [ARGS]
Controls ipsec-auditd, the IPsec (XFRM/ESP) audit agent.

Commands:
  get                       the audit policy, as auditpol /get prints it:
                            IPsec Driver: Success and Failure | Success | Failure | No Auditing
  set [--success enable|disable] [--failure enable|disable]
                            change one switch or both (uid 0 or the control group)
  enable | disable          both switches on / off
  check                     CIS 17.9.1 on the running system: the policy is
                            Success and Failure, the agent answers, kernel audit
                            is enabled, every configured source is subscribed.
                            Each condition PASS/FAIL; exit 0 compliant, 1 not
  status                    the agent: up since, sources, kernel audit, records
                            written and suppressed per event, loss, outputs
  events [ARGS]             read the audit log (see ipsec-auditctl(8))
  report [ARGS]             counts from the audit log (see ipsec-auditctl(8))

Options:
  --socket PATH             the agent's control socket
                            (default /run/ipsec-audit/control.sock)
  --json                    print the agent's raw result as JSON
  --version, --help

Exit status: 0 ok, 1 check not compliant or the agent reported an error,
2 bad usage, 3 the agent does not answer, 4 refused.
)";

int usage_error(const std::string& what) {
  std::cerr << "ipsec-auditctl: " << what << " (see --help)\n";
  return kUsage;
}

struct Failure {
  int exit_code;
  std::string message;
};

// One request, one response line, within kTimeout in all.
std::variant<ControlResponse, Failure> ask(const std::string& path, const ControlRequest& req) {
  const auto deadline = std::chrono::steady_clock::now() + kTimeout;
  auto no_answer = [&](const std::string& why) {
    return Failure{kNoAnswer, "the agent does not answer on " + path + ": " + why};
  };
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return no_answer(std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof sa.sun_path) return Failure{kUsage, "socket path too long: " + path};
  std::memcpy(sa.sun_path, path.data(), path.size());
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0) {
    const int e = errno;
    if (e == EACCES || e == EPERM)
      return Failure{kRefused, "refused: no permission to connect to " + path + " (" + std::strerror(e) + ")"};
    return no_answer(std::strerror(e));
  }
  auto wait = [&](short events) {
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
      if (left <= 0) return false;
      pollfd p{fd, events, 0};
      const int rc = ::poll(&p, 1, static_cast<int>(left));
      if (rc < 0 && errno == EINTR) continue;
      return rc > 0;
    }
  };
  const std::string line = control_request_line(req);
  std::size_t off = 0;
  while (off < line.size()) {
    if (!wait(POLLOUT)) return no_answer("timed out");
    const ssize_t n = ::send(fd, line.data() + off, line.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return no_answer(std::strerror(errno));
    }
    off += static_cast<std::size_t>(n);
  }
  std::string in;
  char buf[16384];
  while (in.find('\n') == std::string::npos) {
    if (in.size() > (16u << 20)) return no_answer("answer too long");
    if (!wait(POLLIN)) return no_answer("timed out waiting for the answer");
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return no_answer(std::strerror(errno));
    }
    if (n == 0) return no_answer("connection closed without an answer");
    in.append(buf, static_cast<std::size_t>(n));
  }
  auto r = parse_control_response(in.substr(0, in.find('\n')));
  if (!r) return no_answer(r.error().message);
  return *r;
}

std::string str(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end()) return "?";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

void print_status(const json& r) {
  std::cout << "ipsec-auditd " << str(r, "version") << ", pid " << str(r, "pid") << ", up since "
            << str(r, "started_at") << "\n";
  if (r.contains("policy")) std::cout << "IPsec Driver: " << str(r["policy"], "label") << "\n";
  const json ka = r.value("kernel_audit", json::object());
  if (ka.contains("enabled")) {
    std::cout << "Kernel audit: enabled " << str(ka, "enabled") << ", failure " << str(ka, "failure")
              << ", backlog limit " << str(ka, "backlog_limit") << ", rate limit " << str(ka, "rate_limit")
              << ", lost " << str(ka, "lost") << ", backlog " << str(ka, "backlog") << "\n";
  } else {
    std::cout << "Kernel audit: status unknown (not polled)\n";
  }
  const json src = r.value("sources", json::object());
  const json kas = src.value("kernel_audit", json::object());
  std::cout << "Sources: kernel audit " << (kas.value("subscribed", false) ? "subscribed" : "NOT subscribed");
  const json x = src.value("xfrm", json::object());
  std::cout << "; netns watched:";
  bool any = false;
  for (const auto& w : x.value("netns_watched", json::array())) {
    const std::string label = w.value("spec", std::string()).empty() ? "(own)" : w.value("label", std::string("?"));
    std::cout << (any ? ", " : " ") << label << (w.value("ready", false) ? "" : " (not ready)");
    any = true;
  }
  if (!any) std::cout << " none";
  for (const auto& m : x.value("netns_missing", json::array()))
    std::cout << "; missing: " << (m.is_string() ? m.get<std::string>() : m.dump());
  std::cout << "; " << str(x, "sas") << " SAs, " << str(x, "policies") << " policies\n";
  const json rec = r.value("records", json::object());
  std::cout << "Records: written " << str(rec, "written") << ", suppressed " << str(rec, "suppressed") << "\n";
  const json by_event = rec.value("by_event", json::object());
  for (const auto& item : by_event.items()) {
    const json& c = item.value();
    const std::string& name = item.key();
    if (c.value("received", 0ULL) == 0 && c.value("summary_records", 0ULL) == 0) continue;
    std::string n = name;
    n.resize(std::max<std::size_t>(n.size(), 26), ' ');
    // received = written + suppressed (switch) + summarised (flood limiter)
    std::cout << "  " << n << " received " << str(c, "received") << ": written " << str(c, "written")
              << ", suppressed " << str(c, "suppressed") << ", summarised " << str(c, "summarised");
    if (c.contains("summary_records")) std::cout << " (in " << str(c, "summary_records") << " summaries)";
    std::cout << "\n";
  }
  const json lost = r.value("events_lost", json::object());
  std::cout << "Events lost: kernel audit lost " << str(lost, "kernel_audit_lost") << ", audit socket overruns "
            << str(lost, "kernel_audit_overruns") << ", xfrm overruns " << str(lost, "xfrm_overruns")
            << ", records lost by outputs " << str(lost, "output_records_lost") << "\n";
  const json by_counter = lost.value("records_by_counter", json::object());  // named: items() refers to it
  for (const auto& item : by_counter.items())
    std::cout << "  events-lost " << item.key() << ": " << (item.value().is_number() ? item.value().dump() : "?")
              << "\n";
  for (const auto& s : r.value("sinks", json::array())) {
    std::cout << "Output " << str(s, "name") << ": " << (s.value("healthy", false) ? "healthy" : "FAILING")
              << ", written " << str(s, "written") << ", failed " << str(s, "failed");
    if (s.contains("last_error")) std::cout << " (" << str(s, "last_error") << ")";
    std::cout << "\n";
  }
  const json c = r.value("control", json::object());
  std::cout << "Control socket: " << str(c, "socket") << ", " << str(c, "clients") << " client(s)\n";
}

int print_check(const json& r, bool as_json) {
  const bool compliant = r.value("compliant", false);
  if (as_json) {
    std::cout << r.dump(2) << "\n";
    return compliant ? kOk : kCheckFailed;
  }
  std::string failing;
  for (const auto& c : r.value("conditions", json::array())) {
    const bool pass = c.value("pass", false);
    std::cout << (pass ? "PASS " : "FAIL ") << str(c, "name") << ": " << str(c, "detail") << "\n";
    if (!pass) failing += (failing.empty() ? "" : ", ") + str(c, "name");
  }
  if (compliant)
    std::cout << "CIS 17.9.1 (Audit IPsec Driver: Success and Failure): compliant\n";
  else
    std::cout << "CIS 17.9.1 (Audit IPsec Driver: Success and Failure): NOT compliant (failing: " << failing << ")\n";
  return compliant ? kOk : kCheckFailed;
}

std::optional<bool> switch_value(std::string_view v) {
  if (v == "enable") return true;
  if (v == "disable") return false;
  return std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket_path = kDefaultControlSocket;
  bool as_json = false;
  std::string cmd;
  std::vector<std::string> rest;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (!cmd.empty()) {
      rest.emplace_back(a);
      continue;
    }
    if (a == "--help" || a == "-h") {
      std::cout << kUsageText;
      return kOk;
    }
    if (a == "--version") {
      std::cout << "ipsec-auditctl " << IPSEC_AUDIT_VERSION << "\n";
      return kOk;
    }
    if (a == "--json") {
      as_json = true;
    } else if (a == "--socket" || a.substr(0, 9) == "--socket=") {
      std::string v;
      if (a == "--socket") {
        if (i + 1 >= argc) return usage_error("--socket needs a path");
        v = argv[++i];
      } else {
        v = std::string(a.substr(9));
      }
      if (v.empty() || v.front() != '/') return usage_error("--socket needs an absolute path");
      socket_path = v;
    } else if (!a.empty() && a.front() == '-') {
      return usage_error("unknown option '" + printable(a) + "'");
    } else {
      cmd = std::string(a);
    }
  }
  if (cmd.empty()) return usage_error("no command given");
  if (cmd == "events" || cmd == "report") {
    if (as_json) rest.insert(rest.begin(), "--json");
    return run_log_command(cmd, rest, std::cout, std::cerr);
  }

  ControlRequest req;
  // Options after the command: --json and --socket anywhere; set's switches.
  std::vector<std::string> args;
  for (std::size_t i = 0; i < rest.size(); ++i) {
    const std::string& a = rest[i];
    if (a == "--json") {
      as_json = true;
    } else if (a == "--socket") {
      if (i + 1 >= rest.size()) return usage_error("--socket needs a path");
      socket_path = rest[++i];
      if (socket_path.empty() || socket_path.front() != '/') return usage_error("--socket needs an absolute path");
    } else if (a.rfind("--socket=", 0) == 0) {
      socket_path = a.substr(9);
      if (socket_path.empty() || socket_path.front() != '/') return usage_error("--socket needs an absolute path");
    } else {
      args.push_back(a);
    }
  }
  if (cmd == "get" || cmd == "status" || cmd == "check" || cmd == "enable" || cmd == "disable") {
    if (!args.empty()) return usage_error(cmd + " takes no argument ('" + printable(args[0]) + "')");
    req.cmd = cmd == "get"      ? ControlCommand::get
              : cmd == "status" ? ControlCommand::status
              : cmd == "check"  ? ControlCommand::check
                                : ControlCommand::set;
    if (cmd == "enable" || cmd == "disable") req.success = req.failure = (cmd == "enable");
  } else if (cmd == "set") {
    req.cmd = ControlCommand::set;
    for (std::size_t i = 0; i < args.size(); ++i) {
      std::string name = args[i], value;
      if (auto eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
      } else if (name == "--success" || name == "--failure") {
        if (i + 1 >= args.size()) return usage_error(name + " needs enable or disable");
        value = args[++i];
      }
      if (name != "--success" && name != "--failure") return usage_error("set: unknown argument '" + printable(name) + "'");
      auto v = switch_value(value);
      if (!v) return usage_error(name + " takes enable or disable, not '" + printable(value) + "'");
      (name == "--success" ? req.success : req.failure) = *v;
    }
    if (!req.success && !req.failure) return usage_error("set needs --success and/or --failure");
  } else {
    return usage_error("unknown command '" + printable(cmd) + "'");
  }

  auto answer = ask(socket_path, req);
  if (auto* f = std::get_if<Failure>(&answer)) {
    if (req.cmd == ControlCommand::check) {
      if (as_json) {
        std::cout << json{{"compliant", false},
                          {"conditions", json::array({{{"name", "agent"}, {"pass", false}, {"detail", f->message}}})}}
                         .dump(2)
                  << "\n";
      } else {
        std::cout << "FAIL agent: " << f->message << "\n"
                  << "CIS 17.9.1 (Audit IPsec Driver: Success and Failure): NOT compliant (failing: agent)\n";
      }
      return kCheckFailed;
    }
    std::cerr << "ipsec-auditctl: " << f->message << "\n";
    return f->exit_code;
  }
  const auto& r = std::get<ControlResponse>(answer);
  if (!r.ok) {
    std::cerr << "ipsec-auditctl: " << r.error_code << ": " << r.error_message << "\n";
    if (req.cmd == ControlCommand::check) return kCheckFailed;
    return r.error_code == "refused" ? kRefused : kCheckFailed;
  }
  if (req.cmd == ControlCommand::check) return print_check(r.result, as_json);
  if (as_json) {
    std::cout << r.result.dump(2) << "\n";
    return kOk;
  }
  if (req.cmd == ControlCommand::status) {
    print_status(r.result);
    return kOk;
  }
  // get / set / enable / disable
  std::cout << "IPsec Driver: " << str(r.result.value("policy", json::object()), "label") << "\n";
  return kOk;
}
