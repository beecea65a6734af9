#include "agent/kernel_audit_source.hpp"

#include <linux/netlink.h>

#include <boost/asio/post.hpp>
#include <cerrno>
#include <cstring>
#include <string>

#include "agent/log.hpp"
#include "audit/normalize.hpp"
#include "xfrm/audit_record.hpp"

namespace ipsec {

namespace {
// Datagrams handled per wake-up before yielding to the other sources.
constexpr int kBatch = 256;
// An audit record is at most MAX_AUDIT_MESSAGE_LENGTH (8970) bytes of text.
constexpr std::size_t kBufferSize = 16384;
}  // namespace

KernelAuditSource::KernelAuditSource(boost::asio::io_context& io, Config cfg, EventSink sink, Fatal fatal)
    : io_(io), cfg_(cfg), sink_(std::move(sink)), fatal_(std::move(fatal)), timer_(io), buf_(kBufferSize) {}

KernelAuditSource::~KernelAuditSource() {
  if (desc_) {
    boost::system::error_code ec;
    desc_->close(ec);
  }
}

Result<Unit> KernelAuditSource::start() {
  auto control = NetlinkSocket::open(NETLINK_AUDIT);
  if (!control) return control.error();
  control_.emplace(std::move(*control));

  auto st = query_status();
  if (!st && cfg_.enable_kernel_audit)
    return make_error(Errc::io, "cannot read kernel audit status (AUDIT_GET): " + st.error().message,
                      st.error().sys_errno);
  if (!st) {
    // Without CAP_AUDIT_CONTROL the records still arrive (CAP_AUDIT_READ is
    // enough); what is lost is the view of the switch and of `lost`.
    log(LogLevel::warning,
        "cannot read the kernel audit status (AUDIT_GET needs CAP_AUDIT_CONTROL): " + st.error().message +
            ". Whether kernel audit is on, and how many records the kernel dropped, is unknown.");
  } else {
    status_ = *st;
  }
  if (status_ && status_->enabled == 0 && cfg_.enable_kernel_audit) {
    if (auto r = set_enabled(true); !r)
      return make_error(Errc::io, "cannot enable kernel audit (AUDIT_SET): " + r.error().message, r.error().sys_errno);
    we_enabled_ = true;
    if (auto again = query_status(); again) status_ = *again;
    log(LogLevel::info, "kernel audit enabled (it was off); it is put back off on a clean stop");
  }
  if (status_ && status_->enabled == 0)
    log(LogLevel::warning,
        "KERNEL AUDIT IS DISABLED: the kernel writes no IPsec packet records (ICV, replay, bad SPI) while it is "
        "off. Enable it with --enable-kernel-audit, the config key kernel_audit.enable, or auditctl -e 1.");

  auto mc = NetlinkSocket::open(NETLINK_AUDIT);
  if (!mc) return mc.error();
  mcast_.emplace(std::move(*mc));
  if (auto j = mcast_->join_group(kAuditGroupReadLog); !j)
    return make_error(Errc::io, "cannot join the audit multicast group (needs CAP_AUDIT_READ): " + j.error().message,
                      j.error().sys_errno);
  auto rb = mcast_->set_receive_buffer(cfg_.receive_buffer_bytes);
  if (!rb) return rb.error();
  rcvbuf_ = *rb;

  auto rs = NetlinkSocket::open(NETLINK_AUDIT);
  if (!rs) return rs.error();
  auto rq = NetlinkRequester::create(io_, std::move(*rs), std::chrono::milliseconds(2000));
  if (!rq) return rq.error();
  requester_ = std::move(*rq);

  const int dupfd = ::dup(mcast_->fd());
  if (dupfd < 0) return make_error(Errc::io, "dup failed", errno);
  desc_.emplace(io_, dupfd);
  arm_read();

  if (status_) {
    timer_.expires_after(cfg_.status_interval);
    timer_.async_wait([this](const boost::system::error_code& ec) {
      if (!ec) poll_status();
    });
  }
  return Unit{};
}

void KernelAuditSource::stop() {
  timer_.cancel();
  if (requester_) requester_->close();
  if (desc_) {
    boost::system::error_code ec;
    desc_->cancel(ec);
  }
  // Records the kernel has already queued are written before the end.
  if (mcast_) (void)drain(64 * kBatch);  // bounded: a busy kernel must not hold up the end
  if (!we_enabled_ || !control_) return;
  // Only if nobody has taken over since: a registered audit daemon owns the flag.
  auto st = query_status();
  if (st && st->pid == 0 && st->enabled == 1) {
    if (auto r = set_enabled(false); r) log(LogLevel::info, "kernel audit put back off");
  }
  we_enabled_ = false;
}

Result<AuditStatus> KernelAuditSource::query_status() {
  const std::uint32_t seq = seq_++;
  const auto req = build_audit_get(seq);
  std::optional<Result<AuditStatus>> got;
  auto r = control_->transact(
      req, seq,
      [&](const NetlinkMessage& m) {
        if (m.type == kAuditGet) got = parse_audit_status(m.payload);
      },
      ReplyKind::reply_and_ack);
  if (!r) return r.error();
  if (!got) return make_error(Errc::truncated, "no AUDIT_GET reply");
  return *got;
}

Result<Unit> KernelAuditSource::set_enabled(bool on) {
  const std::uint32_t seq = seq_++;
  const auto req = build_audit_set_enabled(seq, on);
  return control_->transact(
      req, seq, [](const NetlinkMessage&) {}, ReplyKind::ack);
}

void KernelAuditSource::arm_read() {
  desc_->async_wait(boost::asio::posix::stream_descriptor::wait_read, [this](const boost::system::error_code& ec) {
    if (ec) return;  // cancelled at stop
    if (drain(kBatch)) {
      boost::asio::post(io_, [this] { arm_read(); });
    } else {
      arm_read();
    }
  });
}

bool KernelAuditSource::drain(int batch) {
  std::uint64_t overruns = 0;
  bool more = false;
  for (int i = 0; i < batch; ++i) {
    const auto r = mcast_->receive(buf_);
    if (r.status == NetlinkSocket::RecvStatus::again) break;
    if (r.status == NetlinkSocket::RecvStatus::overrun) {
      ++overruns;
      continue;
    }
    if (r.status == NetlinkSocket::RecvStatus::rejected || r.status == NetlinkSocket::RecvStatus::truncated) {
      ++stats_.rejected;
      continue;
    }
    if (r.status == NetlinkSocket::RecvStatus::error) {
      fatal_(std::string("kernel audit socket failed: ") + std::strerror(r.err));
      return false;
    }
    handle_datagram(r.size, std::chrono::system_clock::now());
    if (i == batch - 1) more = true;
  }
  if (overruns > 0) {
    stats_.overruns += overruns;
    emit_lost(overruns, true, "netlink_overrun",
              "the kernel audit socket overran (ENOBUFS): kernel audit records were lost, at least " +
                  std::to_string(overruns));
  }
  return more;
}

void KernelAuditSource::handle_datagram(std::size_t len, std::chrono::system_clock::time_point now) {
  ++stats_.datagrams;
  auto walk = for_each_netlink_message(Bytes(buf_.data(), len), [&](const NetlinkMessage& m) {
    if (m.type != kAuditMacIpsecEvent) {
      ++stats_.other_records;
      return true;
    }
    ++stats_.ipsec_records;
    const std::string_view text = audit_record_text(m.payload);
    auto rec = parse_ipsec_audit_record(text);
    if (!rec) {
      // Kept, not dropped: written as a kernel-ipsec-event with the raw text.
      ++stats_.parse_errors;
      sink_(event_from_salvaged_ipsec_audit(salvage_ipsec_audit_record(text), now));
      return true;
    }
    sink_(event_from_ipsec_audit(*rec, now));
    return true;
  });
  if (!walk) {
    ++stats_.parse_errors;
    log(LogLevel::warning, "malformed audit netlink datagram dropped: " + walk.error().message);
  }
}

void KernelAuditSource::poll_status() {
  // Asynchronous: the loop goes on reading records while the kernel answers.
  auto got = std::make_shared<std::optional<Result<AuditStatus>>>();
  requester_->request([](std::uint32_t seq) { return build_audit_get(seq); }, ReplyKind::reply_and_ack,
                      [got](const NetlinkMessage& m) {
                        if (m.type == kAuditGet) *got = parse_audit_status(m.payload);
                      },
                      [this, got](const Result<Unit>& r) {
                        if (!r)
                          status_polled(r.error());
                        else if (!*got)
                          status_polled(make_error(Errc::truncated, "no AUDIT_GET reply"));
                        else
                          status_polled(**got);
                      });
}

void KernelAuditSource::status_polled(const Result<AuditStatus>& st) {
  if (st) {
    if (status_) {
      const std::uint32_t delta = st->lost - status_->lost;  // the kernel counter wraps at 2^32
      if (delta > 0) {
        stats_.kernel_lost += delta;
        emit_lost(delta, false, "kernel_audit_lost",
                  "the kernel dropped " + std::to_string(delta) +
                      " audit records (its 'lost' counter rose; it counts all audit types, so some may not be "
                      "IPsec records)");
      }
      if (st->enabled != status_->enabled)
        log(st->enabled ? LogLevel::info : LogLevel::warning,
            st->enabled ? "kernel audit is now enabled" : "KERNEL AUDIT WAS DISABLED: IPsec packet records stop");
    }
    status_ = *st;
  } else {
    log(LogLevel::warning, "AUDIT_GET failed: " + st.error().message);
  }
  timer_.expires_after(cfg_.status_interval);
  timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) poll_status();
  });
}

void KernelAuditSource::emit_lost(std::uint64_t count, bool at_least, const char* counter, std::string message) {
  sink_(make_events_lost(Source::kernel_audit, count, counter, at_least, std::move(message)));
}

}  // namespace ipsec
