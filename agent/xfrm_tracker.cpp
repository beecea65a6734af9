#include "agent/xfrm_tracker.hpp"

#include <fcntl.h>
#include <linux/netlink.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <algorithm>
#include <array>
#include <cerrno>

#include "agent/log.hpp"
#include "agent/netlink_requester.hpp"
#include "audit/normalize.hpp"
#include "audit/sa_match.hpp"
#include "xfrm/netns.hpp"
#include "xfrm/secure_buffer.hpp"
#include "xfrm/xfrm_stat.hpp"
#include "xfrm/xfrm_message.hpp"
#include "xfrm/xfrm_request.hpp"

namespace ipsec {

namespace {
constexpr int kBatch = 256;
// At stop: what was queued, bounded (a socket that never runs dry must not
// hold up the end).
constexpr int kStopBatch = 64 * kBatch;
// recvmmsg slots (64 x 16 KiB, touched only as far as datagrams fill them), one tracker-wide buffer (single-threaded: every netns's
// socket is read into it in turn, and it is wiped after each datagram). An
// XFRM notification is one message of a few KiB at most (an SA with keys,
// ESN bitmap and security context, a policy with six templates).
constexpr std::size_t kSlot = 16 * 1024;
constexpr std::size_t kSlots = 64;

// The counters that become 4963 aggregates, and why the kernel counts each.
struct CleartextCounter {
  const char* name;
  const char* why;
};
constexpr CleartextCounter kCleartext[] = {
    {"XfrmInTmplMismatch", "the packet matched none of the templates of its inbound policy (e.g. cleartext where "
                           "the policy requires IPsec)"},
    {"XfrmInNoPols", "no policy matched and the default inbound policy is block"},
    {"XfrmInPolBlock", "a block policy matched"},
};
// Host-wide pairings: a netns counter (summed over the watched ones) and the
// kernel audit records (which carry no netns) for the same packets.
constexpr const char* kNoStates = "XfrmInNoStates";             // incorrect-spi (4965)
constexpr const char* kOutSeqError = "XfrmOutStateSeqError";    // sequence-overflow
// Per-SA pairings (the SA's own stats).
constexpr const char* kIntegrity = "integrity_failed";  // integrity-check-failed (4960)
constexpr const char* kReplay = "replay";               // replay + replay_window: 4961 / 4962

LossKey host_key(const char* counter) { return LossKey{counter, std::nullopt, std::nullopt, ""}; }
std::string sa_identity(const SaKey& k) {
  std::string s = "dst " + k.daddr.to_string() + " proto " + std::to_string(k.proto);
  if (k.mark_value || k.mark_mask) s += " mark " + std::to_string(k.mark_value) + "/" + std::to_string(k.mark_mask);
  if (k.if_id) s += " if_id " + std::to_string(k.if_id);
  return s;
}
std::uint64_t replays(const XfrmStats& s) { return std::uint64_t{s.replay} + s.replay_window; }

// /proc/net/xfrm_stat of a namespace, opened inside it (the file stays bound
// to the namespace it was opened in, and is read again at each tick).
Result<UniqueFd> open_xfrm_stat(int netns_fd) {
  std::optional<ScopedNetns> scope;
  if (netns_fd >= 0) {
    auto sc = ScopedNetns::enter_fd(netns_fd);
    if (!sc) return sc.error();
    scope.emplace(std::move(*sc));
  }
  UniqueFd fd(::open("/proc/thread-self/net/xfrm_stat", O_RDONLY | O_CLOEXEC));
  const int err = errno;
  if (scope)
    if (auto r = scope->restore(); !r) return r.error();
  if (fd.get() < 0) return make_error(Errc::io, std::string("cannot open /proc/net/xfrm_stat: ") + strerror(err), err);
  return fd;
}

bool is_packet_event(EventKind k) {
  return k == EventKind::integrity_check_failed || k == EventKind::replay_check_failed ||
         k == EventKind::replay_sequence_too_low || k == EventKind::incorrect_spi || k == EventKind::sequence_overflow;
}
}  // namespace

struct XfrmTracker::Watcher {
  NetnsFound ns;
  std::string label;  // what records say
  std::optional<NetlinkSocket> mcast;
  std::optional<boost::asio::posix::stream_descriptor> desc;
  std::shared_ptr<NetlinkRequester> requester;
  ReplayResolver::Source replay_src;  // what a replay record's batch keeps (built once)
  XfrmTable table;
  int parked{-1};  // the descriptor of desc while it is out of epoll (batched, busy)
  bool ready{false};      // the first dump is in
  bool resyncing{false};  // a resync dump is running: the multicast socket waits
  // When the multicast socket was last found empty (what was queued before is read).
  std::optional<std::chrono::steady_clock::time_point> read_empty_at;
  UniqueFd stat_fd;       // its /proc/net/xfrm_stat; invalid when counters are off
  std::optional<XfrmStat> stat_last;
  std::map<SaKey, XfrmStats> sa_stats;  // per-SA stats as last read (baseline: the first dump)
  bool sa_dump_running{false};
  bool sa_records{false};  // per-SA packet records since the last tick
  bool stat_warned{false};
  explicit Watcher(NetnsFound n) : ns(std::move(n)), label(ns.label), table(ns.label) {}
  ~Watcher() {
    if (parked >= 0) ::close(parked);
    if (requester) requester->close();
    if (desc) {
      boost::system::error_code ec;
      desc->close(ec);
    }
  }
};

// What one dump collects (SAs, policies, the default policy).
struct XfrmTracker::Dump {
  std::vector<XfrmSa> sas;
  std::vector<XfrmPolicy> pols;
  std::optional<XfrmPolicyDefault> defaults;
  std::uint64_t parse_errors{0};
};

XfrmTracker::XfrmTracker(boost::asio::io_context& io, Config cfg, EventSink sink, Fatal fatal)
    : io_(io),
      cfg_(std::move(cfg)),
      sink_(std::move(sink)),
      fatal_(std::move(fatal)),
      netns_(io, cfg_.netns, cfg_.netns_rescan, [this] { rescan_netns(); }),
      correlator_(cfg_.correlation_window),
      corr_timer_(io),
      rbuf_(kSlot * kSlots),
      replays_(
          io, cfg_.replay_coalesce, [this](const Event& e) { sink_(e); },
          [this](const void* owner, const XfrmSa& fresh, std::vector<Event>& events) {
            for (const auto& w : watchers_) {
              if (w.get() != owner) continue;
              if (const SaEntry* entry = w->table.refresh(fresh)) {
                const auto ctx = w->table.context(*entry);
                for (auto& e : events) e.sa = ctx;
              }
            }
          },
          stats_.getsa_requests),
      counter_timer_(io) {}

XfrmTracker::~XfrmTracker() = default;

std::size_t XfrmTracker::sa_count() const {
  std::size_t n = 0;
  for (const auto& w : watchers_) n += w->table.sa_count();
  return n;
}

std::size_t XfrmTracker::policy_count() const {
  std::size_t n = 0;
  for (const auto& w : watchers_) n += w->table.policy_count();
  return n;
}

void XfrmTracker::dump(Watcher& w, std::function<void(Result<Unit>, Dump&)> done) {
  auto d = std::make_shared<Dump>();
  auto collect = [d](const NetlinkMessage& m) {
    auto p = parse_xfrm_message(m);
    if (!p) {
      ++d->parse_errors;
      return;
    }
    if (auto* s = std::get_if<XfrmNewSa>(&*p)) d->sas.push_back(std::move(s->sa));
    if (auto* pl = std::get_if<XfrmNewPolicy>(&*p)) d->pols.push_back(std::move(pl->policy));
    if (auto* df = std::get_if<XfrmPolicyDefault>(&*p)) d->defaults = *df;
  };
  // Three requests in order on the one socket; the first failure decides.
  auto failed = std::make_shared<std::optional<Error>>();
  auto& rq = *w.requester;
  rq.request([](std::uint32_t seq) { return build_xfrm_dump_sa(seq); }, ReplyKind::dump, collect,
             [failed](const Result<Unit>& r) {
               if (!r && !*failed) *failed = r.error();
             });
  rq.request([](std::uint32_t seq) { return build_xfrm_dump_policy(seq); }, ReplyKind::dump, collect,
             [failed](const Result<Unit>& r) {
               if (!r && !*failed) *failed = r.error();
             });
  // Older kernels have no default policies: not an error.
  rq.request([](std::uint32_t seq) { return build_xfrm_get_default(seq); }, ReplyKind::reply_and_ack, collect,
             [this, d, failed, done = std::move(done)](const Result<Unit>&) {
               stats_.parse_errors += d->parse_errors;
               if (*failed)
                 done(**failed, *d);
               else
                 done(Unit{}, *d);
             });
}

Result<XfrmTracker::Watcher*> XfrmTracker::open_watcher(const NetnsFound& ns, bool report) {
  auto w = std::make_unique<Watcher>(ns);
  std::optional<NetnsHandle> handle;
  if (!ns.spec.empty()) {
    auto h = open_netns(ns.spec);
    if (!h) return h.error();
    // Between the scan and now the name may have been given to another namespace.
    if (!(h->id == ns.id)) return make_error(Errc::io, "netns " + ns.label + " changed while it was opened");
    handle.emplace(std::move(*h));
  }
  auto open = [&]() {
    return handle ? open_netlink_socket_in_netns_fd(handle->fd.get(), NETLINK_XFRM) : NetlinkSocket::open(NETLINK_XFRM);
  };
  if (cfg_.counters_interval.count() > 0) {
    auto sf = open_xfrm_stat(handle ? handle->fd.get() : -1);
    if (sf)
      w->stat_fd = std::move(*sf);
    else
      log(LogLevel::warning, "counters of netns " + w->label + " are not read (no 4963 aggregates, no reconciliation "
                             "of its counters): " + sf.error().message);
  }
  auto mc = open();
  if (!mc) return mc.error();
  w->mcast.emplace(std::move(*mc));
  auto ctl = open();
  if (!ctl) return ctl.error();
  auto rq = NetlinkRequester::create(io_, std::move(*ctl), cfg_.reply_timeout);
  if (!rq) return rq.error();
  w->requester = std::move(*rq);
  w->replay_src = ReplayResolver::Source{w.get(), w->label, w->requester};
  std::vector<unsigned> groups{kXfrmGroupAcquire, kXfrmGroupExpire,  kXfrmGroupSa,
                               kXfrmGroupPolicy,  kXfrmGroupMigrate, kXfrmGroupMapping};
  if (cfg_.aevents) groups.push_back(kXfrmGroupAevents);
  // Join before the dump, so that no change falls between the two.
  for (unsigned g : groups)
    if (auto j = w->mcast->join_group(g); !j)
      return make_error(Errc::io,
                        "joining the XFRM multicast groups of netns " + w->label + " failed: " + j.error().message +
                            (j.error().sys_errno == EPERM ? " (needs CAP_NET_ADMIN)" : ""),
                        j.error().sys_errno);
  if (auto rb = w->mcast->set_receive_buffer(cfg_.receive_buffer_bytes); !rb) return rb.error();
  const int fd = ::dup(w->mcast->fd());
  if (fd < 0) return make_error(Errc::io, "dup failed", errno);
  w->desc.emplace(io_, fd);
  Watcher* wp = w.get();
  watchers_.push_back(std::move(w));
  dump(*wp, [this, wp, report](Result<Unit> r, Dump& d) {
    if (alive(wp)) first_dump_done(wp, report, std::move(r), d);
  });
  return wp;
}

void XfrmTracker::first_dump_done(Watcher* w, bool report, Result<Unit> r, Dump& d) {
  const bool at_start = starting_ > 0 && !report;
  if (at_start) --starting_;
  if (!r) {
    const Error e = make_error(Errc::io,
                               "XFRM dump in netns " + w->label + " failed: " + r.error().message +
                                   (r.error().sys_errno == EPERM ? " (reading the SAD/SPD needs CAP_NET_ADMIN)" : ""),
                               r.error().sys_errno);
    if (at_start && !start_error_) start_error_ = e;
    if (!at_start) warn_once(w->ns.id, e.message + "; not watched (tried again at each scan)");
    drop(w, "");
    return;
  }
  for (const auto& sa : d.sas) w->sa_stats[sa_key(sa)] = sa.stats;
  if (report) {
    // A namespace that appeared while the agent ran: what it already holds
    // was set up after start, so it is written (marked resync), not absorbed.
    for (auto& e : w->table.resync(std::move(d.sas), std::move(d.pols), std::chrono::system_clock::now()))
      emit_change(std::move(e));
  } else {
    w->table.load(std::move(d.sas), std::move(d.pols));
  }
  if (d.defaults) w->table.set_defaults(*d.defaults);
  w->ready = true;
  warned_.erase({w->ns.id.dev, w->ns.id.ino});
  if (report) log(LogLevel::info, "watching netns " + w->label);
  arm(*w);
  spd_changed();
}

std::vector<std::pair<NetnsFound, const XfrmTable*>> XfrmTracker::spds() const {
  std::vector<std::pair<NetnsFound, const XfrmTable*>> v;
  for (const auto& w : watchers_)
    if (w->ready) v.emplace_back(w->ns, &w->table);
  return v;
}

Result<Unit> XfrmTracker::start() {
  const auto found = netns_.scan(&missing_);
  for (const auto& spec : missing_)
    log(LogLevel::warning, "netns " + netns_path(spec) + " is not there (yet): watched when it appears");
  for (const auto& ns : found) {
    auto w = open_watcher(ns, false);
    if (!w) {
      // A namespace named explicitly must open; one found by a scan may have just gone.
      if (netns_.follows_all() && !ns.spec.empty()) {
        log(LogLevel::warning, "netns " + ns.label + " skipped: " + w.error().message);
        continue;
      }
      return w.error();
    }
    ++starting_;
  }
  // READY only once the first dumps are in: run the loop until they are.
  // Nothing else is armed yet, so only their handlers run here.
  while (starting_ > 0 && io_.run_one() > 0) {
  }
  if (start_error_) return *start_error_;
  netns_.start();
  if (cfg_.counters_interval.count() > 0) {
    for (auto& w : watchers_)
      if (w->stat_fd.get() >= 0) read_counters(*w);  // the baselines
    arm_counters();
  }
  return Unit{};
}

std::vector<XfrmTracker::WatchedNetns> XfrmTracker::watched_netns() const {
  std::vector<WatchedNetns> v;
  for (const auto& w : watchers_) v.push_back({w->ns.spec, w->label, w->ready && w->mcast.has_value()});
  return v;
}

void XfrmTracker::rescan_netns() {
  if (stopping_) return;
  std::vector<std::string> missing;
  const auto found = netns_.scan(&missing);
  // Gone, or recreated under the same name (another identity): stop watching
  // (our sockets would otherwise keep a dead namespace alive).
  std::vector<Watcher*> gone;
  for (const auto& w : watchers_) {
    bool still = false;
    for (const auto& f : found) still = still || (f.id == w->ns.id && f.spec == w->ns.spec);
    if (!still) gone.push_back(w.get());
  }
  for (Watcher* w : gone) drop(w, "netns " + w->label + " is gone or was recreated; the old one is no longer watched");
  for (const auto& f : found) {
    bool have = false;
    for (const auto& w : watchers_) have = have || w->ns.id == f.id;
    if (have) continue;
    auto w = open_watcher(f, true);
    if (!w) warn_once(f.id, "netns " + f.label + " not watched (tried again at each scan): " + w.error().message);
  }
  missing_ = std::move(missing);
}

void XfrmTracker::warn_once(const NetnsId& id, const std::string& what) {
  // A namespace that keeps failing is tried at every scan, said once.
  if (warned_.insert({id.dev, id.ino}).second) log(LogLevel::warning, what);
}

bool XfrmTracker::alive(const Watcher* w) const {
  for (const auto& x : watchers_)
    if (x.get() == w) return true;
  return false;
}

void XfrmTracker::drop(Watcher* w, const std::string& why) {
  if (!why.empty()) log(LogLevel::info, why);
  replays_.forget(w);
  fold_seen();
  recon_.close_if([&](const LossKey& k) { return k.spi && k.netns == w->label; });
  const bool was_ready = w->ready;
  std::erase_if(watchers_, [w](const std::unique_ptr<Watcher>& x) { return x.get() == w; });
  if (was_ready) spd_changed();
}

void XfrmTracker::arm(Watcher& w) {
  if (w.parked >= 0) {
    w.desc.emplace(io_, w.parked);  // EPOLL_CTL_ADD: reports at once what is queued by now
    w.parked = -1;
  }
  // A completion can already be queued when a rescan drops the watcher, so
  // handlers look it up again rather than trust the pointer.
  w.desc->async_wait(boost::asio::posix::stream_descriptor::wait_read,
                     [this, wp = &w](const boost::system::error_code& ec) {
                       if (ec || stopping_ || !alive(wp)) return;
                       if (ticker_ && ticker_->enabled()) {
                         // Batched: out of epoll until a tick finds it empty.
                         wp->parked = wp->desc->release();
                         wp->desc.reset();
                         ticker_->wake();
                         return;
                       }
                       if (!drain(*wp, kBatch)) return;
                       if (wp->resyncing) return;  // re-armed when the resync is in
                       // A full batch: let the other sources in, then go on.
                       boost::asio::post(io_, [this, wp] {
                         if (!stopping_ && alive(wp) && !wp->resyncing) arm(*wp);
                       });
                     });
}

bool XfrmTracker::drain(Watcher& w, int batch) {
  std::uint64_t overruns = 0;
  bool policies_changed = false;
  bool emptied = false;
  last_read_ = 0;
  std::array<NetlinkSocket::Received, kSlots> got;
  for (int i = 0; i < batch;) {
    const std::size_t want = std::min<std::size_t>(kSlots, static_cast<std::size_t>(batch - i));
    const auto before = ChangeCorrelator::Clock::now();
    const std::size_t n = w.mcast->receive_many(rbuf_.span(), kSlot, std::span(got.data(), want));
    if (n == 0) {
      const auto& r = got[0];
      if (r.status == NetlinkSocket::RecvStatus::overrun) {
        ++overruns;
        ++i;
        ++last_read_;
        continue;
      }
      if (r.status == NetlinkSocket::RecvStatus::error) {
        const std::string why = "XFRM socket of netns " + w.label + " failed: " + strerror(r.err);
        // The agent's own namespace is a source it cannot do without; another
        // one is dropped (the next scan may pick it up again).
        if (w.ns.spec.empty()) {
          fatal_(why);
        } else {
          drop(&w, why + "; no longer watched");
        }
        return false;
      }
      w.read_empty_at = before;  // again: everything queued before the call is read
      emptied = true;
      break;
    }
    i += static_cast<int>(n);
    last_read_ += n;
    for (std::size_t k = 0; k < n; ++k) {
      const auto& r = got[k];
      std::uint8_t* data = rbuf_.data() + k * kSlot;
      // Per datagram: a batch can take long to work through under load, and
      // the correlator compares this time with the kernel's audit time stamps.
      const auto now = std::chrono::system_clock::now();
      if (r.status == NetlinkSocket::RecvStatus::rejected || r.status == NetlinkSocket::RecvStatus::truncated) {
        ++stats_.parse_errors;
        explicit_bzero(data, kSlot);
        continue;
      }
      auto walk = for_each_netlink_message(Bytes(data, r.size), [&](const NetlinkMessage& m) {
        ++stats_.messages;
        auto p = parse_xfrm_message(m);
        if (!p) {
          ++stats_.parse_errors;
          log(LogLevel::warning, "unparsable XFRM message dropped: " + p.error().message);
          return true;
        }
        if (cfg_.counters_interval.count() > 0) {
          // A deleted SA's last stats come with its DELSA / hard EXPIRE.
          if (const auto* del = std::get_if<XfrmDelSa>(&*p); del && del->sa)
            take_sa_stats(w, sa_key(del->id, del->mark, del->if_id), del->sa->stats, true);
          else if (const auto* ex = std::get_if<XfrmExpire>(&*p); ex && ex->hard)
            take_sa_stats(w, sa_key(ex->sa), ex->sa.stats, true);
        }
        for (auto& e : w.table.apply(*p, now)) emit_change(std::move(e));
        // No stats in a flush: what the last reading said is all there is.
        if (std::holds_alternative<XfrmFlushSa>(*p)) prune_sa_stats(w);
        if (std::holds_alternative<XfrmNewPolicy>(*p) || std::holds_alternative<XfrmDelPolicy>(*p) ||
            std::holds_alternative<XfrmPolicyExpire>(*p) || std::holds_alternative<XfrmFlushPolicy>(*p))
          policies_changed = true;
        return true;
      });
      if (!walk) ++stats_.parse_errors;
      // SA messages carry keys: nothing of them stays in our memory.
      explicit_bzero(data, r.size);
    }
    if (n < want) {  // the queue is empty: no EAGAIN call needed
      w.read_empty_at = before;
      emptied = true;
      break;
    }
  }
  if (policies_changed) spd_changed();
  if (overruns > 0) {
    stats_.overruns += overruns;
    emit_lost(w, overruns);
    resync(w);
  } else if (emptied && correlator_.awaits_xfrm()) {
    note_xfrm_read();
  }
  return true;
}

void XfrmTracker::note_xfrm_read() {
  // The sockets with nothing queued now are read up to now; one that is
  // readable (its handler has yet to run) or resyncing keeps its last time.
  const auto t = ChangeCorrelator::Clock::now();
  std::vector<pollfd> fds;
  std::vector<Watcher*> ws;
  for (const auto& w : watchers_) {
    if (!w->ready || !w->mcast || w->resyncing) continue;
    fds.push_back(pollfd{w->mcast->fd(), POLLIN, 0});
    ws.push_back(w.get());
  }
  if (!fds.empty() && ::poll(fds.data(), fds.size(), 0) < 0) return;
  std::optional<ChangeCorrelator::Clock::time_point> upto = t;
  for (std::size_t i = 0; i < fds.size(); ++i)
    if ((fds[i].revents & (POLLIN | POLLERR)) == 0) ws[i]->read_empty_at = t;
  for (const auto& w : watchers_) {
    if (!w->ready) continue;
    if (!w->read_empty_at) return;  // never read empty yet: no progress to tell
    upto = std::min(*upto, *w->read_empty_at);
  }
  if (correlator_.xfrm_read_up_to(*upto)) arm_correlator();
}

void XfrmTracker::emit_lost(const Watcher& w, std::uint64_t count) {
  Event e = make_events_lost(
      Source::xfrm, count, "netlink_overrun", true,
      "the XFRM socket of netns " + w.label + " overran (ENOBUFS): SA/policy change messages were lost, at least " +
          std::to_string(count) + "; the tables are re-read and what was missed follows as resync records");
  e.netns = w.label;
  sink_(e);
}

void XfrmTracker::resync(Watcher& w) {
  if (w.resyncing || stopping_) return;
  ++stats_.resyncs;
  // The multicast socket waits while the dump runs: a change applied between
  // the dump's snapshot and its end would be undone by the resync.
  w.resyncing = true;
  dump(w, [this, wp = &w](Result<Unit> r, Dump& d) {
    if (!alive(wp)) return;
    wp->resyncing = false;
    if (!r) {
      // A partial dump is never applied: it would write false deletions.
      log(LogLevel::error, "resync dump of netns " + wp->label + " failed, the table stays as it was: " +
                               r.error().message);
    } else {
      const auto now = std::chrono::system_clock::now();
      for (auto& e : wp->table.resync(std::move(d.sas), std::move(d.pols), now)) emit_change(std::move(e));
      prune_sa_stats(*wp);  // SAs deleted while messages were lost: their last stats are all there is
      spd_changed();
      if (d.defaults)
        for (auto& e : wp->table.apply(*d.defaults, now)) {
          e.detail["resync"] = true;
          sink_(e);
        }
    }
    if (!stopping_) arm(*wp);
  });
}

void XfrmTracker::emit_change(Event e) {
  if (ChangeCorrelator::accepts(e)) {
    correlator_.add(std::move(e), ChangeCorrelator::Clock::now());
    arm_correlator();
  } else {
    sink_(e);
  }
}

bool XfrmTracker::tick() {
  if (stopping_) return false;
  bool busy = false;
  for (std::size_t i = 0; i < watchers_.size();) {
    Watcher* w = watchers_[i].get();
    if (w->parked < 0 || !w->ready || w->resyncing) {  // a resync re-arms it when it is in
      ++i;
      continue;
    }
    if (!drain(*w, kBatch)) {
      if (!alive(w)) continue;  // dropped: the same index is the next one
      ++i;
      continue;
    }
    if (last_read_ == 0 && !w->resyncing && !stopping_)
      arm(*w);  // empty: back into epoll
    else
      busy = true;
    ++i;
  }
  if (correlator_.pending() > 0) {
    const auto emit = [this](Event& e) { sink_(e); };
    correlator_.take_ready(ChangeCorrelator::Clock::now(), false, emit);
    if (correlator_.awaits_xfrm()) {
      // A lone audit record is decided only once the XFRM sockets are read
      // past it; idle sockets are not drained by a tick, so look at them.
      note_xfrm_read();
      correlator_.take_ready(ChangeCorrelator::Clock::now(), false, emit);
    }
    busy = busy || correlator_.pending() > 0;
  }
  // Replay records held for their GETSA: the batches due are decided now,
  // with this tick's records (one write).
  if (replays_.holding()) busy = replays_.tick(ticker_->now()) || busy;
  return busy;
}

void XfrmTracker::arm_correlator() {
  const auto due = correlator_.next_deadline();
  if (!due) return;
  if (ticker_ && ticker_->enabled()) {
    // Decided at the first tick past the deadline (at most one period late),
    // together with the tick's other records: one write, no timer per event.
    if (!stopping_) ticker_->wake();
    return;
  }
  // Already armed for this deadline or an earlier one: that wake-up re-arms
  // for the rest. (Re-arming per change cost a timerfd_settime per record.)
  if (corr_armed_ && *corr_armed_ <= *due) return;
  corr_armed_ = *due;
  corr_timer_.expires_at(*due);
  corr_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;  // re-armed or stopping
    corr_armed_.reset();
    // A lone audit record is decided only once the XFRM sockets are read past it.
    note_xfrm_read();
    correlator_.take_ready(ChangeCorrelator::Clock::now(), false, [this](Event& e) { sink_(e); });
    arm_correlator();
  });
}

