#include "xfrm/kernel_audit.hpp"

#include <libmnl/libmnl.h>
#include <linux/audit.h>
#include <linux/netlink.h>

#include <cstddef>
#include <cstring>

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

}  // namespace ipsec
