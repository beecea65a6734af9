// ipsec-auditctl events/report (audit/log_query): record parsing, filters,
// time parsing, aggregation and the follow loop, on lines the real JsonWriter
// wrote and on garbage.
#include "audit/log_query.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "agent/options.hpp"
#include "audit/json_writer.hpp"
#include "audit/normalize.hpp"

using namespace ipsec;
using namespace ipsec::logq;
using namespace std::chrono;

namespace {

constexpr std::int64_t kT0 = 1795394830123456789LL;  // 2026-11-23T00:47:10.123456789Z

std::string line_of(const Event& e) {
  std::string out;
  JsonWriter("testhost").write(e, out);
  out.pop_back();  // '\n'
  return out;
}

std::string kernel_line(const std::string& text, std::int64_t ns = kT0) {
  auto r = parse_ipsec_audit_record(text);
  EXPECT_TRUE(r) << text;
  return line_of(event_from_ipsec_audit(*r, system_clock::time_point(nanoseconds(ns))));
}

// A small log: 2 replays and an ICV failure on SPI 0x1001 from 10.0.0.1, an
// unknown SPI from fd00::1, and an agent record without SPI or addresses.
std::vector<std::string> fixture() {
  Event started;
  started.kind = EventKind::service_started;
  started.time = system_clock::time_point(nanoseconds(kT0 - 1'000'000'000LL));
  started.message = "ipsec-auditd started";
  return {
      line_of(started),
      kernel_line("audit(1795394826.304:15): op=SA-replayed-pkt src=10.0.0.1 dst=10.0.0.2 spi=4097(0x1001) seqno=4"),
      kernel_line("audit(1795394826.305:16): op=SA-replayed-pkt src=10.0.0.1 dst=10.0.0.2 spi=4097(0x1001) seqno=5",
                  kT0 + 60'000'000'000LL),
      kernel_line("audit(1795394826.306:17): op=SA-icv-failure src=10.0.0.1 dst=10.0.0.2 spi=4097(0x1001) seqno=6",
                  kT0 + 3600'000'000'000LL),
      kernel_line("audit(1795394846.080:25): op=SA-notfound src=fd00::1 dst=fd00::2 spi=57005(0xdead) seqno=1",
                  kT0 + 7200'000'000'000LL),
  };
}

const std::vector<std::string> kGarbage = {
    "",
    "not json",
    "{\"event\":\"replay-check-failed\"",                              // cut short
    "[1,2,3]",                                                         // not an object
    "{\"time\":\"2026-11-23T00:47:10Z\"}",                             // no event
    "{\"event\":\"x\",\"time\":\"yesterday\"}",                        // bad time
    "{\"event\":\"x\",\"time\":\"2026-11-23T00:47:10Z\",\"spi\":-1}",  // bad SPI
    "{\"event\":\"x\",\"time\":\"2026-11-23T00:47:10Z\",\"spi\":4294967296}",
    "{\"event\":\"x\",\"time\":\"2026-11-23T00:47:10Z\",\"spi\":\"0x10\"}",
    "{\"event\":\"x\",\"time\":\"2026-11-23T00:47:10Z\",\"src\":7}",
    "{\"event\":\"x\",\"time\":\"2026-11-23T00:47:10Z\",\"count\":1.5}",
    std::string("{\"event\":\"\xff\",\"time\":\"2026-11-23T00:47:10Z\"}"),  // invalid UTF-8
    std::string(20000, '[') + std::string(20000, ']'),                      // deep nesting
    std::string("\0\0\0", 3),
};

struct TempLog {
  std::string path;
  TempLog() {
    char tmpl[] = "/tmp/log_query_test.XXXXXX";
    const int fd = mkstemp(tmpl);
    EXPECT_GE(fd, 0);
    close(fd);
    path = tmpl;
  }
  ~TempLog() {
    std::remove(path.c_str());
    std::remove((path + ".1").c_str());
  }
  void write(const std::vector<std::string>& lines, bool append = false) const {
    std::ofstream f(path, append ? std::ios::app : std::ios::trunc);
    for (const auto& l : lines) f << l << '\n';
  }
};

struct Run {
  int rc;
  std::string out, err;
};
Run run(std::string_view cmd, const std::vector<std::string>& args) {
  std::ostringstream out, err;
  const int rc = run_log_command(cmd, args, out, err);
  return {rc, out.str(), err.str()};
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> v;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) v.push_back(l);
  return v;
}

}  // namespace

static_assert(kDefaultLogPath == std::string_view(kDefaultJsonl), "events/report read the agent's default output");

TEST(LogQuery, ParsesWhatJsonWriterWrites) {
  const auto f = fixture();
  auto r = parse_record(f[1]);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->event, "replay-check-failed");
  EXPECT_EQ(r->event_id, 4961);
  EXPECT_EQ(r->spi, 0x1001u);
  EXPECT_EQ(r->src, "10.0.0.1");
  EXPECT_EQ(r->dst, "10.0.0.2");
  EXPECT_EQ(r->seq, 4u);
  EXPECT_EQ(r->count, 1u);
  EXPECT_EQ(r->time, "2026-11-23T00:47:10.123456789Z");
  EXPECT_EQ(r->when, system_clock::time_point(nanoseconds(kT0)));
  EXPECT_FALSE(r->message.empty());

  auto s = parse_record(f[0]);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->event, "service-started");
  EXPECT_EQ(s->event_id, 5478);
  EXPECT_FALSE(s->spi);
  EXPECT_FALSE(s->src);
  EXPECT_FALSE(s->seq);

  Event lost = make_events_lost(Source::kernel_audit, 7, "lost", false, "7 lost");
  auto l = parse_record(line_of(lost));
  ASSERT_TRUE(l);
  EXPECT_EQ(l->count, 7u);
  EXPECT_FALSE(l->event_id);
}

TEST(LogQuery, GarbageIsUnparsableNotACrash) {
  for (const auto& g : kGarbage) EXPECT_FALSE(parse_record(g)) << g.substr(0, 80);
  // Unknown events (a later schema) and extra fields are fine.
  EXPECT_TRUE(parse_record("{\"event\":\"future-thing\",\"time\":\"2026-11-23T00:47:10Z\",\"x\":[1]}"));
  EXPECT_TRUE(parse_record(fixture()[1] + "\r"));
}

TEST(LogQuery, Rfc3339) {
  const auto base = system_clock::time_point(seconds(1795394830));  // 2026-11-23T00:47:10Z
  EXPECT_EQ(parse_rfc3339("2026-11-23T00:47:10Z"), base);
  EXPECT_EQ(parse_rfc3339("2026-11-23t00:47:10z"), base);
  EXPECT_EQ(parse_rfc3339("2026-11-23 00:47:10Z"), base);
  EXPECT_EQ(parse_rfc3339("2026-11-23T01:47:10+01:00"), base);
  EXPECT_EQ(parse_rfc3339("2026-11-22T19:17:10-05:30"), base);
  EXPECT_EQ(parse_rfc3339("2026-11-23T00:47:10.5Z"), base + milliseconds(500));
  EXPECT_EQ(parse_rfc3339("2026-11-23T00:47:10.123456789Z"), base + nanoseconds(123456789));
  EXPECT_EQ(parse_rfc3339("2026-11-23T00:47:10.1234567891Z"), base + nanoseconds(123456789));
  EXPECT_EQ(parse_rfc3339("2026-11-23"), base - seconds(47 * 60 + 10));
  EXPECT_EQ(parse_rfc3339("1970-01-01T00:00:00Z"), system_clock::time_point{});
  EXPECT_EQ(parse_rfc3339("2024-02-29T00:00:00Z"), system_clock::time_point(seconds(1709164800)));
  for (const char* bad : {"", "2026", "2026-11-23T", "2026-11-23T00:47:10", "2026-11-23T00:47Z", "2026-13-01",
                          "2026-02-30", "2025-02-29T00:00:00Z", "2026-11-23T24:00:00Z", "2026-11-23T00:60:00Z",
                          "2026-11-23T00:47:10.Z", "2026-11-23T00:47:10+0100", "2026-11-23T00:47:10Zjunk",
                          "9999-01-01T00:00:00Z", "0001-01-01", "+026-11-23", "2026-11-23X00:47:10Z"})
    EXPECT_FALSE(parse_rfc3339(bad)) << bad;
}

TEST(LogQuery, Since) {
  const auto now = system_clock::time_point(seconds(1795394830));
  EXPECT_EQ(parse_since("10m", now), now - minutes(10));
  EXPECT_EQ(parse_since("2h", now), now - hours(2));
  EXPECT_EQ(parse_since("1d", now), now - hours(24));
  EXPECT_EQ(parse_since("30s", now), now - seconds(30));
  EXPECT_EQ(parse_since("1w", now), now - hours(24 * 7));
  EXPECT_EQ(parse_since("0m", now), now);
  EXPECT_EQ(parse_since("2026-11-23T00:00:00Z", now), now - seconds(47 * 60 + 10));
  for (const char* bad : {"", "m", "10", "10x", "-10m", "1.5h", "10 m", "99999999999d", "100000w", "10M"})
    EXPECT_FALSE(parse_since(bad, now)) << bad;
}

TEST(LogQuery, SpiAndEvent) {
  EXPECT_EQ(parse_spi("4097"), 4097u);
  EXPECT_EQ(parse_spi("0x1001"), 4097u);
  EXPECT_EQ(parse_spi("0XdeadBEEF"), 0xdeadbeefu);
  EXPECT_EQ(parse_spi("0"), 0u);
  EXPECT_EQ(parse_spi("4294967295"), 0xffffffffu);
  for (const char* bad : {"", "0x", "-1", "+1", "4294967296", "0x100000000", "12ab", "0x12g", " 1", "1 "})
    EXPECT_FALSE(parse_spi(bad)) << bad;

  auto byname = parse_event("replay-check-failed");
  ASSERT_TRUE(byname);
  EXPECT_EQ(byname->name, "replay-check-failed");
  EXPECT_FALSE(byname->id);
  auto byid = parse_event("4961");
  ASSERT_TRUE(byid);
  EXPECT_EQ(byid->id, 4961);
  for (const char* bad : {"", "4964", "0", "replay", "Replay-Check-Failed", "99999999999999"})
    EXPECT_FALSE(parse_event(bad)) << bad;
}

TEST(LogQuery, Filter) {
  std::vector<Record> recs;
  for (const auto& l : fixture()) recs.push_back(*parse_record(l));
  auto count = [&](const Filter& f) {
    return std::count_if(recs.begin(), recs.end(), [&](const Record& r) { return matches(r, f); });
  };
  EXPECT_EQ(count({}), 5);
  EXPECT_EQ(count({{*parse_event("4961")}, {}, {}}), 2);
  EXPECT_EQ(count({{*parse_event("replay-check-failed")}, {}, {}}), 2);
  EXPECT_EQ(count({{*parse_event("4961"), *parse_event("incorrect-spi")}, {}, {}}), 3);
  EXPECT_EQ(count({{}, {0x1001}, {}}), 3);
  EXPECT_EQ(count({{}, {0xdead, 0x1001}, {}}), 4);
  EXPECT_EQ(count({{*parse_event("4960")}, {0x1001}, {}}), 1);
  EXPECT_EQ(count({{*parse_event("4960")}, {0xdead}, {}}), 0);
  // since is inclusive: the record at kT0 + 1 h and the one after
  EXPECT_EQ(count({{}, {}, system_clock::time_point(nanoseconds(kT0 + 3600'000'000'000LL))}), 2);
}

TEST(LogQuery, OneLiner) {
  const auto f = fixture();
  EXPECT_EQ(format_record(*parse_record(f[1])),
            "2026-11-23T00:47:10.123456789Z replay-check-failed 4961 spi=0x00001001 10.0.0.1 -> 10.0.0.2 seq=4: " +
                parse_record(f[1])->message);
  const auto started = format_record(*parse_record(f[0]));
  EXPECT_EQ(started, "2026-11-23T00:47:09.123456789Z service-started 5478: ipsec-auditd started");
  // Terminal control sequences from the log are shown, not sent.
  auto r = parse_record(
      "{\"event\":\"x\",\"time\":\"2026-11-23T00:47:10Z\",\"message\":\"a\\u001b[2Jb\\u009bc\\u007f\\n\\u00e9\"}");
  ASSERT_TRUE(r);
  EXPECT_EQ(format_record(*r), "2026-11-23T00:47:10Z x -: a\\x1b[2Jb\\x9bc\\x7f\\x0a\xc3\xa9");
}

TEST(LogQuery, Aggregation) {
  Report rep;
  for (const auto& l : fixture()) add(rep, *parse_record(l));
  add(rep, *parse_record(line_of(make_events_lost(Source::kernel_audit, 7, "lost", false, "7 lost"))));
  EXPECT_EQ(rep.records, 6u);
  EXPECT_EQ(rep.events, 12u);
  EXPECT_EQ(rep.by_event["replay-check-failed"].records, 2u);
  EXPECT_EQ(rep.by_event["events-lost"].events, 7u);
  EXPECT_EQ(rep.event_ids["replay-check-failed"], 4961);
  EXPECT_FALSE(rep.event_ids["events-lost"]);
  EXPECT_EQ(rep.by_spi.size(), 2u);
  EXPECT_EQ(rep.by_spi[0x1001].records, 3u);
  EXPECT_EQ(rep.by_spi[0xdead].records, 1u);
  EXPECT_EQ(rep.by_peer.size(), 2u);
  EXPECT_EQ(rep.by_peer["10.0.0.1"].records, 3u);
  EXPECT_EQ(rep.by_peer["fd00::1"].records, 1u);
  EXPECT_EQ(rep.first, "2026-11-23T00:47:09.123456789Z");

  std::ostringstream js;
  print_report_json(rep, "/x.jsonl", js);
  const auto j = nlohmann::json::parse(js.str());
  EXPECT_EQ(js.str().find('\n'), js.str().size() - 1) << "one object, one line";
  EXPECT_EQ(j["records"], 6);
  EXPECT_EQ(j["events"], 12);
  EXPECT_EQ(j["by_event"][0]["event"], "replay-check-failed");  // most records first
  EXPECT_EQ(j["by_event"][0]["event_id"], 4961);
  EXPECT_EQ(j["by_spi"][0]["spi"], 0x1001);
  EXPECT_EQ(j["by_spi"][0]["spi_hex"], "0x00001001");
  EXPECT_EQ(j["by_peer"][0]["peer"], "10.0.0.1");
  EXPECT_EQ(j["by_peer"][0]["records"], 3);

  std::ostringstream text;
  print_report(rep, "/x.jsonl", text);
  EXPECT_NE(text.str().find("Records: 6 (events: 12)"), std::string::npos) << text.str();
  EXPECT_NE(text.str().find("4961  replay-check-failed"), std::string::npos) << text.str();
  EXPECT_NE(text.str().find("0x00001001 (4097)"), std::string::npos) << text.str();
}

TEST(LogQuery, LineSplitter) {
  LineSplitter sp(8);
  std::vector<std::string> got;
  auto on = [&](std::string_view l) { got.emplace_back(l); };
  sp.feed("ab\ncd", on);
  sp.feed("ef\n0123456789", on);  // an oversized line
  sp.feed("0123456789\nok\nxy", on);
  EXPECT_EQ(got, (std::vector<std::string>{"ab", "cdef", "ok"}));
  EXPECT_EQ(sp.oversized, 1u);
  EXPECT_TRUE(sp.has_partial());
  sp.flush(on);
  EXPECT_EQ(got.back(), "xy");
  EXPECT_FALSE(sp.has_partial());
}

TEST(LogQuery, EventsCommand) {
  TempLog log;
  auto f = fixture();
  std::vector<std::string> with_garbage = f;
  with_garbage.insert(with_garbage.begin() + 2, kGarbage.begin(), kGarbage.end());
  log.write(with_garbage);

  auto r = run("events", {"--log", log.path});
  EXPECT_EQ(r.rc, 0);
  EXPECT_EQ(lines(r.out).size(), 5u);
  EXPECT_NE(r.err.find("13 lines"), std::string::npos) << r.err;  // empty lines are not counted
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1);

  r = run("events", {"--log=" + log.path, "--event", "4961", "--json"});
  EXPECT_EQ(r.rc, 0);
  EXPECT_EQ(lines(r.out), (std::vector<std::string>{f[1], f[2]}));  // the raw lines

  r = run("events", {"--log", log.path, "--spi", "0xdead"});
  ASSERT_EQ(lines(r.out).size(), 1u);
  EXPECT_NE(r.out.find("incorrect-spi 4965 spi=0x0000dead fd00::1 -> fd00::2 seq=1"), std::string::npos) << r.out;

  r = run("events", {"--log", log.path, "--since", "2026-11-23T01:00:00Z", "--json"});
  EXPECT_EQ(lines(r.out), (std::vector<std::string>{f[3], f[4]}));
  EXPECT_EQ(run("events", {"--log", log.path, "--since", "1d"}).rc, 0);
  r = run("events", {"--help"});
  EXPECT_EQ(r.rc, 0);
  EXPECT_NE(r.out.find("usage: ipsec-auditctl events"), std::string::npos);
}

TEST(LogQuery, ReportCommand) {
  TempLog log;
  auto f = fixture();
  f.push_back("garbage");
  log.write(f);
  auto r = run("report", {"--log", log.path, "--json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["records"], 5);
  EXPECT_EQ(j["unparsable"], 1);
  EXPECT_EQ(j["log"], log.path);
  r = run("report", {"--log", log.path, "--since", "2026-11-23T01:00:00Z", "--json"});
  EXPECT_EQ(nlohmann::json::parse(r.out)["records"], 2);
  r = run("report", {"--log", log.path});
  EXPECT_EQ(r.rc, 0);
  EXPECT_NE(r.out.find("By peer"), std::string::npos);
}

TEST(LogQuery, UsageAndUnreadable) {
  for (const auto& args : std::vector<std::vector<std::string>>{{"--nope"},
                                                                {"--event"},
                                                                {"--event", "4964"},
                                                                {"--spi", "x"},
                                                                {"--since", "tomorrow"},
                                                                {"--json=1"},
                                                                {"--log", ""},
                                                                {"extra"}}) {
    auto r = run("events", args);
    EXPECT_EQ(r.rc, 2) << args[0];
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_TRUE(r.out.empty());
  }
  EXPECT_EQ(run("report", {"--follow"}).rc, 2);
  EXPECT_EQ(run("other", {}).rc, 2);
  auto r = run("events", {"--log", "/nonexistent/events.jsonl"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("/nonexistent/events.jsonl"), std::string::npos);
  EXPECT_EQ(run("report", {"--log", "/tmp"}).rc, 1);  // a directory
}

// The follow loop, driven step by step: the wait hook changes the file
// between polls, the way the agent and logrotate would.
TEST(LogQuery, FollowAppendRotateTruncate) {
  TempLog log;
  const auto f = fixture();
  log.write({f[0]});
  std::vector<std::string> got;
  int step = 0;
  FollowHooks hooks;
  hooks.stop = [&] { return step >= 6; };
  hooks.wait = [&] {
    switch (step++) {
      case 0:  // appended, the second line in two writes
        log.write({f[1]}, true);
        {
          std::ofstream o(log.path, std::ios::app);
          o << f[2].substr(0, 10);
        }
        break;
      case 1: {
        std::ofstream o(log.path, std::ios::app);
        o << f[2].substr(10) << '\n';
        break;
      }
      case 2:  // logrotate: renamed away, a new file in its place
        EXPECT_EQ(std::rename(log.path.c_str(), (log.path + ".1").c_str()), 0);
        break;  // (not there for one poll)
      case 3:
        log.write({f[3]});
        break;
      case 4:  // copytruncate: emptied in place, then written from the start
        log.write({});
        break;
      case 5:
        log.write({f[4]}, true);
        break;
    }
    return true;
  };
  std::string error;
  ASSERT_TRUE(read_log(
      log.path, true, hooks,
      [&](std::string_view l) {
        got.emplace_back(l);
        return true;
      },
      error));
  EXPECT_EQ(got, (std::vector<std::string>{f[0], f[1], f[2], f[3], f[4]}));
  EXPECT_EQ(step, 6);
}

TEST(LogQuery, FollowStopsWhenTheReaderGoes) {
  TempLog log;
  log.write(fixture());
  int polls = 0;
  FollowHooks hooks;
  hooks.stop = [] { return false; };
  hooks.wait = [&] { return ++polls < 3; };
  std::string error;
  int seen = 0;
  ASSERT_TRUE(read_log(
      log.path, true, hooks, [&](std::string_view) { return ++seen < 2; }, error));
  EXPECT_EQ(seen, 2);
  EXPECT_EQ(polls, 0);  // stopped on the line, not on a poll
  ASSERT_TRUE(read_log(
      log.path, true, hooks, [&](std::string_view) { return true; }, error));
  EXPECT_EQ(polls, 3);  // the wait hook said stop
}
