// ipsec-audit-bench: the hot paths, measured with Google Benchmark.
//   kernel audit datagram bytes -> framing -> parse -> Event -> JSON line
//   XFRM NEWSA datagram -> parse -> XfrmTable.apply -> sa-added JSON line
//   N tunnels brought up and flushed at once: XfrmTable.apply + ChangeCorrelator
//   (with the kernel audit record of each change) + JsonWriter, per change
//   (ns_per_change should stay flat from 250 to 10,000 tunnels), and the
//   start-up load of a dump of N SAs and N policies.
// Standard Google Benchmark flags; items_per_second is records per second.
// A figure, never a test: nothing here asserts a speed.
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "audit/correlator.hpp"
#include "audit/datagram_sink.hpp"
#include "audit/json_writer.hpp"
#include "audit/normalize.hpp"
#include "audit/pipeline.hpp"
#include "audit/xfrm_table.hpp"
#include "xfrm/kernel_audit.hpp"
#include "xfrm/netlink_message.hpp"
#include "xfrm/xfrm_message.hpp"

// Every allocation of this binary is counted (a replaced global operator
// new), so a benchmark can report allocations per record.
namespace {
std::atomic<std::uint64_t> g_allocs{0};
}  // namespace

// GCC sees malloc behind the inlined operator new and free behind delete.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(std::size_t n) {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace {
using namespace ipsec;

// allocs_per_record: allocations made in the timed loop, per item.
struct AllocCount {
  std::uint64_t start{g_allocs.load(std::memory_order_relaxed)};
  void report(benchmark::State& state, std::int64_t items) const {
    state.counters["allocs_per_record"] = benchmark::Counter(
        static_cast<double>(g_allocs.load(std::memory_order_relaxed) - start) / static_cast<double>(items));
  }
};

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
  const AllocCount allocs;
  for (auto _ : state) {
    (void)for_each_netlink_message(Bytes(dgram), [&](const NetlinkMessage& m) {
      auto r = parse_ipsec_audit_record(audit_record_text(m.payload));
      if (r) {
        line.clear();
        w.write(event_from_ipsec_audit(std::move(*r), std::chrono::system_clock::now()), line);
        bytes += line.size();
      }
      return true;
    });
    benchmark::DoNotOptimize(line.data());
  }
  state.SetItemsProcessed(state.iterations());
  allocs.report(state, state.iterations());
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
  const AllocCount allocs;
  for (auto _ : state) p.submit(event_from_ipsec_audit(*rec, std::chrono::system_clock::now()));
  state.SetItemsProcessed(state.iterations());
  allocs.report(state, state.iterations());
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

// ---- thousands of tunnels ----

// Tunnel i as strongSwan installs it: an outbound and an inbound tunnel-mode
// SA (one reqid), then an out and an in policy whose templates carry the
// tunnel endpoints and the reqid. Every address is unique per tunnel.
IpAddress v4(std::uint32_t host_order) {
  const std::uint32_t be = __builtin_bswap32(host_order);
  return IpAddress::from_v4(&be);
}
constexpr std::uint32_t kLocal = 0xC6336401;     // 198.51.100.1
constexpr std::uint32_t kPeerBase = 0x64400000;  // 100.64.0.0 + i
constexpr std::uint32_t kNetBase = 0x0A000000;   // 10.i.i.0/24 behind peer i

XfrmSa bench_sa(std::uint32_t i, bool out) {
  XfrmSa sa;
  sa.saddr = out ? v4(kLocal) : v4(kPeerBase + i);
  sa.daddr = out ? v4(kPeerBase + i) : v4(kLocal);
  sa.spi = (out ? 0xC0000000U : 0xC8000000U) + i;
  sa.proto = 50;
  sa.reqid = i + 1;
  sa.mode = 1;
  sa.replay_window = 32;
  sa.aead = XfrmAeadAlg{"rfc4106(gcm(aes))", 128};
  sa.lifetime.soft_byte_limit = sa.lifetime.hard_byte_limit = ~0ULL;
  sa.lifetime.soft_packet_limit = sa.lifetime.hard_packet_limit = ~0ULL;
  return sa;
}

