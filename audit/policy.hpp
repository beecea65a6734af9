// The audit policy: two switches, Success and Failure (RFC 4303 section 4:
// "MUST allow a system administrator to enable or disable auditing for ESP";
// CIS 17.9.1 wants both on, the default). Records whose class is off are
// not written. Persistence and the control CLI come with ipsec-auditctl.
#pragma once

#include "audit/event.hpp"

namespace ipsec {

struct AuditPolicy {
  bool success{true};
  bool failure{true};
  bool allows(AuditClass c) const { return c == AuditClass::success ? success : failure; }
};

}  // namespace ipsec
