// XfrmTracker: the agent's live view of every watched network namespace's
// SAD and SPD, and the stage that enriches kernel audit events with it.
//
// Per watched netns (found and told apart by NetnsWatch): one socket on the
// XFRM multicast groups SA, POLICY, EXPIRE, ACQUIRE, MAPPING and MIGRATE
// (never AEVENTS unless asked: once anyone listens there the kernel sends a
// NEWAE every 2 packets per SA), drained in batches; and one NetlinkRequester
// for the dumps (at start, for a netns that appears, for a resync after an
// overrun) and on-demand GETSA, none of which blocks the loop. Receive
// buffers are SecureBuffers wiped after parsing: SA messages carry keys.
//
// Kernel audit records carry no netns: packet events are matched to SAs by
// (dst, spi) across all watched netns, and an ambiguous match is said, never
// guessed. Replay records (one audit text for both cases) go to a
// ReplayResolver, which classifies them 4961/4962 from the SA's per-SA
// counters read with one coalesced GETSA per SA. SAD/SPD audit records are
// joined with the XFRM message for the same change by a ChangeCorrelator.
//
// Single-threaded: everything runs on the io_context thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "audit/correlator.hpp"
#include "audit/reconcile.hpp"
#include "audit/state_snapshot.hpp"
#include "audit/event.hpp"
#include "audit/xfrm_table.hpp"
#include "agent/batch_ticker.hpp"
#include "agent/netns_watch.hpp"
#include "agent/replay_resolver.hpp"
#include "xfrm/netlink_socket.hpp"
#include "xfrm/secure_buffer.hpp"

namespace ipsec {

struct XfrmTrackerStats {
  std::uint64_t messages{0};
  std::uint64_t parse_errors{0};
  std::uint64_t overruns{0};
  std::uint64_t resyncs{0};
  std::uint64_t getsa_requests{0};
};

class XfrmTracker {
 public:
  using EventSink = std::function<void(const Event&)>;
  using Fatal = std::function<void(const std::string&)>;

  struct Config {
    // NetnsWatch specs: "" is the agent's own; "all" follows every name under
    // /run/netns plus the agent's own; NAME is /run/netns/NAME; a path
    // (/proc/PID/ns/net, a bind mount) is that namespace.
    std::vector<std::string> netns{""};
    int receive_buffer_bytes{4 << 20};
    bool aevents{false};
    std::chrono::milliseconds correlation_window{250};
    std::chrono::milliseconds replay_coalesce{20};
    std::chrono::milliseconds netns_rescan{2000};
    // How long a request may wait for its next reply datagram.
    std::chrono::milliseconds reply_timeout{2000};
    // How often each netns's /proc/net/xfrm_stat is read (cleartext drops as
    // 4963 aggregates) and the counters are reconciled with the records
    // received (shortfalls as events-lost); 0: never.
    std::chrono::milliseconds counters_interval{10000};
  };

  XfrmTracker(boost::asio::io_context& io, Config cfg, EventSink sink, Fatal fatal);
  ~XfrmTracker();

  // Batched (issue 17): the correlator releases what is due at the ticker's
  // ticks instead of on a timer of its own (null or disabled: its timer).
  // Held replay records are decided at its ticks too.
  void set_ticker(BatchTicker* t) {
    ticker_ = t;
    replays_.set_ticker(t);
  }
  // At each tick: what the correlator decided. True while it holds anything.
  bool tick();

  // Opens every namespace there is and reads its tables; runs the io_context
  // until those first dumps are done (call before io_context::run).
  Result<Unit> start();
  // Every kernel-audit event passes through here on its way to the sinks.
  void on_audit_event(Event&& e);
  // Kernel audit is on and its records reach this agent (it runs in the
  // initial netns): SAD/SPD changes from XFRM then wait for their audit
  // records beyond the correlation window (see ChangeCorrelator). Later
  // kernel-audit-changed events passing through on_audit_event update it.
  void set_audit_expected(bool on);
  void set_audit_reaches_us(bool yes) { audit_reaches_us_ = yes; }
  // Reads what is already queued on the XFRM sockets, decides everything
  // still pending (replay records get their GETSA) and emits it, then calls
  // `done` (at once when nothing waits for the kernel).
  void stop(std::function<void()> done);
  // At stop, before the kernel audit socket is read for the last time: reads
  // the counters and every watched SA's stats once more, then calls `done`
  // (at once when the counters are not read). stop() then reads no counters.
  void read_final_counters(std::function<void()> done);
  // After stop(): the last reconciliation, against the counters of
  // read_final_counters() (Reconciler::settle(final)).
  void reconcile_final();
  // Called before each periodic settle: the daemon reads what the kernel
  // audit socket holds, so that its overruns are reported first.
  void set_before_settle(std::function<void()> f) { before_settle_ = std::move(f); }
  // The same without waiting for the kernel (a critical failure).
  void abandon();

  // Told when the SPD of a watched namespace may have changed, or the set of
  // watched namespaces did (NetfilterSource derives its tables from them).
  void set_spd_listener(std::function<void()> f) { spd_listener_ = std::move(f); }
  // Every namespace whose first dump is in, with its table.
  std::vector<std::pair<NetnsFound, const XfrmTable*>> spds() const;

