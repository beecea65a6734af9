#include "audit/flood_limiter.hpp"

#include <algorithm>
#include <cstdio>

#include "audit/catalogue.hpp"
#include "audit/json_writer.hpp"

namespace ipsec {

namespace {
std::string rfc3339(std::chrono::system_clock::time_point t) {
  std::string s;
  append_rfc3339(s, t);
  return s;
}
}  // namespace

std::size_t FloodLimiter::KeyHash::operator()(const Key& k) const noexcept {
  // FNV-1a over the fields that tell keys apart.
  std::uint64_t h = 1469598103934665603ULL;
  auto mix = [&h](std::uint64_t v) {
    h ^= v;
    h *= 1099511628211ULL;
  };
  mix(static_cast<std::uint64_t>(k.kind));
  mix((k.overflow ? 1U : 0U) | (k.has_spi ? 2U : 0U) | (k.has_src ? 4U : 0U));
  mix(k.spi);
  mix(static_cast<std::uint64_t>(k.src.family));
  for (std::size_t i = 0; i < k.src.bytes.size(); i += 8) {
    std::uint64_t w = 0;
    for (std::size_t j = 0; j < 8; ++j) w = (w << 8) | k.src.bytes[i + j];
    mix(w);
  }
  return static_cast<std::size_t>(h);
}

FloodLimiter::FloodLimiter(FloodConfig c) { configure(c); }

void FloodLimiter::configure(const FloodConfig& c) {
  cfg_ = c;
  // Sized for max_keys and the overflow keys: a rehash would allocate on the
  // event path.
  map_.reserve(c.max_keys + kEventKindCount);
  last_bucket_ = nullptr;
  for (auto& kv : map_) kv.second.tokens = std::min(kv.second.tokens, static_cast<double>(cfg_.burst));
  next_check_ = Clock::time_point::min();  // windows and idle times are measured anew at the next collect
}

bool FloodLimiter::limited(const Event& e) {
  return e.count == 1 && e.source != Source::counters && is_packet_event(e.kind);
}

FloodLimiter::Bucket& FloodLimiter::lookup(const Key& want, Clock::time_point now) {
  Key k = want;
  auto it = map_.find(k);
  if (it == map_.end()) {
    if (tracked_ >= cfg_.max_keys) {
      k = Key{};
      k.kind = want.kind;
      k.overflow = true;
      it = map_.find(k);
    } else {
      ++tracked_;
    }
    if (it == map_.end()) {
      it = map_.try_emplace(k).first;
      it->second.tokens = cfg_.burst;
      it->second.refilled = now;
      due_at(now + cfg_.interval);  // eviction when it stays idle
    }
  }
  last_key_ = want;
  last_bucket_ = &it->second;
  return it->second;
}

bool FloodLimiter::admit(const Event& e, Clock::time_point now) {
  if (!limited(e)) return true;
  Key k;
  k.kind = e.kind;
  if (e.spi) {
    k.has_spi = true;
    k.spi = *e.spi;
  }
  if (e.src) {
    k.has_src = true;
    k.src = *e.src;
  }
  Bucket& b = last_bucket_ != nullptr && k == last_key_ ? *last_bucket_ : lookup(k, now);
  if (now > b.refilled) {
    const double dt = std::chrono::duration<double>(now - b.refilled).count();
    b.tokens = std::min(static_cast<double>(cfg_.burst), b.tokens + dt * cfg_.rate);
    b.refilled = now;
  }
  b.last_seen = now;
  if (b.tokens >= 1.0) {
    b.tokens -= 1.0;
    return true;
  }
  if (b.held == 0) {
    b.window_start = now;
    b.first = e;  // assigned into the bucket's event: reuses its storage once warm
    b.first_seq = e.seq;
    b.first_time = e.time;
    due_at(now + cfg_.interval);
  }
  ++b.held;
  ++held_;
  b.last_seq = e.seq;
  b.last_time = e.time;
  return false;
}

Event FloodLimiter::summary(const Key& k, Bucket& b) const {
  Event s = b.first;
  const auto& c = catalogue(k.kind);
  s.count = b.held;
  s.time = b.last_time;
  s.kernel.reset();  // one record's serial and kernel time: not the summary's
  s.seq.reset();
  s.flow_label.reset();
  if (k.overflow) {
    // Many peers: the first one's SPI, addresses and SA would mislead.
    s.spi.reset();
    s.src.reset();
    s.dst.reset();
    s.sa.reset();
    s.sa_match = SaMatch::none;
    s.sa_candidates.clear();
    s.netns.reset();
    s.audit.reset();
    s.replay_basis.reset();
    s.replay_reason.reset();
    s.replay_detail.reset();
  }
  char spi[16] = "none";
  if (k.has_spi) std::snprintf(spi, sizeof spi, "0x%08x", k.spi);
  char limit[96];
  std::snprintf(limit, sizeof limit, "past %g records/s (burst %u)", cfg_.rate, cfg_.burst);
  if (k.overflow)
    s.message = std::to_string(b.held) + " " + std::string(c.name) +
                " records summarised from keys beyond flood.max_keys (" + std::to_string(cfg_.max_keys) +
                " event/SPI/peer keys tracked), " + limit;
  else
    s.message = std::to_string(b.held) + " " + std::string(c.name) + " records summarised for SPI " + spi +
                " from " + (k.has_src ? k.src.to_string() : std::string("an unknown peer")) + ", " + limit +
                " per event, SPI and peer";
  nlohmann::json sum = {
      {"first_seq", b.first_seq ? nlohmann::json(*b.first_seq) : nlohmann::json(nullptr)},
      {"last_seq", b.last_seq ? nlohmann::json(*b.last_seq) : nlohmann::json(nullptr)},
      {"first_time", rfc3339(b.first_time)},
      {"last_time", rfc3339(b.last_time)},
      {"summarised", b.held},
      {"interval_seconds", cfg_.interval.count()},
  };
  if (k.overflow) sum["overflow"] = true;
  if (!s.detail.is_object()) s.detail = nlohmann::json::object();
  s.detail["summary"] = std::move(sum);
  b.held = 0;
  b.first_seq.reset();
  b.last_seq.reset();
  return s;
}

void FloodLimiter::collect(Clock::time_point now, std::vector<Event>& out) {
  if (now < next_check_) return;
  next_check_ = Clock::time_point::max();
  last_bucket_ = nullptr;  // keys may go (and a key past max_keys may get its own bucket now)
  for (auto it = map_.begin(); it != map_.end();) {
    Bucket& b = it->second;
    if (b.held > 0) {
      if (now - b.window_start >= cfg_.interval) {
        held_ -= b.held;
        out.push_back(summary(it->first, b));
      } else {
        due_at(b.window_start + cfg_.interval);
        ++it;
        continue;
      }
    }
    if (now - b.last_seen >= cfg_.interval) {
      if (!it->first.overflow) --tracked_;
      it = map_.erase(it);
      continue;
    }
    due_at(b.last_seen + cfg_.interval);
    ++it;
  }
}

void FloodLimiter::flush(std::vector<Event>& out) {
  for (auto& kv : map_) {
    if (kv.second.held == 0) continue;
    held_ -= kv.second.held;
    out.push_back(summary(kv.first, kv.second));
  }
}

}  // namespace ipsec
