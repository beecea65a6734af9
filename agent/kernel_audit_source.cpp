#include "agent/kernel_audit_source.hpp"

#include <linux/netlink.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <algorithm>
#include <cerrno>
#include <span>
#include <cstring>
#include <string>

#include "agent/log.hpp"
#include "audit/normalize.hpp"
#include "xfrm/audit_record.hpp"

namespace ipsec {

namespace {
// Datagrams handled per wake-up before yielding to the other sources.
constexpr int kBatch = 1024;
// An audit record is at most MAX_AUDIT_MESSAGE_LENGTH (8970) bytes of text
// after its 16-byte header: one slot per datagram, kSlots per recvmmsg(2).
constexpr std::size_t kSlot = 9216;
constexpr std::size_t kSlots = 64;
// At stop: how often, and how far apart, AUDIT_GET asks whether kauditd's
// queue is empty (at most 20 x 10 ms).
constexpr int kStopBacklogPolls = 20;
constexpr useconds_t kStopBacklogPollUs = 10000;
}  // namespace

std::vector<std::string> audit_status_concerns(const AuditStatus& s) {
  std::vector<std::string> c;
  if (s.enabled == 0) c.emplace_back("disabled");
  if (s.failure == 2) c.emplace_back("failure-panic");
  if (s.backlog_limit != 0 && s.backlog_limit < kMinSafeBacklogLimit) c.emplace_back("backlog-limit-small");
  return c;
}

bool audit_settings_changed(const AuditStatus& a, const AuditStatus& b) {
  return a.enabled != b.enabled || a.failure != b.failure || a.rate_limit != b.rate_limit ||
         a.backlog_limit != b.backlog_limit;
}

nlohmann::json audit_status_json(const AuditStatus& s) {
  return {
      {"enabled", s.enabled}, {"failure", s.failure}, {"rate_limit", s.rate_limit}, {"backlog_limit", s.backlog_limit},
      {"lost", s.lost},       {"backlog", s.backlog}, {"daemon_pid", s.pid}};
}

Event make_kernel_audit_changed(const std::optional<AuditStatus>& before, const AuditStatus& now) {
  Event e;
  e.kind = EventKind::kernel_audit_changed;
  e.source = Source::kernel_audit;
  e.time = std::chrono::system_clock::now();
  const auto concerns = audit_status_concerns(now);
  std::string msg;
  auto add = [&msg](const std::string& part) { msg += (msg.empty() ? "" : "; ") + part; };
  if (before) {
    auto change = [&](const char* what, std::uint32_t a, std::uint32_t b) {
      if (a != b) add(std::string(what) + " " + std::to_string(a) + " -> " + std::to_string(b));
    };
    change("enabled", before->enabled, now.enabled);
    change("failure", before->failure, now.failure);
    change("backlog_limit", before->backlog_limit, now.backlog_limit);
    change("rate_limit", before->rate_limit, now.rate_limit);
    msg = "kernel audit settings changed: " + msg;
  } else {
    msg = "kernel audit settings at start put IPsec auditing at risk";
  }
  for (const auto& c : concerns) {
    if (c == "disabled")
      msg += "; KERNEL AUDIT IS DISABLED: the kernel writes no IPsec packet records (ICV, replay, bad SPI)";
    else if (c == "failure-panic")
      msg += "; failure mode 2 (panic): a backlog overflow, e.g. a flood of bad-SPI packets, panics the host";
    else
      msg += "; backlog limit " + std::to_string(now.backlog_limit) + " is below " +
             std::to_string(kMinSafeBacklogLimit) + ": bursts of records will be lost";
  }
  e.message = std::move(msg);
  e.detail = {{"kernel_audit", audit_status_json(now)}, {"concerns", concerns}};
  if (before) e.detail["kernel_audit_before"] = audit_status_json(*before);
  return e;
}

KernelAuditSource::KernelAuditSource(boost::asio::io_context& io, Config cfg, EventSink sink, Fatal fatal,
                                     BatchTicker* ticker)
    : io_(io),
      cfg_(cfg),
      sink_(std::move(sink)),
      fatal_(std::move(fatal)),
      timer_(io),
      ticker_(ticker),
      buf_(kSlot * kSlots),
      got_(kSlots) {}

KernelAuditSource::~KernelAuditSource() {
  if (desc_) {
    boost::system::error_code ec;
    desc_->close(ec);
  }
  if (parked_ >= 0) ::close(parked_);
}

Result<Unit> KernelAuditSource::start() {
  auto control = NetlinkSocket::open(NETLINK_AUDIT);
  if (!control) return control.error();
  control_.emplace(std::move(*control));

  const bool polling = cfg_.status_interval.count() > 0;
  auto st = polling || cfg_.enable_kernel_audit
                ? query_status()
                : Result<AuditStatus>(make_error(Errc::unsupported, "polling disabled"));
  if (!st && cfg_.enable_kernel_audit)
    return make_error(Errc::io, "cannot read kernel audit status (AUDIT_GET): " + st.error().message,
                      st.error().sys_errno);
  if (!polling && !cfg_.enable_kernel_audit) {
    log(LogLevel::info, "kernel audit status polling is off (interval 0): its state and 'lost' counter are not read");
  } else if (!st) {
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
  // Only MAC_IPSEC_EVENT is ours: with heavy syscall auditing every other
  // record would cost a wake-up and a read here, and room in the buffer.
  if (auto f = attach_audit_ipsec_filter(mcast_->fd()); !f)
    log(LogLevel::warning, "cannot filter the audit socket in the kernel (every record type is read): " +
                               f.error().message);
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

  if (status_ && polling) arm_poll();
  return Unit{};
}

void KernelAuditSource::report_start_state() {
  if (!status_ || audit_status_concerns(*status_).empty()) return;
  auto e = make_kernel_audit_changed(std::nullopt, *status_);
  log(LogLevel::warning, e.message);
  sink_(std::move(e));
}

void KernelAuditSource::arm_poll() {
  timer_.expires_after(cfg_.status_interval);
  timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) poll_status();
  });
}

