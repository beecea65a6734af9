// NetlinkRequester: asynchronous netlink requests (dumps, GETSA, AUDIT_GET)
// on one socket of their own, driven by the io_context: the event loop never
// waits for the kernel's answer. One request is in flight at a time (the
// kernel runs one dump per socket); the rest wait in order. Replies are
// matched by sequence number (late replies to a timed-out request are
// skipped) and assembled by ReplyAssembler, so a dump that ends early fails
// rather than completes. The deadline is per reply datagram, not per request:
// a dump of 10,000 entries that keeps arriving is not cut off.
//
// The receive buffer is a SecureBuffer (page-aligned, MADV_DONTDUMP) wiped
// after every datagram: replies to XFRM dumps and GETSA carry SA keys.
//
// Owned through a shared_ptr; handlers hold a weak_ptr, so destroying it (or
// close()) drops every pending request without calling it back.
// Single-threaded: runs on the io_context thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "xfrm/netlink_reply.hpp"
#include "xfrm/netlink_socket.hpp"
#include "xfrm/secure_buffer.hpp"

namespace ipsec {

class NetlinkRequester : public std::enable_shared_from_this<NetlinkRequester> {
 public:
  using Build = std::function<std::vector<std::uint8_t>(std::uint32_t seq)>;
  using OnMessage = ReplyAssembler::OnMessage;
  using OnDone = std::function<void(const Result<Unit>&)>;

  static Result<std::shared_ptr<NetlinkRequester>> create(boost::asio::io_context& io, NetlinkSocket sock,
                                                          std::chrono::milliseconds reply_timeout);
  ~NetlinkRequester();
  NetlinkRequester(const NetlinkRequester&) = delete;
  NetlinkRequester& operator=(const NetlinkRequester&) = delete;

  // Queues a request; `build` makes it for the sequence number it is given.
  // on_message gets every reply message; on_done is called exactly once,
  // always from the io_context (never from inside request()), unless the
  // requester is closed or destroyed first.
  void request(Build build, ReplyKind kind, OnMessage on_message, OnDone on_done);
  // The same for a request the kernel answers inside sendmsg (GETSA: see
  // ReplayResolver): when nothing is queued or in flight it is sent now and
  // its replies read without waiting (MSG_DONTWAIT), with no epoll
  // registration and no deadline when they are all there. Returns true when
  // it is done: on_done has then been called, inside this call. Otherwise
  // (busy, or a reply not there yet) it goes on as request() does and
  // on_done comes later from the io_context. Never blocks.
  bool request_now(Build build, ReplyKind kind, OnMessage on_message, OnDone on_done);
  // Drops every queued and in-flight request without calling them back.
  void close();
  bool idle() const { return !current_ && queue_.empty(); }
  std::uint64_t completed() const { return completed_; }

 private:
  struct Pending {
    Build build;
    ReplyKind kind;
    OnMessage on_message;
    OnDone on_done;
  };
  NetlinkRequester(boost::asio::io_context& io, NetlinkSocket sock, int fd, std::chrono::milliseconds reply_timeout);
  void start_next();
  void arm_read();
  void arm_deadline();
  void on_readable();
  // Reads what is queued for the current request (up to kBatch datagrams);
  // true while it still waits for more. `rearm`: each datagram pushes the
  // deadline back (the asynchronous path).
  bool read_queued(bool rearm);
  // Sends current_'s request; false when the send failed (then finished).
  bool send_current();
  void finish(Result<Unit> r);

  boost::asio::io_context& io_;
  NetlinkSocket sock_;
  boost::asio::posix::stream_descriptor desc_;
  boost::asio::steady_timer deadline_;
  std::chrono::milliseconds reply_timeout_;
  SecureBuffer buf_;
  std::deque<Pending> queue_;
  std::optional<Pending> current_;
  std::optional<ReplyAssembler> replies_;
  std::uint32_t seq_{1};
  std::uint64_t generation_{0};  // bumped per request: stale handlers see a different one
  std::uint64_t completed_{0};
  bool closed_{false};
};

}  // namespace ipsec
