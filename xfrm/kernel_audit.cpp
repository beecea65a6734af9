#include "xfrm/kernel_audit.hpp"

#include <libmnl/libmnl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/netlink.h>
#include <sys/socket.h>
#include <arpa/inet.h>

#include <cstddef>
#include <cerrno>
#include <cstring>
#include <string>

namespace ipsec {

Result<AuditStatus> parse_audit_status(Bytes payload) {
  // Everything up to and including `backlog` exists on every kernel since 2.6.
  constexpr std::size_t kMin = offsetof(audit_status, backlog) + sizeof(__u32);
  if (payload.size() < kMin) return make_error(Errc::truncated, "audit_status shorter than 32 bytes");
  audit_status s{};
  std::memcpy(&s, payload.data(), payload.size() < sizeof s ? payload.size() : sizeof s);
  AuditStatus r;
  r.enabled = s.enabled;
  r.failure = s.failure;
  r.pid = s.pid;
  r.rate_limit = s.rate_limit;
  r.backlog_limit = s.backlog_limit;
  r.lost = s.lost;
  r.backlog = s.backlog;
  return r;
}

namespace {
std::vector<std::uint8_t> build(std::uint16_t type, std::uint32_t seq, const void* body, std::size_t len) {
  std::vector<std::uint8_t> buf(NLMSG_SPACE(len));
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
  nlh->nlmsg_type = type;
  nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  nlh->nlmsg_seq = seq;
  if (len) std::memcpy(mnl_nlmsg_put_extra_header(nlh, len), body, len);
  buf.resize(nlh->nlmsg_len);
  return buf;
}
}  // namespace

std::vector<std::uint8_t> build_audit_get(std::uint32_t seq) { return build(kAuditGet, seq, nullptr, 0); }

std::vector<std::uint8_t> build_audit_set_enabled(std::uint32_t seq, bool enabled) {
  audit_status s{};
  s.mask = AUDIT_STATUS_ENABLED;
  s.enabled = enabled ? 1 : 0;
  return build(kAuditSet, seq, &s, sizeof s);
}

std::string_view audit_record_text(Bytes payload) {
  std::string_view t(reinterpret_cast<const char*>(payload.data()), payload.size());
  while (!t.empty() && (t.back() == '\0' || t.back() == '\n')) t.remove_suffix(1);
  return t;
}

std::vector<std::uint64_t> audit_ipsec_filter_program() {
  // ldh [4]: nlmsg_type. Classic BPF loads in network byte order; the header
  // is in host order, hence htons. A datagram shorter than 6 bytes fails the
  // load, which drops it (the reader would reject it anyway).
  const sock_filter prog[] = {
      BPF_STMT(BPF_LD | BPF_H | BPF_ABS, offsetof(nlmsghdr, nlmsg_type)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, htons(AUDIT_MAC_IPSEC_EVENT), 0, 1),
      BPF_STMT(BPF_RET | BPF_K, 0xFFFFFFFFu),  // keep all of it
      BPF_STMT(BPF_RET | BPF_K, 0),            // drop
  };
  static_assert(sizeof(sock_filter) == sizeof(std::uint64_t));
  std::vector<std::uint64_t> words(sizeof prog / sizeof prog[0]);
  std::memcpy(words.data(), prog, sizeof prog);
  return words;
}

Result<Unit> attach_audit_ipsec_filter(int fd) {
  auto words = audit_ipsec_filter_program();
  sock_fprog fprog{};
  fprog.len = static_cast<unsigned short>(words.size());
  fprog.filter = reinterpret_cast<sock_filter*>(words.data());
  if (::setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof fprog) != 0)
    return make_error(Errc::io, std::string("SO_ATTACH_FILTER: ") + std::strerror(errno), errno);
  return Unit{};
}

}  // namespace ipsec
