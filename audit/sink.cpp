#include "audit/sink.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "audit/datagram_sink.hpp"

namespace ipsec {

std::uint64_t count_lines(std::string_view s) {
  std::uint64_t n = 0;
  for (const char* p = s.data(), *end = p + s.size();
       (p = static_cast<const char*>(std::memchr(p, '\n', static_cast<std::size_t>(end - p)))) != nullptr; ++p)
    ++n;
  return n;
}

void Sink::count_written(std::uint64_t records) {
  stats_.written += records;
  stats_.healthy = true;
}

void Sink::count_failed(std::uint64_t records, int err) {
  // A new episode only once the last one's recovery was reported: a batch
  // that writes some lines and fails on the rest, while the sink was
  // failing, continues the episode (its records stay in the count that
  // output-recovered reports).
  if (stats_.healthy && reported_healthy_) {
    ++stats_.failure_episodes;
    stats_.episode_failed = 0;
  }
  stats_.healthy = false;
  stats_.failed += records;
  stats_.episode_failed += records;
  stats_.last_errno = err;
}

SinkTransition Sink::take_transition() {
  if (stats_.healthy == reported_healthy_) return SinkTransition::none;
  reported_healthy_ = stats_.healthy;
  return stats_.healthy ? SinkTransition::recovered : SinkTransition::failed;
}

namespace {

// Offset just past the last '\n' in s (0 if none): the whole lines in s.
std::size_t whole_lines(std::string_view s) {
  const auto p = s.rfind('\n');
  return p == std::string_view::npos ? 0 : p + 1;
}

Result<UniqueFd> open_append(const std::string& path) {
  std::error_code ec;
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  // O_RDWR, not O_WRONLY: a torn last line is found with pread (repair_tail).
  const int fd = ::open(path.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW, 0640);
  if (fd < 0) {
    const int e = errno;
    if (e == ELOOP) return make_error(Errc::io, "refusing " + path + ": it is a symbolic link", e);
    return make_error(Errc::io, "cannot open " + path + ": " + std::strerror(e), e);
  }
  UniqueFd owned(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return make_error(Errc::io, "cannot stat " + path + ": " + std::strerror(errno), errno);
  if (!S_ISREG(st.st_mode)) return make_error(Errc::io, "refusing " + path + ": not a regular file", EINVAL);
  if (st.st_uid != 0 && st.st_uid != ::geteuid())
    return make_error(
        Errc::io,
        "refusing " + path + ": owned by uid " + std::to_string(st.st_uid) + ", neither root nor this agent's user",
        EPERM);
  return owned;
}

// A file left with a partial last line (a crash, or an older writer) is cut
// back to its last whole line, so the next record starts on a line of its own.
Result<Unit> repair_tail(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_size == 0) return Unit{};
  char last = 0;
  if (::pread(fd, &last, 1, st.st_size - 1) != 1 || last == '\n') return Unit{};
  constexpr off_t kChunk = 4096;
  constexpr off_t kMaxScan = 16 << 20;
  char buf[kChunk];
  off_t end = st.st_size;
  while (end > 0 && st.st_size - end < kMaxScan) {
    const off_t start = end > kChunk ? end - kChunk : 0;
    const ssize_t n = ::pread(fd, buf, static_cast<std::size_t>(end - start), start);
    if (n <= 0) break;
    for (ssize_t i = n - 1; i >= 0; --i) {
      if (buf[i] == '\n') {
        if (::ftruncate(fd, start + i + 1) != 0)
          return make_error(Errc::io, "cannot cut the partial last line of " + path, errno);
        return Unit{};
      }
    }
    end = start;
  }
  if (end == 0) {
    if (::ftruncate(fd, 0) != 0) return make_error(Errc::io, "cannot cut the partial line of " + path, errno);
    return Unit{};
  }
  // A line longer than the scan: end it, so at least the next record is whole.
  if (::write(fd, "\n", 1) != 1) return make_error(Errc::io, "cannot end the partial last line of " + path, errno);
  return Unit{};
}

}  // namespace

Result<std::unique_ptr<FileSink>> FileSink::open(std::string path) {
  std::unique_ptr<FileSink> s(new FileSink(std::move(path)));
  if (auto r = s->open_file(); !r) return r.error();
  return s;
}

Result<Unit> FileSink::open_file() {
  auto fd = open_append(path_);
  if (!fd) return fd.error();
  if (auto r = repair_tail(fd->get(), path_); !r) return r.error();
  struct stat st {};
  if (::fstat(fd->get(), &st) != 0) return make_error(Errc::io, "cannot stat " + path_, errno);
  dev_ = st.st_dev;
  ino_ = st.st_ino;
  fd_ = std::move(*fd);
  pending_cut_.reset();
  return Unit{};
}

bool FileSink::write_counted(std::string_view lines, std::uint64_t records) {
  if (!fd_.valid()) {
    // The file could not be (re)opened: try again for each record.
    if (auto r = open_file(); !r) {
      count_failed(records, r.error().sys_errno ? r.error().sys_errno : EBADF);
      return false;
    }
  }
  const int fd = fd_.get();
  if (pending_cut_) {
    // Only ever shrink: a file truncated meanwhile (copytruncate) is not grown back with zeros.
    struct stat st {};
    if (::fstat(fd, &st) == 0 && st.st_size > *pending_cut_ && ::ftruncate(fd, *pending_cut_) != 0) {
      count_failed(records, errno);
      return false;
    }
    pending_cut_.reset();
  }
  std::size_t done = 0;
  int err = 0;
  while (done < lines.size()) {
    const ssize_t n = ::write(fd, lines.data() + done, lines.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      err = errno;
      break;
    }
    done += static_cast<std::size_t>(n);
  }
  if (done == lines.size()) {
    count_written(records);
    return true;
  }
  const std::size_t keep = whole_lines(lines.substr(0, done));
  if (done > keep) {
    // A partial record reached the file. O_APPEND left the offset just past it.
    const off_t end = ::lseek(fd, 0, SEEK_CUR);
    const off_t cut = end - static_cast<off_t>(done - keep);
    if (end < 0 || ::ftruncate(fd, cut) != 0) pending_cut_ = end < 0 ? std::nullopt : std::optional<off_t>(cut);
  }
  const std::uint64_t kept = count_lines(lines.substr(0, keep));
  if (kept > 0) count_written(kept);
  count_failed(records - kept, err ? err : EIO);
  return false;
}

Result<Unit> FileSink::reopen() {
  auto fd = open_append(path_);
  if (!fd) return fd.error();
  // Close the old one only now: a failed reopen keeps writing where it was.
  fd_ = std::move(*fd);
  if (auto r = repair_tail(fd_.get(), path_); !r) return r.error();
  struct stat st {};
  if (::fstat(fd_.get(), &st) == 0) {
    dev_ = st.st_dev;
    ino_ = st.st_ino;
  }
  pending_cut_.reset();
  return Unit{};
}

std::optional<SinkCheck> FileSink::check() {
  if (!fd_.valid()) return std::nullopt;  // write() retries the open
  struct stat st {};
  std::string what;
  if (::stat(path_.c_str(), &st) != 0) {
    if (errno != ENOENT) return std::nullopt;
    what = "the file was deleted or moved away";
  } else if (st.st_dev != dev_ || st.st_ino != ino_) {
    what = "the file was replaced";
  } else {
    return std::nullopt;
  }
  ++stats_.reopens;
  if (auto r = reopen(); !r) {
    fd_.reset();  // records to the old inode would be lost to readers: count them instead
    count_failed(0, r.error().sys_errno ? r.error().sys_errno : EIO);
    return SinkCheck{false, what + "; reopening failed: " + r.error().message};
  }
  return SinkCheck{true, what + "; reopened"};
}

FdSink::FdSink(int fd, std::string name) : fd_(fd), name_(std::move(name)) {
  struct stat st {};
  if (fd < 0 || ::fstat(fd, &st) != 0) return;
  if (S_ISSOCK(st.st_mode)) {
    mode_ = Mode::socket;
  } else if (S_ISFIFO(st.st_mode)) {
    const std::string self = "/proc/self/fd/" + std::to_string(fd);
    const int nb = ::open(self.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (nb >= 0) {
      own_ = UniqueFd(nb);
      fd_ = nb;
    }
  }
}

std::size_t FdSink::put(std::string_view data, int* err) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = mode_ == Mode::socket
                          ? ::send(fd_, data.data() + done, data.size() - done, MSG_DONTWAIT | MSG_NOSIGNAL)
                          : ::write(fd_, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      *err = errno;
      break;
    }
    done += static_cast<std::size_t>(n);
  }
  return done;
}

