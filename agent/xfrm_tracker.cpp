#include "agent/xfrm_tracker.hpp"

#include <linux/netlink.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <cerrno>
#include <filesystem>
#include <set>

#include "agent/log.hpp"
#include "audit/normalize.hpp"
#include "audit/replay_classifier.hpp"
#include "audit/sa_match.hpp"
#include "xfrm/netns.hpp"
#include "xfrm/xfrm_message.hpp"
#include "xfrm/xfrm_request.hpp"

namespace ipsec {

namespace {
constexpr int kBatch = 256;
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

std::string own_netns_label() {
  struct stat self = {};
  struct stat other = {};
  if (::stat("/proc/self/ns/net", &self) != 0) return "self";
  // Newer kernels give init_net a fixed inode (PROC_NET_INIT_INO); on older
  // ones compare with PID 1's, where /proc lets us.
  constexpr ino_t kInitNetIno = 0xEFFFFFF9U;
  if (self.st_ino == kInitNetIno) return "init";
  if (::stat("/proc/1/ns/net", &other) == 0 && other.st_ino == self.st_ino && other.st_dev == self.st_dev)
    return "init";
  std::error_code ec;
  for (const auto& de : std::filesystem::directory_iterator("/run/netns", ec))
    if (::stat(de.path().c_str(), &other) == 0 && other.st_ino == self.st_ino && other.st_dev == self.st_dev)
      return de.path().filename();
  return "self";
}

struct XfrmTracker::Watcher {
  std::string name;   // under /run/netns; "" for the agent's own
  std::string label;  // what records say
  std::optional<NetlinkSocket> mcast, control;
  std::optional<boost::asio::posix::stream_descriptor> desc;
  XfrmTable table;
  std::vector<std::uint8_t> buf = std::vector<std::uint8_t>(kBufferSize);
  std::uint32_t seq{1};
  explicit Watcher(std::string n, std::string l) : name(std::move(n)), label(l), table(std::move(l)) {}
  ~Watcher() {
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

XfrmTracker::XfrmTracker(boost::asio::io_context& io, Config cfg, EventSink sink, Fatal fatal)
    : io_(io),
      cfg_(std::move(cfg)),
      sink_(std::move(sink)),
      fatal_(std::move(fatal)),
      correlator_(cfg_.correlation_window),
      corr_timer_(io),
      rescan_timer_(io) {}

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

Result<Unit> XfrmTracker::dump(Watcher& w, std::vector<XfrmSa>& sas, std::vector<XfrmPolicy>& pols,
                               std::optional<XfrmPolicyDefault>& defaults) {
  auto collect = [&](const NetlinkMessage& m) {
    auto p = parse_xfrm_message(m);
    if (!p) {
      ++stats_.parse_errors;
      return;
    }
    if (auto* s = std::get_if<XfrmNewSa>(&*p)) sas.push_back(std::move(s->sa));
    if (auto* pl = std::get_if<XfrmNewPolicy>(&*p)) pols.push_back(std::move(pl->policy));
    if (auto* d = std::get_if<XfrmPolicyDefault>(&*p)) defaults = *d;
  };
  std::uint32_t seq = w.seq++;
  if (auto r = w.control->transact(build_xfrm_dump_sa(seq), seq, collect, false); !r) return r.error();
  seq = w.seq++;
  if (auto r = w.control->transact(build_xfrm_dump_policy(seq), seq, collect, false); !r) return r.error();
  seq = w.seq++;
  // Older kernels have no default policies: not an error.
  (void)w.control->transact(build_xfrm_get_default(seq), seq, collect, true);
  return Unit{};
}

Result<std::unique_ptr<XfrmTracker::Watcher>> XfrmTracker::open_watcher(const std::string& name, bool report) {
  auto w = std::make_unique<Watcher>(name, name.empty() ? own_netns_label() : name);
  auto open = [&]() {
    return name.empty() ? NetlinkSocket::open(NETLINK_XFRM) : open_netlink_socket_in_netns(name, NETLINK_XFRM);
  };
  auto mc = open();
  if (!mc) return mc.error();
  w->mcast.emplace(std::move(*mc));
  auto ctl = open();
  if (!ctl) return ctl.error();
  w->control.emplace(std::move(*ctl));
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
  std::vector<XfrmSa> sas;
  std::vector<XfrmPolicy> pols;
  std::optional<XfrmPolicyDefault> defaults;
  if (auto d = dump(*w, sas, pols, defaults); !d)
    return make_error(Errc::io,
                      "XFRM dump in netns " + w->label + " failed: " + d.error().message +
                          (d.error().sys_errno == EPERM ? " (reading the SAD/SPD needs CAP_NET_ADMIN)" : ""),
                      d.error().sys_errno);
  if (report) {
    // A namespace that appeared while the agent ran: what it already holds
    // was set up after start, so it is written (marked resync), not absorbed.
    for (auto& e : w->table.resync(std::move(sas), std::move(pols), std::chrono::system_clock::now()))
      emit_change(std::move(e));
  } else {
    w->table.load(std::move(sas), std::move(pols));
  }
  if (defaults) w->table.set_defaults(*defaults);
  const int fd = ::dup(w->mcast->fd());
  if (fd < 0) return make_error(Errc::io, "dup failed", errno);
  w->desc.emplace(io_, fd);
  return w;
}

Result<Unit> XfrmTracker::start() {
  std::vector<std::string> names;
  for (const auto& n : cfg_.netns) {
    if (n == "all") {
      follow_all_ = true;
      continue;
    }
    names.push_back(n);
  }
  if (follow_all_) {
    names.insert(names.begin(), "");
    std::error_code ec;
    for (const auto& de : std::filesystem::directory_iterator("/run/netns", ec)) names.push_back(de.path().filename());
  }
  std::set<std::string> seen;
  for (const auto& n : names) {
    if (!seen.insert(n).second) continue;
    auto w = open_watcher(n, false);
    if (!w) {
      // A netns named explicitly must be there; one found by a scan may have just gone.
      if (follow_all_ && !n.empty()) {
        log(LogLevel::warning, "netns " + n + " skipped: " + w.error().message);
        continue;
      }
      return w.error();
    }
    arm(**w);
    watchers_.push_back(std::move(*w));
  }
  if (follow_all_) {
    watch_netns_dir();
    arm_rescan(cfg_.netns_rescan);
  }
  return Unit{};
}

void XfrmTracker::arm_rescan(std::chrono::milliseconds after) {
  rescan_timer_.expires_after(after);  // replaces a pending one
  rescan_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec && !stopping_) rescan_netns();
  });
}

void XfrmTracker::watch_netns_dir() {
  // inotify says at once that a name came or went; the periodic rescan stays
  // as the fallback (no /run/netns yet, a missed event, a bind mount that was
  // not there yet when the name appeared).
  const int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) return;
  if (::inotify_add_watch(fd, "/run/netns", IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM) < 0) {
    ::close(fd);
    return;
  }
  inotify_.emplace(io_, fd);
  arm_inotify();
}

