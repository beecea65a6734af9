// KernelAuditSource: the kernel audit stream as a source of Events.
//
// Reads the read-only multicast group AUDIT_NLGRP_READLOG (needs
// CAP_AUDIT_READ); never registers as the audit daemon, so it coexists with
// auditd and journald. Drains in batches on the io_context thread. Loss is
// data: ENOBUFS on the socket (records dropped, count unknown) and rises of
// the kernel's own `lost` counter become events-lost records.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "agent/netlink_requester.hpp"
#include "audit/event.hpp"
#include "xfrm/kernel_audit.hpp"
#include "xfrm/netlink_socket.hpp"

namespace ipsec {

struct KernelAuditStats {
  std::uint64_t datagrams{0};
  std::uint64_t ipsec_records{0};
  std::uint64_t other_records{0};  // other audit types (SYSCALL, ...): not ours
  std::uint64_t parse_errors{0};   // 1415 text written as unparsed kernel-ipsec-event, or framing dropped
  std::uint64_t rejected{0};       // truncated or not from the kernel
  std::uint64_t overruns{0};       // ENOBUFS seen
  std::uint64_t kernel_lost{0};    // rise of the kernel's lost counter since start
};

class KernelAuditSource {
 public:
  using EventSink = std::function<void(const Event&)>;
  using Fatal = std::function<void(const std::string&)>;

  struct Config {
    bool enable_kernel_audit{false};
    std::chrono::seconds status_interval{5};
    int receive_buffer_bytes{8 << 20};
  };

  KernelAuditSource(boost::asio::io_context& io, Config cfg, EventSink sink, Fatal fatal);
  ~KernelAuditSource();

  // Opens the sockets, reads the status, enables audit if configured.
  Result<Unit> start();
  // Reads and hands over what is already queued on the socket, then puts the
  // audit `enabled` flag back if this agent changed it.
  void stop();

  const std::optional<AuditStatus>& status() const { return status_; }
  int receive_buffer() const { return rcvbuf_; }
  const KernelAuditStats& stats() const { return stats_; }

 private:
  void arm_read();
  // Reads up to `batch` datagrams; false when nothing more is queued.
  bool drain(int batch);
  void handle_datagram(std::size_t len, std::chrono::system_clock::time_point now);
  void poll_status();
  void status_polled(const Result<AuditStatus>& st);
  Result<AuditStatus> query_status();
  Result<Unit> set_enabled(bool on);
  void emit_lost(std::uint64_t count, bool at_least, const char* counter, std::string message);

  boost::asio::io_context& io_;
  Config cfg_;
  EventSink sink_;
  Fatal fatal_;
  std::optional<NetlinkSocket> mcast_;
  std::optional<NetlinkSocket> control_;  // start and stop only (blocking, before and after the loop)
  std::shared_ptr<NetlinkRequester> requester_;  // the periodic AUDIT_GET, asynchronous
  std::optional<boost::asio::posix::stream_descriptor> desc_;
  boost::asio::steady_timer timer_;
  std::vector<std::uint8_t> buf_;
  std::optional<AuditStatus> status_;
  bool we_enabled_{false};
  std::uint32_t seq_{1};
  int rcvbuf_{0};
  KernelAuditStats stats_;
};

}  // namespace ipsec