void XfrmTracker::enrich(Event& e) {
  tables_.clear();
  for (const auto& w : watchers_) tables_.push_back(&w->table);
  match_packet_event(e, tables_, table_hits_);
  hits_.clear();
  for (const auto& [i, s] : table_hits_) hits_.emplace_back(watchers_[i].get(), s);
}

void XfrmTracker::set_audit_expected(bool on) {
  if (on == correlator_.audit_expected()) return;
  correlator_.set_audit_expected(on);
  arm_correlator();
}

void XfrmTracker::on_audit_event(Event&& e) {
  if (ChangeCorrelator::joins(e.kind)) {
    correlator_.add(std::move(e), ChangeCorrelator::Clock::now());
    arm_correlator();
    return;
  }
  // Any audit record tells how far kauditd has come: changes waiting for
  // theirs may be decided now.
  if (e.kernel && correlator_.audit_seen(*e.kernel)) arm_correlator();
  if (e.kind == EventKind::kernel_audit_changed && e.detail.is_object() && e.detail.contains("kernel_audit")) {
    const auto& ka = e.detail["kernel_audit"];
    if (ka.is_object() && ka.contains("enabled") && ka["enabled"].is_number())
      set_audit_expected(ka["enabled"].get<long long>() != 0 && audit_reaches_us_);
  }
  if (!is_packet_event(e.kind)) {
    // A loss the kernel audit side reports itself (the kernel's `lost`
    // rise, a socket overrun): a shortfall of the same records found later
    // writes only what exceeds it (Reconciler::reported).
    if (e.kind == EventKind::events_lost && cfg_.counters_interval.count() > 0) recon_.reported(e.count);
    sink_(e);
    return;
  }
  enrich(e);
  count_record(e);
  const auto& hits = hits_;
  if (e.kind != EventKind::replay_check_failed) {
    sink_(e);
    return;
  }
  e.replay_detail.reset();  // replaced by replay_basis
  if (hits.size() != 1 || stopping_) {
    e.replay_basis = ReplayBasis::unknown;
    e.replay_reason = hits.empty() ? "no watched SA has this destination and SPI"
                      : stopping_  ? "the agent is stopping"
                                   : "more than one watched SA has this destination and SPI";
    sink_(e);
    return;
  }
  Watcher* w = hits[0].first;
  replays_.add(std::move(e), w->replay_src, hits[0].second->sa);
}

