#include "audit/sink.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "audit/catalogue.hpp"
#include "audit/pipeline.hpp"

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
  EXPECT_FALSE(parse_output_spec("syslog"));
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
