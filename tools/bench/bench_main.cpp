// ipsec-audit-bench: the hot paths, measured with Google Benchmark.
//   kernel audit datagram bytes -> framing -> parse -> Event -> JSON line
//   XFRM NEWSA datagram -> parse -> XfrmTable.apply -> sa-added JSON line
// Standard Google Benchmark flags; items_per_second is records per second.
// A figure, never a test: nothing here asserts a speed.
#include <benchmark/benchmark.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "audit/datagram_sink.hpp"
#include "audit/json_writer.hpp"
#include "audit/normalize.hpp"
#include "audit/pipeline.hpp"
#include "audit/xfrm_table.hpp"
#include "xfrm/kernel_audit.hpp"
#include "xfrm/netlink_message.hpp"
#include "xfrm/xfrm_message.hpp"

namespace {
using namespace ipsec;

std::vector<std::uint8_t> audit_datagram(const std::string& text) {
  std::vector<std::uint8_t> b(16 + text.size() + 1, 0);
  const std::uint32_t len = static_cast<std::uint32_t>(b.size());
  const std::uint16_t type = kAuditMacIpsecEvent;
  std::memcpy(b.data(), &len, 4);
  std::memcpy(b.data() + 4, &type, 2);
  std::memcpy(b.data() + 16, text.data(), text.size());
  return b;
}

void run_audit(benchmark::State& state, const std::string& text) {
  const auto dgram = audit_datagram(text);
  JsonWriter w("gw1.example.net");
  std::string line;
  std::size_t bytes = 0;
  for (auto _ : state) {
    (void)for_each_netlink_message(Bytes(dgram), [&](const NetlinkMessage& m) {
      auto r = parse_ipsec_audit_record(audit_record_text(m.payload));
      if (r) {
        line.clear();
        w.write(event_from_ipsec_audit(*r, std::chrono::system_clock::now()), line);
        bytes += line.size();
      }
      return true;
    });
    benchmark::DoNotOptimize(line.data());
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["json_bytes"] =
      benchmark::Counter(static_cast<double>(bytes) / static_cast<double>(state.iterations()));
}

void BM_AuditIcvV4ToJson(benchmark::State& s) {
  run_audit(s, "audit(1795394826.304:15): op=SA-icv-failure src=10.0.0.1 dst=10.0.0.2 spi=4097(0x1001) seqno=4");
}
void BM_AuditNotFoundV6ToJson(benchmark::State& s) {
  run_audit(s,
            "audit(1795394846.080:25): op=SA-notfound src=fd00:0000:0000:0000:0000:0000:0000:0001 "
            "dst=fd00:0000:0000:0000:0000:0000:0000:0002 flowlbl=0x22e28 spi=57005(0xdead) seqno=1");
}
BENCHMARK(BM_AuditIcvV4ToJson);
BENCHMARK(BM_AuditNotFoundV6ToJson);

// Through the Pipeline (policy + serialise once + a null sink), as the agent does.
void BM_PipelineNullSink(benchmark::State& state) {
  auto rec = parse_ipsec_audit_record(
      "audit(1795394826.304:15): op=SA-icv-failure src=10.0.0.1 dst=10.0.0.2 spi=4097(0x1001) seqno=4");
  Pipeline p("gw1.example.net");
  p.add_sink(std::make_unique<NullSink>());
  for (auto _ : state) p.submit(event_from_ipsec_audit(*rec, std::chrono::system_clock::now()));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PipelineNullSink);

// What the structured sinks add per record on top of the JSON line: the
// journald datagram and the RFC 5424 message (built, not sent).
void run_structured(benchmark::State& state, bool journald) {
  auto rec = parse_ipsec_audit_record(
      "audit(1795394826.304:15): op=SA-icv-failure src=10.0.0.1 dst=10.0.0.2 spi=4097(0x1001) seqno=4");
  const auto e = event_from_ipsec_audit(*rec, std::chrono::system_clock::now());
  std::string line, out;
  JsonWriter("gw1.example.net").write(e, line);
  for (auto _ : state) {
    out.clear();
    if (journald)
      append_journal_datagram(out, journal_fields(e, line));
    else
      append_rfc5424(out, e, line, "gw1.example.net", 4242);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations());
}
void BM_JournalDatagram(benchmark::State& s) { run_structured(s, true); }
void BM_Rfc5424Message(benchmark::State& s) { run_structured(s, false); }
BENCHMARK(BM_JournalDatagram);
BENCHMARK(BM_Rfc5424Message);

// A real NEWSA captured in the ESP lab: parse (keys skipped) and apply.
void BM_XfrmNewSaApply(benchmark::State& state) {
  std::ifstream in(std::string(FIXTURE_DIR) + "/xfrm/esp-newsa-aead-v4.bin", std::ios::binary);
  const std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.empty()) {
    state.SkipWithError("fixture missing");
    return;
  }
  XfrmTable t("bench");
  JsonWriter w("h");
  std::string line;
  for (auto _ : state) {
    (void)for_each_netlink_message(Bytes(bytes), [&](const NetlinkMessage& m) {
      auto p = parse_xfrm_message(m);
      if (p)
        for (const auto& e : t.apply(*p, std::chrono::system_clock::now())) {
          line.clear();
          w.write(e, line);
        }
      return true;
    });
    benchmark::DoNotOptimize(line.data());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_XfrmNewSaApply);

}  // namespace

BENCHMARK_MAIN();
