#include "agent/xfrm_tracker.hpp"

#include <linux/netlink.h>
#include <string.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <cerrno>

#include "agent/log.hpp"
#include "agent/netlink_requester.hpp"
#include "audit/normalize.hpp"
#include "audit/replay_classifier.hpp"
#include "audit/sa_match.hpp"
#include "xfrm/netns.hpp"
#include "xfrm/secure_buffer.hpp"
#include "xfrm/xfrm_message.hpp"
#include "xfrm/xfrm_request.hpp"

namespace ipsec {

namespace {
constexpr int kBatch = 256;
// At stop: what was queued, bounded (a socket that never runs dry must not
// hold up the end).
constexpr int kStopBatch = 64 * kBatch;
constexpr std::size_t kBufferSize = 64 * 1024;

std::string key_text(const std::string& netns, const SaKey& k) {
  return netns + "|" + k.daddr.to_string() + "|" + std::to_string(k.spi) + "|" + std::to_string(k.proto) + "|" +
         std::to_string(k.mark_value) + "/" + std::to_string(k.mark_mask) + "|" + std::to_string(k.if_id);
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
  XfrmTable table;
  SecureBuffer buf{kBufferSize};
  bool ready{false};      // the first dump is in
  bool resyncing{false};  // a resync dump is running: the multicast socket waits
  explicit Watcher(NetnsFound n) : ns(std::move(n)), label(ns.label), table(ns.label) {}
  ~Watcher() {
    if (requester) requester->close();
    if (desc) {
      boost::system::error_code ec;
      desc->close(ec);
    }
  }
};

struct XfrmTracker::ReplayBatch {
  Watcher* watcher{nullptr};
  XfrmSaRef key;  // with the SA's mark: GETSA finds a marked SA only by it
  std::vector<Event> events;
  std::optional<boost::asio::steady_timer> timer;
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
      corr_timer_(io) {}

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
  auto mc = open();
  if (!mc) return mc.error();
  w->mcast.emplace(std::move(*mc));
  auto ctl = open();
  if (!ctl) return ctl.error();
  auto rq = NetlinkRequester::create(io_, std::move(*ctl), cfg_.reply_timeout);
  if (!rq) return rq.error();
  w->requester = std::move(*rq);
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
    if (!at_start) log(LogLevel::warning, e.message + "; not watched (looked for again at the next scan)");
    drop(w, "");
    return;
  }
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
  if (report) log(LogLevel::info, "watching netns " + w->label);
  arm(*w);
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
  return Unit{};
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
    if (!w) log(LogLevel::warning, "netns " + f.label + " not watched: " + w.error().message);
  }
  missing_ = std::move(missing);
}

bool XfrmTracker::alive(const Watcher* w) const {
  for (const auto& x : watchers_)
    if (x.get() == w) return true;
  return false;
}

void XfrmTracker::drop(Watcher* w, const std::string& why) {
  if (!why.empty()) log(LogLevel::info, why);
  abandon_inflight(w);
  std::erase_if(watchers_, [w](const std::unique_ptr<Watcher>& x) { return x.get() == w; });
  maybe_stopped();
}

