// Replays every input a fuzzer ever broke (tests/fixtures/fuzz/<target>/, see
// docs/FUZZING.md) and the hand-written seeds (tests/fuzz/corpus/<target>/)
// through the fuzz targets' bodies, in every build: a regression fails here
// without clang, and under ASan/UBSan in the sanitizer tree.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_targets.hpp"

namespace fs = std::filesystem;
using namespace ipsec;

namespace {

const fs::path kRoots[] = {fs::path(SOURCE_DIR) / "tests/fixtures/fuzz", fs::path(SOURCE_DIR) / "tests/fuzz/corpus"};

const fuzz::Target* find_target(const std::string& name) {
  for (const auto& t : fuzz::targets())
    if (name == t.name) return &t;
  return nullptr;
}

}  // namespace

TEST(FuzzRegression, EveryDirectoryNamesATarget) {
  for (const auto& root : kRoots) {
    if (!fs::is_directory(root)) continue;
    for (const auto& de : fs::directory_iterator(root)) {
      if (!de.is_directory()) continue;
      EXPECT_NE(find_target(de.path().filename().string()), nullptr)
          << de.path() << " is not named after a target in tests/fuzz/fuzz_targets.hpp";
    }
  }
}

TEST(FuzzRegression, EverySavedInputIsHandled) {
  int replayed = 0;
  for (const auto& root : kRoots) {
    if (!fs::is_directory(root)) continue;
    for (const auto& dir : fs::directory_iterator(root)) {
      const fuzz::Target* t = find_target(dir.path().filename().string());
      if (t == nullptr) continue;
      for (const auto& f : fs::directory_iterator(dir.path())) {
        if (!f.is_regular_file() || f.path().filename() == "README.md") continue;
        std::ifstream in(f.path(), std::ios::binary);
        const std::vector<std::uint8_t> bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
        EXPECT_EQ(t->run(Bytes(bytes)), "") << f.path();
        ++replayed;
      }
    }
  }
  EXPECT_GT(replayed, 0) << "no saved inputs found under " << kRoots[0] << " or " << kRoots[1];
}
