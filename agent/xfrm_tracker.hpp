// XfrmTracker: the agent's live view of every watched network namespace's
// SAD and SPD, and the stage that enriches kernel audit events with it.
//
// Per watched netns: one socket on the XFRM multicast groups SA, POLICY,
// EXPIRE, ACQUIRE, MAPPING and MIGRATE (never AEVENTS unless asked: once
// anyone listens there the kernel sends a NEWAE every 2 packets per SA), and
// one unicast socket for the start-up dump, resync dumps after an overrun,
// and on-demand GETSA. Receive buffers that held XFRM messages are wiped
// after parsing: SA messages carry keys.
//
// Kernel audit records carry no netns: packet events are matched to SAs by
// (dst, spi) across all watched netns, and an ambiguous match is said, never
// guessed. Replay records (one audit text for both cases) are held briefly
// and classified 4961/4962 from the SA's per-SA counters, read with one
// coalesced GETSA per SA. SAD/SPD audit records are joined with the XFRM
// message for the same change by a ChangeCorrelator.
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
#include <string>
#include <vector>

#include "audit/correlator.hpp"
#include "audit/event.hpp"
#include "audit/xfrm_table.hpp"
#include "xfrm/netlink_socket.hpp"

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
    // Netns names under /run/netns; "" is the agent's own; {"all"} follows
    // every name under /run/netns (rescanned on a timer) plus the agent's own.
    std::vector<std::string> netns{""};
    int receive_buffer_bytes{4 << 20};
    bool aevents{false};
    std::chrono::milliseconds correlation_window{250};
    std::chrono::milliseconds replay_coalesce{20};
    std::chrono::milliseconds netns_rescan{2000};
  };

  XfrmTracker(boost::asio::io_context& io, Config cfg, EventSink sink, Fatal fatal);
  ~XfrmTracker();

  Result<Unit> start();
  // Every kernel-audit event passes through here on its way to the sinks.
  void on_audit_event(Event e);
  // Decides everything still pending and emits it.
  void stop();

  const XfrmTrackerStats& stats() const { return stats_; }
  std::size_t watched() const { return watchers_.size(); }
  std::size_t sa_count() const;
  std::size_t policy_count() const;

 private:
  struct Watcher;
  struct ReplayBatch;

  // `report`: write what the first dump holds (a netns that appeared later).
  Result<std::unique_ptr<Watcher>> open_watcher(const std::string& netns, bool report);
  Result<Unit> dump(Watcher& w, std::vector<XfrmSa>& sas, std::vector<XfrmPolicy>& pols,
                    std::optional<XfrmPolicyDefault>& defaults);
  bool alive(const Watcher* w) const;
  void arm(Watcher& w);
  void drain(Watcher& w);
  void resync(Watcher& w);
  void rescan_netns();
  void arm_rescan(std::chrono::milliseconds after);
  void watch_netns_dir();
  void arm_inotify();
  void emit_change(Event e);
  void arm_correlator();
  void enrich(Event& e, std::vector<std::pair<Watcher*, const SaEntry*>>& hits);
  void classify_replays(const std::string& key);
  void emit_lost(const Watcher& w, std::uint64_t count);

  boost::asio::io_context& io_;
  Config cfg_;
  EventSink sink_;
  Fatal fatal_;
  std::vector<std::unique_ptr<Watcher>> watchers_;
  ChangeCorrelator correlator_;
  boost::asio::steady_timer corr_timer_;
  boost::asio::steady_timer rescan_timer_;
  std::optional<boost::asio::posix::stream_descriptor> inotify_;  // on /run/netns, with --netns all
  std::map<std::string, std::unique_ptr<ReplayBatch>> replay_;
  // Per-SA counters as last read, to take deltas from: netns|dst|spi|proto.
  std::map<std::string, XfrmStats> last_stats_;
  XfrmTrackerStats stats_;
  bool follow_all_{false};
  bool stopping_{false};
};

std::string own_netns_label();

}  // namespace ipsec
