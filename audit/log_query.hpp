// `ipsec-auditctl events` and `ipsec-auditctl report`: read the agent's JSON
// Lines log (schema ipsec-audit/1), print the records that match a filter, or
// count them by event, SPI and peer like aureport. No agent needed: they read
// the file. Unparsable lines are counted and reported, never a crash.
//
// run_log_command is the entry point; the rest is exposed for the unit tests
// (tests/unit/log_query_test.cpp).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ipsec {

// cmd is "events" or "report", args the words after it. Returns 0 ok, 2 bad
// usage (a one-line message on err), 1 the log cannot be read.
int run_log_command(std::string_view cmd, const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

namespace logq {

// The agent's default JSON Lines output (agent/options.hpp kDefaultJsonl).
inline constexpr std::string_view kDefaultLogPath = "/var/log/ipsec-audit/events.jsonl";

using TimePoint = std::chrono::system_clock::time_point;

// RFC 3339 (2026-11-23T21:50:24Z, fractions, Z or +HH:MM/-HH:MM, 'T' or a
// space) or a plain date (2026-11-23, midnight UTC).
std::optional<TimePoint> parse_rfc3339(std::string_view s);
// An RFC 3339 time, or a time before `now`: 30s, 10m, 2h, 1d, 1w.
std::optional<TimePoint> parse_since(std::string_view s, TimePoint now);
// Decimal or 0x hex, 0..0xffffffff.
std::optional<std::uint32_t> parse_spi(std::string_view s);

// What --event matches: a record name of the catalogue or a Windows event ID
// one of its kinds carries (4961 matches replay-check-failed records).
struct EventMatch {
  std::string name;       // empty: match by id
  std::optional<int> id;  // set: match by id
};
std::optional<EventMatch> parse_event(std::string_view s);

// The fields of a record the commands use.
struct Record {
  std::string time;  // as written
  TimePoint when{};
  std::string event;
  std::optional<int> event_id;
  std::optional<std::uint32_t> spi;
  std::optional<std::string> src, dst;
  std::optional<std::uint64_t> seq;
  std::uint64_t count{1};
  std::string message;
};
// nullopt unless the line is a JSON object with a string "event" and an RFC
// 3339 "time" (spi, seq, count, event_id: integers or null where present).
std::optional<Record> parse_record(std::string_view line);

struct Filter {
  std::vector<EventMatch> events;   // any of them (none: all)
  std::vector<std::uint32_t> spis;  // any of them (none: all)
  std::optional<TimePoint> since;   // record time >= since
};
bool matches(const Record& r, const Filter& f);

// One line, no '\n': time, event, event_id, SPI (hex), src -> dst, seq, message.
// Control characters from the log are shown as \xNN, never sent to a terminal.
std::string format_record(const Record& r);

struct Bucket {
  std::uint64_t records{0};
  std::uint64_t events{0};  // sum of the records' count
};
struct Report {
  std::uint64_t records{0}, events{0}, unparsable{0};
  std::optional<std::string> first, last;  // record times (as written) of the earliest and latest record
  TimePoint first_when{}, last_when{};
  std::map<std::string, Bucket> by_event;
  std::map<std::string, std::optional<int>> event_ids;
  std::map<std::uint32_t, Bucket> by_spi;
  std::map<std::string, Bucket> by_peer;  // source address
};
void add(Report& rep, const Record& r);
void print_report(const Report& rep, std::string_view log, std::ostream& out);
void print_report_json(const Report& rep, std::string_view log, std::ostream& out);

// Splits a byte stream into lines; a line longer than max_line is dropped
// whole and counted in `oversized` (it would be unparsable anyway).
class LineSplitter {
 public:
  explicit LineSplitter(std::size_t max_line = 1 << 20) : max_(max_line) {}
  // Calls on_line for every complete line in the bytes so far.
  void feed(std::string_view bytes, const std::function<void(std::string_view)>& on_line);
  // The partial last line (no '\n' yet), given out and dropped.
  void flush(const std::function<void(std::string_view)>& on_line);
  void reset() {
    buf_.clear();
    skipping_ = false;
  }
  bool has_partial() const { return !buf_.empty() || skipping_; }
  std::uint64_t oversized{0};

 private:
  std::size_t max_;
  std::string buf_;
  bool skipping_{false};
};

// Reads `path` from the start and calls on_line for each line. With follow,
// at end of file it keeps polling: `wait()` between polls (a sleep; returns
// false to stop), `stop()` checked before each poll. The file replaced
// (another inode: logrotate) is read to its end, then the new one from its
// start; a file that shrank (copytruncate) is read again from its start.
// Returns false when the file cannot be opened at the start (message in
// `error`).
struct FollowHooks {
  std::function<bool()> stop;
  std::function<bool()> wait;
};
bool read_log(const std::string& path, bool follow, const FollowHooks& hooks,
              const std::function<bool(std::string_view)>& on_line,  // false: stop reading
              std::string& error, std::uint64_t* oversized = nullptr);

}  // namespace logq
}  // namespace ipsec
