// KernelAuditSource: the kernel audit stream as a source of Events.
//
// Reads the read-only multicast group AUDIT_NLGRP_READLOG (needs
// CAP_AUDIT_READ); never registers as the audit daemon, so it coexists with
// auditd and journald. Drains in batches on the io_context thread. Loss is
// data: ENOBUFS on the socket (records dropped, count unknown) and rises of
// the kernel's own `lost` counter become events-lost records. The kernel
// audit settings are read at start and on every status poll: kernel audit
// off, failure mode panic or a small backlog limit at start, and any change
// of enabled / failure / backlog_limit / rate_limit while running, become
// kernel-audit-changed records.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/batch_ticker.hpp"
#include "agent/netlink_requester.hpp"
#include "audit/event.hpp"
#include "xfrm/kernel_audit.hpp"
#include "xfrm/netlink_socket.hpp"

namespace ipsec {

struct KernelAuditStats {
  std::uint64_t datagrams{0};
  std::uint64_t ipsec_records{0};
  std::uint64_t other_records{0};  // other audit types (SYSCALL, ...): not ours (the BPF filter drops them first)
  std::uint64_t parse_errors{0};   // 1415 text written as unparsed kernel-ipsec-event, or framing dropped
  std::uint64_t rejected{0};       // truncated or not from the kernel
  std::uint64_t overruns{0};       // ENOBUFS seen
  std::uint64_t kernel_lost{0};    // rise of the kernel's lost counter since start
};

// A backlog limit below this is warned about: auditd's shipped rules use
// -b 8192; the kernel default (64) overflows in a burst of bad-SPI packets,
// and with failure mode 2 an overflow panics the host.
inline constexpr std::uint32_t kMinSafeBacklogLimit = 8192;

// What in a kernel audit status puts IPsec auditing at risk, as short tags:
// "disabled", "failure-panic", "backlog-limit-small" (0 = unlimited is fine).
std::vector<std::string> audit_status_concerns(const AuditStatus& s);
// enabled, failure, rate_limit or backlog_limit differ.
bool audit_settings_changed(const AuditStatus& before, const AuditStatus& now);
nlohmann::json audit_status_json(const AuditStatus& s);
// The kernel-audit-changed record: at start (before empty) when there are
// concerns, or for a change while running.
Event make_kernel_audit_changed(const std::optional<AuditStatus>& before, const AuditStatus& now);

class KernelAuditSource {
 public:
  // Events are handed over (moved), never copied.
  using EventSink = std::function<void(Event&&)>;
  using Fatal = std::function<void(const std::string&)>;

  struct Config {
    bool enable_kernel_audit{false};
    std::chrono::seconds status_interval{5};  // 0: no polling, no AUDIT_GET (unless enabling)
    int receive_buffer_bytes{8 << 20};
  };

  // `ticker` (may be null, or disabled: read at once when readable): when the
  // socket becomes readable it leaves epoll and is read at each tick with
  // recvmmsg until a tick finds it empty, then waits in epoll again.
  KernelAuditSource(boost::asio::io_context& io, Config cfg, EventSink sink, Fatal fatal,
                    BatchTicker* ticker = nullptr);
  ~KernelAuditSource();

  // Opens the sockets, reads the status, enables audit if configured.
  Result<Unit> start();
  // A kernel-audit-changed record if the state read at start puts IPsec
  // auditing at risk (called after service-started, so that comes first).
  void report_start_state();
  // Reads the kernel audit status once more (the last `lost` rise) until
  // kauditd's queue is empty (bounded, 200 ms), reads and hands over what is
  // queued on the socket, then puts the audit `enabled` flag back if this
  // agent changed it.
  void stop();
  // Reads and hands over what is queued now (before a reconciliation: an
  // overrun is reported before the shortfall it explains).
  void read_queued();

  const std::optional<AuditStatus>& status() const { return status_; }
  // Joined to the kernel audit multicast group (and not stopped).
  bool subscribed() const { return (desc_.has_value() && desc_->is_open()) || parked_ >= 0; }
  // SIGHUP: a new poll interval, applied now. Polling cannot be turned on or
  // off live (CAP_AUDIT_CONTROL was kept or dropped at start): false then.
  bool set_status_interval(std::chrono::seconds s);
  int receive_buffer() const { return rcvbuf_; }
  const KernelAuditStats& stats() const { return stats_; }
  // At each tick of the ticker: reads what is queued. True while the socket
  // is busy (out of epoll, read at the next tick).
  bool tick();

 private:
  void arm_read();
  // The socket is readable (and the moderation delay over): drain it.
  void read_ready();
  // Reads up to `batch` datagrams; false when nothing more is queued.
  // last_read_: how many it read.
  bool drain(int batch);
  // Out of epoll (busy, read at ticks) / back into it.
  void park();
  void unpark();
  void handle_datagram(std::span<const std::uint8_t> datagram, std::chrono::system_clock::time_point now);
  void poll_status();
  void arm_poll();
  void status_polled(const Result<AuditStatus>& st);
  // The rise of the kernel's `lost` counter since the last status: events-lost.
  void take_lost(const AuditStatus& st);
  Result<AuditStatus> query_status();
  Result<Unit> set_enabled(bool on);
  void emit_lost(std::uint64_t count, bool at_least, const char* counter, std::string message);

  boost::asio::io_context& io_;
  Config cfg_;
  EventSink sink_;
  Fatal fatal_;
  std::optional<NetlinkSocket> mcast_;
  std::optional<NetlinkSocket> control_;         // start and stop only (blocking, before and after the loop)
  std::shared_ptr<NetlinkRequester> requester_;  // the periodic AUDIT_GET, asynchronous
  std::optional<boost::asio::posix::stream_descriptor> desc_;
  boost::asio::steady_timer timer_;
  BatchTicker* ticker_;
  int parked_{-1};  // the descriptor of desc_ while it is out of epoll
  std::size_t last_read_{0};
  std::vector<std::uint8_t> buf_;          // kSlots datagram slots for recvmmsg
  std::vector<NetlinkSocket::Received> got_;
  bool stopped_{false};
  std::optional<AuditStatus> status_;
  bool we_enabled_{false};
  std::uint32_t seq_{1};
  int rcvbuf_{0};
  KernelAuditStats stats_;
};

}  // namespace ipsec
