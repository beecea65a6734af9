// ReplayResolver: tells 4961 from 4962. The kernel writes one audit text
// (SA-replayed-pkt) for a duplicate inside the replay window and for a
// number below it; the SA's per-SA counters tell them apart. Records are
// held per SA for a short interval and classified together after one GETSA
// (classify_replay), sent through the SA's namespace's NetlinkRequester. A
// GETSA that fails, times out, or whose namespace goes away leaves the basis
// `unknown`, never a guess.
//
// Batched (a BatchTicker, issue 17): held batches are decided at the
// ticker's ticks, a batch at the first tick at least `coalesce` after its
// first record; no timer of its own. The GETSAs due are sent at the tick and
// their replies read in the same tick without waiting (the kernel answers
// inside sendmsg: see request_now); only a reply not there yet is waited for
// asynchronously. Without a ticker (batch.delay_ms 0) each batch has its
// timer. Either way the loop never waits for the kernel.
//
// Single-threaded: runs on the io_context thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "agent/batch_ticker.hpp"
#include "agent/netlink_requester.hpp"
#include "audit/event.hpp"
#include "audit/xfrm_table.hpp"
#include "xfrm/xfrm_message.hpp"
#include "xfrm/xfrm_request.hpp"

namespace ipsec {

// For per-SA maps on the per-record path (no key text built per record).
struct SaKeyHash {
  std::size_t operator()(const SaKey& k) const;
};
// An SA in the namespace a watcher (`owner`) follows: the resolver's and the
// tracker's per-SA maps.
std::size_t hash_sa_in(const void* owner, const SaKey& k);

class ReplayResolver {
 public:
  using EventSink = std::function<void(const Event&)>;
  // The tracker's side of an answered GETSA: refresh its table from `fresh`
  // and give the events the SA's context. `owner` is the namespace the SA
  // was found in (the tracker's watcher), still alive when this is called.
  using Refresh = std::function<void(const void* owner, const XfrmSa& fresh, std::vector<Event>& events)>;

  // The namespace an SA was found in (kept by its watcher: add() copies it
  // only when it opens a batch).
  struct Source {
    const void* owner{nullptr};
    std::string label;
    std::weak_ptr<NetlinkRequester> requester;
  };

  ReplayResolver(boost::asio::io_context& io, std::chrono::milliseconds coalesce, EventSink sink, Refresh refresh,
                 std::uint64_t& getsa_requests);
  ~ReplayResolver();

  // Held batches are decided at its ticks (null or disabled: a timer each).
  void set_ticker(BatchTicker* t) { ticker_ = t; }
  // A replay record whose SA is `sa` in `src`.
  void add(Event&& e, const Source& src, const XfrmSa& sa);
  // At a tick (`now`: the tick's time): decides the batches due. True while
  // it holds anything (for a later tick).
  bool tick(BatchTicker::Clock::time_point now);
  bool holding() const { return held_ > 0; }
  // The namespace `owner` is gone: what waits on its GETSA is decided now.
  void forget(const void* owner);
  // At stop: every held batch gets its GETSA now; `done` once all are
  // answered (at once when none is needed).
  void flush(std::function<void()> done);
  // Decides everything held or in flight now, basis unknown.
  void abandon();

 private:
  // An SA in the namespace its watcher (`owner`) follows.
  struct Key {
    const void* owner{nullptr};
    SaKey sa;
    friend bool operator==(const Key&, const Key&) = default;
  };
  struct KeyHash {
    std::size_t operator()(const Key& k) const;
  };
  struct Batch;
  // Per SA: its counters as last read (to take deltas from) and the batch
  // held for it, if any.
  struct PerSa {
    XfrmStats last;
    std::unique_ptr<Batch> held;
  };
  void classify(const Key& key);
  void finish(std::unique_ptr<Batch> batch, std::optional<XfrmSa> fresh);
  void maybe_flushed();
  // The held batches' keys, in the order they were opened when batched.
  std::vector<Key> take_held_keys();

  boost::asio::io_context& io_;
  std::chrono::milliseconds coalesce_;
  EventSink sink_;
  Refresh refresh_;
  std::uint64_t& getsa_requests_;
  BatchTicker* ticker_{nullptr};
  std::unordered_map<Key, PerSa, KeyHash> sas_;
  std::size_t held_{0};  // batches held (not yet sent)
  // Batched: the held batches' keys in the order they were opened (so the
  // due ones are in front).
  std::deque<Key> order_;
  std::map<std::uint64_t, std::unique_ptr<Batch>> inflight_;
  std::uint64_t next_id_{0};
  std::function<void()> flushed_;
};

}  // namespace ipsec
