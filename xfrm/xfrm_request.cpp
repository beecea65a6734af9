// Request builders for NETLINK_XFRM.
#include "xfrm/xfrm_request.hpp"

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/netlink.h>
#include <linux/xfrm.h>
#include <sys/socket.h>

#include <cstring>

namespace ipsec {

namespace {
std::vector<std::uint8_t> build(std::uint16_t type, std::uint16_t flags, std::uint32_t seq, const void* body,
                                std::size_t len) {
  std::vector<std::uint8_t> buf(NLMSG_SPACE(len));
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
  nlh->nlmsg_type = type;
  nlh->nlmsg_flags = flags;
  nlh->nlmsg_seq = seq;
  if (len) std::memcpy(mnl_nlmsg_put_extra_header(nlh, len), body, len);
  buf.resize(nlh->nlmsg_len);
  return buf;
}
}  // namespace

// Dump requests carry no payload: the kernel reads optional filter
// attributes (XFRMA_ADDRESS_FILTER, XFRMA_PROTO) and there are none.
// No NLM_F_ACK: a dump ends with NLMSG_DONE.
std::vector<std::uint8_t> build_xfrm_dump_sa(std::uint32_t seq) {
  return build(XFRM_MSG_GETSA, NLM_F_REQUEST | NLM_F_DUMP, seq, nullptr, 0);
}

std::vector<std::uint8_t> build_xfrm_dump_policy(std::uint32_t seq) {
  return build(XFRM_MSG_GETPOLICY, NLM_F_REQUEST | NLM_F_DUMP, seq, nullptr, 0);
}

XfrmSaRef sa_ref(const XfrmSa& sa) { return XfrmSaRef{sa.daddr, sa.spi, sa.proto, sa.mark, sa.if_id}; }

std::vector<std::uint8_t> build_xfrm_get_sa(std::uint32_t seq, const XfrmSaRef& sa) {
  xfrm_usersa_id id{};
  std::memcpy(&id.daddr, sa.daddr.bytes.data(), sa.daddr.family == Family::inet ? 4 : 16);
  id.spi = htonl(sa.spi);
  id.family = sa.daddr.family == Family::inet ? AF_INET : AF_INET6;
  id.proto = sa.proto;
  std::vector<std::uint8_t> buf = build(XFRM_MSG_GETSA, NLM_F_REQUEST | NLM_F_ACK, seq, &id, sizeof id);
  if (!sa.mark && !sa.if_id) return buf;
  buf.resize(buf.size() + 2 * MNL_ATTR_HDRLEN + MNL_ALIGN(sizeof(xfrm_mark)) + MNL_ALIGN(sizeof(std::uint32_t)));
  nlmsghdr* nlh = reinterpret_cast<nlmsghdr*>(buf.data());
  if (sa.mark) {
    const xfrm_mark m{sa.mark->value, sa.mark->mask};
    mnl_attr_put(nlh, XFRMA_MARK, sizeof m, &m);
  }
  if (sa.if_id) mnl_attr_put_u32(nlh, XFRMA_IF_ID, *sa.if_id);
  buf.resize(nlh->nlmsg_len);
  return buf;
}

std::vector<std::uint8_t> build_xfrm_get_default(std::uint32_t seq) {
  const xfrm_userpolicy_default d{};
  return build(XFRM_MSG_GETDEFAULT, NLM_F_REQUEST | NLM_F_ACK, seq, &d, sizeof d);
}

}  // namespace ipsec