bool FdSink::write_counted(std::string_view lines, std::uint64_t records) {
  int err = 0;
  if (!carry_.empty()) {
    const std::size_t n = put(carry_, &err);
    carry_.erase(0, n);
    if (!carry_.empty()) {
      count_failed(records, err);
      return false;
    }
  }
  const std::size_t done = put(lines, &err);
  if (done == lines.size()) {
    count_written(records);
    return true;
  }
  std::size_t keep = whole_lines(lines.substr(0, done));
  if (done > keep) {
    // A stream cannot be cut back: finish this record before the next one.
    const std::size_t eol = lines.find('\n', done);
    keep = eol == std::string_view::npos ? lines.size() : eol + 1;
    carry_.assign(lines.substr(done, keep - done));
  }
  const std::uint64_t kept = count_lines(lines.substr(0, keep));
  if (kept > 0) count_written(kept);
  if (keep < lines.size()) count_failed(records - kept, err ? err : EIO);
  return false;
}

Result<OutputSpec> parse_output_spec(std::string_view spec) {
  OutputSpec o;
  auto with_path = [&](std::string_view prefix, OutputSpec::Kind kind,
                       bool optional) -> std::optional<Result<OutputSpec>> {
    if (spec == prefix.substr(0, prefix.size() - 1) && optional) {
      o.kind = kind;
      return Result<OutputSpec>(o);
    }
    if (spec.substr(0, prefix.size()) != prefix) return std::nullopt;
    o.kind = kind;
    o.path = std::string(spec.substr(prefix.size()));
    if (o.path.empty() || o.path.front() != '/')
      return Result<OutputSpec>(make_error(Errc::malformed, "output path must be absolute: '" + o.path + "'"));
    return Result<OutputSpec>(o);
  };
  if (spec == "stdout") {
    o.kind = OutputSpec::Kind::stdout_;
    return o;
  }
  if (spec == "null") {
    o.kind = OutputSpec::Kind::null;
    return o;
  }
  if (auto r = with_path("jsonl:", OutputSpec::Kind::jsonl, false)) return *r;
  if (auto r = with_path("journald:", OutputSpec::Kind::journald, true)) return *r;
  if (auto r = with_path("syslog:", OutputSpec::Kind::syslog, true)) return *r;
  return make_error(Errc::malformed,
                    "unknown output '" + std::string(spec) + "' (use jsonl:/PATH, journald, syslog, stdout or null)");
}

Result<std::unique_ptr<Sink>> open_sink(const OutputSpec& spec) {
  switch (spec.kind) {
    case OutputSpec::Kind::stdout_:
      return std::unique_ptr<Sink>(new FdSink(STDOUT_FILENO, "stdout"));
    case OutputSpec::Kind::null:
      return std::unique_ptr<Sink>(new NullSink());
    case OutputSpec::Kind::jsonl: {
      auto f = FileSink::open(spec.path);
      if (!f) return f.error();
      return std::unique_ptr<Sink>(std::move(*f));
    }
    case OutputSpec::Kind::journald:
    case OutputSpec::Kind::syslog: {
      auto d = DatagramSink::open(
          spec.kind == OutputSpec::Kind::journald ? DatagramSink::Format::journald : DatagramSink::Format::syslog,
          spec.path);
      if (!d) return d.error();
      return std::unique_ptr<Sink>(std::move(*d));
    }
  }
  return make_error(Errc::unsupported, "unknown sink kind");
}

}  // namespace ipsec
