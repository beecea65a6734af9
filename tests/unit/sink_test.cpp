#include "audit/sink.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "audit/catalogue.hpp"
#include "audit/pipeline.hpp"
#include "capture_sink.hpp"

using namespace ipsec;
namespace fs = std::filesystem;

namespace {
std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
fs::path tmpdir() {
  auto d = fs::temp_directory_path() / ("ipsec-audit-sink-" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}
}  // namespace

TEST(OutputSpec, Parse) {
  EXPECT_EQ(parse_output_spec("stdout")->kind, OutputSpec::Kind::stdout_);
  EXPECT_EQ(parse_output_spec("jsonl:/var/log/x.jsonl")->path, "/var/log/x.jsonl");
  EXPECT_FALSE(parse_output_spec("jsonl:relative.jsonl"));
  EXPECT_FALSE(parse_output_spec("jsonl:"));
  EXPECT_FALSE(parse_output_spec("syslog:relative"));
  EXPECT_FALSE(parse_output_spec("journal"));
  EXPECT_EQ(parse_output_spec("journald")->kind, OutputSpec::Kind::journald);
  EXPECT_EQ(parse_output_spec("journald")->path, "");
  EXPECT_EQ(parse_output_spec("journald:/run/j.sock")->path, "/run/j.sock");
  EXPECT_EQ(parse_output_spec("syslog")->kind, OutputSpec::Kind::syslog);
  EXPECT_EQ(parse_output_spec("syslog:/dev/log")->path, "/dev/log");
}

TEST(FileSink, AppendsWholeLinesAndReopensAfterRotation) {
  const auto dir = tmpdir();
  const auto p = dir / "sub" / "events.jsonl";
  auto s = FileSink::open(p.string());
  ASSERT_TRUE(s) << s.error().message;
  (*s)->write("{\"a\":1}\n");
  fs::rename(p, dir / "events.jsonl.1");  // logrotate
  (*s)->write("{\"a\":2}\n");             // still into the rotated file
  ASSERT_TRUE((*s)->reopen());
  (*s)->write("{\"a\":3}\n{\"a\":4}\n");
  EXPECT_EQ(slurp(dir / "events.jsonl.1"), "{\"a\":1}\n{\"a\":2}\n");
  EXPECT_EQ(slurp(p), "{\"a\":3}\n{\"a\":4}\n");
  EXPECT_EQ((*s)->stats().written, 4u);
  EXPECT_EQ((*s)->stats().failed, 0u);
  struct stat st {};
  ASSERT_EQ(::stat(p.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  fs::remove_all(dir);
}

TEST(FileSink, FailureIsCountedNotThrown) {
  auto s = FdSink(-1, "broken");
  s.write("x\ny\n");
  EXPECT_EQ(s.stats().failed, 2u);
  EXPECT_EQ(s.stats().written, 0u);
  EXPECT_FALSE(s.stats().healthy);
  EXPECT_EQ(s.stats().last_errno, EBADF);
}

namespace {
// RLIMIT_FSIZE makes the kernel itself cut a write short at the limit (then
// EFBIG), as a full disk does: the real partial-write path, without a mount.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    ::getrlimit(RLIMIT_FSIZE, &old_);
    old_handler_ = std::signal(SIGXFSZ, SIG_IGN);
    rlimit r = old_;
    r.rlim_cur = bytes;
    ::setrlimit(RLIMIT_FSIZE, &r);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &old_);
    std::signal(SIGXFSZ, old_handler_);
  }

 private:
  rlimit old_{};
  void (*old_handler_)(int){};
};

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> v;
  std::size_t start = 0;
  for (std::size_t i = 0; i < s.size(); ++i)
    if (s[i] == '\n') {
      v.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  if (start != s.size()) v.push_back("PARTIAL:" + s.substr(start));
  return v;
}
}  // namespace

