#include "audit/json_writer.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <ctime>
#include <limits>
#include <vector>
#include <nlohmann/json.hpp>

#include "audit/catalogue.hpp"
#include "audit/normalize.hpp"

using namespace ipsec;
using nlohmann::json;

namespace {
json render(const Event& e) {
  JsonWriter w("testhost");
  std::string out;
  w.write(e, out);
  EXPECT_EQ(out.back(), '\n');
  EXPECT_EQ(out.find('\n'), out.size() - 1) << "one record, one line";
  auto j = json::parse(out, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << out;
  return j;
}
Event from(const std::string& text) {
  auto r = parse_ipsec_audit_record(text);
  EXPECT_TRUE(r) << text;
  return event_from_ipsec_audit(*r,
                                std::chrono::system_clock::time_point(std::chrono::nanoseconds(1795394830123456789LL)));
}
}  // namespace

TEST(JsonWriter, PacketRecordFieldsV6) {
  const auto j =
      render(from("audit(1795394846.080:25): op=SA-notfound src=fd00:0000:0000:0000:0000:0000:0000:0001 "
                  "dst=fd00:0000:0000:0000:0000:0000:0000:0002 flowlbl=0x22e28 spi=57005(0xdead) seqno=1"));
  EXPECT_EQ(j["schema"], "ipsec-audit/1");
  EXPECT_EQ(j["time"], "2026-11-23T00:47:10.123456789Z");
  EXPECT_EQ(j["kernel_time"], "2026-11-23T00:47:26.080000000Z");
  EXPECT_EQ(j["audit_serial"], 25);
  EXPECT_EQ(j["event"], "incorrect-spi");
  EXPECT_EQ(j["event_id"], 4965);
  EXPECT_EQ(j["audit_class"], "success");
  EXPECT_EQ(j["family"], "inet6");
  EXPECT_EQ(j["spi"], 57005);
  EXPECT_EQ(j["src"], "fd00::1");
  EXPECT_EQ(j["dst"], "fd00::2");
  EXPECT_EQ(j["seq"], 1);
  EXPECT_EQ(j["flow_label"], 0x22e28);
  EXPECT_TRUE(j["sa"].is_null());
  EXPECT_EQ(j["source"], "kernel-audit");
  EXPECT_EQ(j["count"], 1);
  EXPECT_EQ(j["host"], "testhost");
  EXPECT_EQ(j["audit"]["op"], "SA-notfound");
  EXPECT_FALSE(j["message"].get<std::string>().empty());
}

TEST(JsonWriter, NullsWhereTheKernelSaysNothing) {
  const auto j = render(from("audit(1.000:1): op=SA-replay-overflow src=10.0.0.1 dst=10.0.0.2 spi=4099(0x1003)"));
  EXPECT_EQ(j["event"], "sequence-overflow");
  EXPECT_TRUE(j["event_id"].is_null());
  EXPECT_TRUE(j["seq"].is_null());
  EXPECT_TRUE(j["flow_label"].is_null());
  EXPECT_EQ(j["family"], "inet");
}

TEST(JsonWriter, AgentRecordWithDetail) {
  Event e;
  e.kind = EventKind::service_started;
  e.source = Source::agent;
  e.message = "started";
  e.detail = {{"kernel_audit", {{"enabled", 0}}}};
  const auto j = render(e);
  EXPECT_EQ(j["event_id"], 5478);
  EXPECT_TRUE(j["kernel_time"].is_null());
  EXPECT_TRUE(j["audit_serial"].is_null());
  EXPECT_TRUE(j["family"].is_null());
  EXPECT_EQ(j["kernel_audit"]["enabled"], 0);
}

TEST(JsonWriter, HostileTextStaysValidJson) {
  const auto j = render(from(std::string("audit(1.000:1): op=SA-\xff\"\\\x01x src=10.0.0.1 f=\xc3\x28\xe2\x82\xac")));
  EXPECT_EQ(j["audit"]["op"], "SA-\xef\xbf\xbd\"\\\x01x");
  EXPECT_EQ(j["audit"]["fields"]["f"], "\xef\xbf\xbd(\xe2\x82\xac");
}

TEST(JsonWriter, Rfc3339BeforeEpochAndRounding) {
  std::string s;
  append_rfc3339(s, std::chrono::system_clock::time_point(std::chrono::nanoseconds(-1)));
  EXPECT_EQ(s, "1969-12-31T23:59:59.999999999Z");
}

// The hand-written date against gmtime_r + strftime + "%09ld" (what it
// replaced), over the whole range of a system_clock time point, and runs of
// records within one second (the cached case) and across a second boundary.
TEST(JsonWriter, Rfc3339MatchesStrftime) {
  auto reference = [](std::int64_t ns) {
    std::time_t secs = static_cast<std::time_t>(ns / 1000000000);
    long frac = static_cast<long>(ns % 1000000000);
    if (frac < 0) {
      frac += 1000000000;
      --secs;
    }
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char b[48];
    std::string r(b, std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S", &tm));
    char f[16];
    std::snprintf(f, sizeof f, ".%09ldZ", frac);
    return r + f;
  };
  std::uint64_t x = 88172645463325252ull;
  std::vector<std::int64_t> samples = {0, -1, 1, 999999999, 1000000000, -1000000000, -1000000001,
                                       951782400ll * 1000000000, 4107542400ll * 1000000000,  // 2000-02-29, 2100-03-01
                                       std::numeric_limits<std::int64_t>::max(),
                                       std::numeric_limits<std::int64_t>::min() + 1};
  for (int i = 0; i < 100000; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    const auto v = static_cast<std::int64_t>(x);
    samples.push_back(v);
    if (i % 10 == 0) samples.push_back(v + 1);  // same second, cached
  }
  for (const auto ns : samples) {
    std::string s;
    append_rfc3339(s, std::chrono::system_clock::time_point(std::chrono::nanoseconds(ns)));
    ASSERT_EQ(s, reference(ns)) << ns;
  }
}

TEST(JsonWriter, ReplayBasisAndCorrelationAreWrittenByName) {
  Event e = from("audit(1795394826.304:15): op=SA-replayed-pkt src=10.0.0.1 dst=10.0.0.2 spi=4097(0x1001) seqno=4");
  e.replay_basis = ReplayBasis::inferred;
  auto j = render(e);
  EXPECT_EQ(j["replay_basis"], "inferred");
  EXPECT_FALSE(j.contains("replay_reason"));
  e.replay_basis = ReplayBasis::unknown;
  e.replay_reason = "the agent is stopping";
  e.correlation = Correlation::paired;
  j = render(e);
  EXPECT_EQ(j["replay_basis"], "unknown");
  EXPECT_EQ(j["replay_reason"], "the agent is stopping");
  EXPECT_EQ(j["correlation"], "paired");
}

// The typed replay_inference is written byte for byte as the `detail` object
// it replaced, among detail's other keys in their (sorted) order.
TEST(JsonWriter, ReplayInferenceIsWrittenAsTheDetailObjectItReplaced) {
  Event typed = from("audit(1795394826.304:15): op=SA-replayed-pkt src=10.0.0.1 dst=10.0.0.2 spi=4097(0x1001) seqno=4");
  typed.replay_basis = ReplayBasis::inferred;
  Event old = typed;
  typed.replay_inference = ReplayInference{1, 32, 56, 100, 4294967295U};
  old.detail["replay_inference"] = {{"method", "sequence number against the current replay window"},
                                    {"window_top", 1},
                                    {"window", 32},
                                    {"records", 56},
                                    {"counter_delta", {{"replay", 100}, {"replay_window", 4294967295U}}}};
  JsonWriter w("testhost");
  auto line = [&](const Event& e) {
    std::string out;
    w.write(e, out);
    return out;
  };
  EXPECT_EQ(line(typed), line(old));
  for (const char* k : {"a_first", "lost", "summary", "zz_last"}) {
    typed.detail[k] = {{"x", 1}};
    old.detail[k] = {{"x", 1}};
    EXPECT_EQ(line(typed), line(old)) << k;
  }
}

namespace {
XfrmSa esp_sa() {
  XfrmSa sa;
  sa.saddr = IpAddress::parse("10.0.0.1").value();
  sa.daddr = IpAddress::parse("10.0.0.2").value();
  sa.spi = 0x1001;
  sa.proto = 50;
  sa.reqid = 7;
  return sa;
}
}  // namespace

// An SA context made by the table carries its `sa` text; the record is the
// same as from the fields.
TEST(JsonWriter, CachedSaTextIsTheSaObject) {
  XfrmSa sa = esp_sa();
  sa.replay_window = 32;
  sa.aead = XfrmAeadAlg{"rfc4106(gcm(aes))", 128};
  sa.lifetime.soft_byte_limit = sa.lifetime.hard_byte_limit = ~0ULL;
  sa.encap = XfrmEncap{2, 4500, 4500, {}};
  sa.mark = XfrmMark{5, 0xff};
  SaContext c{sa, "b\"q", SaDirection::unknown, DirectionSource::none, DirectionPending::both_ways};
  Event e = from("audit(1795394826.304:15): op=SA-replayed-pkt src=10.0.0.1 dst=10.0.0.2 spi=4097(0x1001) seqno=4");
  e.sa = std::make_shared<const SaContext>(c);
  JsonWriter w("testhost");
  std::string plain, cached;
  w.write(e, plain);
  c.json = sa_json(c, true);
  c.packet_json = sa_json(c, false);
  e.sa = std::make_shared<const SaContext>(c);
  w.write(e, cached);
  EXPECT_EQ(plain, cached);
  EXPECT_TRUE(render(e)["sa"].contains("direction_reason"));

  // A change record on the same SA: the whole object, cached or not.
  e.kind = EventKind::sa_added;
  plain.clear();
  cached.clear();
  w.write(e, cached);
  c.json.clear();
  c.packet_json.clear();
  e.sa = std::make_shared<const SaContext>(c);
  w.write(e, plain);
  EXPECT_EQ(plain, cached);
}

// A packet record's `sa` names the SA; a change record's carries its
// lifetime and counters too.
TEST(JsonWriter, PacketRecordSaNamesTheSa) {
  XfrmSa sa = esp_sa();
  sa.mode = 1;
  sa.replay_window = 32;
  sa.aead = XfrmAeadAlg{"rfc4106(gcm(aes))", 128};
  sa.lifetime.soft_byte_limit = sa.lifetime.hard_byte_limit = ~0ULL;
  sa.current.bytes = 1300;
  sa.current.packets = 10;
  sa.selector.family = 2;
  sa.selector.saddr = sa.saddr;
  sa.selector.daddr = sa.daddr;
  sa.mark = XfrmMark{5, 0xff};
  sa.if_id = 3;
  SaContext c{sa, "b", SaDirection::in, DirectionSource::policy, DirectionPending::none};
  c.json = sa_json(c, true);
  c.packet_json = sa_json(c, false);
  Event e = from("audit(1795394826.304:15): op=SA-replayed-pkt src=10.0.0.1 dst=10.0.0.2 spi=4097(0x1001) seqno=4");
  e.sa = std::make_shared<const SaContext>(c);
  const json p = render(e)["sa"];
  EXPECT_FALSE(p.contains("lifetime"));
  EXPECT_FALSE(p.contains("current"));
  EXPECT_EQ(p["netns"], "b");
  EXPECT_EQ(p["spi"], 0x1001);
  EXPECT_EQ(p["proto"], "esp");
  EXPECT_EQ(p["src"], "10.0.0.1");
  EXPECT_EQ(p["dst"], "10.0.0.2");
  EXPECT_EQ(p["reqid"], 7);
  EXPECT_EQ(p["mode"], "tunnel");
  EXPECT_EQ(p["algorithms"]["aead"]["name"], "rfc4106(gcm(aes))");
  EXPECT_EQ(p["replay_window"], 32);
  EXPECT_EQ(p["esn"], false);
  EXPECT_EQ(p["selector"]["src"], "10.0.0.1");
  EXPECT_EQ(p["direction"], "in");
  EXPECT_EQ(p["direction_source"], "policy");
  EXPECT_EQ(p["mark"]["value"], 5);
  EXPECT_EQ(p["if_id"], 3);

  e.kind = EventKind::sa_expired;
  const json f = render(e)["sa"];
  EXPECT_TRUE(f["lifetime"]["hard"]["bytes"].is_null());
  EXPECT_EQ(f["current"]["bytes"], 1300);
  EXPECT_EQ(f["current"]["packets"], 10);
  json rest = f;
  rest.erase("lifetime");
  rest.erase("current");
  EXPECT_EQ(rest, p) << "the packet form is the whole object less lifetime and current";
}

// Every byte at every place of a string longer than the 8-byte scan: escaped
// as the bytewise rules say, wherever it falls in a word.
TEST(JsonWriter, EscapeScanFindsEveryByteAnywhere) {
  auto esc = [](unsigned char b) -> std::string {
    switch (b) {
      case '"':
        return "\\\"";
      case '\\':
        return "\\\\";
      case '\n':
        return "\\n";
      case '\r':
        return "\\r";
      case '\t':
        return "\\t";
      default:
        break;
    }
    if (b >= 0x80) return "\\ufffd";  // alone, never valid UTF-8
    if (b < 0x20 || b == 0x7F) {
      char u[8];
      std::snprintf(u, sizeof u, "\\u%04x", b);
      return u;
    }
    return std::string(1, static_cast<char>(b));
  };
  for (std::size_t len : {1u, 7u, 8u, 9u, 17u, 24u}) {
    for (std::size_t at = 0; at < len; ++at) {
      for (int b = 0; b < 256; ++b) {
        std::string in(len, 'a');
        in[at] = static_cast<char>(b);
        std::string out;
        append_json_string(out, in);
        const std::string want =
            "\"" + std::string(at, 'a') + esc(static_cast<unsigned char>(b)) + std::string(len - at - 1, 'a') + "\"";
        ASSERT_EQ(out, want) << "byte " << b << " at " << at << " of " << len;
      }
    }
  }
}