bool KernelAuditSource::set_status_interval(std::chrono::seconds s) {
  if (s == cfg_.status_interval) return true;
  if (s.count() == 0 || cfg_.status_interval.count() == 0 || !status_) return false;
  cfg_.status_interval = s;
  timer_.cancel();
  arm_poll();
  return true;
}

void KernelAuditSource::stop() {
  stopped_ = true;
  timer_.cancel();
  if (requester_) requester_->close();
  if (desc_) {
    boost::system::error_code ec;
    desc_->cancel(ec);
  }
  // The last `lost` rise is reported before the last reconciliation, and
  // what kauditd still queues reaches the socket before it is read: wait,
  // briefly, for the kernel's audit queue to be empty.
  if (control_ && status_ && cfg_.status_interval.count() > 0) {
    for (int i = 0; i < kStopBacklogPolls; ++i) {
      auto st = query_status();
      if (!st) break;
      take_lost(*st);
      if (st->backlog == 0) break;
      ::usleep(kStopBacklogPollUs);
    }
  }
  // Records the kernel has already queued are written before the end.
  if (mcast_) (void)drain(16 * kBatch);  // bounded: a busy kernel must not hold up the end
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
    if (ec || stopped_) return;  // cancelled at stop
    if (!ticker_ || !ticker_->enabled()) {
      read_ready();
      return;
    }
    // Batched: out of epoll (records arriving until the tick wake nobody),
    // read at each tick until one finds the socket empty.
    park();
    ticker_->wake();
  });
}

void KernelAuditSource::park() {
  parked_ = desc_->release();  // EPOLL_CTL_DEL; the descriptor stays open
  desc_.reset();
}

void KernelAuditSource::unpark() {
  desc_.emplace(io_, parked_);  // EPOLL_CTL_ADD: reports at once what is queued by now
  parked_ = -1;
  arm_read();
}

bool KernelAuditSource::tick() {
  if (stopped_ || parked_ < 0) return false;
  const bool more = drain(kBatch);
  if (stopped_) return false;  // a fatal socket error
  if (last_read_ == 0) {
    unpark();
    return false;
  }
  if (more) {
    // A full batch: the rest now, after the other sources had their turn.
    boost::asio::post(io_, [this] {
      if (!stopped_ && parked_ >= 0) (void)tick();
    });
  }
  return true;
}

