#include "agent/netlink_requester.hpp"

#include <unistd.h>

#include <boost/asio/post.hpp>
#include <cerrno>
#include <cstring>
#include <string>

namespace ipsec {

namespace {
// A dump datagram is at most 32 KiB; room for twice that.
constexpr std::size_t kBufferSize = 64 * 1024;
// Datagrams read per wake-up before yielding to the other sources.
constexpr int kBatch = 64;
}  // namespace

Result<std::shared_ptr<NetlinkRequester>> NetlinkRequester::create(boost::asio::io_context& io, NetlinkSocket sock,
                                                                   std::chrono::milliseconds reply_timeout) {
  const int fd = ::dup(sock.fd());
  if (fd < 0) return make_error(Errc::io, std::string("dup: ") + std::strerror(errno), errno);
  return std::shared_ptr<NetlinkRequester>(new NetlinkRequester(io, std::move(sock), fd, reply_timeout));
}

NetlinkRequester::NetlinkRequester(boost::asio::io_context& io, NetlinkSocket sock, int fd,
                                   std::chrono::milliseconds reply_timeout)
    : io_(io), sock_(std::move(sock)), desc_(io, fd), deadline_(io), reply_timeout_(reply_timeout), buf_(kBufferSize) {}

NetlinkRequester::~NetlinkRequester() { close(); }

void NetlinkRequester::close() {
  closed_ = true;
  queue_.clear();
  current_.reset();
  replies_.reset();
  ++generation_;
  boost::system::error_code ec;
  deadline_.cancel();
  desc_.cancel(ec);
}

void NetlinkRequester::request(Build build, ReplyKind kind, OnMessage on_message, OnDone on_done) {
  if (closed_) return;
  queue_.push_back(Pending{std::move(build), kind, std::move(on_message), std::move(on_done)});
  if (!current_)
    boost::asio::post(io_, [w = weak_from_this()] {
      if (auto self = w.lock(); self && !self->current_) self->start_next();
    });
}

void NetlinkRequester::start_next() {
  if (closed_ || current_ || queue_.empty()) return;
  current_.emplace(std::move(queue_.front()));
  queue_.pop_front();
  if (!send_current()) return;
  arm_read();
  arm_deadline();
}

bool NetlinkRequester::send_current() {
  ++generation_;
  const std::uint32_t seq = seq_++;
  replies_.emplace(seq, current_->kind);
  const auto req = current_->build(seq);
  if (auto s = sock_.send(req); !s) {
    finish(s.error());
    return false;
  }
  return true;
}

bool NetlinkRequester::request_now(Build build, ReplyKind kind, OnMessage on_message, OnDone on_done) {
  if (closed_ || current_ || !queue_.empty()) {
    request(std::move(build), kind, std::move(on_message), std::move(on_done));
    return false;
  }
  auto self = shared_from_this();  // on_done may drop the last other owner
  const std::uint64_t before = completed_;
  current_.emplace(Pending{std::move(build), kind, std::move(on_message), std::move(on_done)});
  if (!send_current()) return true;  // finished (failed): on_done was called
  const std::uint64_t gen = generation_;
  if (!read_queued(false)) return completed_ != before;
  // Not all there yet (or more than one batch of it): wait as request() does.
  if (generation_ == gen && current_) {
    arm_read();
    arm_deadline();
  }
  return false;
}

void NetlinkRequester::arm_read() {
  desc_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                   [w = weak_from_this(), gen = generation_](const boost::system::error_code& ec) {
                     auto self = w.lock();
                     if (ec || !self || self->generation_ != gen || !self->current_) return;
                     self->on_readable();
                   });
}

void NetlinkRequester::arm_deadline() {
  deadline_.expires_after(reply_timeout_);
  deadline_.async_wait([w = weak_from_this(), gen = generation_](const boost::system::error_code& ec) {
    auto self = w.lock();
    if (ec || !self || self->generation_ != gen || !self->current_) return;
    self->finish(make_error(Errc::io,
                            "no reply from the kernel within " + std::to_string(self->reply_timeout_.count()) + " ms",
                            ETIMEDOUT));
  });
}

void NetlinkRequester::on_readable() {
  if (read_queued(true)) arm_read();
}

bool NetlinkRequester::read_queued(bool rearm) {
  const std::uint64_t gen = generation_;
  for (int i = 0; i < kBatch; ++i) {
    const auto r = sock_.receive(buf_.span());
    if (r.status == NetlinkSocket::RecvStatus::again) break;
    if (r.status == NetlinkSocket::RecvStatus::rejected) continue;  // wiped by receive
    if (r.status == NetlinkSocket::RecvStatus::overrun || r.status == NetlinkSocket::RecvStatus::error) {
      finish(make_error(Errc::io, std::string("netlink receive: ") + std::strerror(r.err), r.err));
      return false;
    }
    const Bytes datagram(buf_.data(), r.size);
    const auto state = r.status == NetlinkSocket::RecvStatus::truncated
                           ? replies_->on_truncated(datagram)
                           : replies_->on_datagram(datagram, current_->on_message);
    buf_.wipe(r.size);
    // on_message may have closed us.
    if (generation_ != gen || !current_) return false;
    if (state == ReplyAssembler::State::complete) {
      finish(Unit{});
      return false;
    }
    if (state == ReplyAssembler::State::failed) {
      finish(replies_->error());
      return false;
    }
    if (rearm) arm_deadline();  // per datagram, not per request
  }
  return generation_ == gen && current_.has_value();
}

void NetlinkRequester::finish(Result<Unit> r) {
  auto self = shared_from_this();  // on_done may drop the last other owner
  OnDone done = std::move(current_->on_done);
  current_.reset();
  replies_.reset();
  ++generation_;
  ++completed_;
  deadline_.cancel();
  // Next request first, so that on_done may queue more behind it.
  start_next();
  if (done) done(r);
}

}  // namespace ipsec
