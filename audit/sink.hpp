// Sinks take serialised records (whole lines). They never throw on the event
// path: a failed write is counted and reported, and the next record is tried
// again. open / write / reopen (SIGHUP, after logrotate) / close.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "xfrm/fd.hpp"
#include "xfrm/result.hpp"

namespace ipsec {

struct SinkStats {
  std::uint64_t written{0};
  std::uint64_t failed{0};
  int last_errno{0};
};

class Sink {
 public:
  virtual ~Sink() = default;
  virtual std::string_view name() const = 0;
  // One or more whole '\n'-terminated records.
  virtual void write(std::string_view lines) = 0;
  virtual Result<Unit> reopen() { return Unit{}; }
  const SinkStats& stats() const { return stats_; }

 protected:
  SinkStats stats_;
};

// Appends to a file. Each write() is one write(2) of whole lines on an
// O_APPEND descriptor, so a crash never leaves a partial record behind except
// on a short write (disk full), which is counted; there is no user-space
// buffer to lose.
class FileSink final : public Sink {
 public:
  static Result<std::unique_ptr<FileSink>> open(std::string path);
  std::string_view name() const override { return name_; }
  void write(std::string_view lines) override;
  Result<Unit> reopen() override;

 private:
  explicit FileSink(std::string path) : path_(std::move(path)), name_("jsonl:" + path_) {}
  std::string path_;
  std::string name_;
  UniqueFd fd_;
};

// Writes to an inherited descriptor (stdout). Not owned, never closed.
class FdSink final : public Sink {
 public:
  FdSink(int fd, std::string name) : fd_(fd), name_(std::move(name)) {}
  std::string_view name() const override { return name_; }
  void write(std::string_view lines) override;

 private:
  int fd_;
  std::string name_;
};

// Accepts and counts everything: for benchmarks.
class NullSink final : public Sink {
 public:
  std::string_view name() const override { return "null"; }
  void write(std::string_view) override { ++stats_.written; }
};

// An --output SPEC: "jsonl:PATH", "stdout" or "null".
struct OutputSpec {
  enum class Kind { jsonl, stdout_, null } kind{Kind::jsonl};
  std::string path;
};
Result<OutputSpec> parse_output_spec(std::string_view spec);
Result<std::unique_ptr<Sink>> open_sink(const OutputSpec& spec);

}  // namespace ipsec
