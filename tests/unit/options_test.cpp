#include "agent/options.hpp"

#include <gtest/gtest.h>

#include <vector>

using namespace ipsec;

namespace {
Result<Options> parse(std::vector<std::string> args, Options base = {}) {
  std::vector<char*> argv;
  static std::string prog = "ipsec-auditd";
  argv.push_back(prog.data());
  for (auto& a : args) argv.push_back(a.data());
  return parse_command_line(static_cast<int>(argv.size()), argv.data(), std::move(base));
}
}  // namespace

TEST(Options, EmbeddedDefault) {
  auto o = parse({});
  ASSERT_TRUE(o);
  auto outs = effective_outputs(*o);
  ASSERT_EQ(outs.size(), 1u);
  EXPECT_EQ(outs[0].path, kDefaultJsonl);
  o = parse({"--foreground"});
  ASSERT_TRUE(o);
  EXPECT_EQ(effective_outputs(*o).size(), 2u);
}

TEST(Options, RepeatableOutputsAndValues) {
  auto o = parse({"--output", "jsonl:/tmp/a.jsonl", "--output=stdout", "--state-dir", "/tmp/s",
                  "--control-socket=/tmp/c.sock", "--enable-kernel-audit", "--control-group", "ipsec-admins"});
  ASSERT_TRUE(o) << o.error().message;
  ASSERT_EQ(o->outputs.size(), 2u);
  EXPECT_EQ(o->outputs[1].kind, OutputSpec::Kind::stdout_);
  EXPECT_EQ(o->state_dir, "/tmp/s");
  EXPECT_EQ(o->control_socket, "/tmp/c.sock");
  EXPECT_TRUE(o->enable_kernel_audit);
  EXPECT_EQ(o->control_group, "ipsec-admins");
}

TEST(Config, ControlGroup) {
  Options o;
  ASSERT_TRUE(apply_config(R"({"control_group":"adm"})", o));
  EXPECT_EQ(o.control_group, "adm");
  ASSERT_TRUE(apply_config(R"({"control_group":"1001"})", o));
  for (auto bad : {R"({"control_group":""})", R"({"control_group":3})", R"({"control_group":"a b"})",
                   R"({"control_group":"-x"})"})
    EXPECT_FALSE(apply_config(bad, o)) << bad;
}

TEST(Options, BadOptionsAreOneLineErrors) {
  for (auto args : std::vector<std::vector<std::string>>{{"--nope"},
                                                         {"--output"},
                                                         {"--output", "file.jsonl"},
                                                         {"--state-dir", "rel"},
                                                         {"--foreground=1"},
                                                         {"--audit-status-interval", "-1"},
                                                         {"--control-group", "a/b"},
                                                         {"--control-socket", "/" + std::string(200, 'x')}}) {
    auto o = parse(args);
    ASSERT_FALSE(o) << args[0];
    EXPECT_EQ(o.error().message.find('\n'), std::string::npos);
  }
}

TEST(Config, AppliesAndCommandLineOverrides) {
  Options base;
  ASSERT_TRUE(apply_config(
      R"({"outputs":["jsonl:/tmp/cfg.jsonl"],"kernel_audit":{"enable":true,"status_interval_seconds":2}})", base));
  EXPECT_TRUE(base.enable_kernel_audit);
  EXPECT_EQ(base.audit_status_interval_s, 2);
  auto o = parse({"--output", "stdout"}, base);
  ASSERT_TRUE(o);
  ASSERT_EQ(o->outputs.size(), 1u);
  EXPECT_EQ(o->outputs[0].kind, OutputSpec::Kind::stdout_);
  EXPECT_TRUE(o->enable_kernel_audit);
}

TEST(Config, CountersInterval) {
  Options o;
  EXPECT_EQ(o.counters_interval_s, 10);
  ASSERT_TRUE(apply_config(R"({"counters":{"interval_seconds":0}})", o));
  EXPECT_EQ(o.counters_interval_s, 0);
  ASSERT_TRUE(apply_config(R"({"counters":{"interval_seconds":3600}})", o));
  EXPECT_EQ(o.counters_interval_s, 3600);
  EXPECT_FALSE(apply_config(R"({"counters":{"interval_seconds":3601}})", o));
}