TEST(FileSink, AWriteThatFailsHalfWayIsCutBackToWholeLines) {
  const auto dir = tmpdir();
  const auto p = dir / "full.jsonl";
  fs::remove(p);
  auto s = FileSink::open(p.string());
  ASSERT_TRUE(s) << s.error().message;
  const std::string rec = "{\"record\":\"" + std::string(40, 'x') + "\"}\n";  // 55 bytes
  {
    FileSizeLimit limit(200);  // room for 3 records and a piece of the 4th
    for (int i = 0; i < 6; ++i) (*s)->write(rec);
    // The batch form: two whole records fit only partly.
    (*s)->write(rec + rec);
  }
  EXPECT_EQ(slurp(p), rec + rec + rec) << "only whole lines, the cut-off 4th record removed";
  EXPECT_EQ((*s)->stats().written, 3u);
  EXPECT_EQ((*s)->stats().failed, 5u);
  EXPECT_EQ((*s)->stats().last_errno, EFBIG);
  EXPECT_EQ((*s)->take_transition(), SinkTransition::failed);
  EXPECT_EQ((*s)->stats().failure_episodes, 1u);
  // Space again: the next record lands on a line of its own.
  (*s)->write(rec);
  EXPECT_EQ(slurp(p), rec + rec + rec + rec);
  EXPECT_EQ((*s)->stats().episode_failed, 5u);
  EXPECT_EQ((*s)->take_transition(), SinkTransition::recovered);
  EXPECT_EQ((*s)->take_transition(), SinkTransition::none);
  for (const auto& l : lines_of(slurp(p))) EXPECT_EQ(l + "\n", rec);
  fs::remove_all(dir);
}

TEST(FileSink, APartialLineLeftByAnotherWriterIsCutAtOpen) {
  const auto dir = tmpdir();
  const auto p = dir / "torn.jsonl";
  {
    std::ofstream o(p);
    o << "{\"a\":1}\n{\"a\":2}\n{\"a\":";
  }
  auto s = FileSink::open(p.string());
  ASSERT_TRUE(s) << s.error().message;
  (*s)->write("{\"a\":3}\n");
  EXPECT_EQ(slurp(p), "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n");
  {
    std::ofstream o(p, std::ios::trunc);
    o << "no newline at all";
  }
  ASSERT_TRUE((*s)->reopen());
  (*s)->write("{\"a\":4}\n");
  EXPECT_EQ(slurp(p), "{\"a\":4}\n");
  fs::remove_all(dir);
}

TEST(FileSink, RefusesSymlinksForeignOwnersAndNonFiles) {
  const auto dir = tmpdir();
  const auto target = dir / "target";
  { std::ofstream o(target); }
  fs::create_symlink(target, dir / "link.jsonl");
  auto l = FileSink::open((dir / "link.jsonl").string());
  ASSERT_FALSE(l);
  EXPECT_NE(l.error().message.find("symbolic link"), std::string::npos) << l.error().message;
  fs::create_directory(dir / "adir");
  auto d = FileSink::open((dir / "adir").string());
  EXPECT_FALSE(d);
  if (::geteuid() == 0) {
    ASSERT_EQ(::chown(target.c_str(), 65534, 65534), 0);
    auto f = FileSink::open(target.string());
    ASSERT_FALSE(f);
    EXPECT_NE(f.error().message.find("owned by uid 65534"), std::string::npos) << f.error().message;
  }
  fs::remove_all(dir);
}

TEST(FileSink, ADeletedOrReplacedFileIsNoticedAndReopened) {
  const auto dir = tmpdir();
  const auto p = dir / "events.jsonl";
  auto s = FileSink::open(p.string());
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_FALSE((*s)->check());
  fs::remove(p);
  auto c = (*s)->check();
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->reopened);
  EXPECT_NE(c->what.find("deleted"), std::string::npos);
  (*s)->write("{\"a\":1}\n");
  EXPECT_EQ(slurp(p), "{\"a\":1}\n");
  {
    std::ofstream o(dir / "new");
  }
  fs::rename(dir / "new", p);
  c = (*s)->check();
  ASSERT_TRUE(c);
  EXPECT_NE(c->what.find("replaced"), std::string::npos);
  (*s)->write("{\"a\":2}\n");
  EXPECT_EQ(slurp(p), "{\"a\":2}\n");
  EXPECT_EQ((*s)->stats().reopens, 2u);
  EXPECT_FALSE((*s)->check());
  fs::remove_all(dir);
}

