// Deterministic mutation run over every XFRM fixture recorded from the real
// kernel (and the lab's ESP captures): flipped, inserted and cut bytes. The
// parser returns a value or an error; what it accepts goes through the SA
// table and the JSON writer, and must come out as valid JSON lines.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "audit/json_writer.hpp"
#include "audit/xfrm_table.hpp"
#include "xfrm/xfrm_message.hpp"

using namespace ipsec;

TEST(XfrmMutation, NoCrashAndValidJsonForAcceptedInput) {
  std::vector<std::vector<std::uint8_t>> seeds;
  for (const auto& de : std::filesystem::directory_iterator(std::string(FIXTURE_DIR) + "/xfrm")) {
    if (de.path().extension() != ".bin") continue;
    std::ifstream in(de.path(), std::ios::binary);
    seeds.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  ASSERT_GE(seeds.size(), 20u);
  std::mt19937 rng(4303);
  XfrmTable table("m");
  JsonWriter w("h");
  std::string out;
  int accepted = 0, rejected = 0;
  for (int iter = 0; iter < 60000; ++iter) {
    std::vector<std::uint8_t> b = seeds[rng() % seeds.size()];
    if (b.size() < 20) continue;
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < edits; ++k) {
      // Keep the 16-byte header's length honest half of the time, so the
      // mutations reach the attributes.
      const std::size_t lo = (rng() & 1) && b.size() > 16 ? 16 : 0;
      const std::size_t pos = lo + rng() % (b.size() - lo);
      switch (rng() % 3) {
        case 0: b[pos] = static_cast<std::uint8_t>(rng()); break;
        case 1: b[pos] ^= static_cast<std::uint8_t>(1u << (rng() % 8)); break;
        case 2: b.resize(std::max<std::size_t>(pos, 16)); break;
      }
    }
    (void)for_each_netlink_message(Bytes(b), [&](const NetlinkMessage& m) {
      auto p = parse_xfrm_message(m);
      if (!p) {
        ++rejected;
        EXPECT_FALSE(p.error().message.empty());
        return true;
      }
      ++accepted;
      for (const auto& e : table.apply(*p, std::chrono::system_clock::now())) {
        out.clear();
        w.write(e, out);
        EXPECT_FALSE(nlohmann::json::parse(out, nullptr, false).is_discarded()) << out;
      }
      return true;
    });
  }
  EXPECT_GT(accepted, 1000);
  EXPECT_GT(rejected, 1000);
}
