#include "xfrm/netlink_socket.hpp"

#include <libmnl/libmnl.h>
#include <linux/netlink.h>
#include <poll.h>
#include <sys/socket.h>

#include <string.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "xfrm/netlink_reply.hpp"
#include "xfrm/secure_buffer.hpp"

namespace ipsec {

namespace {
// A dump datagram is at most 32 KiB (the kernel sizes it to the reader's
// buffer up to that); room for twice that.
constexpr std::size_t kReplyBufferSize = 64 * 1024;

Error sys_error(const char* what) {
  const int e = errno;
  return make_error(Errc::io, std::string(what) + ": " + std::strerror(e), e);
}
}  // namespace

void NetlinkSocket::Closer::operator()(mnl_socket* s) const { mnl_socket_close(s); }

NetlinkSocket::NetlinkSocket(mnl_socket* s) : sock_(s) {}
NetlinkSocket::NetlinkSocket(NetlinkSocket&&) noexcept = default;
NetlinkSocket& NetlinkSocket::operator=(NetlinkSocket&&) noexcept = default;
NetlinkSocket::~NetlinkSocket() = default;

Result<NetlinkSocket> NetlinkSocket::open(int bus) {
  mnl_socket* s = mnl_socket_open2(bus, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (s == nullptr) return sys_error("netlink socket");
  NetlinkSocket owner(s);
  if (mnl_socket_bind(s, 0, MNL_SOCKET_AUTOPID) < 0) return sys_error("netlink bind");
  // Ask the kernel to report ENOBUFS rather than stay silent (the default is
  // to report; make it explicit), and to give extended ACKs where it can.
  int off = 0, on = 1;
  (void)mnl_socket_setsockopt(s, NETLINK_NO_ENOBUFS, &off, sizeof off);
  (void)mnl_socket_setsockopt(s, NETLINK_EXT_ACK, &on, sizeof on);
  return owner;
}

int NetlinkSocket::fd() const { return mnl_socket_get_fd(sock_.get()); }
std::uint32_t NetlinkSocket::port_id() const { return mnl_socket_get_portid(sock_.get()); }

Result<Unit> NetlinkSocket::join_group(unsigned group) {
  int g = static_cast<int>(group);
  if (mnl_socket_setsockopt(sock_.get(), NETLINK_ADD_MEMBERSHIP, &g, sizeof g) < 0)
    return sys_error("netlink add membership");
  return Unit{};
}

Result<int> NetlinkSocket::set_receive_buffer(int bytes) {
  if (setsockopt(fd(), SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) < 0 &&
      setsockopt(fd(), SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes) < 0)
    return sys_error("SO_RCVBUF");
  int got = 0;
  socklen_t len = sizeof got;
  if (getsockopt(fd(), SOL_SOCKET, SO_RCVBUF, &got, &len) < 0) return sys_error("getsockopt SO_RCVBUF");
  return got;
}

NetlinkSocket::Received NetlinkSocket::receive(std::span<std::uint8_t> buffer) { return receive_from(fd(), buffer); }

NetlinkSocket::Received NetlinkSocket::receive_from(int fd, std::span<std::uint8_t> buffer) {
  sockaddr_nl from{};
  iovec iov{buffer.data(), buffer.size()};
  msghdr msg{};
  msg.msg_name = &from;
  msg.msg_namelen = sizeof from;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  const ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return {RecvStatus::again, 0, errno};
    if (errno == ENOBUFS) return {RecvStatus::overrun, 0, errno};
    return {RecvStatus::error, 0, errno};
  }
  const auto got = static_cast<std::size_t>(n) < buffer.size() ? static_cast<std::size_t>(n) : buffer.size();
  if (msg.msg_namelen != sizeof from || from.nl_family != AF_NETLINK || from.nl_pid != 0) {
    explicit_bzero(buffer.data(), got);
    return {RecvStatus::rejected, 0, 0};
  }
  if ((msg.msg_flags & MSG_TRUNC) != 0) return {RecvStatus::truncated, got, 0};
  return {RecvStatus::ok, got, 0};
}

std::size_t NetlinkSocket::receive_many(std::span<std::uint8_t> buffer, std::size_t slot, std::span<Received> out) {
  return receive_many_from(fd(), buffer, slot, out);
}

std::size_t NetlinkSocket::receive_many_from(int fd, std::span<std::uint8_t> buffer, std::size_t slot,
                                             std::span<Received> out) {
  constexpr std::size_t kMaxSlots = 256;
  const std::size_t n = std::min({buffer.size() / slot, out.size(), kMaxSlots});
  if (n == 0) return 0;
  sockaddr_nl from[kMaxSlots];
  iovec iov[kMaxSlots];
  mmsghdr msgs[kMaxSlots];
  for (std::size_t i = 0; i < n; ++i) {
    from[i] = sockaddr_nl{};
    iov[i] = iovec{buffer.data() + i * slot, slot};
    msgs[i] = mmsghdr{};
    msgs[i].msg_hdr.msg_name = &from[i];
    msgs[i].msg_hdr.msg_namelen = sizeof from[i];
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  const int got = recvmmsg(fd, msgs, static_cast<unsigned>(n), MSG_DONTWAIT, nullptr);
  if (got < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
      out[0] = {RecvStatus::again, 0, errno};
    else if (errno == ENOBUFS)
      out[0] = {RecvStatus::overrun, 0, errno};
    else
      out[0] = {RecvStatus::error, 0, errno};
    return 0;
  }
  for (std::size_t i = 0; i < static_cast<std::size_t>(got); ++i) {
    const msghdr& m = msgs[i].msg_hdr;
    const std::size_t len = std::min<std::size_t>(msgs[i].msg_len, slot);
    if (m.msg_namelen != sizeof from[i] || from[i].nl_family != AF_NETLINK || from[i].nl_pid != 0) {
      explicit_bzero(buffer.data() + i * slot, len);
      out[i] = {RecvStatus::rejected, 0, 0};
    } else if ((m.msg_flags & MSG_TRUNC) != 0) {
      out[i] = {RecvStatus::truncated, len, 0};
    } else {
      out[i] = {RecvStatus::ok, len, 0};
    }
  }
  return static_cast<std::size_t>(got);
}

Result<Unit> NetlinkSocket::send(Bytes message) {
  if (mnl_socket_sendto(sock_.get(), message.data(), message.size()) < 0) return sys_error("netlink send");
  return Unit{};
}

Result<Unit> NetlinkSocket::transact(Bytes request, std::uint32_t seq,
                                     const std::function<void(const NetlinkMessage&)>& on_message, ReplyKind kind,
                                     std::chrono::milliseconds timeout) {
  if (auto s = send(request); !s) return s.error();
  SecureBuffer buf(kReplyBufferSize);
  ReplyAssembler replies(seq, kind);
  // The deadline is per reply datagram, not per request: a long dump that
  // keeps coming is not cut off.
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (replies.state() == ReplyAssembler::State::more) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return make_error(Errc::io, "netlink request timed out", ETIMEDOUT);
    pollfd p{fd(), POLLIN, 0};
    const int pr = poll(&p, 1, static_cast<int>(left.count()));
    if (pr < 0 && errno != EINTR) return sys_error("poll");
    if (pr <= 0) continue;
    const Received r = receive(buf.span());
    if (r.status == RecvStatus::again || r.status == RecvStatus::rejected) continue;
    if (r.status == RecvStatus::overrun || r.status == RecvStatus::error) {
      errno = r.err;
      return sys_error("netlink receive");
    }
    if (r.status == RecvStatus::truncated)
      replies.on_truncated(Bytes(buf.data(), r.size));
    else
      replies.on_datagram(Bytes(buf.data(), r.size), on_message);
    // Replies to XFRM dumps and GETSA carry SA keys: wipe what was read.
    buf.wipe(r.size);
    deadline = std::chrono::steady_clock::now() + timeout;
  }
  if (replies.state() == ReplyAssembler::State::failed) return replies.error();
  return Unit{};
}

}  // namespace ipsec
