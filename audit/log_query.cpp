#include "audit/log_query.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstring>
#include <ctime>
#include <iostream>
#include <ostream>

#include <nlohmann/json.hpp>

#include "audit/catalogue.hpp"
#include "xfrm/result.hpp"

namespace ipsec {
namespace logq {
namespace {

using namespace std::chrono;

// Reads exactly n decimal digits at s[pos].
bool digits(std::string_view s, std::size_t& pos, std::size_t n, int& out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const char c = s[pos + i];
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  pos += n;
  out = v;
  return true;
}

bool expect(std::string_view s, std::size_t& pos, char c) {
  if (pos >= s.size() || s[pos] != c) return false;
  ++pos;
  return true;
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Bytes from the log shown to a person: control characters (C0, DEL, C1) as
// \xNN so a record cannot drive the terminal.
void append_for_terminal(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  auto hex = [&](unsigned char c) {
    out += "\\x";
    out += kHex[c >> 4];
    out += kHex[c & 0xF];
  };
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7F) {
      hex(c);
    } else if (c == 0xC2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) >= 0x80 &&
               static_cast<unsigned char>(s[i + 1]) <= 0x9F) {
      hex(static_cast<unsigned char>(s[i + 1]));
      ++i;
    } else {
      out += static_cast<char>(c);
    }
  }
}

std::string for_terminal(std::string_view s) {
  std::string out;
  append_for_terminal(out, s);
  return out;
}

std::string spi_hex(std::uint32_t spi) {
  char b[16];
  std::snprintf(b, sizeof b, "0x%08x", spi);
  return b;
}

template <typename K>
std::vector<std::pair<K, Bucket>> by_count(const std::map<K, Bucket>& m) {
  std::vector<std::pair<K, Bucket>> v(m.begin(), m.end());
  std::stable_sort(v.begin(), v.end(),
                   [](const auto& a, const auto& b) { return a.second.records > b.second.records; });
  return v;
}

}  // namespace

std::optional<TimePoint> parse_rfc3339(std::string_view s) {
  std::size_t p = 0;
  int Y = 0, M = 0, D = 0, h = 0, m = 0, sec = 0, oh = 0, om = 0;
  if (!digits(s, p, 4, Y) || !expect(s, p, '-') || !digits(s, p, 2, M) || !expect(s, p, '-') || !digits(s, p, 2, D))
    return std::nullopt;
  // system_clock counts nanoseconds in 64 bits: 1677..2262.
  if (Y < 1900 || Y > 2200) return std::nullopt;
  const year_month_day ymd{year{Y}, month{static_cast<unsigned>(M)}, day{static_cast<unsigned>(D)}};
  if (!ymd.ok()) return std::nullopt;
  TimePoint t = time_point_cast<system_clock::duration>(sys_days{ymd});
  if (p == s.size()) return t;  // a plain date: midnight UTC
  if (s[p] != 'T' && s[p] != 't' && s[p] != ' ') return std::nullopt;
  ++p;
  if (!digits(s, p, 2, h) || !expect(s, p, ':') || !digits(s, p, 2, m) || !expect(s, p, ':') || !digits(s, p, 2, sec))
    return std::nullopt;
  if (h > 23 || m > 59 || sec > 60) return std::nullopt;  // 60: a leap second
  t += hours{h} + minutes{m} + seconds{sec};
  if (p < s.size() && s[p] == '.') {
    ++p;
    std::int64_t ns = 0;
    int n = 0;
    while (p < s.size() && s[p] >= '0' && s[p] <= '9') {
      if (n < 9) {
        ns = ns * 10 + (s[p] - '0');
        ++n;
      }
      ++p;
    }
    if (n == 0) return std::nullopt;
    for (int i = n; i < 9; ++i) ns *= 10;
    t += duration_cast<system_clock::duration>(nanoseconds{ns});
  }
  if (p >= s.size()) return std::nullopt;  // RFC 3339 wants a zone
  if (s[p] == 'Z' || s[p] == 'z') {
    ++p;
  } else if (s[p] == '+' || s[p] == '-') {
    const bool east = s[p] == '+';
    ++p;
    if (!digits(s, p, 2, oh) || !expect(s, p, ':') || !digits(s, p, 2, om) || oh > 23 || om > 59) return std::nullopt;
    const auto off = hours{oh} + minutes{om};
    t = east ? t - off : t + off;
  } else {
    return std::nullopt;
  }
  if (p != s.size()) return std::nullopt;
  return t;
}