void XfrmTracker::arm_inotify() {
  inotify_->async_wait(boost::asio::posix::stream_descriptor::wait_read, [this](const boost::system::error_code& ec) {
    if (ec || stopping_) return;
    alignas(inotify_event) char buf[4096];
    while (::read(inotify_->native_handle(), buf, sizeof buf) > 0) {
    }
    // `ip netns add` creates the name, then bind-mounts the netns on it.
    arm_rescan(std::chrono::milliseconds(100));
    arm_inotify();
  });
}

void XfrmTracker::rescan_netns() {
  std::set<std::string> now;
  std::error_code ec;
  for (const auto& de : std::filesystem::directory_iterator("/run/netns", ec)) now.insert(de.path().filename());
  // Names gone: stop watching (our sockets would otherwise keep the netns alive).
  std::erase_if(watchers_, [&](const std::unique_ptr<Watcher>& w) {
    if (w->name.empty() || now.contains(w->name)) return false;
    log(LogLevel::info, "netns " + w->name + " is gone; no longer watched");
    return true;
  });
  for (const auto& n : now) {
    bool have = false;
    for (const auto& w : watchers_) have = have || w->name == n;
    if (have) continue;
    auto w = open_watcher(n, true);
    if (!w) {
      log(LogLevel::warning, "netns " + n + " not watched: " + w.error().message);
      continue;
    }
    log(LogLevel::info, "watching netns " + n);
    arm(**w);
    watchers_.push_back(std::move(*w));
  }
  arm_rescan(cfg_.netns_rescan);
}

bool XfrmTracker::alive(const Watcher* w) const {
  for (const auto& x : watchers_)
    if (x.get() == w) return true;
  return false;
}

void XfrmTracker::arm(Watcher& w) {
  // A completion can already be queued when a rescan drops the watcher, so
  // handlers look it up again rather than trust the pointer.
  w.desc->async_wait(boost::asio::posix::stream_descriptor::wait_read,
                     [this, wp = &w](const boost::system::error_code& ec) {
                       if (ec || stopping_ || !alive(wp)) return;
                       drain(*wp);
                     });
}