void XfrmTracker::stop(std::function<void()> done) {
  stopping_ = true;
  netns_.stop();
  // What the kernel has already queued is read and written before the end.
  for (std::size_t i = 0; i < watchers_.size();) {
    Watcher* w = watchers_[i].get();
    if (w->ready && !w->resyncing && !drain(*w, kStopBatch) && !alive(w))
      continue;  // dropped: the same index is the next one
    ++i;
  }
  for (auto& w : watchers_)
    if (w->desc) {
      boost::system::error_code ec;
      w->desc->cancel(ec);
    }
  // The last interval's cleartext drops are written too (the daemon has
  // read them with read_final_counters; settled by reconcile_final).
  counter_timer_.cancel();
  if (cfg_.counters_interval.count() > 0 && !final_counters_read_)
    for (auto& w : watchers_)
      if (w->stat_fd.get() >= 0) read_counters(*w);
  stopped_ = std::move(done);
  // Held replay records get their GETSA now; the end waits for the answers.
  replays_.flush([this] {
    replays_flushed_ = true;
    maybe_stopped();
  });
}

void XfrmTracker::maybe_stopped() {
  if (!stopping_ || !replays_flushed_ || !stopped_) return;
  corr_timer_.cancel();
  corr_armed_.reset();
  correlator_.take_ready(ChangeCorrelator::Clock::now(), true, [this](Event& e) { sink_(e); });
  auto done = std::move(stopped_);
  stopped_ = nullptr;
  for (auto& w : watchers_)
    if (w->requester) w->requester->close();
  done();
}