std::optional<TimePoint> parse_since(std::string_view s, TimePoint now) {
  if (s.size() >= 2 && all_digits(s.substr(0, s.size() - 1)) && s.size() <= 12) {
    std::int64_t unit = 0;
    switch (s.back()) {
      case 's':
        unit = 1;
        break;
      case 'm':
        unit = 60;
        break;
      case 'h':
        unit = 3600;
        break;
      case 'd':
        unit = 86400;
        break;
      case 'w':
        unit = 7 * 86400;
        break;
      default:
        return std::nullopt;
    }
    std::int64_t n = 0;
    std::from_chars(s.data(), s.data() + s.size() - 1, n);
    if (n > (std::int64_t{100} * 366 * 86400) / unit) return std::nullopt;  // 100 years at most
    return now - duration_cast<system_clock::duration>(seconds{n * unit});
  }
  return parse_rfc3339(s);
}

std::optional<std::uint32_t> parse_spi(std::string_view s) {
  int base = 10;
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    s.remove_prefix(2);
    base = 16;
  }
  if (s.empty() || s.size() > 16) return std::nullopt;
  std::uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
  if (ec != std::errc{} || ptr != s.data() + s.size() || v > 0xffffffffULL) return std::nullopt;
  return static_cast<std::uint32_t>(v);
}

std::optional<EventMatch> parse_event(std::string_view s) {
  if (all_digits(s)) {
    if (s.size() > 6) return std::nullopt;
    int id = 0;
    std::from_chars(s.data(), s.data() + s.size(), id);
    for (std::size_t i = 0; i < kEventKindCount; ++i)
      if (catalogue(static_cast<EventKind>(i)).windows_id == id) return EventMatch{{}, id};
    return std::nullopt;
  }
  if (auto k = event_kind_from_name(s)) return EventMatch{std::string(catalogue(*k).name), std::nullopt};
  return std::nullopt;
}

