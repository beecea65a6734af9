// The agent's service parts that are pure: kernel audit state records and
// the capability set a configuration needs.
#include <gtest/gtest.h>
#include <linux/capability.h>

#include "agent/kernel_audit_source.hpp"
#include "agent/privileges.hpp"

using namespace ipsec;

namespace {
AuditStatus healthy() {
  AuditStatus s;
  s.enabled = 1;
  s.failure = 1;
  s.backlog_limit = 8192;
  s.rate_limit = 0;
  return s;
}
}  // namespace

TEST(KernelAuditState, Concerns) {
  EXPECT_TRUE(audit_status_concerns(healthy()).empty());
  auto s = healthy();
  s.enabled = 0;
  s.failure = 2;
  s.backlog_limit = 64;
  EXPECT_EQ(audit_status_concerns(s), (std::vector<std::string>{"disabled", "failure-panic", "backlog-limit-small"}));
  s = healthy();
  s.backlog_limit = 0;  // unlimited
  EXPECT_TRUE(audit_status_concerns(s).empty());
  s.enabled = 2;  // on and locked
  EXPECT_TRUE(audit_status_concerns(s).empty());
}

TEST(KernelAuditState, ChangesThatMatter) {
  auto a = healthy(), b = healthy();
  b.lost = 10;
  b.backlog = 5;
  b.pid = 99;
  EXPECT_FALSE(audit_settings_changed(a, b)) << "counters and the daemon pid are not settings";
  for (auto f : {&AuditStatus::enabled, &AuditStatus::failure, &AuditStatus::rate_limit, &AuditStatus::backlog_limit}) {
    b = healthy();
    b.*f += 1;
    EXPECT_TRUE(audit_settings_changed(a, b));
  }
}

TEST(KernelAuditState, RecordForASwitchOff) {
  auto before = healthy(), now = healthy();
  now.enabled = 0;
  const auto e = make_kernel_audit_changed(before, now);
  EXPECT_EQ(e.kind, EventKind::kernel_audit_changed);
  EXPECT_NE(e.message.find("enabled 1 -> 0"), std::string::npos) << e.message;
  EXPECT_NE(e.message.find("KERNEL AUDIT IS DISABLED"), std::string::npos) << e.message;
  EXPECT_EQ(e.detail["kernel_audit"]["enabled"], 0);
  EXPECT_EQ(e.detail["kernel_audit_before"]["enabled"], 1);
  EXPECT_EQ(e.detail["concerns"], nlohmann::json({"disabled"}));
}

TEST(KernelAuditState, RecordAtStart) {
  auto now = healthy();
  now.failure = 2;
  const auto e = make_kernel_audit_changed(std::nullopt, now);
  EXPECT_NE(e.message.find("panic"), std::string::npos) << e.message;
  EXPECT_FALSE(e.detail.contains("kernel_audit_before"));
  EXPECT_EQ(e.detail["kernel_audit"]["failure"], 2);
}

TEST(Privileges, TheSetFollowsTheConfiguration) {
  Options o;
  EXPECT_EQ(required_capabilities(o), (std::vector<int>{CAP_AUDIT_READ, CAP_NET_ADMIN, CAP_AUDIT_CONTROL}));
  o.audit_status_interval_s = 0;
  EXPECT_EQ(required_capabilities(o), (std::vector<int>{CAP_AUDIT_READ, CAP_NET_ADMIN}));
  o.enable_kernel_audit = true;
  EXPECT_EQ(required_capabilities(o), (std::vector<int>{CAP_AUDIT_READ, CAP_NET_ADMIN, CAP_AUDIT_CONTROL}));
  o.enable_kernel_audit = false;
  o.netns = {"", "vpn"};
  EXPECT_EQ(required_capabilities(o), (std::vector<int>{CAP_AUDIT_READ, CAP_NET_ADMIN, CAP_SYS_ADMIN}));
  o.netns = {"all"};
  EXPECT_EQ(required_capabilities(o), (std::vector<int>{CAP_AUDIT_READ, CAP_NET_ADMIN, CAP_SYS_ADMIN}));
  EXPECT_EQ(capability_names({CAP_AUDIT_READ, CAP_NET_ADMIN}), "cap_audit_read,cap_net_admin");
}
