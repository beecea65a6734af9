#include "xfrm/netns.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/statfs.h>

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

constexpr long kNsfsMagic = 0x6e736673;  // NSFS_MAGIC

bool statfs_is_nsfs(int fd) {
  struct statfs sf = {};
  return ::fstatfs(fd, &sf) == 0 && static_cast<long>(sf.f_type) == kNsfsMagic;
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

Result<ScopedNetns> ScopedNetns::enter_fd(int netns_fd) {
  UniqueFd saved(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!saved.valid()) return sys_error("open /proc/thread-self/ns/net");
  if (::setns(netns_fd, CLONE_NEWNET) < 0) return sys_error("setns");
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

Result<NetlinkSocket> open_netlink_socket_in_netns_fd(int netns_fd, int bus) {
  auto scope = ScopedNetns::enter_fd(netns_fd);
  if (!scope) return scope.error();
  auto sock = NetlinkSocket::open(bus);
  if (auto back = scope->restore(); !back) return back.error();
  return sock;
}

std::string netns_path(std::string_view spec) {
  if (spec.find('/') != std::string_view::npos) return std::string(spec);
  return "/run/netns/" + std::string(spec);
}

Result<NetnsHandle> open_netns(std::string_view spec) {
  if (spec.empty() || spec == "." || spec == ".." || spec.find('\0') != std::string_view::npos)
    return make_error(Errc::malformed, "netns must be a name under /run/netns or a path");
  NetnsHandle h;
  h.path = netns_path(spec);
  h.fd.reset(::open(h.path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!h.fd.valid()) return sys_error("open " + h.path);
  struct stat st = {};
  if (::fstat(h.fd.get(), &st) != 0) return sys_error("stat " + h.path);
  // An nsfs file; a plain file left behind by a failed `ip netns add` (no
  // bind mount on it) is not a namespace.
  if (!statfs_is_nsfs(h.fd.get())) return make_error(Errc::unsupported, h.path + " is not a namespace file");
  h.id = NetnsId{static_cast<unsigned long long>(st.st_dev), static_cast<unsigned long long>(st.st_ino)};
  return h;
}

Result<NetnsId> netns_id(const std::string& path) {
  auto h = open_netns(path);
  if (!h) return h.error();
  return h->id;
}

}  // namespace ipsec
