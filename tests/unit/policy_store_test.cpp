// The policy file on disk: atomic save, load of every bad state (missing,
// corrupt, a directory, a FIFO, a symlink) without a crash or a hang.
#include "agent/policy_store.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

using namespace ipsec;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/policy-store-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

void write(const fs::path& p, std::string_view text) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << text;
}

}  // namespace

TEST(PolicyStore, MissingThenSavedThenLoaded) {
  TempDir d;
  PolicyStore st(d.path.string() + "/");
  EXPECT_EQ(st.path(), (d.path / kPolicyFileName).string());
  EXPECT_EQ(st.load().state, PolicyLoad::State::missing);
  ASSERT_TRUE(st.save({false, true}).ok());
  auto l = st.load();
  ASSERT_EQ(l.state, PolicyLoad::State::loaded) << l.error;
  EXPECT_EQ(l.policy, (AuditPolicy{false, true}));
  struct stat sb {};
  ASSERT_EQ(::stat(st.path().c_str(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0640u);
  ASSERT_TRUE(st.save({true, true}).ok());
  EXPECT_EQ(st.load().policy, (AuditPolicy{true, true}));
  // No temp file left behind.
  int files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(d.path)) ++files;
  EXPECT_EQ(files, 1);
}

TEST(PolicyStore, CorruptAndTruncated) {
  TempDir d;
  PolicyStore st(d.path.string());
  for (std::string_view text : {"", "{\"v\":1,\"succ", "\xff\xff\xff", "{\"v\":1,\"success\":true}"}) {
    write(st.path(), text);
    auto l = st.load();
    EXPECT_EQ(l.state, PolicyLoad::State::rejected) << text;
    EXPECT_NE(l.error.find(st.path()), std::string::npos) << l.error;
  }
  write(st.path(), std::string(100000, ' '));
  EXPECT_EQ(st.load().state, PolicyLoad::State::rejected);
  // A save replaces the corrupt file.
  ASSERT_TRUE(st.save({true, false}).ok());
  EXPECT_EQ(st.load().state, PolicyLoad::State::loaded);
}

TEST(PolicyStore, NotAFile) {
  TempDir d;
  PolicyStore st(d.path.string());
  fs::create_directory(st.path());
  auto l = st.load();
  EXPECT_EQ(l.state, PolicyLoad::State::rejected);
  EXPECT_NE(l.error.find("directory"), std::string::npos) << l.error;
  auto s = st.save({true, true});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("directory"), std::string::npos) << s.error().message;
  fs::remove(st.path());

  ASSERT_EQ(::mkfifo(st.path().c_str(), 0600), 0);
  EXPECT_EQ(st.load().state, PolicyLoad::State::rejected);  // and it did not hang
  fs::remove(st.path());

  write(d.path / "elsewhere", serialize_audit_policy({true, true}));
  fs::create_symlink(d.path / "elsewhere", st.path());
  l = st.load();
  EXPECT_EQ(l.state, PolicyLoad::State::rejected);
  EXPECT_NE(l.error.find("symbolic link"), std::string::npos) << l.error;
}

TEST(PolicyStore, UnwritableDirectory) {
  PolicyStore st("/nonexistent-ipsec-audit-dir");
  EXPECT_EQ(st.load().state, PolicyLoad::State::missing);
  EXPECT_FALSE(st.save({true, true}).ok());
}
