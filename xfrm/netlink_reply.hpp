// ReplyAssembler: the replies to one netlink request, as a pure state machine
// (datagrams in -> more / complete / failed). No I/O: the requester feeds it
// what the socket delivered, and tests feed it bytes.
//
// A dump is complete only at an NLMSG_DONE whose error is 0. Anything that
// ends it early fails it, never completes it: a truncated datagram (MSG_TRUNC),
// a datagram whose framing is broken, an NLMSG_ERROR, an NLMSG_DONE carrying a
// negative errno, a message flagged NLM_F_DUMP_INTR (the table changed during
// the dump). A resync on a partial dump would write false deletions.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "xfrm/netlink_message.hpp"
#include "xfrm/result.hpp"

namespace ipsec {

enum class ReplyKind {
  dump,         // NLM_F_DUMP: replies, then NLMSG_DONE
  ack,          // NLM_F_ACK: done at the ACK (replies before it, if any, are delivered)
  reply_and_ack,  // NLM_F_ACK and at least one reply, in either order (AUDIT_GET
                  // replies from a kernel thread, so its reply may follow the ACK)
};

class ReplyAssembler {
 public:
  enum class State { more, complete, failed };
  using OnMessage = std::function<void(const NetlinkMessage&)>;

  ReplyAssembler(std::uint32_t seq, ReplyKind kind) : seq_(seq), kind_(kind) {}

  // One whole datagram as received. Messages with another sequence number
  // (late replies to an earlier request) are skipped; ours go to on_message.
  State on_datagram(Bytes datagram, const OnMessage& on_message);
  // A datagram the socket flagged MSG_TRUNC: `head` is what fitted. Fails the
  // request unless its first header is readable and names another sequence.
  State on_truncated(Bytes head);

  State state() const { return state_; }
  const Error& error() const { return error_; }
  std::uint64_t messages() const { return messages_; }

 private:
  State fail(Error e);
  std::uint32_t seq_;
  ReplyKind kind_;
  State state_{State::more};
  Error error_;
  bool acked_{false};
  bool replied_{false};
  std::uint64_t messages_{0};
};

}  // namespace ipsec
