// The audit policy file parser and the auditpol-style labels.
#include "audit/policy.hpp"

#include <gtest/gtest.h>

using namespace ipsec;

TEST(AuditPolicy, Labels) {
  EXPECT_EQ(policy_label({true, true}), "Success and Failure");
  EXPECT_EQ(policy_label({true, false}), "Success");
  EXPECT_EQ(policy_label({false, true}), "Failure");
  EXPECT_EQ(policy_label({false, false}), "No Auditing");
  EXPECT_EQ(policy_json({false, true}), (nlohmann::json{{"success", false}, {"failure", true}, {"label", "Failure"}}));
}

TEST(AuditPolicy, RoundTrip) {
  for (bool s : {false, true})
    for (bool f : {false, true}) {
      const AuditPolicy p{s, f};
      auto back = parse_audit_policy(serialize_audit_policy(p));
      ASSERT_TRUE(back.ok()) << back.error().message;
      EXPECT_EQ(*back, p);
    }
  auto p = parse_audit_policy(R"({"v":1,"success":false,"failure":true})");
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(p->success);
  EXPECT_TRUE(p->failure);
}

TEST(AuditPolicy, Rejected) {
  const auto full = serialize_audit_policy({false, false});
  for (std::size_t n = 0; n + 1 < full.size(); ++n)  // every truncation (the '\n' alone is optional)
    EXPECT_FALSE(parse_audit_policy(full.substr(0, n)).ok()) << full.substr(0, n);
  for (std::string_view s : {"", "null", "[]", "{}", "{\"v\":1,\"success\":true}", "{\"v\":1,\"failure\":true}",
                             "{\"success\":true,\"failure\":true}", "{\"v\":2,\"success\":true,\"failure\":true}",
                             "{\"v\":\"1\",\"success\":true,\"failure\":true}",
                             "{\"v\":1,\"success\":1,\"failure\":true}",
                             "{\"v\":1,\"success\":true,\"failure\":\"yes\"}",
                             "{\"v\":1,\"success\":true,\"failure\":true,\"x\":0}",
                             "{\"v\":1,\"success\":true,\"failure\":true,\"label\":3}", "\xff\xfe", "garbage"}) {
    auto r = parse_audit_policy(s);
    EXPECT_FALSE(r.ok()) << s;
    if (!r) {
      EXPECT_FALSE(r.error().message.empty());
    }
  }
  EXPECT_FALSE(parse_audit_policy(std::string(kMaxPolicyFileBytes + 1, ' ')).ok());
  EXPECT_FALSE(parse_audit_policy(std::string(3000, '[')).ok());
  EXPECT_FALSE(parse_audit_policy(std::string("{\"v\":1,\"success\":true,\"failure\":true}\0", 38)).ok());
}