void XfrmTracker::arm(Watcher& w) {
  // A completion can already be queued when a rescan drops the watcher, so
  // handlers look it up again rather than trust the pointer.
  w.desc->async_wait(boost::asio::posix::stream_descriptor::wait_read,
                     [this, wp = &w](const boost::system::error_code& ec) {
                       if (ec || stopping_ || !alive(wp)) return;
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
  const auto now = std::chrono::system_clock::now();
  for (int i = 0; i < batch; ++i) {
    const auto r = w.mcast->receive(w.buf.span());
    if (r.status == NetlinkSocket::RecvStatus::again) break;
    if (r.status == NetlinkSocket::RecvStatus::overrun) {
      ++overruns;
      continue;
    }
    if (r.status == NetlinkSocket::RecvStatus::rejected || r.status == NetlinkSocket::RecvStatus::truncated) {
      ++stats_.parse_errors;
      w.buf.wipe(w.buf.size());
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
    auto walk = for_each_netlink_message(Bytes(w.buf.data(), r.size), [&](const NetlinkMessage& m) {
      ++stats_.messages;
      auto p = parse_xfrm_message(m);
      if (!p) {
        ++stats_.parse_errors;
        log(LogLevel::warning, "unparsable XFRM message dropped: " + p.error().message);
        return true;
      }
      for (auto& e : w.table.apply(*p, now)) emit_change(std::move(e));
      return true;
    });
    if (!walk) ++stats_.parse_errors;
    // SA messages carry keys: nothing of them stays in our memory.
    w.buf.wipe(r.size);
  }
  if (overruns > 0) {
    stats_.overruns += overruns;
    emit_lost(w, overruns);
    resync(w);
  }
  return true;
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

void XfrmTracker::arm_correlator() {
  const auto due = correlator_.next_deadline();
  if (!due) return;
  corr_timer_.expires_at(*due);
  corr_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;  // re-armed or stopping
    for (auto& e : correlator_.take_ready(ChangeCorrelator::Clock::now())) sink_(e);
    arm_correlator();
  });
}

void XfrmTracker::enrich(Event& e, std::vector<std::pair<Watcher*, const SaEntry*>>& hits) {
  std::vector<const XfrmTable*> tables;
  tables.reserve(watchers_.size());
  for (const auto& w : watchers_) tables.push_back(&w->table);
  for (const auto& [i, s] : match_packet_event(e, tables).hits) hits.emplace_back(watchers_[i].get(), s);
}

void XfrmTracker::on_audit_event(Event e) {
  if (ChangeCorrelator::joins(e.kind)) {
    correlator_.add(std::move(e), ChangeCorrelator::Clock::now());
    arm_correlator();
    return;
  }
  if (!is_packet_event(e.kind)) {
    sink_(e);
    return;
  }
  std::vector<std::pair<Watcher*, const SaEntry*>> hits;
  enrich(e, hits);
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
  const std::string k = key_text(hits[0].first->label, sa_key(hits[0].second->sa));
  auto& batch = replay_[k];
  if (!batch) {
    batch = std::make_unique<ReplayBatch>();
    batch->watcher = hits[0].first;
    batch->key = sa_ref(hits[0].second->sa);
    if (!last_stats_.contains(k)) last_stats_[k] = hits[0].second->sa.stats;
  }
  batch->events.push_back(std::move(e));
  if (!batch->timer) {
    // Coalesce: one GETSA per SA per interval, however many records arrive.
    batch->timer.emplace(io_);
    batch->timer->expires_after(cfg_.replay_coalesce);
    batch->timer->async_wait([this, k](const boost::system::error_code& ec) {
      if (!ec) classify_replays(k);
    });
  }
}

void XfrmTracker::classify_replays(const std::string& k) {
  auto it = replay_.find(k);
  if (it == replay_.end()) return;
  std::unique_ptr<ReplayBatch> batch = std::move(it->second);
  replay_.erase(it);
  if (batch->timer) batch->timer->cancel();  // when called at stop, before it fired
  Watcher* w = batch->watcher;
  // The watcher may be gone (netns deleted) since the batch was opened.
  if (!alive(w)) {
    finish_replays(std::move(batch), k, std::nullopt);
    return;
  }
  ++stats_.getsa_requests;
  auto fresh = std::make_shared<std::optional<XfrmSa>>();
  const XfrmSaRef key = batch->key;
  const std::uint64_t id = next_inflight_++;
  inflight_.emplace(id, InFlight{k, std::move(batch)});
  w->requester->request(
      [key](std::uint32_t seq) { return build_xfrm_get_sa(seq, key); },
      ReplyKind::reply_and_ack,
      [fresh](const NetlinkMessage& m) {
        auto p = parse_xfrm_message(m);
        if (p)
          if (auto* n = std::get_if<XfrmNewSa>(&*p)) *fresh = n->sa;
      },
      [this, id, fresh](const Result<Unit>&) {
        auto f = inflight_.find(id);
        if (f == inflight_.end()) return;  // already decided (its netns went away)
        InFlight held = std::move(f->second);
        inflight_.erase(f);
        // A GETSA that failed or timed out leaves `fresh` empty: basis unknown.
        finish_replays(std::move(held.batch), held.key, std::move(*fresh));
        maybe_stopped();
      });
}

void XfrmTracker::abandon_inflight(const Watcher* w) {
  // Their GETSA will not be answered to us: decided now, basis unknown.
  for (auto it = inflight_.begin(); it != inflight_.end();) {
    if (w != nullptr && it->second.batch->watcher != w) {
      ++it;
      continue;
    }
    InFlight held = std::move(it->second);
    it = inflight_.erase(it);
    finish_replays(std::move(held.batch), held.key, std::nullopt);
  }
}

void XfrmTracker::finish_replays(std::unique_ptr<ReplayBatch> batch, const std::string& k,
                                 std::optional<XfrmSa> fresh) {
  Watcher* wp = batch->watcher;
  const std::uint64_t n = batch->events.size();
  if (!fresh) {
    for (auto& e : batch->events) {
      e.replay_basis = ReplayBasis::unknown;
      e.replay_reason = "the SA's counters could not be read (it may be gone)";
      sink_(e);
    }
    return;
  }
  XfrmStats& last = last_stats_[k];
  const ReplayCounters before{last.replay, last.replay_window};
  const ReplayCounters after{fresh->stats.replay, fresh->stats.replay_window};
  last = fresh->stats;
  const SaEntry* entry = alive(wp) ? wp->table.refresh(*fresh) : nullptr;
  // ESN: the top has 64 bits; the audit record's seqno only the low 32.
  const std::uint64_t top = fresh->replay_esn ? replay_window_top(fresh->replay_esn->seq_hi, fresh->replay_esn->seq)
                            : fresh->replay   ? fresh->replay->seq
                                              : 0;
  const std::uint32_t window = fresh->replay_esn ? fresh->replay_esn->replay_window : fresh->replay_window;
  for (auto& e : batch->events) {
    if (entry) e.sa = wp->table.context(*entry);
    const ReplayVerdict v = classify_replay(n, before, after, e.seq, top, window);
    const bool too_low = v.below_window;
    if (v.exact) {
      e.replay_basis = ReplayBasis::counter;
    } else {
      e.replay_basis = ReplayBasis::inferred;
      e.detail["replay_inference"] = {
          {"method", "sequence number against the current replay window"},
          {"window_top", top},
          {"window", window},
          {"records", n},
          {"counter_delta",
           {{"replay", after.replay - before.replay}, {"replay_window", after.replay_window - before.replay_window}}}};
    }
    if (too_low) {
      e.kind = EventKind::replay_sequence_too_low;
      e.message = "ESP anti-replay check failed (sequence number below the replay window)";
    } else {
      e.message = "ESP anti-replay check failed (duplicate sequence number inside the replay window)";
    }
    append_flow(e.message, e);
    sink_(e);
  }
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
  stopped_ = std::move(done);
  std::vector<std::string> keys;
  for (const auto& [k, b] : replay_) keys.push_back(k);
  for (const auto& k : keys) classify_replays(k);
  maybe_stopped();
}

void XfrmTracker::maybe_stopped() {
  if (!stopping_ || !inflight_.empty() || !stopped_) return;
  corr_timer_.cancel();
  for (auto& e : correlator_.take_ready(ChangeCorrelator::Clock::now(), true)) sink_(e);
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
  abandon_inflight(nullptr);
  std::vector<std::string> keys;
  for (const auto& [k, b] : replay_) keys.push_back(k);
  for (const auto& k : keys) {
    auto it = replay_.find(k);
    auto batch = std::move(it->second);
    replay_.erase(it);
    finish_replays(std::move(batch), k, std::nullopt);
  }
  corr_timer_.cancel();
  for (auto& e : correlator_.take_ready(ChangeCorrelator::Clock::now(), true)) sink_(e);
  stopped_ = nullptr;
}

}  // namespace ipsec
