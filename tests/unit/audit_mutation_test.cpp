// Deterministic mutation run over real audit record lines: whatever bytes
// arrive, the parser returns a value or a clear error, and whatever it
// accepts serialises to one valid JSON line. (Coverage-guided fuzzing with
// libFuzzer comes with the hardening issue; this runs in every test pass.)
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <random>
#include <string>
#include <vector>

#include "audit/json_writer.hpp"
#include "audit/normalize.hpp"

using namespace ipsec;

TEST(AuditMutation, NoCrashAndValidJsonForAcceptedInput) {
  const std::vector<std::string> seeds = {
      "audit(1795394830.804:16): op=SA-replayed-pkt src=10.0.0.1 dst=10.0.0.2 spi=4097(0x1001) seqno=1",
      "audit(1795394846.080:25): op=SA-notfound src=fd00:0000:0000:0000:0000:0000:0000:0001 "
      "dst=fd00:0000:0000:0000:0000:0000:0000:0002 flowlbl=0x22e28 spi=57005(0xdead) seqno=1",
      "audit(1795394855.316:32): op=SA-replay-overflow src=10.0.0.1 dst=10.0.0.2 spi=4099(0x1003)",
      "audit(1795394816.852:7): op=SPD-add auid=4294967295 ses=4294967295 subj=unconfined res=1 src=10.0.0.1 "
      "dst=10.0.0.2",
      "audit(1.001:2): op=SPD-delete subj=\"a b\" src=10.1.0.0 src_prefixlen=16 dst=10.2.0.0 dst_prefixlen=24"};
  const std::string dict[] = {
      "=",  " ", "\"", "(", ")", "0x", ":", "\xff", "\xc3", "\0", "\n", "spi=", "src=", "op=", "9999999999999999999999",
      "::", "."};
  std::mt19937 rng(4303);
  JsonWriter w("h");
  std::string out;
  int accepted = 0, rejected = 0;
  for (int iter = 0; iter < 100000; ++iter) {
    std::string s = seeds[rng() % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < edits && !s.empty(); ++k) {
      const std::size_t pos = rng() % s.size();
      switch (rng() % 4) {
        case 0:
          s[pos] = static_cast<char>(rng() & 0xFF);
          break;
        case 1:
          s.erase(pos, 1 + rng() % 8);
          break;
        case 2:
          s.insert(pos, dict[rng() % std::size(dict)]);
          break;
        case 3:
          s.resize(pos);
          break;
      }
    }
    auto r = parse_ipsec_audit_record(s);
    if (!r) {
      ++rejected;
      ASSERT_FALSE(r.error().message.empty());
      continue;
    }
    ++accepted;
    out.clear();
    w.write(event_from_ipsec_audit(*r, std::chrono::system_clock::now()), out);
    ASSERT_FALSE(nlohmann::json::parse(out, nullptr, false).is_discarded()) << out;
    ASSERT_EQ(out.find('\n'), out.size() - 1);
  }
  // Both paths must really be exercised for this test to mean anything.
  EXPECT_GT(accepted, 1000);
  EXPECT_GT(rejected, 1000);
}
