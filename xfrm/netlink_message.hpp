// Netlink framing as pure functions over byte spans: walk the nlmsghdr
// sequence of one datagram with every length checked before any read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "xfrm/result.hpp"

namespace ipsec {

using Bytes = std::span<const std::uint8_t>;

struct NetlinkMessage {
  std::uint16_t type{0};
  std::uint16_t flags{0};
  std::uint32_t seq{0};
  std::uint32_t port_id{0};
  Bytes payload;  // after the (aligned) header, nlmsg_len - NLMSG_HDRLEN bytes
};

// Calls fn(const NetlinkMessage&) for each message in the datagram, in order.
// fn returns false to stop early. A message whose nlmsg_len is shorter than a
// header or longer than what is left is an error: the rest of the datagram
// cannot be trusted. Trailing padding shorter than a header is ignored.
template <typename Fn>
Result<Unit> for_each_netlink_message(Bytes datagram, Fn&& fn);

// NLMSG_ERROR payload: the (negative) errno the kernel reports, 0 for an ACK.
Result<int> parse_netlink_error(Bytes payload);

// ---- implementation ----
Result<NetlinkMessage> parse_netlink_header(Bytes at, std::size_t* consumed);

template <typename Fn>
Result<Unit> for_each_netlink_message(Bytes datagram, Fn&& fn) {
  while (datagram.size() >= 16) {
    std::size_t used = 0;
    auto m = parse_netlink_header(datagram, &used);
    if (!m) return m.error();
    if (!fn(*m)) break;
    datagram = datagram.subspan(used);
  }
  return Unit{};
}

}  // namespace ipsec
