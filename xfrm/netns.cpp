#include "xfrm/netns.hpp"

#include <fcntl.h>
#include <sched.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

namespace ipsec {

namespace {
Error sys_error(const std::string& what) {
  const int e = errno;
  return make_error(Errc::io, what + ": " + std::strerror(e), e);
}
}  // namespace

Result<ScopedNetns> ScopedNetns::enter(std::string_view name) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string_view::npos ||
      name.find('\0') != std::string_view::npos)
    return make_error(Errc::malformed, "netns name must be a plain file name");
  const std::string path = "/run/netns/" + std::string(name);
  UniqueFd target(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!target.valid()) return sys_error("open " + path);
  // thread-self, not self: setns acts on this thread, so save this thread's namespace.
  UniqueFd saved(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!saved.valid()) return sys_error("open /proc/thread-self/ns/net");
  if (::setns(target.get(), CLONE_NEWNET) < 0) return sys_error("setns " + path);
  return ScopedNetns(std::move(saved));
}

Result<Unit> ScopedNetns::restore() {
  if (!saved_.valid()) return Unit{};
  if (::setns(saved_.get(), CLONE_NEWNET) < 0) return sys_error("setns back to the original netns");
  saved_.reset();
  return Unit{};
}

ScopedNetns::~ScopedNetns() {
  if (saved_.valid() && !restore()) std::abort();
}

Result<NetlinkSocket> open_netlink_socket_in_netns(std::string_view name, int bus) {
  auto scope = ScopedNetns::enter(name);
  if (!scope) return scope.error();
  auto sock = NetlinkSocket::open(bus);
  if (auto back = scope->restore(); !back) return back.error();
  return sock;
}

}  // namespace ipsec
