#include "xfrm/netlink_reply.hpp"

#include <linux/netlink.h>

#include <cstring>

namespace ipsec {

ReplyAssembler::State ReplyAssembler::fail(Error e) {
  error_ = std::move(e);
  state_ = State::failed;
  return state_;
}

ReplyAssembler::State ReplyAssembler::on_truncated(Bytes head) {
  if (state_ != State::more) return state_;
  // Only the fixed header is read: its length runs past what fitted.
  if (head.size() >= sizeof(nlmsghdr)) {
    nlmsghdr h{};
    std::memcpy(&h, head.data(), sizeof h);
    if (h.nlmsg_seq != seq_) return state_;  // a late reply to an earlier request
  }
  return fail(make_error(Errc::truncated, "a reply datagram was truncated (MSG_TRUNC): the reply is incomplete"));
}

ReplyAssembler::State ReplyAssembler::on_datagram(Bytes datagram, const OnMessage& on_message) {
  if (state_ != State::more) return state_;
  bool ours_failed = false;
  Error why;
  bool done = false;
  auto walk = for_each_netlink_message(datagram, [&](const NetlinkMessage& m) {
    if (m.seq != seq_) return true;
    if ((m.flags & NLM_F_DUMP_INTR) != 0) {
      why = make_error(Errc::io, "the dump was interrupted (NLM_F_DUMP_INTR): the table changed during it");
      ours_failed = true;
      return false;
    }
    if (m.type == NLMSG_ERROR) {
      auto e = parse_netlink_error(m.payload);
      if (!e) {
        why = e.error();
        ours_failed = true;
        return false;
      }
      if (*e != 0) {
        why = make_error(Errc::io, std::string("kernel refused the request: ") + std::strerror(-*e), -*e);
        ours_failed = true;
        return false;
      }
      if (kind_ == ReplyKind::dump) {
        // A dump ends with NLMSG_DONE; an ACK instead means it did not run.
        why = make_error(Errc::malformed, "a dump was answered with an ACK, not NLMSG_DONE");
        ours_failed = true;
        return false;
      }
      acked_ = true;
      return true;
    }
    if (m.type == NLMSG_DONE) {
      if (kind_ != ReplyKind::dump) return true;  // not ours to end
      // The kernel puts the dump's final errno in NLMSG_DONE (netlink_dump_done).
      if (m.payload.size() >= sizeof(int)) {
        int err = 0;
        std::memcpy(&err, m.payload.data(), sizeof err);
        if (err < 0) {
          why = make_error(Errc::io, std::string("the dump ended early: ") + std::strerror(-err), -err);
          ours_failed = true;
          return false;
        }
      }
      done = true;
      return false;
    }
    if (m.type == NLMSG_NOOP || m.type == NLMSG_OVERRUN) return true;
    replied_ = true;
    ++messages_;
    on_message(m);
    return true;
  });
  if (!walk) return fail(make_error(Errc::malformed, "a reply datagram's framing is broken: " + walk.error().message));
  if (ours_failed) return fail(std::move(why));
  if (kind_ == ReplyKind::dump) {
    if (done) state_ = State::complete;
  } else if (acked_ && (replied_ || kind_ == ReplyKind::ack)) {
    state_ = State::complete;
  }
  return state_;
}

}  // namespace ipsec
