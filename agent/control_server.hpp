// ControlServer: the control socket of ipsec-auditd (docs/control-protocol.md)
// on the agent's io_context. A Unix stream socket, mode 0660, optionally
// chgrp'd to a configured group; requests are NDJSON lines answered in order.
//
// Who asks is read per request with SO_PEERCRED (uid, gid, pid) and
// SO_PEERGROUPS (supplementary groups; /proc/PID/status as a fallback): uid 0
// or a member of the configured group may change things (`may_change`), the
// handler decides what that allows.
//
// Bounded, so that no client can stall the agent or its sources: a request
// line is at most 64 KiB (longer: too-large, then close); at most 64 clients
// at once (more: closed at once); a request must be complete and its answer
// read within 5 s, and an idle connection is closed after 30 s; a line that
// is not a JSON object gets its error and the connection is closed. Nothing
// here blocks: every read, write and timer is asynchronous.
#pragma once

#include <sys/types.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "audit/control_protocol.hpp"
#include "xfrm/result.hpp"

namespace ipsec {

struct ControlPeer {
  std::uint32_t uid{0}, gid{0};
  std::int32_t pid{0};
  std::string comm;          // /proc/PID/comm; empty when unreadable
  bool may_change{false};    // uid 0 or a member of the control group
  nlohmann::json json() const;  // {"uid","gid","pid","comm"}
};

struct ControlReply {
  bool ok{true};
  nlohmann::json result = nlohmann::json::object();
  ControlErrorCode code{ControlErrorCode::internal};
  std::string message;
  static ControlReply error(ControlErrorCode c, std::string m) {
    ControlReply r;
    r.ok = false;
    r.code = c;
    r.message = std::move(m);
    return r;
  }
};

struct ControlServerStats {
  std::uint64_t accepted{0};
  std::uint64_t refused_busy{0};  // closed at once: too many clients
  std::uint64_t requests{0};
  std::uint64_t errors{0};    // error responses
  std::uint64_t timeouts{0};  // closed for a stalled request or idleness
};

class ControlServer {
 public:
  struct Config {
    std::string path;
    std::string group;  // "" none; a name or a number
    std::size_t max_clients{64};
    std::chrono::milliseconds request_timeout{5000};
    std::chrono::milliseconds idle_timeout{30000};
  };
  using Handler = std::function<ControlReply(const ControlRequest&, const ControlPeer&)>;

  ControlServer(boost::asio::io_context& io, Config cfg, Handler handler);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Creates the parent directory if missing, removes a stale socket (never a
  // directory or a file, never one an agent still answers on), binds,
  // chmods/chgrps, listens and starts accepting. An error says why.
  Result<Unit> start();
  // Closes the socket and every client, and removes the socket file.
  void stop();

  const Config& config() const { return cfg_; }
  std::size_t clients() const { return sessions_.size(); }
  const ControlServerStats& stats() const { return stats_; }
  // Peer credentials of a connected socket (what a request is judged by).
  ControlPeer peer_of(int fd) const;

 private:
  class Session;
  friend class Session;
  void accept();
  void forget(Session* s) { sessions_.erase(s); }

  boost::asio::io_context& io_;
  Config cfg_;
  Handler handler_;
  std::optional<gid_t> gid_;
  boost::asio::local::stream_protocol::acceptor acceptor_;
  boost::asio::steady_timer retry_;  // accept failed (EMFILE): try again shortly
  std::set<Session*> sessions_;
  ControlServerStats stats_;
  dev_t dev_{0};
  ino_t ino_{0};
  bool running_{false};
};

// The Groups: line of a /proc/PID/status text (pure, for tests).
std::vector<gid_t> parse_proc_status_groups(std::string_view status_text);

}  // namespace ipsec