TEST(Config, FloodAndMetrics) {
  Options o;
  EXPECT_EQ(o.flood.rate, 10);
  EXPECT_EQ(o.flood.burst, 50u);
  EXPECT_EQ(o.flood.interval, std::chrono::seconds(60));
  EXPECT_EQ(o.flood.max_keys, 4096u);
  EXPECT_TRUE(o.metrics_path.empty()) << "metrics are off by default";
  EXPECT_EQ(o.metrics_interval_s, 15);
  ASSERT_TRUE(apply_config(R"({"flood":{"rate":0.5,"burst":5,"interval_seconds":10,"max_keys":100},
                               "metrics":{"path":"/var/lib/prometheus/node-exporter/ipsec_audit.prom",
                                          "interval_seconds":30}})",
                           o));
  EXPECT_EQ(o.flood.rate, 0.5);
  EXPECT_EQ(o.flood.burst, 5u);
  EXPECT_EQ(o.flood.interval, std::chrono::seconds(10));
  EXPECT_EQ(o.flood.max_keys, 100u);
  EXPECT_EQ(o.metrics_path, "/var/lib/prometheus/node-exporter/ipsec_audit.prom");
  EXPECT_EQ(o.metrics_interval_s, 30);
  ASSERT_TRUE(apply_config(R"({"metrics":{"path":null}})", o));
  EXPECT_TRUE(o.metrics_path.empty());
}

TEST(Config, Nflog) {
  Options o;
  EXPECT_TRUE(o.nflog_enable);
  EXPECT_EQ(o.nflog_group, 4963);
  ASSERT_TRUE(apply_config(R"({"nflog":{"enable":false,"group":7,"fragment_interval_seconds":2}})", o));
  EXPECT_FALSE(o.nflog_enable);
  EXPECT_EQ(o.nflog_group, 7);
  EXPECT_EQ(o.fragment_interval_s, 2);
}

TEST(Config, ErrorsNameTheKey) {
  struct C {
    const char* json;
    const char* key;
  } cases[] = {{R"({"outptus":[]})", "outptus"},
               {R"({"outputs":"stdout"})", "outputs"},
               {R"({"outputs":["bogus"]})", "outputs"},
               {R"({"kernel_audit":{"enable":"yes"}})", "kernel_audit.enable"},
               {R"({"counters":{"interval_seconds":-1}})", "counters.interval_seconds"},
               {R"({"counters":{"interval":1}})", "counters.interval"},
               {R"({"counters":5})", "counters"},
               {R"({"kernel_audit":{"x":1}})", "kernel_audit.x"},
               {R"({"state_dir":"rel"})", "state_dir"},
               {R"({"receive_buffer_bytes":1})", "receive_buffer_bytes"},
               {R"({"flood":1})", "flood"},
               {R"({"flood":{"rate":-1}})", "flood.rate"},
               {R"({"flood":{"burst":0}})", "flood.burst"},
               {R"({"flood":{"burst":1.5}})", "flood.burst"},
               {R"({"flood":{"interval_seconds":0}})", "flood.interval_seconds"},
               {R"({"flood":{"max_keys":2}})", "flood.max_keys"},
               {R"({"flood":{"rat":1}})", "flood.rat"},
               {R"({"metrics":{"path":"rel.prom"}})", "metrics.path"},
               {R"({"metrics":{"path":"/var/lib/x.txt"}})", "metrics.path"},
               {R"({"metrics":{"interval_seconds":0}})", "metrics.interval_seconds"},
               {R"({"metrics":{"port":9100}})", "metrics.port"},
               {R"({"nflog":{"group":0}})", "nflog.group"},
               {R"({"nflog":{"enable":1}})", "nflog.enable"},
               {R"({"nflog":{"fragment_interval_seconds":0}})", "nflog.fragment_interval_seconds"},
               {R"({"nflog":{"x":1}})", "nflog.x"}};
  for (const auto& c : cases) {
    Options o;
    auto r = apply_config(c.json, o);
    ASSERT_FALSE(r) << c.json;
    EXPECT_NE(r.error().message.find(c.key), std::string::npos) << r.error().message;
  }
  Options o;
  EXPECT_FALSE(apply_config("{not json", o));
  EXPECT_FALSE(apply_config("[]", o));
  EXPECT_FALSE(apply_config(std::string("\xff\xfe{}"), o));
}

