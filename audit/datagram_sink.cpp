#include "audit/datagram_sink.hpp"

#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>

#include "audit/catalogue.hpp"
#include "audit/json_writer.hpp"

namespace ipsec {

int record_severity(const Event& e) {
  if (e.kind == EventKind::critical_failure) return 3;
  if (is_packet_event(e.kind)) return 5;
  return catalogue(e.kind).audit_class == AuditClass::failure ? 4 : 6;
}

namespace {

std::string dec(std::uint64_t v) {
  char b[24];
  auto [p, ec] = std::to_chars(b, b + sizeof b, v);
  (void)ec;
  return std::string(b, p);
}

std::string_view without_newline(std::string_view line) {
  while (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  return line;
}

// Printable ASCII without spaces (RFC 5424 PRINTUSASCII), at most `max`.
bool printusascii(std::string_view s, std::size_t max) {
  if (s.empty() || s.size() > max) return false;
  for (char c : s)
    if (c < 33 || c > 126) return false;
  return true;
}

void header_field(std::string& out, std::string_view v, std::size_t max) {
  out += ' ';
  if (printusascii(v, max))
    out.append(v);
  else
    out += '-';
}

void sd_param(std::string& out, std::string_view name, std::string_view value) {
  out += ' ';
  out.append(name);
  out += "=\"";
  append_sd_value(out, value);
  out += '"';
}

}  // namespace

JournalFields journal_fields(const Event& e, std::string_view line) {
  const auto& c = catalogue(e.kind);
  JournalFields f;
  f.reserve(18);
  f.emplace_back("MESSAGE", e.message.empty() ? std::string(c.name) : e.message);
  f.emplace_back("MESSAGE_ID", std::string(journal_message_id(e.kind)));
  f.emplace_back("PRIORITY", dec(static_cast<std::uint64_t>(record_severity(e))));
  f.emplace_back("SYSLOG_IDENTIFIER", std::string(kSyslogIdentifier));
  f.emplace_back("SYSLOG_FACILITY", dec(kSyslogFacility));
  f.emplace_back("IPSEC_EVENT", std::string(c.name));
  if (c.windows_id) f.emplace_back("IPSEC_EVENT_ID", dec(static_cast<std::uint64_t>(*c.windows_id)));
  f.emplace_back("IPSEC_AUDIT_CLASS", std::string(audit_class_name(c.audit_class)));
  f.emplace_back("IPSEC_SOURCE", std::string(source_name(e.source)));
  if (e.spi) {
    f.emplace_back("IPSEC_SPI", dec(*e.spi));
    char hex[16];
    std::snprintf(hex, sizeof hex, "0x%08x", *e.spi);
    f.emplace_back("IPSEC_SPI_HEX", hex);
  }
  if (e.src) f.emplace_back("IPSEC_SRC", e.src->to_string());
  if (e.dst) f.emplace_back("IPSEC_DST", e.dst->to_string());
  if (e.seq) f.emplace_back("IPSEC_SEQ", dec(*e.seq));
  if (e.netns) f.emplace_back("IPSEC_NETNS", *e.netns);
  if (e.count != 1) f.emplace_back("IPSEC_COUNT", dec(e.count));
  f.emplace_back("IPSEC_RECORD", std::string(without_newline(line)));
  return f;
}

void append_journal_datagram(std::string& out, const JournalFields& fields) {
  for (const auto& [name, value] : fields) {
    out.append(name);
    if (value.find('\n') == std::string::npos) {
      out += '=';
      out.append(value);
    } else {
      out += '\n';
      std::uint64_t n = value.size();
      for (int i = 0; i < 8; ++i) out += static_cast<char>((n >> (8 * i)) & 0xFF);  // little endian
      out.append(value);
    }
    out += '\n';
  }
}

void append_sd_value(std::string& out, std::string_view v) {
  for (std::size_t i = 0; i < v.size();) {
    const auto c = static_cast<unsigned char>(v[i]);
    if (c < 0x80) {
      if (c == '"' || c == '\\' || c == ']') out += '\\';
      out += (c < 0x20 || c == 0x7F) ? '?' : static_cast<char>(c);
      ++i;
      continue;
    }
    const std::size_t n = utf8_len(v, i);
    if (n == 0) {
      out += '?';
      ++i;
    } else {
      out.append(v.substr(i, n));
      i += n;
    }
  }
}

void append_rfc5424(std::string& out, const Event& e, std::string_view line, std::string_view host, int pid) {
  const auto& c = catalogue(e.kind);
  out += '<';
  out += dec(static_cast<std::uint64_t>(kSyslogFacility * 8 + record_severity(e)));
  out += ">1 ";
  // TIME-SECFRAC allows at most 6 digits: cut the nanoseconds to micro.
  std::string ts;
  append_rfc3339(ts, e.time);
  ts.erase(ts.size() - 4, 3);
  out += ts;
  header_field(out, host, 255);
  header_field(out, kSyslogIdentifier, 48);
  header_field(out, dec(static_cast<std::uint64_t>(pid)), 128);
  header_field(out, c.name, 32);
  out += " [";
  out.append(kSdId);
  sd_param(out, "event", c.name);
  if (c.windows_id) sd_param(out, "event_id", dec(static_cast<std::uint64_t>(*c.windows_id)));
  sd_param(out, "class", audit_class_name(c.audit_class));
  sd_param(out, "source", source_name(e.source));
  if (e.spi) sd_param(out, "spi", dec(*e.spi));
  if (e.src) sd_param(out, "src", e.src->to_string());
  if (e.dst) sd_param(out, "dst", e.dst->to_string());
  if (e.seq) sd_param(out, "seq", dec(*e.seq));
  if (e.netns) sd_param(out, "netns", *e.netns);
  if (e.count != 1) sd_param(out, "count", dec(e.count));
  out += "] \xEF\xBB\xBF";  // MSG is UTF-8: RFC 5424 6.4 wants the BOM
  out.append(without_newline(line));
}

DatagramSink::DatagramSink(Format f, std::string path)
    : format_(f),
      path_(std::move(path)),
      name_((f == Format::journald ? "journald:" : "syslog:") + path_),
      pid_(static_cast<int>(::getpid())) {
  char h[256] = {};
  if (::gethostname(h, sizeof h - 1) == 0) host_ = h;
}

Result<std::unique_ptr<DatagramSink>> DatagramSink::open(Format f, std::string socket_path) {
  if (socket_path.empty()) socket_path = f == Format::journald ? kJournalSocket : kSyslogSocket;
  std::unique_ptr<DatagramSink> s(new DatagramSink(f, std::move(socket_path)));
  if (s->path_.size() >= sizeof(s->addr_.sun_path))
    return make_error(Errc::malformed, "socket path too long: " + s->path_);
  s->addr_.sun_family = AF_UNIX;
  std::memcpy(s->addr_.sun_path, s->path_.data(), s->path_.size());
  s->addr_len_ = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + s->path_.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return make_error(Errc::io, std::string("cannot create a datagram socket: ") + std::strerror(errno), errno);
  s->fd_ = UniqueFd(fd);
  // Like libsystemd: a big send buffer, so bursts queue instead of failing
  // (capped by net.core.wmem_max).
  const int sndbuf = 8 << 20;
  (void)::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  return s;
}

bool DatagramSink::send_one(std::string_view dgram) {
  for (;;) {
    const ssize_t n = ::sendto(fd_.get(), dgram.data(), dgram.size(), MSG_DONTWAIT | MSG_NOSIGNAL,
                               reinterpret_cast<const sockaddr*>(&addr_), addr_len_);
    if (n >= 0) {
      count_written(1);
      return true;
    }
    if (errno == EINTR) continue;
    count_failed(1, errno);
    return false;
  }
}

bool DatagramSink::write_event(const Event& e, std::string_view line) {
  buf_.clear();
  if (format_ == Format::journald)
    append_journal_datagram(buf_, journal_fields(e, line));
  else
    append_rfc5424(buf_, e, line, host_, pid_);
  return send_one(buf_);
}

bool DatagramSink::write(std::string_view lines) {
  // Lines without their Event (not used by the pipeline): each is sent as a
  // record of unknown kind carrying the JSON as its message.
  bool ok = true;
  while (!lines.empty()) {
    const auto eol = lines.find('\n');
    const auto line = lines.substr(0, eol == std::string_view::npos ? lines.size() : eol + 1);
    lines.remove_prefix(line.size());
    Event e;
    e.message = std::string(without_newline(line));
    e.time = std::chrono::system_clock::now();
    ok = write_event(e, line) && ok;
  }
  return ok;
}

}  // namespace ipsec
