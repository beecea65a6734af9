#include "agent/replay_resolver.hpp"

#include <cstring>

#include "audit/normalize.hpp"
#include "audit/replay_classifier.hpp"
#include "audit/xfrm_table.hpp"

namespace ipsec {

std::size_t SaKeyHash::operator()(const SaKey& k) const {
  std::uint64_t lo = 0, hi = 0;
  std::memcpy(&lo, k.daddr.bytes.data(), sizeof lo);
  std::memcpy(&hi, k.daddr.bytes.data() + sizeof lo, sizeof hi);
  std::uint64_t h = 0;
  const auto mix = [&h](std::uint64_t v) {
    h ^= v + 0x9E3779B97F4A7C15ULL + (h << 6) + (h >> 2);
    h *= 0xFF51AFD7ED558CCDULL;
    h ^= h >> 33;
  };
  mix(lo);
  mix(hi);
  mix((std::uint64_t{k.spi} << 32) | (std::uint64_t{k.proto} << 8) | static_cast<std::uint64_t>(k.daddr.family));
  mix((std::uint64_t{k.mark_value} << 32) | k.mark_mask);
  mix(k.if_id);
  return static_cast<std::size_t>(h);
}

std::size_t hash_sa_in(const void* owner, const SaKey& k) {
  return SaKeyHash{}(k) ^ (std::hash<const void*>{}(owner) * 0x9E3779B97F4A7C15ULL);
}

std::size_t ReplayResolver::KeyHash::operator()(const Key& k) const { return hash_sa_in(k.owner, k.sa); }

struct ReplayResolver::Batch {
  Source src;
  Key key;
  XfrmSaRef ref;  // with the SA's mark: GETSA finds a marked SA only by it
  std::vector<Event> events;
  BatchTicker::Clock::time_point opened{};  // batched: when its first record came
  std::optional<boost::asio::steady_timer> timer;  // not batched
};

ReplayResolver::ReplayResolver(boost::asio::io_context& io, std::chrono::milliseconds coalesce, EventSink sink,
                               Refresh refresh, std::uint64_t& getsa_requests)
    : io_(io),
      coalesce_(coalesce),
      sink_(std::move(sink)),
      refresh_(std::move(refresh)),
      getsa_requests_(getsa_requests) {}

ReplayResolver::~ReplayResolver() = default;

void ReplayResolver::add(Event&& e, const Source& src, const XfrmSa& sa) {
  Key k{src.owner, sa_key(sa)};
  auto [it, inserted] = sas_.try_emplace(k);
  PerSa& s = it->second;
  if (inserted) s.last = sa.stats;
  if (!s.held) {
    // Coalesce: one GETSA per SA per interval, however many records arrive.
    s.held = std::make_unique<Batch>();
    Batch& b = *s.held;
    b.src = src;
    b.key = k;
    b.ref = sa_ref(sa);
    ++held_;
    if (ticker_ && ticker_->enabled()) {
      // A record drained by a tick is decided at the end of that same tick
      // (the tracker's part of the tick runs after the drain): the tick has
      // already gathered up to one period of the SA's records, which is the
      // coalescing, and waiting `coalesce` more would add a whole period to
      // every replay record's delay (at the default 50 ms tick: 50-100 ms
      // instead of 0-50 ms, past the 100 ms p99 of issue 17). A record
      // added outside a tick waits `coalesce` for its companions, decided at
      // the first tick past it.
      b.opened = ticker_->in_tick() ? ticker_->now() - coalesce_ : BatchTicker::Clock::now();
      order_.push_back(k);
      ticker_->wake();
    } else {
      b.timer.emplace(io_);
      b.timer->expires_after(coalesce_);
      b.timer->async_wait([this, k](const boost::system::error_code& ec) {
        if (!ec) classify(k);
      });
    }
  }
  s.held->events.push_back(std::move(e));
}

bool ReplayResolver::tick(BatchTicker::Clock::time_point now) {
  // Due in the order opened (a batch read by a tick is due at that tick, one
  // added outside a tick `coalesce` after it): the due batches are in front,
  // except that a batch read by a tick right after one added outside a tick
  // waits behind it, at most `coalesce` (rare: records come from ticks).
  while (!order_.empty()) {
    auto it = sas_.find(order_.front());
    if (it != sas_.end() && it->second.held && now < it->second.held->opened + coalesce_) break;
    const Key k = order_.front();
    order_.pop_front();
    classify(k);
  }
  return holding();
}

void ReplayResolver::classify(const Key& k) {
  auto it = sas_.find(k);
  if (it == sas_.end() || !it->second.held) return;
  std::unique_ptr<Batch> batch = std::move(it->second.held);
  --held_;
  if (batch->timer) batch->timer->cancel();  // when called at stop, before it fired
  // The namespace may be gone since the batch was opened.
  auto rq = batch->src.requester.lock();
  if (!rq) {
    sas_.erase(it);  // its namespace is gone: no later delta is taken from it
    finish(std::move(batch), std::nullopt);
    return;
  }
  ++getsa_requests_;
  auto fresh = std::make_shared<std::optional<XfrmSa>>();
  const XfrmSaRef ref = batch->ref;
  const std::uint64_t id = next_id_++;
  inflight_.emplace(id, std::move(batch));
  // The XFRM kernel answers a GETSA inside our sendmsg: netlink_sendmsg ->
  // netlink_unicast -> netlink_unicast_kernel calls the kernel socket's
  // input (xfrm_netlink_rcv -> netlink_rcv_skb -> xfrm_user_rcv_msg ->
  // xfrm_get_sa) in the sender's context, and xfrm_get_sa queues the NEWSA
  // on our socket with nlmsg_unicast (or returns the error), after which
  // netlink_rcv_skb queues the ACK (NLM_F_ACK) or the error, all before
  // send returns (net/xfrm/xfrm_user.c, net/netlink/af_netlink.c). So the
  // reply is read at once with MSG_DONTWAIT (request_now): no epoll
  // registration, no wake-up. When it is not there (our receive buffer
  // full, the requester busy with a dump) the request goes on
  // asynchronously, with its deadline, as before; never a blocking read.
  rq->request_now([ref](std::uint32_t seq) { return build_xfrm_get_sa(seq, ref); }, ReplyKind::reply_and_ack,
                  [fresh](const NetlinkMessage& m) {
                    auto p = parse_xfrm_message(m);
                    if (p)
                      if (auto* n = std::get_if<XfrmNewSa>(&*p)) *fresh = std::move(n->sa);
                  },
                  [this, id, fresh](const Result<Unit>&) {
                    auto f = inflight_.find(id);
                    if (f == inflight_.end()) return;  // already decided (its netns went away)
                    auto held = std::move(f->second);
                    inflight_.erase(f);
                    // A GETSA that failed or timed out leaves `fresh` empty: basis unknown.
                    finish(std::move(held), std::move(*fresh));
                    maybe_flushed();
                  });
}

void ReplayResolver::forget(const void* owner) {
  // Their GETSA will not be answered to us: decided now, basis unknown.
  for (auto it = inflight_.begin(); it != inflight_.end();) {
    if (it->second->src.owner != owner) {
      ++it;
      continue;
    }
    auto held = std::move(it->second);
    it = inflight_.erase(it);
    finish(std::move(held), std::nullopt);
  }
  // Its SAs' counters are no baseline for anything later (a held batch is
  // decided, unknown, when it is due).
  std::erase_if(sas_, [owner](const auto& kv) { return kv.first.owner == owner && !kv.second.held; });
  maybe_flushed();
}

std::vector<ReplayResolver::Key> ReplayResolver::take_held_keys() {
  std::vector<Key> keys(order_.begin(), order_.end());
  order_.clear();
  if (keys.empty())  // not batched: no order kept
    for (const auto& kv : sas_)
      if (kv.second.held) keys.push_back(kv.first);
  return keys;
}

void ReplayResolver::flush(std::function<void()> done) {
  flushed_ = std::move(done);
  for (const auto& k : take_held_keys()) classify(k);
  maybe_flushed();
}

void ReplayResolver::maybe_flushed() {
  if (!flushed_ || !inflight_.empty() || held_ > 0) return;
  auto done = std::move(flushed_);
  flushed_ = nullptr;
  done();
}

void ReplayResolver::abandon() {
  flushed_ = nullptr;
  auto inflight = std::move(inflight_);
  inflight_.clear();
  for (auto& kv : inflight) finish(std::move(kv.second), std::nullopt);
  for (const auto& k : take_held_keys()) {
    auto it = sas_.find(k);
    if (it == sas_.end() || !it->second.held) continue;
    auto b = std::move(it->second.held);
    --held_;
    if (b->timer) b->timer->cancel();
    finish(std::move(b), std::nullopt);
  }
}

void ReplayResolver::finish(std::unique_ptr<Batch> batch, std::optional<XfrmSa> fresh) {
  const std::uint64_t n = batch->events.size();
  if (!fresh) {
    for (auto& e : batch->events) {
      e.replay_basis = ReplayBasis::unknown;
      e.replay_reason = "the SA's counters could not be read (it may be gone)";
      sink_(e);
    }
    return;
  }
  XfrmStats& last = sas_[batch->key].last;
  const ReplayCounters before{last.replay, last.replay_window};
  const ReplayCounters after{fresh->stats.replay, fresh->stats.replay_window};
  last = fresh->stats;
  // The requester outlives its namespace's watcher by no more than this call
  // chain: alive here means the owner is too.
  if (!batch->src.requester.expired()) refresh_(batch->src.owner, *fresh, batch->events);
  // ESN: the top has 64 bits; the audit record's seqno only the low 32.
  const std::uint64_t top = fresh->replay_esn ? replay_window_top(fresh->replay_esn->seq_hi, fresh->replay_esn->seq)
                            : fresh->replay   ? fresh->replay->seq
                                              : 0;
  const std::uint32_t window = fresh->replay_esn ? fresh->replay_esn->replay_window : fresh->replay_window;
  for (auto& e : batch->events) {
    const ReplayVerdict v = classify_replay(n, before, after, e.seq, top, window);
    if (v.exact) {
      e.replay_basis = ReplayBasis::counter;
    } else {
      e.replay_basis = ReplayBasis::inferred;
      e.replay_inference = ReplayInference{top, window, n, std::uint64_t{after.replay - before.replay},
                                           std::uint64_t{after.replay_window - before.replay_window}};
    }
    if (v.below_window) {
      e.kind = EventKind::replay_sequence_too_low;
      e.message = "ESP anti-replay check failed (sequence number below the replay window)";
    } else {
      e.message = "ESP anti-replay check failed (duplicate sequence number inside the replay window)";
    }
    append_flow(e.message, e);
    sink_(e);
  }
}

}  // namespace ipsec