TEST(FdSink, AFullPipeFailsRecordsWithoutBlockingAndKeepsLinesWhole) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  UniqueFd r(p[0]), w(p[1]);
  FdSink s(w.get(), "pipe");
  const std::string rec = std::string(999, 'r') + "\n";
  int i = 0;
  for (; i < 1000 && s.stats().failed == 0; ++i) s.write(rec);  // a 64 KiB pipe fills long before
  ASSERT_GT(s.stats().failed, 0u) << "never failed: the write blocked or the pipe is unbounded";
  EXPECT_EQ(s.stats().last_errno, EAGAIN);
  // Drain, then write once more: what the reader sees is whole records only.
  ::fcntl(r.get(), F_SETFL, O_NONBLOCK);
  std::string got;
  char buf[65536];
  auto drain = [&] {
    for (ssize_t n; (n = ::read(r.get(), buf, sizeof buf)) > 0;) got.append(buf, static_cast<std::size_t>(n));
  };
  drain();
  s.write(rec);
  drain();
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.size() % rec.size(), 0u);
  EXPECT_EQ(got.size() / rec.size(), s.stats().written);
  EXPECT_EQ(s.stats().written + s.stats().failed, static_cast<std::uint64_t>(i) + 1);
}

TEST(Pipeline, PolicySuppressesByClass) {
  Pipeline p("h");
  auto* null = new NullSink();
  p.add_sink(std::unique_ptr<Sink>(null));
  Event ok;
  ok.kind = EventKind::integrity_check_failed;
  Event fault;
  fault.kind = EventKind::critical_failure;
  p.submit(ok);
  p.submit(fault);
  EXPECT_EQ(null->stats().written, 2u);
  p.set_policy(AuditPolicy{false, true});
  p.submit(ok);
  p.submit(fault);
  EXPECT_EQ(null->stats().written, 3u);
  EXPECT_EQ(p.stats().suppressed, 1u);
  p.set_policy(AuditPolicy{true, false});
  p.submit(ok);
  p.submit(fault);
  EXPECT_EQ(null->stats().written, 4u);
  EXPECT_EQ(p.stats().suppressed, 2u);
}

TEST(Pipeline, AuditTrailRecordsBypassThePolicy) {
  Pipeline p("h");
  auto* null = new NullSink();
  p.add_sink(std::unique_ptr<Sink>(null));
  p.set_policy(AuditPolicy{false, false});
  for (auto k : {EventKind::events_lost, EventKind::audit_policy_changed, EventKind::kernel_audit_changed,
                 EventKind::output_failed, EventKind::output_recovered}) {
    Event e;
    e.kind = k;
    p.submit(e);
  }
  Event drop;
  drop.kind = EventKind::incorrect_spi;
  p.submit(drop);
  EXPECT_EQ(null->stats().written, 5u);
  EXPECT_EQ(p.stats().suppressed, 1u);
}

namespace {
// Fails while `down` is set.
class FlakySink final : public Sink {
 public:
  bool down{false};
  std::string_view name() const override { return "flaky"; }
  bool write(std::string_view lines) override {
    if (down) {
      count_failed(count_lines(lines), ENOSPC);
      return false;
    }
    count_written(count_lines(lines));
    return true;
  }
};

}  // namespace

