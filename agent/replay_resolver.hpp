// ReplayResolver: tells 4961 from 4962. The kernel writes one audit text
// (SA-replayed-pkt) for a duplicate inside the replay window and for a
// number below it; the SA's per-SA counters tell them apart. Records are
// held per SA for a short interval and classified together after one GETSA
// (classify_replay), sent through the SA's namespace's NetlinkRequester so
// the loop never waits for it. A GETSA that fails, times out, or whose
// namespace goes away leaves the basis `unknown`, never a guess.
//
// Single-threaded: runs on the io_context thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/netlink_requester.hpp"
#include "audit/event.hpp"
#include "xfrm/xfrm_message.hpp"
#include "xfrm/xfrm_request.hpp"

namespace ipsec {

class ReplayResolver {
 public:
  using EventSink = std::function<void(const Event&)>;
  // The tracker's side of an answered GETSA: refresh its table from `fresh`
  // and give the events the SA's context. `owner` is the namespace the SA
  // was found in (the tracker's watcher), still alive when this is called.
  using Refresh = std::function<void(const void* owner, const XfrmSa& fresh, std::vector<Event>& events)>;

  // The namespace an SA was found in.
  struct Source {
    const void* owner{nullptr};
    std::string label;
    std::weak_ptr<NetlinkRequester> requester;
  };

  ReplayResolver(boost::asio::io_context& io, std::chrono::milliseconds coalesce, EventSink sink, Refresh refresh,
                 std::uint64_t& getsa_requests);
  ~ReplayResolver();

  // A replay record whose SA is `sa` in `src`.
  void add(Event e, const Source& src, const XfrmSa& sa);
  // The namespace `owner` is gone: what waits on its GETSA is decided now.
  void forget(const void* owner);
  // At stop: every held batch gets its GETSA now; `done` once all are
  // answered (at once when none is needed).
  void flush(std::function<void()> done);
  // Decides everything held or in flight now, basis unknown.
  void abandon();

 private:
  struct Batch;
  void classify(const std::string& key);
  void finish(std::unique_ptr<Batch> batch, std::optional<XfrmSa> fresh);
  void maybe_flushed();

  boost::asio::io_context& io_;
  std::chrono::milliseconds coalesce_;
  EventSink sink_;
  Refresh refresh_;
  std::uint64_t& getsa_requests_;
  std::map<std::string, std::unique_ptr<Batch>> held_;
  std::map<std::uint64_t, std::unique_ptr<Batch>> inflight_;
  std::uint64_t next_id_{0};
  // Per-SA counters as last read, to take deltas from (by SA key).
  std::map<std::string, XfrmStats> last_stats_;
  std::function<void()> flushed_;
};

}  // namespace ipsec