void XfrmTracker::abandon() {
  stopping_ = true;
  netns_.stop();
  for (auto& w : watchers_) {
    if (w->requester) w->requester->close();
    if (w->desc) {
      boost::system::error_code ec;
      w->desc->cancel(ec);
    }
  }
  replays_.abandon();
  corr_timer_.cancel();
  counter_timer_.cancel();
  corr_armed_.reset();
  correlator_.take_ready(ChangeCorrelator::Clock::now(), true, [this](Event& e) { sink_(e); });
  stopped_ = nullptr;
}

// ---- counters, reconciliation, state snapshot ----

void XfrmTracker::arm_counters() {
  counter_timer_.expires_after(cfg_.counters_interval);
  counter_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || stopping_) return;
    for (std::size_t i = 0; i < watchers_.size(); ++i)
      if (watchers_[i]->ready && watchers_[i]->stat_fd.get() >= 0) read_counters(*watchers_[i]);
    if (before_settle_) before_settle_();
    fold_seen();
    for (const auto& l : recon_.settle()) emit_loss(l);
    arm_counters();
  });
}

void XfrmTracker::read_final_counters(std::function<void()> done) {
  if (cfg_.counters_interval.count() <= 0 || stopping_) {
    done();
    return;
  }
  counter_timer_.cancel();
  final_counters_read_ = true;
  // `done` once every watcher's SA stats are in (or their dump failed).
  auto pending = std::make_shared<std::size_t>(1);
  auto finish = std::make_shared<std::function<void()>>(std::move(done));
  auto one = [pending, finish] {
    if (--*pending == 0) (*finish)();
  };
  for (std::size_t i = 0; i < watchers_.size(); ++i) {
    Watcher& w = *watchers_[i];
    if (!w.ready || w.stat_fd.get() < 0) continue;
    read_counters(w, false);
    ++*pending;
    dump_sa_stats(w, one);
  }
  one();
}

