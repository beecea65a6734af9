// NetlinkSocket: RAII owner of one libmnl netlink socket (CLOEXEC, non-blocking).
// Every datagram is checked at the socket: it must come from the kernel
// (nl_pid 0, full sockaddr) and must not be truncated. Single-threaded.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "xfrm/netlink_message.hpp"
#include "xfrm/netlink_reply.hpp"
#include "xfrm/result.hpp"

struct mnl_socket;

namespace ipsec {

class NetlinkSocket {
 public:
  // Opens a socket on `bus` (NETLINK_AUDIT, NETLINK_XFRM, ...) in the
  // caller's current network namespace and binds it with no groups.
  static Result<NetlinkSocket> open(int bus);

  NetlinkSocket(NetlinkSocket&&) noexcept;
  NetlinkSocket& operator=(NetlinkSocket&&) noexcept;
  ~NetlinkSocket();

  int fd() const;
  std::uint32_t port_id() const;

  Result<Unit> join_group(unsigned group);
  // SO_RCVBUFFORCE (needs CAP_NET_ADMIN), falling back to SO_RCVBUF (capped by
  // net.core.rmem_max). Returns what the kernel actually granted.
  Result<int> set_receive_buffer(int bytes);

  enum class RecvStatus {
    ok,        // `size` bytes of a valid datagram are in the buffer
    again,     // nothing to read
    overrun,   // ENOBUFS: the kernel dropped messages for this socket (count unknown)
    rejected,   // a datagram not from the kernel: dropped (and wiped)
    truncated,  // a datagram from the kernel larger than the buffer (MSG_TRUNC):
                // `size` bytes of its head are in the buffer, the rest is lost
    error,      // any other failure (errno in `err`)
  };
  struct Received {
    RecvStatus status{RecvStatus::again};
    std::size_t size{0};
    int err{0};
  };
  Received receive(std::span<std::uint8_t> buffer);
  // The same on any datagram socket (tests use a socketpair). A rejected
  // datagram is wiped from the buffer before returning: it may have been an
  // SA message all the same.
  static Received receive_from(int fd, std::span<std::uint8_t> buffer);

  // Up to buffer.size() / slot datagrams with one recvmmsg(2), each into its
  // own `slot` bytes of `buffer` and checked as receive() checks one; the
  // results go to out[0..n). Returns n (0 with out[0] again / overrun / error
  // when nothing was read). Fewer than the slots: the queue is empty now.
  std::size_t receive_many(std::span<std::uint8_t> buffer, std::size_t slot, std::span<Received> out);
  static std::size_t receive_many_from(int fd, std::span<std::uint8_t> buffer, std::size_t slot,
                                       std::span<Received> out);

  Result<Unit> send(Bytes message);

  // Sends `request` and feeds every reply message with its sequence number to
  // on_message until the reply is complete or failed (ReplyAssembler), or
  // no datagram came for `timeout`. Blocks: for tools and for the agent's
  // start and stop only, never while events flow (NetlinkRequester is the
  // asynchronous form).
  Result<Unit> transact(Bytes request, std::uint32_t seq, const std::function<void(const NetlinkMessage&)>& on_message,
                        ReplyKind kind, std::chrono::milliseconds timeout = std::chrono::milliseconds(2000));

 private:
  explicit NetlinkSocket(mnl_socket* s);
  struct Closer {
    void operator()(mnl_socket* s) const;
  };
  std::unique_ptr<mnl_socket, Closer> sock_;
};

}  // namespace ipsec