XfrmPolicy bench_policy(std::uint32_t i, bool out) {
  XfrmPolicy p;
  p.dir = out ? 1 : 0;
  p.index = (i + 1) * 16 + p.dir;
  p.selector.family = 2;
  const IpAddress local = v4(0xC0A80000), remote = v4(kNetBase + (i << 8));  // 192.168.0.0/16, 10.x.y.0/24
  p.selector.saddr = out ? local : remote;
  p.selector.daddr = out ? remote : local;
  p.selector.prefixlen_s = out ? 16 : 24;
  p.selector.prefixlen_d = out ? 24 : 16;
  XfrmTemplate t;
  t.proto = 50;
  t.mode = 1;
  t.reqid = i + 1;
  t.saddr = out ? v4(kLocal) : v4(kPeerBase + i);
  t.daddr = out ? v4(kPeerBase + i) : v4(kLocal);
  p.templates.push_back(t);
  return p;
}

// ---- a replay record with its SA (the --netns path of issue 17) ----

// One SA-replayed-pkt record on a tracked SA, as XfrmTracker + ReplayResolver
// make it: the audit text parsed, the SA's shared context attached, the
// verdict and message set, then through the Pipeline (policy, the flood
// limiter opened as in the side-by-side run, serialise, a null sink). Every
// 28 records the SA is refreshed (a GETSA reply: the lab saw 709 for 20,000
// records), which gives the entry a new context. Arg 0: replay_basis
// "counter"; arg 1: "inferred" (with its replay_inference object; in the lab
// run 12,608 of 20,000 records).
void BM_ReplayRecordWithSa(benchmark::State& state) {
  const bool inferred = state.range(0) != 0;
  XfrmSa sa = bench_sa(0, false);
  XfrmTable t("b");
  t.load({sa}, {bench_policy(0, false)});
  const auto found = t.find(sa.daddr, sa.spi);
  if (found.size() != 1) {
    state.SkipWithError("no SA");
    return;
  }
  const auto dgram = audit_datagram("audit(1795394830.804:16): op=SA-replayed-pkt src=100.64.0.0 dst=198.51.100.1 "
                                    "spi=3355443200(0xc8000000) seqno=1");
  Pipeline p("gw1.example.net");
  p.add_sink(std::make_unique<NullSink>());
  FloodConfig open;  // as the side-by-side run: one line per event
  open.burst = 1000000;
  open.rate = 1000000;
  p.set_flood(open);
  std::size_t line_bytes = 0;
  const AllocCount allocs;
  std::uint64_t n = 0;
  for (auto _ : state) {
    if (n++ % 28 == 0) {
      sa.stats.replay = static_cast<std::uint32_t>(n);
      (void)t.refresh(sa);
    }
    (void)for_each_netlink_message(Bytes(dgram), [&](const NetlinkMessage& m) {
      auto r = parse_ipsec_audit_record(audit_record_text(m.payload));
      if (!r) return true;
      Event e = event_from_ipsec_audit(std::move(*r), std::chrono::system_clock::now());
      const auto entries = t.find(*e.dst, *e.spi);
      e.sa = t.context(*entries[0]);
      e.replay_detail.reset();
      if (inferred) {
        e.replay_basis = ReplayBasis::inferred;
        e.replay_inference = ReplayInference{40, 32, 28, 27, 0};
      } else {
        e.replay_basis = ReplayBasis::counter;
      }
      e.message = "ESP anti-replay check failed (duplicate sequence number inside the replay window)";
      append_flow(e.message, e);
      if (line_bytes == 0) {  // once: the size of the line the sinks get
        std::string line;
        JsonWriter("gw1.example.net").write(e, line);
        line_bytes = line.size();
      }
      p.submit(std::move(e));
      return true;
    });
  }
  state.SetItemsProcessed(state.iterations());
  allocs.report(state, state.iterations());
  state.counters["json_bytes"] = benchmark::Counter(static_cast<double>(line_bytes));
}
BENCHMARK(BM_ReplayRecordWithSa)->Arg(0)->Arg(1);