void XfrmTracker::reconcile_final() {
  if (cfg_.counters_interval.count() <= 0 || !final_counters_read_) return;
  fold_seen();
  for (const auto& l : recon_.settle(true)) emit_loss(l);
}

void XfrmTracker::read_counters(Watcher& w, bool dump) {
  auto st = read_xfrm_stat(w.stat_fd.get());
  if (!st) {
    if (!w.stat_warned) log(LogLevel::warning, "counters of netns " + w.label + ": " + st.error().message);
    w.stat_warned = true;
    return;
  }
  if (!w.stat_last) {  // the baseline: nothing before it is the agent's to report
    w.stat_last = std::move(*st);
    return;
  }
  const auto now = std::chrono::system_clock::now();
  auto rise = [&](const char* name) {
    return counter_delta(w.stat_last->get(name).value_or(0), st->get(name).value_or(0));
  };
  for (const auto& kv : st->counters)
    if (const auto d = rise(kv.first.c_str()); d > 0) netns_deltas_[w.label][kv.first] += d;
  for (const auto& c : kCleartext) {
    const auto d = rise(c.name);
    if (d == 0) continue;
    Event e;
    e.kind = EventKind::cleartext_packet_dropped;
    e.source = Source::counters;
    e.time = now;
    e.count = d;
    e.netns = w.label;
    e.message = std::to_string(d) + " inbound packet" + (d == 1 ? "" : "s") + " dropped by the kernel (" + c.name +
                "): " + c.why + (w.label.empty() ? "" : "; netns " + w.label);
    e.detail = {{"counter", {{"name", c.name}, {"value", st->get(c.name).value_or(0)}}}};
    sink_(e);
  }
  if (const auto d = rise(kNoStates); d > 0) recon_.counted(host_key(kNoStates), d);
  if (const auto d = rise(kOutSeqError); d > 0) recon_.counted(host_key(kOutSeqError), d);
  const bool sa_moved = rise("XfrmInStateProtoError") > 0 || rise("XfrmInStateSeqError") > 0;
  w.stat_last = std::move(*st);
  if (dump && (sa_moved || w.sa_records) && !stopping_) dump_sa_stats(w);
  w.sa_records = false;
}

