// Kernel audit netlink protocol (NETLINK_AUDIT): status and control messages
// as pure functions. The socket side is in netlink_socket.hpp.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "xfrm/netlink_message.hpp"

namespace ipsec {

inline constexpr std::uint16_t kAuditGet = 1000;   // AUDIT_GET
inline constexpr std::uint16_t kAuditSet = 1001;   // AUDIT_SET
inline constexpr unsigned kAuditGroupReadLog = 1;  // AUDIT_NLGRP_READLOG

struct AuditStatus {
  std::uint32_t enabled{0};  // 0 off, 1 on, 2 on and locked
  std::uint32_t failure{0};
  std::uint32_t pid{0};  // the registered audit daemon, 0 if none
  std::uint32_t rate_limit{0};
  std::uint32_t backlog_limit{0};
  std::uint32_t lost{0};  // records the kernel dropped (all types), wraps at 2^32
  std::uint32_t backlog{0};
};

// AUDIT_GET reply payload (struct audit_status; older kernels send a shorter one).
Result<AuditStatus> parse_audit_status(Bytes payload);

std::vector<std::uint8_t> build_audit_get(std::uint32_t seq);
std::vector<std::uint8_t> build_audit_set_enabled(std::uint32_t seq, bool enabled);

// The classic BPF program for the audit multicast socket: keeps a datagram
// whose (first) netlink message is an AUDIT_MAC_IPSEC_EVENT (1415) and drops
// every other record type (SYSCALL, PATH, USER, ...) in the kernel, before it
// is queued, woken up for or counted against the receive buffer. The socket
// it goes on only listens (the multicast group): AUDIT_GET replies, acks and
// NLMSG_ERROR come on the agent's other audit sockets, so nothing else is
// needed there. The kernel multicasts one record per datagram.
// Returns the program as struct sock_filter words (8 bytes each).
std::vector<std::uint64_t> audit_ipsec_filter_program();
// SO_ATTACH_FILTER of that program on `fd`.
Result<Unit> attach_audit_ipsec_filter(int fd);

// The text of one audit record message: payload minus trailing NULs/newlines.
std::string_view audit_record_text(Bytes payload);

}  // namespace ipsec
