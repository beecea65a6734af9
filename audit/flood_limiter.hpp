// FloodLimiter: bounds what a packet flood can write, without hiding any of
// it. A token bucket per (event kind, SPI, peer src) for packet-drop records
// (4960, 4961, 4962, 4963, 4965, sequence-overflow, fragment-received): the
// first `burst` records of a key and then `rate` per second are written one
// by one; past that a record is held back and counted, and once per
// `interval` per key one summary record is written for what was held: the
// same kind and event ID, `count` = the records it stands for, and a
// `summary` object with the first and last sequence number and time. Keys
// idle for an interval are evicted once their summary is out; beyond
// `max_keys` keys every new key shares one overflow key per kind, so memory
// stays bounded whatever the peers send. Pure: the caller passes the time
// (steady clock), so tests drive it with a fake clock. Single-threaded.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <unordered_map>
#include <vector>

#include "audit/event.hpp"

namespace ipsec {

struct FloodConfig {
  double rate{10};                   // records per second per key, after the burst
  std::uint32_t burst{50};           // records a key may write at once
  std::chrono::seconds interval{60};  // a key's summary window; idle time before eviction
  std::size_t max_keys{4096};        // tracked keys, not counting one overflow key per kind
  friend bool operator==(const FloodConfig&, const FloodConfig&) = default;
};

class FloodLimiter {
 public:
  using Clock = std::chrono::steady_clock;

  explicit FloodLimiter(FloodConfig c = {});
  // A reloaded config: the keys stay; buckets are capped to the new burst.
  void configure(const FloodConfig& c);
  const FloodConfig& config() const { return cfg_; }

  // Whether records like `e` go through the limiter at all: single packet
  // events (count 1) of the packet kinds; aggregates (counter deltas,
  // fragment summaries) are bounded by their own timers and pass.
  static bool limited(const Event& e);
  // True: write `e`. False: it is held for its key's summary (the caller
  // counts it as summarised).
  bool admit(const Event& e, Clock::time_point now);
  // Appends the summaries whose window has lasted an interval at `now`, and
  // evicts keys idle for an interval with nothing held. Cheap when nothing is due.
  void collect(Clock::time_point now, std::vector<Event>& out);
  // Appends every summary with something held, now (at stop).
  void flush(std::vector<Event>& out);

  std::size_t keys() const { return map_.size(); }  // overflow keys included
  std::uint64_t held() const { return held_; }      // records held for summaries not yet written

 private:
  struct Key {
    EventKind kind{};
    bool overflow{false};
    bool has_spi{false}, has_src{false};
    std::uint32_t spi{0};
    IpAddress src{};
    friend bool operator==(const Key&, const Key&) = default;
  };
  struct KeyHash {
    std::size_t operator()(const Key& k) const noexcept;
  };
  struct Bucket {
    double tokens{0};
    Clock::time_point refilled{}, last_seen{};
    // The current summary window: what was held since window_start.
    std::uint64_t held{0};
    Clock::time_point window_start{};
    std::optional<std::uint32_t> first_seq, last_seq;
    std::chrono::system_clock::time_point first_time{}, last_time{};
    Event first;  // the first record held in this window: the summary is made from it
  };

  Event summary(const Key& k, Bucket& b) const;
  // The bucket of `want` (made if new; the overflow key's past max_keys).
  Bucket& lookup(const Key& want, Clock::time_point now);
  void due_at(Clock::time_point t) {
    if (t < next_check_) next_check_ = t;
  }

  FloodConfig cfg_;
  std::unordered_map<Key, Bucket, KeyHash> map_;
  // The last key admit() looked up and where it is: a flood is one key
  // record after record (no hash, no bucket walk). Reset wherever an entry
  // goes or the map may rehash (collect, configure).
  Key last_key_{};
  Bucket* last_bucket_{nullptr};
  std::size_t tracked_{0};  // keys other than the overflow keys
  std::uint64_t held_{0};
  Clock::time_point next_check_{Clock::time_point::max()};
};

}  // namespace ipsec
