// Network namespaces by name (iproute2's /run/netns/NAME), for opening
// netlink sockets inside a namespace the process does not live in.
//
// setns(2) changes the namespace of the CALLING THREAD only. ScopedNetns
// moves the calling thread into a namespace and back; use it on one thread,
// and keep the scope short (nothing else on that thread should run inside).
// A socket keeps the namespace it was created in for its whole life, so a
// socket opened inside the scope stays bound to that namespace after it.
// Needs CAP_SYS_ADMIN.
#pragma once

#include <string>
#include <string_view>

#include "xfrm/fd.hpp"
#include "xfrm/netlink_socket.hpp"
#include "xfrm/result.hpp"

namespace ipsec {

class ScopedNetns {
 public:
  // Saves the calling thread's namespace and enters /run/netns/NAME. NAME is
  // a plain file name (no '/', not "." or "..").
  static Result<ScopedNetns> enter(std::string_view name);
  // The same for an open namespace file (nsfs: /run/netns/NAME,
  // /proc/PID/ns/net, a container runtime's bind mount).
  static Result<ScopedNetns> enter_fd(int netns_fd);

  ScopedNetns(ScopedNetns&&) noexcept = default;
  ScopedNetns& operator=(ScopedNetns&&) = delete;
  ScopedNetns(const ScopedNetns&) = delete;
  ScopedNetns& operator=(const ScopedNetns&) = delete;
  // Returns to the saved namespace if restore() was not called. A thread that
  // cannot return would go on working in the wrong namespace, so a failure
  // here aborts the process.
  ~ScopedNetns();

  // Returns to the saved namespace now, reporting failure. On failure the
  // thread is still in the target namespace and the destructor tries again
  // (and aborts if that fails too); setns to a namespace fd this thread held
  // a moment ago fails only when the kernel is out of memory.
  Result<Unit> restore();

 private:
  explicit ScopedNetns(UniqueFd saved) : saved_(std::move(saved)) {}
  UniqueFd saved_;  // the thread's original namespace; invalid once restored
};

// Opens a NetlinkSocket on `bus` inside the named namespace, returning the
// calling thread to its own namespace on every path.
Result<NetlinkSocket> open_netlink_socket_in_netns(std::string_view name, int bus);
Result<NetlinkSocket> open_netlink_socket_in_netns_fd(int netns_fd, int bus);

// A network namespace by identity: the device and inode of its nsfs file,
// the same for every name or path that leads to it, different for a
// namespace recreated under the same name.
struct NetnsId {
  unsigned long long dev{0}, ino{0};
  friend bool operator==(const NetnsId&, const NetnsId&) = default;
};

// A namespace as given: a plain NAME is /run/netns/NAME (iproute2), anything
// with a '/' is a path (/proc/PID/ns/net, a bind mount). The fd keeps the
// namespace alive while it is held.
struct NetnsHandle {
  std::string path;
  NetnsId id;
  UniqueFd fd;
};
std::string netns_path(std::string_view spec);
Result<NetnsHandle> open_netns(std::string_view spec);
// Identity of the namespace at `path` without keeping it open.
Result<NetnsId> netns_id(const std::string& path);

}  // namespace ipsec
