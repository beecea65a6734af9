// NETLINK_XFRM requests: nlmsghdr-framed, ready for NetlinkSocket::send /
// transact. Pure builders; no I/O.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "xfrm/ip_address.hpp"
#include "xfrm/xfrm_message.hpp"

namespace ipsec {

// Dumps: the replies are NEWSA / NEWPOLICY messages (NLM_F_MULTI) and NLMSG_DONE.
std::vector<std::uint8_t> build_xfrm_dump_sa(std::uint32_t seq);
std::vector<std::uint8_t> build_xfrm_dump_policy(std::uint32_t seq);

// How the kernel finds one SA for GETSA: (mark, daddr, SPI, proto). The
// kernel looks the SA up with XFRMA_MARK's value & mask (0 when absent), so
// a marked SA is only found when its mark is sent. XFRMA_IF_ID is sent when
// set: it names the SA fully, though 6.1 does not look at it for GETSA.
struct XfrmSaRef {
  IpAddress daddr;
  std::uint32_t spi{0};  // host order
  std::uint8_t proto{0};
  std::optional<XfrmMark> mark;
  std::optional<std::uint32_t> if_id;
};
XfrmSaRef sa_ref(const XfrmSa& sa);

// One SA. The unicast reply is a NEWSA with current lifetime and stats,
// followed by an ACK.
std::vector<std::uint8_t> build_xfrm_get_sa(std::uint32_t seq, const XfrmSaRef& sa);
// The default policies. The unicast reply is a GETDEFAULT, then an ACK.
std::vector<std::uint8_t> build_xfrm_get_default(std::uint32_t seq);

}  // namespace ipsec