void XfrmTracker::dump_sa_stats(Watcher& w, std::function<void()> then) {
  if (w.sa_dump_running || !w.requester) {
    if (then) then();
    return;
  }
  w.sa_dump_running = true;
  auto got = std::make_shared<std::vector<std::pair<SaKey, XfrmStats>>>();
  w.requester->request([](std::uint32_t seq) { return build_xfrm_dump_sa(seq); }, ReplyKind::dump,
                       [got](const NetlinkMessage& m) {
                         auto p = parse_xfrm_message(m);
                         if (!p) return;
                         if (const auto* n = std::get_if<XfrmNewSa>(&*p)) got->emplace_back(sa_key(n->sa), n->sa.stats);
                       },
                       [this, wp = &w, got, then = std::move(then)](const Result<Unit>& r) {
                         if (alive(wp)) {
                           wp->sa_dump_running = false;
                           if (!r)
                             log(LogLevel::warning, "per-SA stats of netns " + wp->label +
                                                        " not read (tried again at the next tick): " +
                                                        r.error().message);
                           else
                             for (const auto& [k, st] : *got) take_sa_stats(*wp, k, st, false);
                         }
                         if (then) then();
                       });
}

void XfrmTracker::take_sa_stats(Watcher& w, const SaKey& k, const XfrmStats& now, bool final) {
  fold_seen();
  auto it = w.sa_stats.find(k);
  const XfrmStats before = it == w.sa_stats.end() ? XfrmStats{} : it->second;  // new since the baseline: from 0
  const LossKey ki{kIntegrity, w.label, k.spi, sa_identity(k)};
  const LossKey kr{kReplay, w.label, k.spi, sa_identity(k)};
  if (const auto d = counter_delta(before.integrity_failed, now.integrity_failed); d > 0) recon_.counted(ki, d);
  if (const auto d = counter_delta(replays(before), replays(now)); d > 0) recon_.counted(kr, d);
  if (final) {
    recon_.close(ki);
    recon_.close(kr);
    if (it != w.sa_stats.end()) w.sa_stats.erase(it);
  } else {
    w.sa_stats[k] = now;
  }
}

