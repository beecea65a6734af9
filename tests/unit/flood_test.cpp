// The flood limiter with a fake clock, the pipeline's accounting
// (received = written + suppressed + summarised, per kind) and the
// Prometheus text it exports.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "audit/catalogue.hpp"
#include "audit/flood_limiter.hpp"
#include "audit/metrics.hpp"
#include "audit/pipeline.hpp"
#include "capture_sink.hpp"

using namespace ipsec;
using namespace std::chrono_literals;
using Clock = FloodLimiter::Clock;

namespace {

const Clock::time_point T0{std::chrono::hours(1000)};

Event packet(EventKind k, std::uint32_t spi, const char* src, std::uint32_t seq) {
  Event e;
  e.kind = k;
  e.source = Source::kernel_audit;
  e.spi = spi;
  e.src = *IpAddress::parse(src);
  e.dst = *IpAddress::parse("192.0.2.1");
  e.seq = seq;
  e.time = std::chrono::system_clock::time_point{std::chrono::seconds(1'800'000'000 + seq)};
  e.message = "packet";
  return e;
}

FloodConfig cfg(double rate, std::uint32_t burst, int interval_s, std::size_t max_keys = 4096) {
  FloodConfig c;
  c.rate = rate;
  c.burst = burst;
  c.interval = std::chrono::seconds(interval_s);
  c.max_keys = max_keys;
  return c;
}

std::uint64_t summarised_in(const std::vector<Event>& v) {
  std::uint64_t n = 0;
  for (const auto& e : v) n += e.count;
  return n;
}

}  // namespace

TEST(FloodLimiter, OnlySinglePacketEventsAreLimited) {
  Event e = packet(EventKind::incorrect_spi, 1, "10.0.0.1", 1);
  EXPECT_TRUE(FloodLimiter::limited(e));
  e.kind = EventKind::sa_added;
  EXPECT_FALSE(FloodLimiter::limited(e));
  e.kind = EventKind::cleartext_packet_dropped;
  e.source = Source::counters;  // an exact counter delta: one record per poll
  EXPECT_FALSE(FloodLimiter::limited(e));
  e.source = Source::nflog;
  EXPECT_TRUE(FloodLimiter::limited(e));
  e.count = 40;  // an aggregate already
  EXPECT_FALSE(FloodLimiter::limited(e));
}

TEST(FloodLimiter, BurstThenRateThenHeld) {
  FloodLimiter f(cfg(2, 5, 60));
  int written = 0;
  for (std::uint32_t i = 0; i < 20; ++i) written += f.admit(packet(EventKind::incorrect_spi, 7, "10.0.0.1", i), T0);
  EXPECT_EQ(written, 5) << "the burst, all at once";
  EXPECT_EQ(f.held(), 15u);
  // 2/s: after 1.5 s three more tokens.
  written = 0;
  for (std::uint32_t i = 20; i < 30; ++i)
    written += f.admit(packet(EventKind::incorrect_spi, 7, "10.0.0.1", i), T0 + 1500ms);
  EXPECT_EQ(written, 3);
  EXPECT_EQ(f.held(), 22u);
  // The bucket never holds more than the burst.
  EXPECT_TRUE(f.admit(packet(EventKind::incorrect_spi, 7, "10.0.0.1", 30), T0 + 1h));
  written = 0;
  for (std::uint32_t i = 31; i < 50; ++i) written += f.admit(packet(EventKind::incorrect_spi, 7, "10.0.0.1", i), T0 + 1h);
  EXPECT_EQ(written, 4);
}

TEST(FloodLimiter, KeysAreKindSpiAndPeer) {
  FloodLimiter f(cfg(0, 1, 60));
  EXPECT_TRUE(f.admit(packet(EventKind::incorrect_spi, 7, "10.0.0.1", 1), T0));
  EXPECT_FALSE(f.admit(packet(EventKind::incorrect_spi, 7, "10.0.0.1", 2), T0));
  EXPECT_TRUE(f.admit(packet(EventKind::incorrect_spi, 8, "10.0.0.1", 3), T0)) << "another SPI";
  EXPECT_TRUE(f.admit(packet(EventKind::incorrect_spi, 7, "10.0.0.2", 4), T0)) << "another peer";
  EXPECT_TRUE(f.admit(packet(EventKind::integrity_check_failed, 7, "10.0.0.1", 5), T0)) << "another kind";
  auto bare = packet(EventKind::incorrect_spi, 7, "10.0.0.1", 6);
  bare.src.reset();
  EXPECT_TRUE(f.admit(bare, T0)) << "no source address is a key of its own";
  EXPECT_EQ(f.keys(), 5u);
}

TEST(FloodLimiter, OneSummaryPerIntervalWithItsContents) {
  FloodLimiter f(cfg(0, 2, 10));
  std::vector<Event> out;
  for (std::uint32_t i = 1; i <= 2; ++i) EXPECT_TRUE(f.admit(packet(EventKind::replay_check_failed, 9, "fd00::1", i), T0));
  for (std::uint32_t i = 3; i <= 100; ++i)
    EXPECT_FALSE(f.admit(packet(EventKind::replay_check_failed, 9, "fd00::1", i), T0 + 1s));
  EXPECT_FALSE(f.admit(packet(EventKind::replay_check_failed, 9, "fd00::1", 101), T0 + 6s));
  f.collect(T0 + 10s, out);
  EXPECT_TRUE(out.empty()) << "the window opened at the first held record (T0+1s)";
  f.collect(T0 + 11s, out);
  ASSERT_EQ(out.size(), 1u);
  const Event& s = out[0];
  EXPECT_EQ(s.kind, EventKind::replay_check_failed);
  EXPECT_EQ(s.count, 99u);
  EXPECT_EQ(s.spi, 9u);
  EXPECT_EQ(s.src->to_string(), "fd00::1");
  EXPECT_FALSE(s.seq) << "a summary is no single packet";
  EXPECT_FALSE(s.kernel);
  const auto& d = s.detail["summary"];
  EXPECT_EQ(d["first_seq"], 3);
  EXPECT_EQ(d["last_seq"], 101);
  EXPECT_EQ(d["summarised"], 99);
  EXPECT_EQ(d["first_time"], "2027-01-15T08:00:03.000000000Z");
  EXPECT_EQ(d["last_time"], "2027-01-15T08:01:41.000000000Z");
  EXPECT_EQ(s.time, packet(EventKind::replay_check_failed, 9, "fd00::1", 101).time);
  EXPECT_NE(s.message.find("99 replay-check-failed records summarised for SPI 0x00000009 from fd00::1"),
            std::string::npos)
      << s.message;
  EXPECT_EQ(f.held(), 0u);
  EXPECT_EQ(f.keys(), 1u) << "not idle (last seen at T0+6s): kept, its bucket empty";
  // The flood goes on: the next window gives the next summary, an interval later.
  out.clear();
  for (std::uint32_t i = 102; i <= 151; ++i)
    EXPECT_FALSE(f.admit(packet(EventKind::replay_check_failed, 9, "fd00::1", i), T0 + 12s));
  f.collect(T0 + 21s, out);
  EXPECT_TRUE(out.empty());
  f.collect(T0 + 22s, out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].count, 50u);
  EXPECT_EQ(out[0].detail["summary"]["first_seq"], 102);
}

TEST(FloodLimiter, IdleKeysAreEvictedAfterTheirSummary) {
  FloodLimiter f(cfg(0, 1, 5));
  std::vector<Event> out;
  EXPECT_TRUE(f.admit(packet(EventKind::incorrect_spi, 1, "10.0.0.1", 1), T0));
  EXPECT_TRUE(f.admit(packet(EventKind::incorrect_spi, 2, "10.0.0.1", 1), T0));
  EXPECT_FALSE(f.admit(packet(EventKind::incorrect_spi, 2, "10.0.0.1", 2), T0 + 1s));
  EXPECT_EQ(f.keys(), 2u);
  f.collect(T0 + 5s, out);
  EXPECT_EQ(f.keys(), 1u) << "idle for an interval with nothing held";
  EXPECT_TRUE(out.empty());
  f.collect(T0 + 6s, out);
  EXPECT_EQ(out.size(), 1u);
  EXPECT_EQ(f.keys(), 0u) << "summary written, then evicted";
  // A key evicted starts again with a full bucket.
  EXPECT_TRUE(f.admit(packet(EventKind::incorrect_spi, 2, "10.0.0.1", 3), T0 + 7s));
}

TEST(FloodLimiter, BeyondMaxKeysOneOverflowKeyPerKind) {
  FloodLimiter f(cfg(0, 1, 60, 16));
  std::uint64_t written = 0;
  for (std::uint32_t i = 0; i < 1000; ++i)
    written += f.admit(packet(EventKind::incorrect_spi, i, "10.0.0.1", i), T0);
  for (std::uint32_t i = 0; i < 1000; ++i)
    written += f.admit(packet(EventKind::integrity_check_failed, i, "10.0.0.1", i), T0);
  EXPECT_EQ(f.keys(), 18u) << "16 keys and one overflow key for each of the two kinds";
  EXPECT_EQ(written, 16u + 2u) << "16 keys' bursts and each overflow key's";
  EXPECT_EQ(f.held(), 2000u - written);
  std::vector<Event> out;
  f.flush(out);
  EXPECT_EQ(summarised_in(out), 2000u - written) << "nothing hidden";
  int overflow = 0;
  for (const auto& s : out) {
    if (!s.detail["summary"].contains("overflow")) continue;
    ++overflow;
    EXPECT_FALSE(s.spi);
    EXPECT_FALSE(s.src);
    EXPECT_NE(s.message.find("flood.max_keys"), std::string::npos) << s.message;
  }
  EXPECT_EQ(overflow, 2);
}

TEST(FloodLimiter, AKeyPastMaxKeysGetsItsOwnBucketOnceAKeyIsEvicted) {
  // The limiter remembers the last key's bucket (a flood is one key record
  // after record); a key that went to the overflow key must not stay there
  // once room is made.
  FloodLimiter f(cfg(0, 1, 5, 1));
  EXPECT_TRUE(f.admit(packet(EventKind::incorrect_spi, 1, "10.0.0.1", 1), T0));
  EXPECT_TRUE(f.admit(packet(EventKind::incorrect_spi, 2, "10.0.0.1", 1), T0)) << "the overflow key's burst";
  EXPECT_FALSE(f.admit(packet(EventKind::incorrect_spi, 2, "10.0.0.1", 2), T0)) << "the overflow key, again";
  EXPECT_EQ(f.keys(), 2u);
  std::vector<Event> out;
  f.collect(T0 + 5s, out);  // key 1 idle: evicted; the overflow key's summary is due
  EXPECT_EQ(summarised_in(out), 1u);
  EXPECT_TRUE(f.admit(packet(EventKind::incorrect_spi, 2, "10.0.0.1", 3), T0 + 6s)) << "its own key now, a full bucket";
  EXPECT_FALSE(f.admit(packet(EventKind::incorrect_spi, 2, "10.0.0.1", 4), T0 + 6s));
  std::vector<Event> held;
  f.flush(held);
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(held[0].spi, 2u) << "held under key 2 itself, not the overflow key";
}

TEST(FloodLimiter, FlushWritesEveryHeldSummaryOnce) {
  FloodLimiter f(cfg(0, 1, 60));
  for (std::uint32_t i = 0; i < 10; ++i) f.admit(packet(EventKind::incorrect_spi, i % 3, "10.0.0.1", i), T0);
  std::vector<Event> out;
  f.flush(out);
  EXPECT_EQ(out.size(), 3u);
  EXPECT_EQ(summarised_in(out), 7u);
  out.clear();
  f.flush(out);
  EXPECT_TRUE(out.empty());
}

TEST(FloodLimiter, ReloadCapsBucketsToTheNewBurst) {
  FloodLimiter f(cfg(0, 100, 60));
  EXPECT_TRUE(f.admit(packet(EventKind::incorrect_spi, 1, "10.0.0.1", 1), T0));
  f.configure(cfg(0, 2, 60));
  int written = 0;
  for (std::uint32_t i = 0; i < 10; ++i) written += f.admit(packet(EventKind::incorrect_spi, 1, "10.0.0.1", i), T0);
  EXPECT_EQ(written, 2);
}

namespace {

struct Fixture {
  Pipeline p{"h"};
  Capture* cap{new Capture()};
  Clock::time_point now{T0};
  Fixture() {
    p.add_sink(std::unique_ptr<Sink>(cap));
    p.set_clock([this] { return now; });
  }
};

void expect_identity(const PipelineStats& st) {
  for (std::size_t i = 0; i < kEventKindCount; ++i)
    EXPECT_EQ(st.received[i], st.written[i] + st.suppressed_by_kind[i] + st.summarised[i])
        << catalogue(static_cast<EventKind>(i)).name;
}
}  // namespace

TEST(Pipeline, ReceivedIsWrittenPlusSuppressedPlusSummarised) {
  Fixture fx;
  fx.p.set_flood(cfg(1, 10, 30));
  // A bad-SPI flood from two peers, an integrity flood while the Success
  // switch is off, and SAD changes.
  for (std::uint32_t i = 0; i < 500; ++i) {
    fx.now = T0 + std::chrono::milliseconds(i * 100);
    fx.p.submit(packet(EventKind::incorrect_spi, 0x99, i % 2 ? "10.0.0.1" : "10.0.0.2", i));
    if (i == 300) fx.p.set_policy(AuditPolicy{false, true});
    if (i >= 300) fx.p.submit(packet(EventKind::integrity_check_failed, 5, "10.0.0.3", i));
    if (i == 400) fx.p.set_policy(AuditPolicy{});
    if (i % 50 == 0) {
      Event sa;
      sa.kind = EventKind::sa_added;
      fx.p.submit(sa);
    }
    fx.p.write_due_summaries();
  }
  const auto& st = fx.p.stats();
  expect_identity(st);
  const auto spi = static_cast<std::size_t>(EventKind::incorrect_spi);
  const auto icv = static_cast<std::size_t>(EventKind::integrity_check_failed);
  EXPECT_EQ(st.received[spi], 500u);
  EXPECT_GT(st.summarised[spi], 0u);
  EXPECT_GT(st.suppressed_by_kind[icv], 0u);
  fx.p.flush_summaries();
  expect_identity(fx.p.stats());
  EXPECT_EQ(fx.p.flood().held(), 0u);
  // What the sink has: the written records one each, the summaries with their
  // counts; together every record not suppressed.
  std::map<std::string, std::uint64_t> single, in_summaries, summary_records;
  for (const auto& r : fx.cap->records) {
    if (r.contains("summary")) {
      in_summaries[r["event"]] += r["count"].get<std::uint64_t>();
      ++summary_records[r["event"]];
      EXPECT_EQ(r["count"], r["summary"]["summarised"]);
    } else {
      ++single[r["event"]];
    }
  }
  for (std::size_t i = 0; i < kEventKindCount; ++i) {
    const std::string name(catalogue(static_cast<EventKind>(i)).name);
    EXPECT_EQ(single[name], fx.p.stats().written[i]) << name;
    EXPECT_EQ(in_summaries[name], fx.p.stats().summarised[i]) << name;
    EXPECT_EQ(summary_records[name], fx.p.stats().summaries[i]) << name;
  }
  // Bounded: per key one burst, the rate over 50 s, and a summary per 30 s.
  EXPECT_LE(single["incorrect-spi"], 2u * (10 + 50 + 1));
}

TEST(Pipeline, SummariesAreWrittenWhateverTheSwitchSaysNow) {
  Fixture fx;
  fx.p.set_flood(cfg(0, 1, 10));
  for (std::uint32_t i = 0; i < 5; ++i) fx.p.submit(packet(EventKind::incorrect_spi, 1, "10.0.0.1", i));
  fx.p.set_policy(AuditPolicy{false, false});
  fx.p.flush_summaries();
  ASSERT_EQ(fx.cap->records.size(), 2u);
  EXPECT_EQ(fx.cap->records[1]["count"], 4);
  EXPECT_EQ(fx.cap->records[1]["event_id"], 4965);
  EXPECT_EQ(fx.p.stats().summaries[static_cast<std::size_t>(EventKind::incorrect_spi)], 1u);
}

TEST(Pipeline, LossIsCountedByTheCounterThatTold) {
  Fixture fx;
  for (int i = 0; i < 40; ++i) {
    Event e;
    e.kind = EventKind::events_lost;
    e.count = 3;
    e.detail = {{"lost", {{"counter", i < 2 ? std::string("kernel_audit_lost") : "c" + std::to_string(i)}}}};
    fx.p.submit(e);
  }
  Event bare;
  bare.kind = EventKind::events_lost;
  fx.p.submit(bare);
  const auto& lost = fx.p.stats().lost;
  EXPECT_LE(lost.size(), PipelineStats::kMaxLostCounters);
  std::uint64_t total = 0;
  for (const auto& [name, n] : lost) {
    total += n;
    if (name == "kernel_audit_lost") {
      EXPECT_EQ(n, 6u);
    }
  }
  EXPECT_EQ(total, 40u * 3 + 1);
}

// A strict reader of the Prometheus text format (0.0.4) as node_exporter's
// textfile collector takes it: HELP and TYPE once per family, before its
// samples; names and label names well-formed; label values quoted with only
// \\ \" \n escapes; no duplicate series; numeric values.
namespace {
struct Parsed {
  std::map<std::string, double> series;  // name{labels} -> value
  std::map<std::string, std::string> types;
};

std::string check_prometheus_text(const std::string& text, Parsed& p) {
  static const std::regex name_re("[a-zA-Z_:][a-zA-Z0-9_:]*");
  static const std::regex label_name_re("[a-zA-Z_][a-zA-Z0-9_]*");
  std::set<std::string> helped;
  std::string family;
  std::istringstream in(text);
  std::string line;
  int n = 0;
  if (text.empty() || text.back() != '\n') return "does not end in a newline";
  while (std::getline(in, line)) {
    ++n;
    const std::string where = "line " + std::to_string(n) + ": ";
    if (line.empty()) return where + "empty line";
    if (line[0] == '#') {
      std::istringstream ls(line);
      std::string hash, kw, name;
      ls >> hash >> kw >> name;
      if (kw != "HELP" && kw != "TYPE") return where + "comment that is neither HELP nor TYPE";
      if (!std::regex_match(name, name_re)) return where + "bad metric name " + name;
      if (kw == "HELP") {
        if (!helped.insert(name).second) return where + "second HELP for " + name;
      } else {
        std::string type;
        ls >> type;
        if (type != "counter" && type != "gauge") return where + "type " + type;
        if (p.types.count(name)) return where + "second TYPE for " + name;
        p.types[name] = type;
        family = name;
      }
      continue;
    }
    std::size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    const std::string name = line.substr(0, i);
    if (!std::regex_match(name, name_re)) return where + "bad metric name";
    if (name != family) return where + name + " outside its family's TYPE";
    std::string key = name + "{";
    if (i < line.size() && line[i] == '{') {
      ++i;
      std::set<std::string> seen;
      while (true) {
        std::size_t j = line.find('=', i);
        if (j == std::string::npos) return where + "label without =";
        const std::string ln = line.substr(i, j - i);
        if (!std::regex_match(ln, label_name_re) || !seen.insert(ln).second) return where + "bad label name " + ln;
        if (j + 1 >= line.size() || line[j + 1] != '"') return where + "unquoted label value";
        std::string value;
        std::size_t k = j + 2;
        for (; k < line.size() && line[k] != '"'; ++k) {
          if (line[k] == '\\') {
            if (k + 1 >= line.size()) return where + "dangling escape";
            const char c = line[++k];
            if (c != '\\' && c != '"' && c != 'n') return where + "bad escape";
            value += c == 'n' ? '\n' : c;
          } else {
            value += line[k];
          }
        }
        if (k >= line.size()) return where + "unterminated label value";
        key += ln + "=" + value + ",";
        i = k + 1;
        if (i < line.size() && line[i] == ',') {
          ++i;
          continue;
        }
        if (i < line.size() && line[i] == '}') {
          ++i;
          break;
        }
        return where + "bad label list";
      }
    }
    key += "}";
    if (i >= line.size() || line[i] != ' ') return where + "no value";
    const std::string v = line.substr(i + 1);
    char* end = nullptr;
    const double d = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0') return where + "value '" + v + "' is not a number";
    if (!p.series.emplace(key, d).second) return where + "duplicate series " + key;
  }
  return "";
}
}  // namespace

TEST(Metrics, FormatParsesAndMatchesTheCounts) {
  Fixture fx;
  fx.p.set_flood(cfg(0, 2, 10));
  for (std::uint32_t i = 0; i < 10; ++i) fx.p.submit(packet(EventKind::incorrect_spi, 1, "10.0.0.1", i));
  fx.p.set_policy(AuditPolicy{false, true});
  fx.p.submit(packet(EventKind::integrity_check_failed, 1, "10.0.0.1", 1));
  Event lost;
  lost.kind = EventKind::events_lost;
  lost.count = 7;
  lost.detail = {{"lost", {{"counter", "kernel_audit_lost"}}}};
  fx.p.submit(lost);
  fx.p.flush_summaries();

  MetricsInput in;
  in.stats = &fx.p.stats();
  in.sinks = sink_metrics(fx.p.sinks());
  in.sinks.push_back(SinkMetrics{"jsonl:/var/log/a \"b\"\\c", false, 5, 2});
  in.start_time_seconds = 1800000000.25;
  in.flood_keys = fx.p.flood().keys();
  const std::string text = format_metrics(in);
  Parsed p;
  ASSERT_EQ(check_prometheus_text(text, p), "") << text;
  EXPECT_EQ(p.types["ipsec_audit_records_total"], "counter");
  EXPECT_EQ(p.series["ipsec_audit_up{}"], 1);
  EXPECT_EQ(p.series["ipsec_audit_start_time_seconds{}"], 1800000000.25);
  EXPECT_EQ(p.series["ipsec_audit_records_total{event=incorrect-spi,outcome=written,}"], 2);
  EXPECT_EQ(p.series["ipsec_audit_records_total{event=incorrect-spi,outcome=summarised,}"], 8);
  EXPECT_EQ(p.series["ipsec_audit_records_total{event=incorrect-spi,outcome=suppressed,}"], 0);
  EXPECT_EQ(p.series["ipsec_audit_records_total{event=integrity-check-failed,outcome=suppressed,}"], 1);
  EXPECT_EQ(p.series["ipsec_audit_summary_records_total{event=incorrect-spi,}"], 1);
  EXPECT_EQ(p.series["ipsec_audit_events_lost_total{counter=kernel_audit_lost,}"], 7);
  EXPECT_EQ(p.series["ipsec_audit_events_lost_total{counter=netlink_overrun,}"], 0);
  EXPECT_EQ(p.series["ipsec_audit_sink_healthy{sink=capture,}"], 1);
  EXPECT_EQ(p.series["ipsec_audit_sink_records_total{sink=capture,outcome=written,}"],
            static_cast<double>(fx.cap->records.size()));
  EXPECT_EQ(p.series["ipsec_audit_sink_healthy{sink=jsonl:/var/log/a \"b\"\\c,}"], 0);
  EXPECT_EQ(p.series["ipsec_audit_sink_records_total{sink=jsonl:/var/log/a \"b\"\\c,outcome=failed,}"], 2);
  // Bounded: no series names an SPI or a peer.
  EXPECT_EQ(text.find("spi=\""), std::string::npos);
  EXPECT_EQ(text.find("10.0.0.1"), std::string::npos);
  in.up = false;
  Parsed stopped;
  ASSERT_EQ(check_prometheus_text(format_metrics(in), stopped), "");
  EXPECT_EQ(stopped.series["ipsec_audit_up{}"], 0);
}

TEST(Metrics, TheCheckerRefusesWhatIsNotPrometheusText) {
  Parsed p;
  EXPECT_NE(check_prometheus_text("# TYPE a counter\na{x=\"1} 2\n", p), "");
  p = {};
  EXPECT_NE(check_prometheus_text("# TYPE a counter\na 1\na 2\n", p), "");
  p = {};
  EXPECT_NE(check_prometheus_text("b 1\n", p), "");
  p = {};
  EXPECT_NE(check_prometheus_text("# TYPE a counter\na{x=\"\\t\"} 1\n", p), "");
  p = {};
  EXPECT_NE(check_prometheus_text("# TYPE a counter\na one\n", p), "");
}

TEST(Metrics, WrittenAtomically) {
  const auto dir = std::filesystem::temp_directory_path() / ("ipsec-audit-metrics-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto path = (dir / "ipsec_audit.prom").string();
  ASSERT_TRUE(write_file_atomic(path, "# TYPE a gauge\na 1\n"));
  ASSERT_TRUE(write_file_atomic(path, "# TYPE a gauge\na 2\n"));
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  EXPECT_EQ(ss.str(), "# TYPE a gauge\na 2\n");
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  EXPECT_EQ(std::filesystem::status(path).permissions() & std::filesystem::perms::others_read,
            std::filesystem::perms::others_read);
  EXPECT_FALSE(write_file_atomic((dir / "no" / "x.prom").string(), "a 1\n"));
  std::filesystem::remove_all(dir);
}
