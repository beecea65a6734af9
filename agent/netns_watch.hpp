// NetnsWatch: which network namespaces the XFRM tracker should watch, by
// identity (device and inode of the nsfs file), not by name: a namespace
// deleted and created again under the same name is a different one, and two
// names (or a name and a path) for one namespace are one.
//
// Specs: "" is the agent's own namespace; "all" is every name under
// /run/netns plus the agent's own; a plain NAME is /run/netns/NAME; anything
// with a '/' is a path (/proc/PID/ns/net, a container runtime's bind mount).
// A spec that is not there (yet) is looked for again on every scan.
//
// Scans run when /run/netns changes (inotify) and on a timer as the fallback
// (paths outside /run/netns, a bind mount not yet in place when the name
// appeared). Single-threaded: runs on the io_context thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "xfrm/netns.hpp"

namespace ipsec {

struct NetnsFound {
  std::string spec;   // "" for the agent's own, else a name or a path
  std::string label;  // what records say
  NetnsId id;
};

class NetnsWatch {
 public:
  using OnChange = std::function<void()>;

  NetnsWatch(boost::asio::io_context& io, std::vector<std::string> specs, std::chrono::milliseconds rescan,
             OnChange on_change);
  ~NetnsWatch();

  // What should be watched now, one entry per namespace (first spec wins),
  // and in `missing` the explicit specs that are not there.
  std::vector<NetnsFound> scan(std::vector<std::string>* missing = nullptr) const;
  // Starts the inotify watch and the timer; on_change runs after either fires.
  void start();
  void stop();
  bool follows_all() const { return all_; }

 private:
  void arm_timer(std::chrono::milliseconds after);
  void arm_inotify();

  boost::asio::io_context& io_;
  std::vector<std::string> specs_;  // without "all"
  bool all_{false};
  std::chrono::milliseconds rescan_;
  OnChange on_change_;
  boost::asio::steady_timer timer_;
  std::optional<boost::asio::posix::stream_descriptor> inotify_;
  bool stopped_{false};
};

// "init" when the agent runs in the initial network namespace, else the name
// under /run/netns that leads to it, else "self".
std::string own_netns_label();

// Whether the agent runs in the initial network namespace: kernel audit
// multicasts records there only (elsewhere the join succeeds and nothing ever
// arrives). nullopt when it cannot be told (an older kernel without the fixed
// init_net inode, inside a PID namespace where PID 1 is not the host's init).
std::optional<bool> in_initial_netns();

}  // namespace ipsec
