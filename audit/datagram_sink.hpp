// Structured sinks over a local datagram socket: journald (its native
// protocol, the one sd_journal_sendv speaks) and syslog (RFC 5424 to
// /dev/log). Both send with MSG_DONTWAIT on their own non-blocking socket:
// a stuck or absent receiver makes the record fail (counted, retried with the
// next record), never the agent wait. libsystemd's sd_journal_sendv would
// block in sendmsg when journald's queue is full, which is why the protocol
// (documented as stable at systemd.io/JOURNAL_NATIVE_PROTOCOL) is spoken here.
//
// The datagram contents are built by pure functions, tested without sockets.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "audit/sink.hpp"

namespace ipsec {

inline constexpr const char* kJournalSocket = "/run/systemd/journal/socket";
inline constexpr const char* kSyslogSocket = "/dev/log";
inline constexpr std::string_view kSyslogIdentifier = "ipsec-auditd";
// RFC 5424 SD-ID: ipsec@<Private Enterprise Number>. 32473 is the PEN RFC 5612
// reserves for documentation, used until the project has its own.
inline constexpr std::string_view kSdId = "ipsec@32473";
// Facility of every record: LOG_AUTHPRIV (security/authorisation, private).
inline constexpr int kSyslogFacility = 10;

// Syslog severity of a record: critical-failure 3 (err), other Failure-class
// records 4 (warning), packet drops 5 (notice), other Success records 6 (info).
int record_severity(const Event& e);

using JournalFields = std::vector<std::pair<std::string_view, std::string>>;
// MESSAGE, MESSAGE_ID, PRIORITY, SYSLOG_IDENTIFIER, SYSLOG_FACILITY, IPSEC_*;
// IPSEC_RECORD is `line` (the JSON record) without its '\n'.
JournalFields journal_fields(const Event& e, std::string_view line);
// One native-protocol datagram: NAME=value\n, or NAME\n<le64 size>value\n
// for values that hold a newline.
void append_journal_datagram(std::string& out, const JournalFields& fields);

// "<PRI>1 TIMESTAMP HOST APP PROCID MSGID [ipsec@32473 ...] BOM JSON" (no
// trailing newline). HOST/APP/MSGID fall back to "-" when not printable ASCII.
void append_rfc5424(std::string& out, const Event& e, std::string_view line, std::string_view host, int pid);
// An SD-PARAM value: '"', '\' and ']' escaped with '\' (RFC 5424 6.3.3);
// control bytes and bytes that are not valid UTF-8 become '?'.
void append_sd_value(std::string& out, std::string_view v);

class DatagramSink final : public Sink {
 public:
  enum class Format { journald, syslog };
  // socket_path empty: the default for the format. The receiver need not
  // exist yet: records fail (counted) until it does.
  static Result<std::unique_ptr<DatagramSink>> open(Format f, std::string socket_path);
  std::string_view name() const override { return name_; }
  bool write(std::string_view lines) override;
  bool write_event(const Event& e, std::string_view line) override;

 private:
  DatagramSink(Format f, std::string path);
  bool send_one(std::string_view dgram);
  Format format_;
  std::string path_;
  std::string name_;
  std::string host_;
  int pid_{0};
  UniqueFd fd_;
  sockaddr_un addr_{};
  socklen_t addr_len_{0};
  std::string buf_;  // reused: no allocation per record once warm
};

}  // namespace ipsec