// The kernel audit record the change gives (SAD-add, SPD-delete, ...).
Event audit_of(const Event& x) {
  Event a;
  a.kind = x.kind == EventKind::sa_expired ? EventKind::sa_deleted : x.kind;
  a.source = Source::kernel_audit;
  a.src = x.src;
  a.dst = x.dst;
  a.spi = x.spi;
  a.kernel = AuditHeader{1795394846, 80, 25};
  a.audit = KernelAuditFields{};
  a.audit->op = "SAD-add";
  a.audit->auid = 0;
  a.audit->ses = 1;
  return a;
}

// N tunnels up (4N changes: 2N SAs then 2N policies, as one `ip -batch` or
// strongSwan gives them) and flushed (SAD flush, SPD flush: 4N records),
// through the table, the correlator with one audit record per change, and
// the writer.
void tunnels_up_and_flushed(benchmark::State& state, bool pipeline) {
  const auto n = static_cast<std::uint32_t>(state.range(0));
  std::vector<XfrmMessage> up;
  for (std::uint32_t i = 0; i < n; ++i) {
    up.emplace_back(XfrmNewSa{kXfrmMsgNewSa, bench_sa(i, true)});
    up.emplace_back(XfrmNewSa{kXfrmMsgNewSa, bench_sa(i, false)});
  }
  for (std::uint32_t i = 0; i < n; ++i) {
    up.emplace_back(XfrmNewPolicy{kXfrmMsgNewPolicy, bench_policy(i, true)});
    up.emplace_back(XfrmNewPolicy{kXfrmMsgNewPolicy, bench_policy(i, false)});
  }
  const std::vector<XfrmMessage> down{XfrmFlushSa{0}, XfrmFlushPolicy{0}};
  JsonWriter w("h");
  std::string line;
  std::size_t records = 0;
  for (auto _ : state) {
    XfrmTable t("bench");
    ChangeCorrelator c(std::chrono::milliseconds(250));
    const auto now = std::chrono::system_clock::now();
    const auto t0 = ChangeCorrelator::Clock::now();
    records = 0;
    auto run = [&](const std::vector<XfrmMessage>& msgs) {
      for (const auto& m : msgs)
        for (auto& e : t.apply(m, now)) {
          if (!pipeline) {
            ++records;
            continue;
          }
          c.add(audit_of(e), t0);
          c.add(std::move(e), t0);
        }
      c.take_ready(t0 + std::chrono::seconds(1), false, [&](Event& e) {
        line.clear();
        w.write(e, line);
        ++records;
      });
    };
    run(up);
    run(down);
    benchmark::DoNotOptimize(line.data());
  }
  if (records != 8ULL * n) state.SkipWithError("not every change was written once");
  state.counters["changes"] = static_cast<double>(8ULL * n);
  state.counters["ns_per_change"] = benchmark::Counter(
      static_cast<double>(8ULL * n) / 1e9, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * 8ULL * n));
}
void BM_TunnelsUpAndFlushed(benchmark::State& state) { tunnels_up_and_flushed(state, true); }
// The table alone (no correlator, no writer): its share of the cost.
void BM_TableOnlyTunnelsUpAndFlushed(benchmark::State& state) { tunnels_up_and_flushed(state, false); }
BENCHMARK(BM_TableOnlyTunnelsUpAndFlushed)->Arg(250)->Arg(1000)->Arg(4000)->Arg(10000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TunnelsUpAndFlushed)->Arg(250)->Arg(1000)->Arg(4000)->Arg(10000)->Unit(benchmark::kMillisecond);

// The start-up dump: N SAs and N policies loaded at once (N = 2 x tunnels).
void BM_LoadDump(benchmark::State& state) {
  const auto n = static_cast<std::uint32_t>(state.range(0));
  std::vector<XfrmSa> sas;
  std::vector<XfrmPolicy> pols;
  for (std::uint32_t i = 0; i < n / 2; ++i)
    for (bool out : {true, false}) {
      sas.push_back(bench_sa(i, out));
      pols.push_back(bench_policy(i, out));
    }
  for (auto _ : state) {
    XfrmTable t("bench");
    t.load(sas, pols);
    benchmark::DoNotOptimize(t.sa_count());
  }
  state.counters["ns_per_entry"] = benchmark::Counter(
      static_cast<double>(2ULL * n) / 1e9, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_LoadDump)->Arg(1000)->Arg(10000)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