void XfrmTracker::prune_sa_stats(Watcher& w) {
  fold_seen();
  for (auto it = w.sa_stats.begin(); it != w.sa_stats.end();) {
    if (w.table.find(it->first)) {
      ++it;
      continue;
    }
    recon_.close(LossKey{kIntegrity, w.label, it->first.spi, sa_identity(it->first)});
    recon_.close(LossKey{kReplay, w.label, it->first.spi, sa_identity(it->first)});
    it = w.sa_stats.erase(it);
  }
}

void XfrmTracker::count_record(const Event& e) {
  if (cfg_.counters_interval.count() <= 0) return;
  switch (e.kind) {
    case EventKind::incorrect_spi:
      recon_.seen(host_key(kNoStates));
      return;
    case EventKind::sequence_overflow:
      recon_.seen(host_key(kOutSeqError));
      return;
    case EventKind::integrity_check_failed:
    case EventKind::replay_check_failed:
    case EventKind::replay_sequence_too_low:
      // An ambiguous record counts for every SA it may be about: a loss is
      // then a lower bound, never invented.
      for (const auto& [w, s] : hits_) {
        ++seen_[SeenKey{w, sa_key(s->sa), e.kind == EventKind::integrity_check_failed}];
        w->sa_records = true;
      }
      return;
    default:
      return;
  }
}