  // Explicit specs that were not there at the last scan.
  const std::vector<std::string>& missing() const { return missing_; }
  const XfrmTrackerStats& stats() const { return stats_; }
  std::size_t watched() const { return watchers_.size(); }
  // Each namespace watched now: its spec ("" the agent's own), label, and
  // whether its first dump is in (it is subscribed and followed).
  struct WatchedNetns {
    std::string spec, label;
    bool ready{false};
  };
  std::vector<WatchedNetns> watched_netns() const;
  std::size_t sa_count() const;
  std::size_t policy_count() const;

  // What every watched netns's SAD/SPD holds now (the state snapshot at stop).
  StateSnapshot snapshot() const;
  // Writes what changed between `before` (the snapshot of the last clean
  // stop) and the tables read at start, as records marked while_stopped.
  void report_changes_while_stopped(const StateSnapshot& before);
  // service-stopped: the counters' rises per netns since the agent's
  // baseline, and the reconciliation totals per counter.
  nlohmann::json counter_detail() const;

 private:
  struct Watcher;
  struct Dump;

  // Opens the sockets of a namespace and starts its first dump; `report`:
  // write what that dump holds (a netns that appeared later, marked resync).
  Result<Watcher*> open_watcher(const NetnsFound& ns, bool report);
  void dump(Watcher& w, std::function<void(Result<Unit>, Dump&)> done);
  void first_dump_done(Watcher* w, bool report, Result<Unit> r, Dump& d);
  bool alive(const Watcher* w) const;
  void drop(Watcher* w, const std::string& why);
  void arm(Watcher& w);
  // Reads up to `batch` datagrams; returns false when the socket failed.
  bool drain(Watcher& w, int batch);
  void resync(Watcher& w);
  void rescan_netns();
  void emit_change(Event e);
  void arm_correlator();
  // Tells the correlator how far every watched XFRM socket has been read
  // (each found empty at some time; a poll finds which are empty now).
  void note_xfrm_read();
  // The SAs a packet record is about, into hits_ (reused: no allocation per record).
  void enrich(Event& e);
  void emit_lost(const Watcher& w, std::uint64_t count);
  void maybe_stopped();
  void warn_once(const NetnsId& id, const std::string& what);
  // Counters and reconciliation (the counters_interval timer).
  void arm_counters();
  // `dump`: ask for the SA stats when they may have moved.
  void read_counters(Watcher& w, bool dump = true);
  // `then` (if any) once the stats are in or the dump failed; at once when
  // none can be sent or one is already running.
  void dump_sa_stats(Watcher& w, std::function<void()> then = {});
  void take_sa_stats(Watcher& w, const SaKey& k, const XfrmStats& now, bool final);
  // Forgets the stats of SAs no longer in the table (a flush, a resync).
  void prune_sa_stats(Watcher& w);
  void count_record(const Event& e);
  void emit_loss(const Loss& l);

  boost::asio::io_context& io_;
  Config cfg_;
  EventSink sink_;
  Fatal fatal_;
  NetnsWatch netns_;
  std::vector<std::unique_ptr<Watcher>> watchers_;
  std::vector<std::string> missing_;
  std::set<std::pair<unsigned long long, unsigned long long>> warned_;  // netns ids already warned about
  ChangeCorrelator correlator_;
  bool audit_reaches_us_{true};
  boost::asio::steady_timer corr_timer_;
  BatchTicker* ticker_{nullptr};
  SecureBuffer rbuf_;            // the multicast sockets' recvmmsg slots (wiped after each datagram)
  std::size_t last_read_{0};     // datagrams the last drain() read
  std::optional<std::chrono::steady_clock::time_point> corr_armed_;  // when corr_timer_ is due, if waiting
  XfrmTrackerStats stats_;
  ReplayResolver replays_;  // after stats_: it counts into it
  bool replays_flushed_{false};
  std::size_t starting_{0};       // first dumps still running at start
  std::optional<Error> start_error_;
  std::function<void()> stopped_;   // stop()'s callback, until nothing waits
  std::function<void()> spd_listener_;
  void spd_changed() {
    if (spd_listener_) spd_listener_();
  }
  bool stopping_{false};
  // The packet path's reused storage (single-threaded, not re-entered).
  std::vector<const XfrmTable*> tables_;
  std::vector<std::pair<std::size_t, const SaEntry*>> table_hits_;
  std::vector<std::pair<Watcher*, const SaEntry*>> hits_;
  // Records seen per SA since the last fold (count_record), folded into
  // recon_ before anything reads or closes its entries: the LossKey (label
  // and SA identity as text) is built per SA then, not per record. Mutable:
  // counter_detail() folds too.
  struct SeenKey {
    const Watcher* w{nullptr};
    SaKey sa;
    bool integrity{false};
    friend bool operator==(const SeenKey&, const SeenKey&) = default;
  };
  struct SeenKeyHash {
    std::size_t operator()(const SeenKey& k) const {
      return hash_sa_in(k.w, k.sa) ^ std::size_t{k.integrity};
    }
  };
  mutable std::unordered_map<SeenKey, std::uint64_t, SeenKeyHash> seen_;
  void fold_seen() const;
  mutable Reconciler recon_;
  bool final_counters_read_{false};
  std::function<void()> before_settle_;
  boost::asio::steady_timer counter_timer_;
  // Rise of each counter that moved, per netns label, since the baselines.
  std::map<std::string, std::map<std::string, std::uint64_t>> netns_deltas_;
};

}  // namespace ipsec
