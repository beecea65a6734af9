// Least privilege, done by the agent itself (libcap-ng): once its sockets
// and outputs are open, it keeps exactly the capabilities its configuration
// needs and drops every other one from the effective, permitted, inheritable
// and ambient sets and (when it may: CAP_SETPCAP) from the bounding set; it
// sets PR_SET_NO_NEW_PRIVS and PR_SET_DUMPABLE 0 (SA messages pass through its
// memory: no core dumps, no ptrace by the same uid).
//
//   CAP_AUDIT_READ     the kernel audit multicast group (always)
//   CAP_NET_ADMIN      XFRM dumps and GETSA requests, SO_RCVBUFFORCE (always;
//                      an NFLOG/nftables source would need this same one)
//   CAP_AUDIT_CONTROL  AUDIT_GET / AUDIT_SET: status polling or --enable-kernel-audit
//   CAP_SYS_ADMIN      setns() into other network namespaces (--netns other than own)
//
// Works as root and as a non-root user started with these as ambient
// capabilities (the systemd unit's AmbientCapabilities=).
#pragma once

#include <string>
#include <vector>

#include "agent/options.hpp"
#include "xfrm/result.hpp"

namespace ipsec {

// The capabilities `o` needs after start-up (CAP_* numbers), in a fixed order.
std::vector<int> required_capabilities(const Options& o);
// "cap_audit_read,cap_net_admin" (libcap-ng's lowercase names).
std::string capability_names(const std::vector<int>& caps);

struct PrivilegeDrop {
  std::vector<int> kept;     // the wanted ones the process had
  std::vector<int> missing;  // wanted but not held at start (features will fail and say so)
  bool bounding_dropped{false};
};
// Drops every capability but `keep` and makes the process non-dumpable.
Result<PrivilegeDrop> drop_privileges(const std::vector<int>& keep);

}  // namespace ipsec