std::optional<Record> parse_record(std::string_view line) {
  using nlohmann::json;
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  const json j = json::parse(line.begin(), line.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  Record r;
  auto ev = j.find("event");
  auto tm = j.find("time");
  if (ev == j.end() || !ev->is_string() || tm == j.end() || !tm->is_string()) return std::nullopt;
  r.event = ev->get<std::string>();
  r.time = tm->get<std::string>();
  auto when = parse_rfc3339(r.time);
  if (!when || r.event.empty()) return std::nullopt;
  r.when = *when;
  // An unsigned integer no bigger than max, null, or absent; anything else
  // makes the record unparsable.
  auto uint_field = [&](const char* k, std::uint64_t max, std::optional<std::uint64_t>& out) {
    auto it = j.find(k);
    if (it == j.end() || it->is_null()) return true;
    if (!it->is_number_unsigned() || it->get<std::uint64_t>() > max) return false;
    out = it->get<std::uint64_t>();
    return true;
  };
  auto string_field = [&](const char* k, std::optional<std::string>& out) {
    auto it = j.find(k);
    if (it == j.end() || it->is_null()) return true;
    if (!it->is_string()) return false;
    out = it->get<std::string>();
    return true;
  };
  std::optional<std::uint64_t> id, spi, count;
  std::optional<std::string> message;
  if (!uint_field("event_id", 1000000, id) || !uint_field("spi", 0xffffffffULL, spi) ||
      !uint_field("seq", ~std::uint64_t{0}, r.seq) || !uint_field("count", ~std::uint64_t{0}, count) ||
      !string_field("src", r.src) || !string_field("dst", r.dst) || !string_field("message", message))
    return std::nullopt;
  if (id) r.event_id = static_cast<int>(*id);
  if (spi) r.spi = static_cast<std::uint32_t>(*spi);
  if (count) r.count = *count;
  if (message) r.message = std::move(*message);
  return r;
}

bool matches(const Record& r, const Filter& f) {
  if (f.since && r.when < *f.since) return false;
  if (!f.spis.empty() && (!r.spi || std::find(f.spis.begin(), f.spis.end(), *r.spi) == f.spis.end())) return false;
  if (f.events.empty()) return true;
  return std::any_of(f.events.begin(), f.events.end(),
                     [&](const EventMatch& m) { return m.id ? r.event_id == m.id : r.event == m.name; });
}

std::string format_record(const Record& r) {
  std::string s;
  append_for_terminal(s, r.time);
  s += ' ';
  append_for_terminal(s, r.event);
  s += ' ';
  s += r.event_id ? std::to_string(*r.event_id) : "-";
  if (r.spi) s += " spi=" + spi_hex(*r.spi);
  if (r.src || r.dst) {
    s += ' ';
    append_for_terminal(s, r.src.value_or("-"));
    s += " -> ";
    append_for_terminal(s, r.dst.value_or("-"));
  }
  if (r.seq) s += " seq=" + std::to_string(*r.seq);
  if (r.count != 1) s += " count=" + std::to_string(r.count);
  if (!r.message.empty()) {
    s += ": ";
    append_for_terminal(s, r.message);
  }
  return s;
}

void add(Report& rep, const Record& r) {
  ++rep.records;
  rep.events += r.count;
  if (!rep.first || r.when < rep.first_when) {
    rep.first = r.time;
    rep.first_when = r.when;
  }
  if (!rep.last || r.when >= rep.last_when) {
    rep.last = r.time;
    rep.last_when = r.when;
  }
  auto bump = [&](Bucket& b) {
    ++b.records;
    b.events += r.count;
  };
  bump(rep.by_event[r.event]);
  if (r.event_id)
    rep.event_ids[r.event] = r.event_id;
  else
    rep.event_ids.try_emplace(r.event);
  if (r.spi) bump(rep.by_spi[*r.spi]);
  if (r.src) bump(rep.by_peer[*r.src]);
}

void print_report(const Report& rep, std::string_view log, std::ostream& out) {
  char line[160];
  out << "Log: " << for_terminal(log) << '\n';
  if (rep.first) out << "Range: " << for_terminal(*rep.first) << " .. " << for_terminal(*rep.last) << '\n';
  out << "Records: " << rep.records << " (events: " << rep.events << "), unparsable lines: " << rep.unparsable
      << "\n\n";
  out << "By event\n";
  std::snprintf(line, sizeof line, "%10s %10s %6s  %s\n", "records", "events", "id", "event");
  out << line;
  for (const auto& [name, b] : by_count(rep.by_event)) {
    const auto it = rep.event_ids.find(name);
    const std::string id = it != rep.event_ids.end() && it->second ? std::to_string(*it->second) : "-";
    std::snprintf(line, sizeof line, "%10llu %10llu %6s  ", static_cast<unsigned long long>(b.records),
                  static_cast<unsigned long long>(b.events), id.c_str());
    out << line << for_terminal(name) << '\n';
  }
  out << "\nBy SPI\n";
  std::snprintf(line, sizeof line, "%10s %10s  %s\n", "records", "events", "spi");
  out << line;
  for (const auto& [spi, b] : by_count(rep.by_spi)) {
    std::snprintf(line, sizeof line, "%10llu %10llu  %s (%u)\n", static_cast<unsigned long long>(b.records),
                  static_cast<unsigned long long>(b.events), spi_hex(spi).c_str(), spi);
    out << line;
  }
  out << "\nBy peer (source address)\n";
  std::snprintf(line, sizeof line, "%10s %10s  %s\n", "records", "events", "peer");
  out << line;
  for (const auto& [peer, b] : by_count(rep.by_peer)) {
    std::snprintf(line, sizeof line, "%10llu %10llu  ", static_cast<unsigned long long>(b.records),
                  static_cast<unsigned long long>(b.events));
    out << line << for_terminal(peer) << '\n';
  }
}

void print_report_json(const Report& rep, std::string_view log, std::ostream& out) {
  using nlohmann::json;
  json j = json::object();
  j["log"] = std::string(log);
  j["first"] = rep.first ? json(*rep.first) : json(nullptr);
  j["last"] = rep.last ? json(*rep.last) : json(nullptr);
  j["records"] = rep.records;
  j["events"] = rep.events;
  j["unparsable"] = rep.unparsable;
  json ev = json::array(), spi = json::array(), peer = json::array();
  for (const auto& [name, b] : by_count(rep.by_event)) {
    const auto it = rep.event_ids.find(name);
    ev.push_back({{"event", name},
                  {"event_id", it != rep.event_ids.end() && it->second ? json(*it->second) : json(nullptr)},
                  {"records", b.records},
                  {"events", b.events}});
  }
  for (const auto& [s, b] : by_count(rep.by_spi))
    spi.push_back({{"spi", s}, {"spi_hex", spi_hex(s)}, {"records", b.records}, {"events", b.events}});
  for (const auto& [p, b] : by_count(rep.by_peer))
    peer.push_back({{"peer", p}, {"records", b.records}, {"events", b.events}});
  j["by_event"] = std::move(ev);
  j["by_spi"] = std::move(spi);
  j["by_peer"] = std::move(peer);
  out << j.dump(-1, ' ', false, json::error_handler_t::replace) << '\n';
}

void LineSplitter::feed(std::string_view bytes, const std::function<void(std::string_view)>& on_line) {
  while (!bytes.empty()) {
    const auto nl = bytes.find('\n');
    const std::string_view part = bytes.substr(0, nl);
    if (skipping_) {
      // inside an oversized line: drop up to its end
    } else if (buf_.size() + part.size() > max_) {
      buf_.clear();
      skipping_ = true;
      ++oversized;
    } else if (nl != std::string_view::npos && buf_.empty()) {
      on_line(part);  // the common case: no copy
    } else {
      buf_.append(part);
      if (nl != std::string_view::npos) {
        on_line(buf_);
        buf_.clear();
      }
    }
    if (nl == std::string_view::npos) return;
    skipping_ = false;
    bytes.remove_prefix(nl + 1);
  }
}

void LineSplitter::flush(const std::function<void(std::string_view)>& on_line) {
  if (!buf_.empty()) on_line(buf_);
  reset();
}

bool read_log(const std::string& path, bool follow, const FollowHooks& hooks,
              const std::function<bool(std::string_view)>& on_line, std::string& error, std::uint64_t* oversized) {
  auto open_log = [&]() { return ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY); };
  int fd = open_log();
  if (fd < 0) {
    error = path + ": " + std::strerror(errno);
    return false;
  }
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    ::close(fd);
    error = path + ": is a directory";
    return false;
  }
  LineSplitter split;
  bool going = true;
  const auto deliver = [&](std::string_view l) {
    if (going && !on_line(l)) going = false;
  };
  std::string buf(64 * 1024, '\0');
  while (going) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n > 0) {
      split.feed(std::string_view(buf.data(), static_cast<std::size_t>(n)), deliver);
      continue;
    }
    if (n < 0) {
      if (errno != EINTR) {
        error = path + ": " + std::strerror(errno);
        break;
      }
      if (follow && hooks.stop && hooks.stop()) break;
      continue;
    }
    // End of file.
    if (!follow) {
      split.flush(deliver);
      break;
    }
    if (hooks.stop && hooks.stop()) break;
    struct stat cur {
    }, now{};
    const off_t pos = ::lseek(fd, 0, SEEK_CUR);
    if (::fstat(fd, &cur) == 0 && ::stat(path.c_str(), &now) == 0 &&
        (now.st_ino != cur.st_ino || now.st_dev != cur.st_dev)) {
      // Rotated: the old file was read to its end; the new one from its start.
      const int nfd = open_log();
      if (nfd >= 0) {
        split.flush(deliver);
        ::close(fd);
        fd = nfd;
        continue;
      }
    } else if (pos > cur.st_size) {
      // Truncated in place (copytruncate): from the start again.
      split.reset();
      ::lseek(fd, 0, SEEK_SET);
      continue;
    }
    if (!hooks.wait || !hooks.wait()) break;
  }
  ::close(fd);
  if (oversized) *oversized = split.oversized;
  return true;
}

}  // namespace logq

