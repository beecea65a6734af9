#include "agent/replay_resolver.hpp"

#include "audit/normalize.hpp"
#include "audit/replay_classifier.hpp"
#include "audit/xfrm_table.hpp"

namespace ipsec {

namespace {
std::string key_text(const std::string& netns, const SaKey& k) {
  return netns + "|" + k.daddr.to_string() + "|" + std::to_string(k.spi) + "|" + std::to_string(k.proto) + "|" +
         std::to_string(k.mark_value) + "/" + std::to_string(k.mark_mask) + "|" + std::to_string(k.if_id);
}
}  // namespace

struct ReplayResolver::Batch {
  Source src;
  std::string key;
  XfrmSaRef ref;  // with the SA's mark: GETSA finds a marked SA only by it
  std::vector<Event> events;
  std::optional<boost::asio::steady_timer> timer;
};

ReplayResolver::ReplayResolver(boost::asio::io_context& io, std::chrono::milliseconds coalesce, EventSink sink,
                               Refresh refresh, std::uint64_t& getsa_requests)
    : io_(io),
      coalesce_(coalesce),
      sink_(std::move(sink)),
      refresh_(std::move(refresh)),
      getsa_requests_(getsa_requests) {}

ReplayResolver::~ReplayResolver() = default;

void ReplayResolver::add(Event e, const Source& src, const XfrmSa& sa) {
  const std::string k = key_text(src.label, sa_key(sa));
  auto& batch = held_[k];
  if (!batch) {
    batch = std::make_unique<Batch>();
    batch->src = src;
    batch->key = k;
    batch->ref = sa_ref(sa);
    if (!last_stats_.contains(k)) last_stats_[k] = sa.stats;
  }
  batch->events.push_back(std::move(e));
  if (!batch->timer) {
    // Coalesce: one GETSA per SA per interval, however many records arrive.
    batch->timer.emplace(io_);
    batch->timer->expires_after(coalesce_);
    batch->timer->async_wait([this, k](const boost::system::error_code& ec) {
      if (!ec) classify(k);
    });
  }
}

void ReplayResolver::classify(const std::string& k) {
  auto it = held_.find(k);
  if (it == held_.end()) return;
  std::unique_ptr<Batch> batch = std::move(it->second);
  held_.erase(it);
  if (batch->timer) batch->timer->cancel();  // when called at stop, before it fired
  // The namespace may be gone since the batch was opened.
  auto rq = batch->src.requester.lock();
  if (!rq) {
    finish(std::move(batch), std::nullopt);
    return;
  }
  ++getsa_requests_;
  auto fresh = std::make_shared<std::optional<XfrmSa>>();
  const XfrmSaRef ref = batch->ref;
  const std::uint64_t id = next_id_++;
  inflight_.emplace(id, std::move(batch));
  rq->request([ref](std::uint32_t seq) { return build_xfrm_get_sa(seq, ref); }, ReplyKind::reply_and_ack,
              [fresh](const NetlinkMessage& m) {
                auto p = parse_xfrm_message(m);
                if (p)
                  if (auto* n = std::get_if<XfrmNewSa>(&*p)) *fresh = n->sa;
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
  maybe_flushed();
}

void ReplayResolver::flush(std::function<void()> done) {
  flushed_ = std::move(done);
  std::vector<std::string> keys;
  for (const auto& [k, b] : held_) keys.push_back(k);
  for (const auto& k : keys) classify(k);
  maybe_flushed();
}

void ReplayResolver::maybe_flushed() {
  if (!flushed_ || !inflight_.empty() || !held_.empty()) return;
  auto done = std::move(flushed_);
  flushed_ = nullptr;
  done();
}

void ReplayResolver::abandon() {
  flushed_ = nullptr;
  auto inflight = std::move(inflight_);
  inflight_.clear();
  for (auto& [id, b] : inflight) finish(std::move(b), std::nullopt);
  auto held = std::move(held_);
  held_.clear();
  for (auto& [k, b] : held) {
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
  XfrmStats& last = last_stats_[batch->key];
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
