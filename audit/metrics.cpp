#include "audit/metrics.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "audit/catalogue.hpp"

namespace ipsec {

namespace {

// A label value: backslash, double quote and newline escaped.
void append_label(std::string& out, std::string_view v) {
  for (const char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
}

void header(std::string& out, const char* name, const char* type, const char* help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

void sample(std::string& out, const char* name, std::initializer_list<std::pair<const char*, std::string_view>> labels,
            std::uint64_t v) {
  out += name;
  if (labels.size() != 0) {
    out += '{';
    bool first = true;
    for (const auto& [k, val] : labels) {
      if (!first) out += ',';
      first = false;
      out += k;
      out += "=\"";
      append_label(out, val);
      out += '"';
    }
    out += '}';
  }
  out += ' ';
  out += std::to_string(v);
  out += '\n';
}

}  // namespace

std::vector<SinkMetrics> sink_metrics(const std::vector<std::unique_ptr<Sink>>& sinks) {
  std::vector<SinkMetrics> v;
  v.reserve(sinks.size());
  for (const auto& s : sinks) {
    const auto& st = s->stats();
    v.push_back(SinkMetrics{std::string(s->name()), st.healthy, st.written, st.failed});
  }
  return v;
}

std::string format_metrics(const MetricsInput& in) {
  static const PipelineStats kEmpty;
  const PipelineStats& st = in.stats ? *in.stats : kEmpty;
  std::string out;
  out.reserve(16384);

  header(out, "ipsec_audit_up", "gauge", "1 while ipsec-auditd runs; 0 in the file it writes at a clean stop.");
  sample(out, "ipsec_audit_up", {}, in.up ? 1 : 0);
  header(out, "ipsec_audit_start_time_seconds", "gauge", "When ipsec-auditd started, Unix time.");
  char buf[64];
  std::snprintf(buf, sizeof buf, "ipsec_audit_start_time_seconds %.3f\n", in.start_time_seconds);
  out += buf;

  header(out, "ipsec_audit_records_total", "counter",
         "Records received per event kind, by outcome: written as themselves, suppressed by the Success/Failure "
         "switches, or summarised by the flood limiter (carried in the count of a summary record). Their sum is "
         "what was received.");
  for (std::size_t i = 0; i < kEventKindCount; ++i) {
    const auto name = catalogue(static_cast<EventKind>(i)).name;
    sample(out, "ipsec_audit_records_total", {{"event", name}, {"outcome", "written"}}, st.written[i]);
    sample(out, "ipsec_audit_records_total", {{"event", name}, {"outcome", "suppressed"}}, st.suppressed_by_kind[i]);
    sample(out, "ipsec_audit_records_total", {{"event", name}, {"outcome", "summarised"}}, st.summarised[i]);
  }
  header(out, "ipsec_audit_summary_records_total", "counter",
         "Flood summary records written per event kind (each carries the number of records it summarises).");
  for (std::size_t i = 0; i < kEventKindCount; ++i) {
    const auto k = static_cast<EventKind>(i);
    if (!is_packet_event(k)) continue;
    sample(out, "ipsec_audit_summary_records_total", {{"event", catalogue(k).name}}, st.summaries[i]);
  }

  header(out, "ipsec_audit_events_lost_total", "counter",
         "Events the agent knows were lost, from its events-lost records, by the counter that told.");
  bool overrun = false, kernel = false;
  for (const auto& [name, n] : st.lost) {
    overrun = overrun || name == "netlink_overrun";
    kernel = kernel || name == "kernel_audit_lost";
  }
  // The two counters every agent has are always there, so rate() works from the start.
  if (!overrun) sample(out, "ipsec_audit_events_lost_total", {{"counter", "netlink_overrun"}}, 0);
  if (!kernel) sample(out, "ipsec_audit_events_lost_total", {{"counter", "kernel_audit_lost"}}, 0);
  for (const auto& [name, n] : st.lost) sample(out, "ipsec_audit_events_lost_total", {{"counter", name}}, n);

  header(out, "ipsec_audit_sink_healthy", "gauge", "1 when the output's last write worked.");
  for (const auto& s : in.sinks) sample(out, "ipsec_audit_sink_healthy", {{"sink", s.name}}, s.healthy ? 1 : 0);
  header(out, "ipsec_audit_sink_records_total", "counter",
         "Records per output: written, or failed (lost to that output).");
  for (const auto& s : in.sinks) {
    sample(out, "ipsec_audit_sink_records_total", {{"sink", s.name}, {"outcome", "written"}}, s.written);
    sample(out, "ipsec_audit_sink_records_total", {{"sink", s.name}, {"outcome", "failed"}}, s.failed);
  }

  header(out, "ipsec_audit_flood_keys", "gauge", "(event, SPI, peer) keys the flood limiter tracks.");
  sample(out, "ipsec_audit_flood_keys", {}, in.flood_keys);
  header(out, "ipsec_audit_flood_held", "gauge",
         "Records held by the flood limiter whose summary record is not written yet (already counted as summarised).");
  sample(out, "ipsec_audit_flood_held", {}, in.flood_held);
  return out;
}

Result<Unit> write_file_atomic(const std::string& path, std::string_view text) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) {
    const int e = errno;
    return make_error(Errc::io, "cannot create " + tmp + ": " + std::strerror(e), e);
  }
  // The umask (0027 under systemd) must not hide the file from the collector.
  (void)::fchmod(fd, 0644);
  std::size_t off = 0;
  while (off < text.size()) {
    const ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int e = n < 0 ? errno : EIO;
      ::close(fd);
      ::unlink(tmp.c_str());
      return make_error(Errc::io, "cannot write " + tmp + ": " + std::strerror(e), e);
    }
    off += static_cast<std::size_t>(n);
  }
  if (::close(fd) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    return make_error(Errc::io, "cannot write " + tmp + ": " + std::strerror(e), e);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    return make_error(Errc::io, "cannot rename " + tmp + " to " + path + ": " + std::strerror(e), e);
  }
  return Unit{};
}

}  // namespace ipsec