namespace {

volatile std::sig_atomic_t g_stop = 0;
extern "C" void on_stop_signal(int) { g_stop = 1; }

// SIGINT/SIGTERM end --follow cleanly (the unparsable count is still
// reported); the handlers the caller had are put back.
class StopSignals {
 public:
  StopSignals() {
    g_stop = 0;
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: the poll sleep ends at once
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~StopSignals() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  struct sigaction old_int_ {
  }, old_term_{};
};

// True when `out` is standard output and that is a pipe whose reader went
// away (`| head`): --follow ends then, though it has nothing to write.
bool reader_gone(const std::ostream& out) {
  if (&out != &std::cout) return false;
  pollfd p{STDOUT_FILENO, 0, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & (POLLERR | POLLHUP)) != 0;
}

std::string usage(std::string_view cmd) {
  if (cmd == "events")
    return "usage: ipsec-auditctl events [--log PATH] [--follow] [--event NAME|ID]... [--spi N]... [--since TIME] "
           "[--json]";
  return "usage: ipsec-auditctl report [--log PATH] [--event NAME|ID]... [--spi N]... [--since TIME] [--json]";
}

}  // namespace

int run_log_command(std::string_view cmd, const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  using namespace logq;
  const std::string prefix = "ipsec-auditctl " + std::string(cmd) + ": ";
  if (cmd != "events" && cmd != "report") {
    err << "ipsec-auditctl: unknown command '" << ipsec::printable(cmd) << "'\n";
    return 2;
  }
  const bool events = cmd == "events";
  std::string log(kDefaultLogPath);
  bool follow = false, json = false;
  Filter filter;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string_view a = args[i], val;
    bool inline_val = false;
    if (a.substr(0, 2) == "--") {
      if (const auto eq = a.find('='); eq != std::string_view::npos) {
        val = a.substr(eq + 1);
        a = a.substr(0, eq);
        inline_val = true;
      }
    }
    auto bad = [&](const std::string& why) {
      err << prefix << why << " (" << usage(cmd) << ")\n";
      return 2;
    };
    auto take = [&]() -> bool {
      if (inline_val) return true;
      if (i + 1 >= args.size()) return false;
      val = args[++i];
      return true;
    };
    const bool valued = a == "--log" || a == "--event" || a == "--spi" || a == "--since";
    if (!valued && inline_val) return bad(ipsec::printable(a) + " takes no value");
    if (valued && !take()) return bad(std::string(a) + " needs a value");
    if (a == "--help" || a == "-h") {
      out << usage(cmd) << '\n';
      return 0;
    } else if (a == "--json") {
      json = true;
    } else if ((a == "--follow" || a == "-f") && events) {
      follow = true;
    } else if (a == "--log") {
      if (val.empty()) return bad("--log needs a path");
      log = std::string(val);
    } else if (a == "--event") {
      auto m = parse_event(val);
      if (!m)
        return bad("unknown event '" + ipsec::printable(val) +
                   "': a record name such as replay-check-failed or a Windows event ID such as 4961");
      filter.events.push_back(*m);
    } else if (a == "--spi") {
      auto s = parse_spi(val);
      if (!s) return bad("--spi takes a number, decimal or 0x hex, up to 0xffffffff: '" + ipsec::printable(val) + "'");
      filter.spis.push_back(*s);
    } else if (a == "--since") {
      auto t = parse_since(val, std::chrono::system_clock::now());
      if (!t) return bad("--since takes an RFC 3339 time or 30s, 10m, 2h, 1d, 1w: '" + ipsec::printable(val) + "'");
      filter.since = *t;
    } else {
      return bad("unknown option '" + ipsec::printable(a) + "'");
    }
  }