TEST(Pipeline, AFailingSinkIsReportedOncePerEpisodeOnTheOthersWithTheLoss) {
  Pipeline p("h");
  auto* flaky = new FlakySink();
  auto* cap = new Capture();
  p.add_sink(std::unique_ptr<Sink>(flaky));
  p.add_sink(std::unique_ptr<Sink>(cap));
  Event e;
  e.kind = EventKind::policy_added;
  p.submit(e);
  flaky->down = true;
  for (int i = 0; i < 10; ++i) p.submit(e);
  flaky->down = false;
  p.submit(e);
  std::vector<std::string> kinds;
  for (const auto& r : cap->records) kinds.push_back(r["event"]);
  std::vector<std::string> want{"policy-added", "policy-added", "output-failed"};
  for (int i = 0; i < 9; ++i) want.push_back("policy-added");
  want.push_back("policy-added");
  want.push_back("output-recovered");
  EXPECT_EQ(kinds, want);
  const auto& failed = cap->records[2];
  EXPECT_EQ(failed["output"]["name"], "flaky");
  EXPECT_EQ(failed["output"]["last_error"], std::strerror(ENOSPC));
  const auto& rec = cap->records.back();
  // 10 policy records and the output-failed record itself did not reach it.
  EXPECT_EQ(rec["output"]["lost"], 11);
  EXPECT_EQ(flaky->stats().failed, 11u);
  EXPECT_EQ(flaky->stats().written + flaky->stats().failed, cap->records.size());
  EXPECT_EQ(flaky->stats().failure_episodes, 1u);
}

TEST(Pipeline, ADeletedOutputFileIsReopenedWithARecord) {
  const auto dir = tmpdir();
  const auto path = dir / "events.jsonl";
  Pipeline p("h");
  auto f = FileSink::open(path.string());
  ASSERT_TRUE(f);
  p.add_sink(std::move(*f));
  auto* cap = new Capture();
  p.add_sink(std::unique_ptr<Sink>(cap));
  p.check_outputs();
  EXPECT_TRUE(cap->records.empty());
  fs::remove(path);
  p.check_outputs();
  ASSERT_EQ(cap->records.size(), 1u);
  EXPECT_EQ(cap->records[0]["event"], "output-recovered");
  EXPECT_NE(cap->records[0]["output"]["reason"].get<std::string>().find("deleted"), std::string::npos);
  const auto in_file = slurp(path);
  EXPECT_NE(in_file.find("output-recovered"), std::string::npos) << "the record is in the new file too";
  fs::remove_all(dir);
}

namespace {
// A line sink that counts its write calls.
struct CountingLineSink final : Sink {
  std::string_view name() const override { return "counting"; }
  bool batches_lines() const override { return true; }
  bool write(std::string_view lines) override {
    ++writes;
    data.append(lines);
    count_written(count_lines(lines));
    return true;
  }
  int writes{0};
  std::string data;
};
}  // namespace

TEST(Pipeline, BatchedRecordsGoOutInOneWriteAtTheScheduledFlush) {
  Pipeline p("h");
  auto* line = new CountingLineSink();
  auto* structured = new Capture();  // not a line sink: written at once
  p.add_sink(std::unique_ptr<Sink>(line));
  p.add_sink(std::unique_ptr<Sink>(structured));
  std::vector<std::function<void()>> posted;
  p.set_flush_scheduler([&](std::function<void()> f) { posted.push_back(std::move(f)); });
  Event e;
  e.kind = EventKind::policy_added;
  for (int i = 0; i < 5; ++i) p.submit(e);
  EXPECT_EQ(line->writes, 0);
  EXPECT_EQ(structured->records.size(), 5u);
  ASSERT_EQ(posted.size(), 1u) << "one flush per batch";
  auto first = posted[0];
  first();
  EXPECT_EQ(line->writes, 1);
  EXPECT_EQ(count_lines(line->data), 5u);
  EXPECT_EQ(line->stats().written, 5u);
  // The next record starts a new batch; flush() on its own (stop) empties it.
  p.submit(e);
  EXPECT_EQ(posted.size(), 2u);
  p.flush();
  EXPECT_EQ(line->writes, 2);
  auto second = posted[1];
  second();  // the late scheduled flush finds nothing: no empty write
  EXPECT_EQ(line->writes, 2);
  EXPECT_EQ(count_lines(line->data), 6u);
}