void KernelAuditSource::read_ready() {
  if (drain(kBatch)) {
    // More is queued: let the other sources run, then go on without a delay.
    boost::asio::post(io_, [this] {
      if (desc_ && !stopped_) read_ready();
    });
  } else {
    arm_read();
  }
}

bool KernelAuditSource::drain(int batch) {
  std::uint64_t overruns = 0;
  bool more = false;
  int done = 0;
  last_read_ = 0;
  // The agent's receive time of the records: read once per drain (one read
  // batch: a tick's, or what is queued at stop), not per recvmmsg or record.
  std::optional<std::chrono::system_clock::time_point> now;
  while (done < batch) {
    const std::size_t want = std::min<std::size_t>(kSlots, static_cast<std::size_t>(batch - done));
    const std::size_t n = mcast_->receive_many(buf_, kSlot, std::span(got_.data(), want));
    if (n == 0) {
      const auto& r = got_[0];
      if (r.status == NetlinkSocket::RecvStatus::overrun) {
        ++overruns;
        ++done;
        continue;
      }
      if (r.status == NetlinkSocket::RecvStatus::error) {
        fatal_(std::string("kernel audit socket failed: ") + std::strerror(r.err));
        return false;
      }
      break;  // again: nothing more queued
    }
    if (!now) now = std::chrono::system_clock::now();
    for (std::size_t i = 0; i < n; ++i) {
      const auto& r = got_[i];
      if (r.status == NetlinkSocket::RecvStatus::rejected || r.status == NetlinkSocket::RecvStatus::truncated) {
        ++stats_.rejected;
        continue;
      }
      handle_datagram(std::span<const std::uint8_t>(buf_.data() + i * kSlot, r.size), *now);
    }
    done += static_cast<int>(n);
    if (n < want) break;  // the queue is empty: no EAGAIN call needed
    if (done >= batch) more = true;
  }
  last_read_ = static_cast<std::size_t>(done);
  if (overruns > 0) {
    stats_.overruns += overruns;
    emit_lost(overruns, true, "netlink_overrun",
              "the kernel audit socket overran (ENOBUFS): kernel audit records were lost, at least " +
                  std::to_string(overruns));
  }
  return more;
}

void KernelAuditSource::handle_datagram(std::span<const std::uint8_t> d, std::chrono::system_clock::time_point now) {
  ++stats_.datagrams;
  auto walk = for_each_netlink_message(Bytes(d.data(), d.size()), [&](const NetlinkMessage& m) {
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
    sink_(event_from_ipsec_audit(std::move(*rec), now));
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

void KernelAuditSource::take_lost(const AuditStatus& st) {
  if (!status_) return;
  const std::uint32_t delta = st.lost - status_->lost;  // the kernel counter wraps at 2^32
  status_->lost = st.lost;
  if (delta == 0) return;
  stats_.kernel_lost += delta;
  emit_lost(delta, false, "kernel_audit_lost",
            "the kernel dropped " + std::to_string(delta) +
                " audit records (its 'lost' counter rose; it counts all audit types, so some may not be "
                "IPsec records)");
}

void KernelAuditSource::read_queued() {
  if (desc_ && mcast_ && !stopped_) (void)drain(16 * kBatch);  // bounded, as at stop
}

void KernelAuditSource::status_polled(const Result<AuditStatus>& st) {
  if (st) {
    if (status_) {
      take_lost(*st);
      if (audit_settings_changed(*status_, *st)) {
        auto e = make_kernel_audit_changed(status_, *st);
        log(st->enabled ? LogLevel::info : LogLevel::warning, e.message);
        sink_(std::move(e));
      }
    }
    status_ = *st;
  } else {
    log(LogLevel::warning, "AUDIT_GET failed: " + st.error().message);
  }
  arm_poll();
}

void KernelAuditSource::emit_lost(std::uint64_t count, bool at_least, const char* counter, std::string message) {
  sink_(make_events_lost(Source::kernel_audit, count, counter, at_least, std::move(message)));
}

}  // namespace ipsec