void XfrmTracker::drain(Watcher& w) {
  std::uint64_t overruns = 0;
  bool more = false;
  const auto now = std::chrono::system_clock::now();
  for (int i = 0; i < kBatch; ++i) {
    const auto r = w.mcast->receive(w.buf);
    if (r.status == NetlinkSocket::RecvStatus::again) break;
    if (r.status == NetlinkSocket::RecvStatus::overrun) {
      ++overruns;
      continue;
    }
    if (r.status == NetlinkSocket::RecvStatus::rejected) {
      explicit_bzero(w.buf.data(), w.buf.size());
      continue;
    }
    if (r.status == NetlinkSocket::RecvStatus::error) {
      const std::string why = "XFRM socket of netns " + w.label + " failed: " + strerror(r.err);
      // The agent's own namespace is a source it cannot do without; a named
      // one is dropped (the rescan, with --netns all, may pick it up again).
      if (w.name.empty()) {
        fatal_(why);
      } else {
        log(LogLevel::error, why + "; no longer watched");
      }
      return;  // not re-armed
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
    explicit_bzero(w.buf.data(), r.size);
    if (i == kBatch - 1) more = true;
  }
  if (overruns > 0) {
    stats_.overruns += overruns;
    emit_lost(w, overruns);
    resync(w);
  }
  if (more) {
    boost::asio::post(io_, [this, wp = &w] {
      if (!stopping_ && alive(wp)) drain(*wp);
    });
  } else {
    arm(w);
  }
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
  ++stats_.resyncs;
  std::vector<XfrmSa> sas;
  std::vector<XfrmPolicy> pols;
  std::optional<XfrmPolicyDefault> defaults;
  if (auto d = dump(w, sas, pols, defaults); !d) {
    log(LogLevel::error, "resync dump of netns " + w.label + " failed: " + d.error().message);
    return;
  }
  for (auto& e : w.table.resync(std::move(sas), std::move(pols), std::chrono::system_clock::now()))
    emit_change(std::move(e));
  if (defaults)
    for (auto& e : w.table.apply(*defaults, std::chrono::system_clock::now())) {
      e.detail["resync"] = true;
      sink_(e);
    }
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
    e.detail["replay_basis"] = "unknown";
    e.detail["replay_reason"] = hits.empty() ? "no watched SA has this destination and SPI"
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
  Watcher& w = *batch->watcher;
  // The watcher may be gone (netns deleted) since the batch was opened.
  const bool watched = alive(&w);

  std::optional<XfrmSa> fresh;
  if (watched) {
    ++stats_.getsa_requests;
    const std::uint32_t seq = w.seq++;
    auto r = w.control->transact(
        build_xfrm_get_sa(seq, batch->key), seq,
        [&](const NetlinkMessage& m) {
          auto p = parse_xfrm_message(m);
          if (p)
            if (auto* n = std::get_if<XfrmNewSa>(&*p)) fresh = n->sa;
        },
        true);
    (void)r;
  }
  const std::uint64_t n = batch->events.size();
  if (!fresh) {
    for (auto& e : batch->events) {
      e.detail["replay_basis"] = "unknown";
      e.detail["replay_reason"] = "the SA's counters could not be read (it may be gone)";
      sink_(e);
    }
    return;
  }
  XfrmStats& last = last_stats_[k];
  const ReplayCounters before{last.replay, last.replay_window};
  const ReplayCounters after{fresh->stats.replay, fresh->stats.replay_window};
  last = fresh->stats;
  const SaEntry* entry = w.table.refresh(*fresh);
  const std::uint32_t top = fresh->replay_esn ? fresh->replay_esn->seq : fresh->replay ? fresh->replay->seq : 0;
  const std::uint32_t window = fresh->replay_esn ? fresh->replay_esn->replay_window : fresh->replay_window;
  for (auto& e : batch->events) {
    if (entry) e.sa = w.table.context(*entry);
    const ReplayVerdict v = classify_replay(n, before, after, e.seq, top, window);
    const bool too_low = v.below_window;
    if (v.exact) {
      e.detail["replay_basis"] = "counter";
    } else {
      e.detail["replay_basis"] = "inferred";
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

void XfrmTracker::stop() {
  stopping_ = true;
  rescan_timer_.cancel();
  if (inotify_) {
    boost::system::error_code ec;
    inotify_->cancel(ec);
  }
  corr_timer_.cancel();
  std::vector<std::string> keys;
  for (const auto& [k, b] : replay_) keys.push_back(k);
  for (const auto& k : keys) classify_replays(k);
  for (auto& e : correlator_.take_ready(ChangeCorrelator::Clock::now(), true)) sink_(e);
  for (auto& w : watchers_)
    if (w->desc) {
      boost::system::error_code ec;
      w->desc->cancel(ec);
    }
}

}  // namespace ipsec
