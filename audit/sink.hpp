// Sinks take records. Line sinks (JSON Lines file, stdout) write the line the
// pipeline serialised once; structured sinks (journald, syslog) also get the
// Event to build their own fields. They never throw and never block on the
// event path: a failed write is counted (SinkStats) and the next record is
// tried again. open / write / reopen (SIGHUP, after logrotate) / check (timer)
// / close. Single-threaded: all calls come from the agent's io_context thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "audit/event.hpp"
#include "xfrm/fd.hpp"
#include "xfrm/result.hpp"

namespace ipsec {

struct SinkStats {
  std::uint64_t written{0};
  std::uint64_t failed{0};  // records not written, all time
  int last_errno{0};        // errno of the last failure, 0 if none yet
  bool healthy{true};       // the last write worked
  std::uint64_t failure_episodes{0};
  std::uint64_t episode_failed{0};  // records lost in the current (or last) failure episode
  std::uint64_t reopens{0};         // deleted or replaced file noticed and reopened
};

// What a sink's periodic check found: its file deleted or replaced, and
// whether reopening it worked.
struct SinkCheck {
  bool reopened{false};
  std::string what;
};

// What the last writes did to a sink's health, taken once by the pipeline.
enum class SinkTransition { none, failed, recovered };

class Sink {
 public:
  virtual ~Sink() = default;
  virtual std::string_view name() const = 0;
  // One or more whole '\n'-terminated records. True when all were written.
  virtual bool write(std::string_view lines) = 0;
  // One record: `line` is `e` serialised with its '\n'. Line sinks write the line.
  virtual bool write_event(const Event& e, std::string_view line) {
    (void)e;
    return write_counted(line, 1);
  }
  // `lines` holding `records` whole lines (the caller counted them): line
  // sinks need not count them again.
  virtual bool write_counted(std::string_view lines, std::uint64_t records) {
    (void)records;
    return write(lines);
  }
  // Batching (Pipeline::set_flush_scheduler): a sink that writes lines as a
  // byte stream (file, stdout, null) gets the records of a batch, held by the
  // pipeline, with one write_counted() at flush; one that sends a datagram
  // per record (journald, syslog) writes each at once.
  virtual bool batches_lines() const { return false; }
  virtual Result<Unit> reopen() { return Unit{}; }
  // Called on a timer: a file sink notices its path deleted or replaced and
  // reopens it. Returns what it noticed, when it did.
  virtual std::optional<SinkCheck> check() { return std::nullopt; }
  const SinkStats& stats() const { return stats_; }
  // Whether the sink started or stopped failing since the last call.
  SinkTransition take_transition();

 protected:
  void count_written(std::uint64_t records);
  void count_failed(std::uint64_t records, int err);
  SinkStats stats_;

 private:
  bool reported_healthy_{true};
};

std::uint64_t count_lines(std::string_view s);

// Appends to a regular file: opened O_APPEND|O_NOFOLLOW, created 0640, owned by
// root or by the agent's own user (anything else is refused). Each write() is
// one write(2) of whole lines. A write that fails half-way (disk full) is cut
// back with ftruncate to the last whole line, so the file only ever holds
// whole records; the cut is retried before the next record if it fails.
// There is no user-space buffer to lose.
class FileSink final : public Sink {
 public:
  static Result<std::unique_ptr<FileSink>> open(std::string path);
  std::string_view name() const override { return name_; }
  bool batches_lines() const override { return true; }
  bool write(std::string_view lines) override { return write_counted(lines, count_lines(lines)); }
  bool write_counted(std::string_view lines, std::uint64_t records) override;
  Result<Unit> reopen() override;
  // stat(path) against fstat(fd): a deleted or replaced file is reopened.
  std::optional<SinkCheck> check() override;

 private:
  explicit FileSink(std::string path) : path_(std::move(path)), name_("jsonl:" + path_) {}
  Result<Unit> open_file();
  std::string path_;
  std::string name_;
  UniqueFd fd_;
  dev_t dev_{0};
  ino_t ino_{0};
  std::optional<off_t> pending_cut_;  // whole-line offset still to cut back to
};

// Writes to an inherited descriptor (stdout), never blocking: a pipe is
// reopened through /proc/self/fd with O_NONBLOCK (its own open file
// description, so the shell's is untouched), a socket is written with
// MSG_DONTWAIT. EAGAIN counts the records as failed. A record cut in two by a
// full pipe is finished before the next one, so readers see whole lines.
class FdSink final : public Sink {
 public:
  FdSink(int fd, std::string name);
  std::string_view name() const override { return name_; }
  bool batches_lines() const override { return true; }
  bool write(std::string_view lines) override { return write_counted(lines, count_lines(lines)); }
  bool write_counted(std::string_view lines, std::uint64_t records) override;

 private:
  // Bytes written before EAGAIN or an error (errno kept in *err).
  std::size_t put(std::string_view data, int* err);
  enum class Mode { plain, socket } mode_{Mode::plain};
  int fd_;
  UniqueFd own_;  // the O_NONBLOCK reopening of a pipe
  std::string name_;
  std::string carry_;  // the unwritten tail of a record cut by a full pipe
};

// Accepts and counts everything: for benchmarks.
class NullSink final : public Sink {
 public:
  std::string_view name() const override { return "null"; }
  bool batches_lines() const override { return true; }
  bool write(std::string_view lines) override { return write_counted(lines, count_lines(lines)); }
  bool write_counted(std::string_view, std::uint64_t records) override {
    count_written(records);
    return true;
  }
};

// An output SPEC: "jsonl:PATH", "stdout", "null", "journald[:SOCKET]",
// "syslog[:SOCKET]" (the socket paths are for tests; defaults are
// /run/systemd/journal/socket and /dev/log).
struct OutputSpec {
  enum class Kind { jsonl, stdout_, null, journald, syslog } kind{Kind::jsonl};
  std::string path;
  bool operator==(const OutputSpec&) const = default;
};
Result<OutputSpec> parse_output_spec(std::string_view spec);
Result<std::unique_ptr<Sink>> open_sink(const OutputSpec& spec);

}  // namespace ipsec
