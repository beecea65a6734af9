#include "agent/policy_store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ipsec {

namespace {

std::string errno_text(int e) { return std::strerror(e); }

struct Fd {
  int fd{-1};
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

Result<Unit> write_all(int fd, const std::string& s) {
  std::size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return make_error(Errc::io, errno_text(errno), errno);
    }
    off += static_cast<std::size_t>(n);
  }
  return Unit{};
}

}  // namespace

PolicyStore::PolicyStore(std::string state_dir) : dir_(std::move(state_dir)) {
  while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
  path_ = dir_ + "/" + kPolicyFileName;
}

PolicyLoad PolicyStore::load() const {
  PolicyLoad r;
  auto reject = [&](std::string why) {
    r.state = PolicyLoad::State::rejected;
    r.error = path_ + ": " + std::move(why);
    return r;
  };
  // O_NONBLOCK: a FIFO put there must not hang the agent.
  Fd f(::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY));
  if (f.fd < 0) {
    const int e = errno;
    if (e == ENOENT) {
      r.state = PolicyLoad::State::missing;
      return r;
    }
    if (e == ELOOP) return reject("is a symbolic link (not followed)");
    return reject("cannot be opened: " + errno_text(e));
  }
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) return reject("cannot be read: " + errno_text(errno));
  if (S_ISDIR(st.st_mode)) return reject("is a directory, not a file");
  if (!S_ISREG(st.st_mode)) return reject("is not a regular file");
  if (st.st_size > static_cast<off_t>(kMaxPolicyFileBytes))
    return reject("is " + std::to_string(st.st_size) + " bytes, more than a policy file can be (" +
                  std::to_string(kMaxPolicyFileBytes) + ")");
  std::string text(kMaxPolicyFileBytes + 1, '\0');
  std::size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::read(f.fd, text.data() + got, text.size() - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      return reject("cannot be read: " + errno_text(errno));
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  text.resize(got);
  auto p = parse_audit_policy(text);
  if (!p) return reject(p.error().message);
  r.state = PolicyLoad::State::loaded;
  r.policy = *p;
  return r;
}

Result<Unit> PolicyStore::save(const AuditPolicy& p) const {
  auto fail = [&](const std::string& what, int e) {
    return make_error(Errc::io, "cannot write " + path_ + ": " + what + ": " + errno_text(e), e);
  };
  // Refuse early and clearly when something other than a file is in the way
  // (rename() would replace a symlink, and fail late on a directory).
  struct stat st {};
  if (::lstat(path_.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
    return make_error(Errc::io, "cannot write " + path_ + ": " +
                                    (S_ISDIR(st.st_mode) ? "a directory is in its place" : "it is not a regular file"));
  const std::string tmp = path_ + ".tmp." + std::to_string(::getpid());
  ::unlink(tmp.c_str());  // one left by a crash of an agent with this pid
  {
    Fd f(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0640));
    if (f.fd < 0) return fail("create " + tmp, errno);
    if (auto w = write_all(f.fd, serialize_audit_policy(p)); !w) {
      ::unlink(tmp.c_str());
      return fail("write " + tmp, w.error().sys_errno);
    }
    if (::fsync(f.fd) != 0) {
      const int e = errno;
      ::unlink(tmp.c_str());
      return fail("fsync " + tmp, e);
    }
  }
  if (::rename(tmp.c_str(), path_.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    return fail("rename", e);
  }
  Fd d(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (d.fd < 0) return fail("open directory " + dir_, errno);
  if (::fsync(d.fd) != 0) return fail("fsync directory " + dir_, errno);
  return Unit{};
}

}  // namespace ipsec