  Report rep;
  std::uint64_t unparsable = 0, oversized = 0;
  const auto on_line = [&](std::string_view line) {
    if (line.empty() || line == "\r") return true;
    const auto r = parse_record(line);
    if (!r) {
      ++unparsable;
      return true;
    }
    if (!matches(*r, filter)) return true;
    if (!events) {
      add(rep, *r);
      return true;
    }
    if (json)
      out << line << '\n';
    else
      out << format_record(*r) << '\n';
    return static_cast<bool>(out);  // the reader went away (a closed pipe): stop
  };
  std::string error;
  bool ok = false;
  if (follow) {
    StopSignals signals;
    FollowHooks hooks;
    hooks.stop = [] { return g_stop != 0; };
    hooks.wait = [&] {
      out.flush();
      if (!out || g_stop || reader_gone(out)) return false;
      timespec ts{0, 200 * 1000 * 1000};
      nanosleep(&ts, nullptr);
      return g_stop == 0;
    };
    ok = read_log(log, true, hooks, on_line, error, &oversized);
  } else {
    ok = read_log(log, false, {}, on_line, error, &oversized);
  }
  if (!ok) {
    err << prefix << ipsec::printable(error, 300) << '\n';
    return 1;
  }
  unparsable += oversized;
  if (!events) {
    rep.unparsable = unparsable;
    if (json)
      print_report_json(rep, log, out);
    else
      print_report(rep, log, out);
  }
  out.flush();
  if (!error.empty()) {
    err << prefix << ipsec::printable(error, 300) << '\n';
    return 1;
  }
  if (unparsable)
    err << prefix << unparsable << (unparsable == 1 ? " line" : " lines") << " of " << for_terminal(log)
        << " not an ipsec-audit record, skipped\n";
  return 0;
}

}  // namespace ipsec
