#include "xfrm/netlink_message.hpp"

#include <linux/netlink.h>

#include <cstring>

namespace ipsec {

Result<NetlinkMessage> parse_netlink_header(Bytes at, std::size_t* consumed) {
  nlmsghdr h{};
  if (at.size() < sizeof h) return make_error(Errc::truncated, "netlink header truncated");
  std::memcpy(&h, at.data(), sizeof h);
  if (h.nlmsg_len < NLMSG_HDRLEN) return make_error(Errc::malformed, "nlmsg_len shorter than its header");
  if (h.nlmsg_len > at.size()) return make_error(Errc::truncated, "nlmsg_len beyond the datagram");
  NetlinkMessage m;
  m.type = h.nlmsg_type;
  m.flags = h.nlmsg_flags;
  m.seq = h.nlmsg_seq;
  m.port_id = h.nlmsg_pid;
  m.payload = at.subspan(NLMSG_HDRLEN, h.nlmsg_len - NLMSG_HDRLEN);
  const std::size_t aligned = NLMSG_ALIGN(h.nlmsg_len);
  *consumed = aligned < at.size() ? aligned : at.size();
  return m;
}

Result<int> parse_netlink_error(Bytes payload) {
  std::int32_t err = 0;
  if (payload.size() < sizeof err) return make_error(Errc::truncated, "NLMSG_ERROR payload truncated");
  std::memcpy(&err, payload.data(), sizeof err);
  return static_cast<int>(err);
}

}  // namespace ipsec
