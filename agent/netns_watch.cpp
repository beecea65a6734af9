#include "agent/netns_watch.hpp"

#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

namespace ipsec {

namespace {
// Fixed inodes of the initial namespaces (include/linux/proc_ns.h). The net
// one exists since Linux 6.9 (PROC_NET_INIT_INO); the PID one since 3.8.
constexpr ino_t kInitNetIno = 0xEFFFFFF9U;
constexpr ino_t kInitPidIno = 0xEFFFFFFCU;

bool same_file(const char* a, const char* b) {
  struct stat sa = {}, sb = {};
  return ::stat(a, &sa) == 0 && ::stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}
}  // namespace

std::optional<bool> in_initial_netns() {
  struct stat self = {};
  if (::stat("/proc/self/ns/net", &self) != 0) return std::nullopt;
  if (self.st_ino == kInitNetIno) return true;
  struct stat pid = {}, one = {};
  // PID 1 is the host's init only in the initial PID namespace.
  if (::stat("/proc/self/ns/pid", &pid) != 0 || pid.st_ino != kInitPidIno) return std::nullopt;
  if (::stat("/proc/1/ns/net", &one) != 0) return std::nullopt;
  // With the fixed inode in this kernel, a different one is another netns.
  if (one.st_ino == kInitNetIno) return false;
  return one.st_dev == self.st_dev && one.st_ino == self.st_ino;
}

std::string own_netns_label() {
  if (in_initial_netns().value_or(false)) return "init";
  std::error_code ec;
  for (const auto& de : std::filesystem::directory_iterator("/run/netns", ec))
    if (same_file(de.path().c_str(), "/proc/self/ns/net")) return de.path().filename();
  return "self";
}

NetnsWatch::NetnsWatch(boost::asio::io_context& io, std::vector<std::string> specs, std::chrono::milliseconds rescan,
                       OnChange on_change)
    : io_(io), rescan_(rescan), on_change_(std::move(on_change)), timer_(io) {
  for (auto& s : specs) {
    if (s == "all")
      all_ = true;
    else
      specs_.push_back(std::move(s));
  }
  if (all_) specs_.insert(specs_.begin(), "");
}

NetnsWatch::~NetnsWatch() { stop(); }

std::vector<NetnsFound> NetnsWatch::scan(std::vector<std::string>* missing) const {
  std::vector<std::string> specs = specs_;
  if (all_) {
    std::error_code ec;
    for (const auto& de : std::filesystem::directory_iterator("/run/netns", ec)) specs.push_back(de.path().filename());
  }
  std::vector<NetnsFound> out;
  for (const auto& spec : specs) {
    auto id = netns_id(spec.empty() ? std::string("/proc/self/ns/net") : netns_path(spec));
    if (!id) {
      // A name found by listing /run/netns may be half made (no bind mount yet)
      // or just gone: the next scan looks again. An explicit one is reported.
      if (missing != nullptr && (!all_ || std::find(specs_.begin(), specs_.end(), spec) != specs_.end()))
        missing->push_back(spec);
      continue;
    }
    bool dup = false;
    for (const auto& f : out) dup = dup || f.id == *id;
    if (dup) continue;  // one namespace, watched once
    out.push_back(NetnsFound{spec, spec.empty() ? own_netns_label() : spec, *id});
  }
  return out;
}

void NetnsWatch::start() {
  // Only when there is something beyond the agent's own namespace to follow.
  if (!all_ && (specs_.empty() || (specs_.size() == 1 && specs_[0].empty()))) return;
  const int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd >= 0 && ::inotify_add_watch(fd, "/run/netns", IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM) >= 0) {
    inotify_.emplace(io_, fd);
    arm_inotify();
  } else if (fd >= 0) {
    ::close(fd);
  }
  arm_timer(rescan_);
}

void NetnsWatch::stop() {
  stopped_ = true;
  timer_.cancel();
  if (inotify_) {
    boost::system::error_code ec;
    inotify_->cancel(ec);
    inotify_->close(ec);
  }
}

void NetnsWatch::arm_timer(std::chrono::milliseconds after) {
  timer_.expires_after(after);  // replaces a pending one
  timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || stopped_) return;
    on_change_();
    arm_timer(rescan_);
  });
}

void NetnsWatch::arm_inotify() {
  inotify_->async_wait(boost::asio::posix::stream_descriptor::wait_read, [this](const boost::system::error_code& ec) {
    if (ec || stopped_) return;
    alignas(inotify_event) char buf[4096];
    while (::read(inotify_->native_handle(), buf, sizeof buf) > 0) {
    }
    // `ip netns add` creates the name, then bind-mounts the namespace on it.
    arm_timer(std::chrono::milliseconds(100));
    arm_inotify();
  });
}

}  // namespace ipsec