void XfrmTracker::emit_loss(const Loss& l) {
  const auto& k = l.key;
  const char* record = k.counter == kNoStates       ? "incorrect-spi (4965)"
                       : k.counter == kOutSeqError  ? "sequence-overflow"
                       : k.counter == kIntegrity    ? "integrity-check-failed (4960)"
                                                    : "replay (4961/4962)";
  const std::string where = k.counter +
                            (k.spi ? " of SA " + spi_hex(*k.spi) + " " + k.sa + " in netns " + k.netns.value_or("")
                                   : std::string(" in the watched namespaces"));
  if (l.count == 0) {
    // The kernel audit side reported all of it already (its `lost` rise,
    // a socket overrun): nothing new to write.
    log(LogLevel::info, std::to_string(l.shortfall) + " " + record + " events counted by the kernel (" + where +
                            ") reached the agent as no record; already written as events-lost by the kernel audit "
                            "source");
    return;
  }
  std::string msg = std::to_string(l.count) + " " + record + " event" + (l.count == 1 ? "" : "s") +
                    " counted by the kernel (" + where +
                    ") reached the agent as no record: lost (kernel audit backlog or rate limit, audit off, or a "
                    "full socket)";
  if (l.already_reported > 0)
    msg += "; the shortfall is " + std::to_string(l.shortfall) + ", of which " + std::to_string(l.already_reported) +
           " were written as events-lost by the kernel audit source before";
  Event e = make_events_lost(Source::counters, l.count, k.counter.c_str(), false, std::move(msg));
  auto& lost = e.detail["lost"];
  lost["count"] = l.count;
  lost["shortfall"] = l.shortfall;
  lost["already_reported"] = l.already_reported;
  if (k.spi) {
    lost["spi"] = *k.spi;
    lost["sa"] = k.sa;
    e.spi = k.spi;
  }
  if (k.netns) {
    lost["netns"] = *k.netns;
    e.netns = k.netns;
  } else {
    lost["scope"] = "watched-netns";
  }
  sink_(e);
}

void XfrmTracker::fold_seen() const {
  if (seen_.empty()) return;
  for (const auto& kv : seen_)
    recon_.seen(LossKey{kv.first.integrity ? kIntegrity : kReplay, kv.first.w->label, kv.first.sa.spi,
                        sa_identity(kv.first.sa)},
                kv.second);
  seen_.clear();
}

nlohmann::json XfrmTracker::counter_detail() const {
  fold_seen();
  nlohmann::json per = nlohmann::json::object();
  for (const auto& [label, m] : netns_deltas_) per[label] = m;
  return {{"interval_ms", cfg_.counters_interval.count()}, {"netns", std::move(per)},
          {"reconciliation", recon_.totals()}};
}

StateSnapshot XfrmTracker::snapshot() const {
  StateSnapshot s;
  for (const auto& w : watchers_)
    if (w->ready) s[w->label] = NetnsTables{w->table.sas(), w->table.policies()};
  return s;
}

void XfrmTracker::report_changes_while_stopped(const StateSnapshot& before) {
  const auto now = std::chrono::system_clock::now();
  std::size_t n = 0;
  for (const auto& w : watchers_) {
    if (!w->ready) continue;
    auto it = before.find(w->label);
    if (it == before.end()) {
      log(LogLevel::info, "netns " + w->label + " is not in the state snapshot: its changes while stopped are not known");
      continue;
    }
    for (auto& e : changes_while_stopped(w->label, it->second, NetnsTables{w->table.sas(), w->table.policies()}, now)) {
      sink_(e);
      ++n;
    }
  }
  for (const auto& [label, t] : before) {
    bool watched = false;
    for (const auto& w : watchers_) watched = watched || (w->ready && w->label == label);
    if (!watched) log(LogLevel::info, "netns " + label + " of the state snapshot is not watched now: not compared");
  }
  log(LogLevel::info, std::to_string(n) + " SAD/SPD change(s) made while the agent was stopped");
}

}  // namespace ipsec
