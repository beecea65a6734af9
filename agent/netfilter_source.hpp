// NetfilterSource: what the kernel does not audit, seen through netfilter,
// per watched network namespace.
//
// * The agent's one nftables table `inet ipsec_audit` (audit/nft_ruleset.hpp),
//   derived from the namespace's SPD (the XfrmTracker's table), applied with
//   libnftables in one transaction that replaces it atomically, 200 ms after
//   the SPD last changed; checked every 2 s (a GETTABLE of its own) and
//   applied again when it went (`nft flush ruleset`); deleted on stop.
// * An NFLOG subscriber (NETLINK_NETFILTER, libmnl): group N bound in copy
//   mode with a 128-byte copy range, read non-blocking on the io_context.
//   Packets of the cleartext chain become predicted `cleartext-packet-dropped`
//   records; packets of the fragments chain are summarised per (peer,
//   interval) as `fragment-received`. ENOBUFS writes `events-lost` at once.
// * Interfaces: a libnl-route-3 cache manager (links, addresses) on the
//   io_context names the input interface. Failing to list them, or the
//   namespace going away under the agent, is 5480 `interface-list-failed`.
//
// libnftables calls exit() when it cannot open its netlink socket. It is
// never called before a NETLINK_NETFILTER socket of the agent's own has
// asked nf_tables for the table (a GETTABLE answered with the table or
// ENOENT); when that fails, 5485 `filter-refresh-failed` says why and
// everything else works on without the table.
//
// Single-threaded: everything runs on the io_context thread; namespaces are
// entered with ScopedNetns for the length of one call.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "agent/netns_watch.hpp"
#include "audit/event.hpp"
#include "audit/nft_ruleset.hpp"
#include "audit/xfrm_table.hpp"

namespace ipsec {

struct NetfilterStats {
  std::uint64_t packets{0};       // NFLOG packet messages read
  std::uint64_t parse_errors{0};  // refused by parse_nflog_packet
  std::uint64_t overruns{0};      // ENOBUFS on an NFLOG socket
  std::uint64_t applies{0};       // tables written
  std::uint64_t reapplies{0};     // tables written again after they went
};

class NetfilterSource {
 public:
  using EventSink = std::function<void(const Event&)>;
  struct Config {
    bool enable{true};
    std::uint16_t group{4963};
    std::uint16_t copy_range{128};
    int receive_buffer_bytes{4 << 20};
    std::chrono::milliseconds debounce{200};
    std::chrono::milliseconds check_interval{2000};
    std::chrono::milliseconds fragment_interval{10000};
  };
  // A watched namespace and its SPD (owned by the XfrmTracker).
  struct Spd {
    NetnsFound ns;
    const XfrmTable* table{nullptr};
  };
  using SpdProvider = std::function<std::vector<Spd>()>;

  NetfilterSource(boost::asio::io_context& io, Config cfg, SpdProvider spds, EventSink sink);
  ~NetfilterSource();

  // Opens what there is for every watched namespace and applies the tables
  // (before the privileges go).
  void start();
  // The SPD of some namespace changed, or the set of namespaces did.
  void spd_changed();
  // Writes the pending fragment summaries and deletes the tables.
  void stop();

  const NetfilterStats& stats() const { return stats_; }
  nlohmann::json status() const;

 private:
  struct Instance;
  void sync();
  Instance* open_instance(const Spd& s);
  void drop_instance(std::size_t i, const std::string& why);
  void apply(Instance& in, const XfrmTable& table, bool again);
  void check();
  void arm_read(Instance& in);
  void drain(Instance& in);
  void arm_links(Instance& in);
  void on_packet(Instance& in, const NflogPacket& p);
  void flush_fragments();
  void arm_check();
  void arm_fragments();
  void failure(EventKind k, const Instance& in, std::string message, std::string reason);
  bool alive(const Instance* in) const;

  boost::asio::io_context& io_;
  Config cfg_;
  SpdProvider spds_;
  EventSink sink_;
  std::vector<std::unique_ptr<Instance>> instances_;
  boost::asio::steady_timer debounce_, check_timer_, fragment_timer_;
  FragmentAggregator fragments_;
  NetfilterStats stats_;
  bool stopped_{false};
};

}  // namespace ipsec