TEST(Pipeline, ABatchThatFailsHalfWayLeavesWholeLinesAndCountsTheRest) {
  const auto dir = tmpdir();
  const auto path = dir / "batch.jsonl";
  fs::remove(path);
  auto fs_ = FileSink::open(path.string());
  ASSERT_TRUE(fs_) << fs_.error().message;
  Pipeline p("h");
  auto* file = fs_->release();
  auto* cap = new Capture();
  p.add_sink(std::unique_ptr<Sink>(file));
  p.add_sink(std::unique_ptr<Sink>(cap));
  std::vector<std::function<void()>> posted;
  p.set_flush_scheduler([&](std::function<void()> f) { posted.push_back(std::move(f)); });
  Event e;
  e.kind = EventKind::policy_added;
  std::string one;
  JsonWriter("h").write(e, one);
  {
    FileSizeLimit limit(static_cast<rlim_t>(one.size() * 3 + one.size() / 2));
    for (int i = 0; i < 6; ++i) p.submit(e);
    ASSERT_EQ(posted.size(), 1u);
    auto flush = posted[0];  // a copy: the flush posts again (the output-failed record)
    flush();
  }
  const auto lines = lines_of(slurp(path));
  ASSERT_EQ(lines.size(), 3u) << "whole lines only";
  for (const auto& l : lines) EXPECT_EQ(l + "\n", one);
  EXPECT_EQ(file->stats().written, 3u);
  EXPECT_EQ(file->stats().failed, 3u);
  EXPECT_EQ(file->stats().written + file->stats().failed, 6u) << "every record of the batch is accounted for";
  // The failure was reported (to the capture sink at once, to the file in the next batch).
  ASSERT_FALSE(cap->records.empty());
  EXPECT_EQ(cap->records.back()["event"], "output-failed");
  p.flush();
  fs::remove_all(dir);
}

// A batch that writes some lines and fails on the rest while the sink was
// already failing continues the failure episode: output-recovered must report
// every record lost since the failure began (seen in live.outputs with
// batching: 211 failed, 203 reported).
namespace {
class PartialSink final : public Sink {
 public:
  std::string_view name() const override { return "partial"; }
  // Each call: how many of the lines fit, in order (all of them when empty).
  std::vector<std::uint64_t> fits;
  bool write(std::string_view lines) override {
    const std::uint64_t n = count_lines(lines);
    std::uint64_t ok = n;
    if (!fits.empty()) {
      ok = std::min(n, fits.front());
      fits.erase(fits.begin());
    }
    if (ok > 0) count_written(ok);
    if (ok < n) count_failed(n - ok, ENOSPC);
    return ok == n;
  }
};
}  // namespace

TEST(SinkEpisode, PartialBatchWhileFailingContinuesTheEpisode) {
  PartialSink s;
  s.fits = {0, 1, 3};
  EXPECT_FALSE(s.write("a\nb\n"));  // 2 failed: the episode starts
  EXPECT_EQ(s.take_transition(), SinkTransition::failed);
  EXPECT_FALSE(s.write("c\nd\ne\n"));  // 1 written, 2 failed: still the same episode
  EXPECT_EQ(s.take_transition(), SinkTransition::none);
  EXPECT_TRUE(s.write("f\ng\nh\n"));
  EXPECT_EQ(s.take_transition(), SinkTransition::recovered);
  EXPECT_EQ(s.stats().failed, 4u);
  EXPECT_EQ(s.stats().episode_failed, 4u) << "output-recovered reports every record lost in the episode";
  EXPECT_EQ(s.stats().failure_episodes, 1u);
  s.fits = {0};
  EXPECT_FALSE(s.write("i\n"));  // after the reported recovery: a new episode
  EXPECT_EQ(s.take_transition(), SinkTransition::failed);
  EXPECT_EQ(s.stats().episode_failed, 1u);
  EXPECT_EQ(s.stats().failure_episodes, 2u);
}
