// The audit policy: two switches, Success and Failure (RFC 4303 section 4:
// "MUST allow a system administrator to enable or disable auditing for ESP";
// CIS 17.9.1 wants both on, the default). Records whose class is off are
// not written. The policy file (<state_dir>/audit-policy.json) is parsed here
// as a pure function; the agent reads and writes it (agent/policy_store).
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "audit/event.hpp"
#include "xfrm/result.hpp"

namespace ipsec {

struct AuditPolicy {
  bool success{true};
  bool failure{true};
  bool allows(AuditClass c) const { return c == AuditClass::success ? success : failure; }
  friend bool operator==(const AuditPolicy&, const AuditPolicy&) = default;
};

// auditpol's words: "Success and Failure", "Success", "Failure", "No Auditing".
std::string_view policy_label(const AuditPolicy& p);
// {"success": bool, "failure": bool, "label": "..."}
nlohmann::json policy_json(const AuditPolicy& p);

// The policy file: {"v":1,"success":bool,"failure":bool} (an informational
// "label" string may be there too). Anything else (not JSON, truncated, a
// missing or mistyped key, an unknown key, another version, more than 4 KiB)
// is an error naming what is wrong. Never throws.
inline constexpr std::size_t kMaxPolicyFileBytes = 4096;
Result<AuditPolicy> parse_audit_policy(std::string_view text);
// The file's text for `p` (one line, ends in '\n'); parse_audit_policy reads it back.
std::string serialize_audit_policy(const AuditPolicy& p);

}  // namespace ipsec
