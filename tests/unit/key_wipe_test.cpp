// Nothing the XFRM parser frees holds an SA key. This binary replaces the
// global operator delete with one that, while a test watches, looks for the
// key in every block before freeing it (a separate binary: the replacement
// must not touch the other tests). The input is the recorded NEWSA with an
// AEAD key (tests/fixtures/xfrm/esp-newsa-aead-v4.bin, key 0x0102...14),
// placed at an odd address so that the parser takes its aligned copy.
#include <gtest/gtest.h>
#include <malloc.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <new>
#include <vector>

#include "xfrm/netlink_message.hpp"
#include "xfrm/xfrm_message.hpp"

namespace {
bool g_watch = false;
int g_found = 0;
const std::uint8_t kKey[20] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20};

void check_block(void* p) {
  if (!g_watch || p == nullptr) return;
  const std::size_t n = malloc_usable_size(p);
  const auto* b = static_cast<const std::uint8_t*>(p);
  for (std::size_t i = 0; i + sizeof kKey <= n; ++i)
    if (std::memcmp(b + i, kKey, sizeof kKey) == 0) {
      ++g_found;
      return;
    }
}
}  // namespace

// The matching operator new: malloc, so that free() is right for every block.
void* operator new(std::size_t n) {
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  check_block(p);
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  check_block(p);
  std::free(p);
}

using namespace ipsec;

namespace {
std::vector<std::uint8_t> fixture() {
  std::ifstream in(std::string(FIXTURE_DIR) + "/xfrm/esp-newsa-aead-v4.bin", std::ios::binary);
  EXPECT_TRUE(in);
  return std::vector<std::uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
}  // namespace

// The detector itself finds a key in a freed block: otherwise the test below
// could not fail.
TEST(KeyWipe, DetectorSeesAKeyInAFreedBlock) {
  auto* v = new std::vector<std::uint8_t>(std::begin(kKey), std::end(kKey));
  g_found = 0;
  g_watch = true;
  delete v;  // frees the vector's buffer (holding the key), then the vector
  g_watch = false;
  EXPECT_GE(g_found, 1);
}

TEST(KeyWipe, UnalignedParseLeavesNoKeyInFreedMemory) {
  const auto file = fixture();
  ASSERT_GE(file.size(), 16u);
  // The fixture really holds the key.
  bool has = false;
  for (std::size_t i = 0; i + sizeof kKey <= file.size(); ++i) has = has || !std::memcmp(&file[i], kKey, sizeof kKey);
  ASSERT_TRUE(has);
  // At an odd address: the parser works from an aligned copy.
  std::vector<std::uint8_t> shifted(file.size() + 1);
  std::copy(file.begin(), file.end(), shifted.begin() + 1);
  int parsed = 0;
  g_found = 0;
  g_watch = true;
  auto walk = for_each_netlink_message(Bytes(shifted).subspan(1), [&](const NetlinkMessage& m) {
    NetlinkMessage odd = m;  // the walk's view of the shifted buffer: odd payload address
    if (reinterpret_cast<std::uintptr_t>(odd.payload.data()) % 4 == 0) return true;
    auto r = parse_xfrm_message(odd);
    if (r && std::holds_alternative<XfrmNewSa>(*r)) ++parsed;
    return true;
  });
  g_watch = false;
  ASSERT_TRUE(walk);
  EXPECT_EQ(parsed, 1);
  EXPECT_EQ(g_found, 0) << "a freed block held the SA key";
}