// A key or value quoted in an error is written printably: the agent prints
// the error as one line on stderr (found by fuzz_config).
TEST(Config, ErrorsQuoteUntrustedTextOnOneLine) {
  for (const char* json : {R"({"a\nb":1})", R"({"kernel_audit":{"x\u0000\n":1}})", R"({"netns":["a\nb/"]})",
                           R"({"outputs":["jsonl:rel\npath"]})"}) {
    Options o;
    auto r = apply_config(json, o);
    ASSERT_FALSE(r) << json;
    EXPECT_EQ(r.error().message.find('\n'), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find("\\x0a"), std::string::npos) << r.error().message;
  }
}

#include <random>

// Whatever the config file holds, apply_config returns Ok or one-line error
// and never throws (the agent turns the error into exit code 2).
TEST(Config, MutatedConfigsNeverThrow) {
  const std::string seed =
      R"({"outputs":["jsonl:/var/log/x.jsonl","stdout"],"state_dir":"/var/lib/x","control_socket":"/run/x.sock",)"
      R"("kernel_audit":{"enable":true,"status_interval_seconds":5},"netns":["","vpn"],"xfrm_aevents":false,)"
      R"("receive_buffer_bytes":8388608})";
  const std::string dict[] = {"{", "}", "[", "]", "\"", ":", ",", "null", "true", "1e400", "-1",
                              "18446744073709551616", "\xff", "\\u0000", "9223372036854775807"};
  std::mt19937 rng(17);
  int ok = 0, bad = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string s = seed;
    for (int k = 0; k < 1 + static_cast<int>(rng() % 3); ++k) {
      const std::size_t pos = rng() % s.size();
      if (rng() % 2) s.insert(pos, dict[rng() % std::size(dict)]);
      else s.erase(pos, 1 + rng() % 6);
    }
    Options o;
    Result<Unit> r = Unit{};
    ASSERT_NO_THROW(r = apply_config(s, o)) << s;
    if (r) {
      ++ok;
    } else {
      ++bad;
      EXPECT_EQ(r.error().message.find('\n'), std::string::npos);
    }
  }
  EXPECT_GT(ok, 50);
  EXPECT_GT(bad, 1000);
}

TEST(Options, NetnsByNameOrAbsolutePath) {
  auto o = parse({"--netns", "vpn", "--netns", "/proc/1234/ns/net", "--netns", "/var/run/docker/netns/abc"});
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_EQ(o->netns, (std::vector<std::string>{"vpn", "/proc/1234/ns/net", "/var/run/docker/netns/abc"}));
  for (const char* bad : {"a/b", ".", "..", ""}) EXPECT_FALSE(parse({"--netns", bad})) << bad;
}

TEST(Config, ControlSocketPathFitsSunPath) {
  Options o;
  const std::string long_path = "/" + std::string(120, 'x');
  auto r = apply_config(R"({"control_socket":")" + long_path + R"("})", o);
  ASSERT_FALSE(r) << "a path longer than sun_path is refused at load, not at bind";
  EXPECT_NE(r.error().message.find("control_socket"), std::string::npos) << r.error().message;
  ASSERT_TRUE(apply_config(R"({"control_socket":"/run/x/control.sock"})", o));
  EXPECT_EQ(o.control_socket, "/run/x/control.sock");
}
