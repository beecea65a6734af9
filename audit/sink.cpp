#include "audit/sink.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace ipsec {
namespace {

// Writes all of `data`; false on failure (errno set). Retries EINTR and
// short writes, so a record is either whole or reported as failed.
bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

std::uint64_t count_lines(std::string_view s) {
  std::uint64_t n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

Result<UniqueFd> open_append(const std::string& path) {
  std::error_code ec;
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
  if (fd < 0) {
    const int e = errno;
    return make_error(Errc::io, "cannot open " + path + ": " + std::strerror(e), e);
  }
  return UniqueFd(fd);
}

}  // namespace

Result<std::unique_ptr<FileSink>> FileSink::open(std::string path) {
  auto fd = open_append(path);
  if (!fd) return fd.error();
  std::unique_ptr<FileSink> s(new FileSink(std::move(path)));
  s->fd_ = std::move(*fd);
  return s;
}

void FileSink::write(std::string_view lines) {
  if (!fd_.valid() || !write_all(fd_.get(), lines)) {
    stats_.failed += count_lines(lines);
    stats_.last_errno = fd_.valid() ? errno : EBADF;
    return;
  }
  stats_.written += count_lines(lines);
}

Result<Unit> FileSink::reopen() {
  auto fd = open_append(path_);
  if (!fd) return fd.error();
  fd_ = std::move(*fd);
  return Unit{};
}

void FdSink::write(std::string_view lines) {
  if (!write_all(fd_, lines)) {
    stats_.failed += count_lines(lines);
    stats_.last_errno = errno;
    return;
  }
  stats_.written += count_lines(lines);
}

Result<OutputSpec> parse_output_spec(std::string_view spec) {
  OutputSpec o;
  if (spec == "stdout") {
    o.kind = OutputSpec::Kind::stdout_;
    return o;
  }
  if (spec == "null") {
    o.kind = OutputSpec::Kind::null;
    return o;
  }
  constexpr std::string_view kJsonl = "jsonl:";
  if (spec.substr(0, kJsonl.size()) == kJsonl && spec.size() > kJsonl.size()) {
    o.kind = OutputSpec::Kind::jsonl;
    o.path = std::string(spec.substr(kJsonl.size()));
    if (o.path.front() != '/') return make_error(Errc::malformed, "output path must be absolute: " + o.path);
    return o;
  }
  return make_error(Errc::malformed, "unknown output '" + std::string(spec) + "' (use jsonl:/PATH, stdout or null)");
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
  }
  return make_error(Errc::unsupported, "unknown sink kind");
}

}  // namespace ipsec
