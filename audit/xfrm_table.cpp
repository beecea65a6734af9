#include "audit/xfrm_table.hpp"

#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <iterator>
#include <limits>
#include <set>

#include "audit/json_writer.hpp"
#include "audit/normalize.hpp"

namespace ipsec {

using nlohmann::json;

namespace {

std::string default_name(std::uint8_t v) { return v == 1 ? "block" : v == 2 ? "accept" : "unspec"; }

}  // namespace

json selector_json(const XfrmSelector& s) {
  json j = {{"src", s.saddr ? json(s.saddr->to_string()) : json(nullptr)},
            {"dst", s.daddr ? json(s.daddr->to_string()) : json(nullptr)},
            {"src_prefixlen", s.prefixlen_s},
            {"dst_prefixlen", s.prefixlen_d},
            {"proto", s.proto}};
  if (s.sport_mask) j["sport"] = s.sport;
  if (s.dport_mask) j["dport"] = s.dport;
  if (s.ifindex) j["ifindex"] = s.ifindex;
  return j;
}

// ---- identity and template matching ----

SaKey sa_key(const XfrmSa& sa) {
  return SaKey{
      sa.daddr, sa.spi, sa.proto, sa.mark ? sa.mark->value : 0, sa.mark ? sa.mark->mask : 0, sa.if_id.value_or(0)};
}

SaKey sa_key(const XfrmSaId& id, const std::optional<XfrmMark>& mark, const std::optional<std::uint32_t>& if_id) {
  return SaKey{id.daddr, id.spi, id.proto, mark ? mark->value : 0, mark ? mark->mask : 0, if_id.value_or(0)};
}

namespace {

constexpr std::uint8_t kModeTransport = 0;  // XFRM_MODE_TRANSPORT

bool prefix_takes(const std::optional<IpAddress>& net, std::uint8_t len, const IpAddress& a) {
  if (len == 0) return true;
  if (!net || net->family != a.family) return false;
  const unsigned bits = std::min<unsigned>(len, a.family == Family::inet ? 32 : 128);
  const unsigned whole = bits / 8;
  if (!std::equal(a.bytes.begin(), a.bytes.begin() + whole, net->bytes.begin())) return false;
  if (bits % 8 == 0) return true;
  const auto mask = static_cast<std::uint8_t>(0xFF << (8 - bits % 8));
  return (a.bytes[whole] & mask) == (net->bytes[whole] & mask);
}

// The one host a selector side names, if it names exactly one.
std::optional<IpAddress> host_of(const std::optional<IpAddress>& a, std::uint8_t len) {
  if (!a) return std::nullopt;
  return len == (a->family == Family::inet ? 32 : 128) ? a : std::nullopt;
}

enum class BucketKind : std::uint8_t { spi, reqid, addr, wild };
struct Bucket {
  BucketKind kind{BucketKind::wild};
  std::uint32_t value{0};
  std::pair<IpAddress, IpAddress> addr{};  // (dst, src)
};

// The most specific thing a template names: every SA it can match has it.
Bucket bucket_of(const XfrmTemplate& t, const XfrmPolicy& p) {
  if (t.spi) return {BucketKind::spi, t.spi, {}};
  if (t.reqid) return {BucketKind::reqid, t.reqid, {}};
  if (t.mode != kModeTransport || (!t.daddr.is_unspecified() && !t.saddr.is_unspecified()))
    return {BucketKind::addr, 0, {t.daddr, t.saddr}};
  const auto d = host_of(p.selector.daddr, p.selector.prefixlen_d);
  const auto s = host_of(p.selector.saddr, p.selector.prefixlen_s);
  if (d && s) return {BucketKind::addr, 0, {*d, *s}};
  return {};
}

bool policy_matches(const XfrmPolicy& p, const XfrmSa& sa) {
  return std::any_of(p.templates.begin(), p.templates.end(),
                     [&](const XfrmTemplate& t) { return template_matches(t, p, sa); });
}

template <typename Map, typename K, typename V>
void index_put(Map& m, const K& k, const V& v) {
  m[k].insert(v);
}

template <typename Map, typename K, typename V>
void index_erase(Map& m, const K& k, const V& v) {
  auto it = m.find(k);
  if (it == m.end()) return;
  it->second.erase(v);
  if (it->second.empty()) m.erase(it);
}

template <typename Map, typename K, typename Out>
void index_collect(const Map& m, const K& k, Out& out) {
  auto it = m.find(k);
  if (it != m.end()) out.insert(out.end(), it->second.begin(), it->second.end());
}

template <typename T>
void sort_unique(std::vector<T>& v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
}

}  // namespace

bool template_matches(const XfrmTemplate& t, const XfrmPolicy& p, const XfrmSa& sa) {
  if (t.proto != sa.proto || t.mode != sa.mode) return false;
  if (t.spi != 0 && t.spi != sa.spi) return false;
  if (t.reqid != 0 && t.reqid != sa.reqid) return false;
  if (p.if_id.value_or(0) != 0 && *p.if_id != sa.if_id.value_or(0)) return false;
  // The template's family is the family of its (outer) addresses.
  if (t.daddr.family != sa.daddr.family) return false;
  if (t.mode != kModeTransport) return t.daddr == sa.daddr && t.saddr == sa.saddr;
  if (!t.daddr.is_unspecified() && t.daddr != sa.daddr) return false;
  if (!t.saddr.is_unspecified() && t.saddr != sa.saddr) return false;
  return prefix_takes(p.selector.saddr, p.selector.prefixlen_s, sa.saddr) &&
         prefix_takes(p.selector.daddr, p.selector.prefixlen_d, sa.daddr);
}

// ---- the indexes ----

template <typename F>
void XfrmTable::for_each_candidate_policy(const XfrmSa& sa, F&& f) const {
  std::vector<PolicyKey> keys;
  if (sa.spi) index_collect(tmpl_by_spi_, sa.spi, keys);
  if (sa.reqid) index_collect(tmpl_by_reqid_, sa.reqid, keys);
  index_collect(tmpl_by_addr_, AddrPair{sa.daddr, sa.saddr}, keys);
  keys.insert(keys.end(), tmpl_wild_.begin(), tmpl_wild_.end());
  sort_unique(keys);
  for (const auto& k : keys) {
    auto it = policies_.find(k);
    if (it != policies_.end() && policy_matches(it->second, sa)) f(it->second);
  }
}

template <typename F>
void XfrmTable::for_each_candidate_sa(const XfrmPolicy& p, F&& f) {
  std::vector<SaKey> keys;
  for (const auto& t : p.templates) {
    const Bucket b = bucket_of(t, p);
    switch (b.kind) {
      case BucketKind::spi:
        index_collect(sa_by_spi_, b.value, keys);
        break;
      case BucketKind::reqid:
        index_collect(sa_by_reqid_, b.value, keys);
        break;
      case BucketKind::addr:
        index_collect(sa_by_addr_, b.addr, keys);
        break;
      case BucketKind::wild:
        for (const auto& [k, e] : sas_) keys.push_back(k);
        break;
    }
  }
  sort_unique(keys);
  for (const auto& k : keys) {
    auto it = sas_.find(k);
    if (it != sas_.end() && policy_matches(p, it->second.sa)) f(it->second);
  }
}

void XfrmTable::redirect(SaEntry& e) const {
  SaDirection dir = SaDirection::unknown;
  DirectionSource src = DirectionSource::none;
  DirectionPending pending = DirectionPending::none;
  if (e.sa.sa_dir && (*e.sa.sa_dir == 1 || *e.sa.sa_dir == 2)) {
    dir = *e.sa.sa_dir == 1 ? SaDirection::in : SaDirection::out;
    src = DirectionSource::kernel;
  } else {
    // This kernel stores no direction for an SA: a policy whose template it
    // satisfies says which way it is used (fwd is inbound).
    bool in = false, out = false;
    for_each_candidate_policy(e.sa, [&](const XfrmPolicy& p) {
      if (p.dir == 1) out = true;
      if (p.dir == 0 || p.dir == 2) in = true;
    });
    if (in != out) {
      dir = in ? SaDirection::in : SaDirection::out;
      src = DirectionSource::policy;
    } else {
      pending = in ? DirectionPending::both_ways : DirectionPending::no_policy;
    }
  }
  if (dir != e.direction || src != e.direction_source || pending != e.direction_pending) {
    e.direction = dir;
    e.direction_source = src;
    e.direction_pending = pending;
    e.context.reset();
  }
}

SaEntry& XfrmTable::put_sa(const XfrmSa& sa) {
  const SaKey k = sa_key(sa);
  auto [it, added] = sas_.try_emplace(k);
  SaEntry& e = it->second;
  if (!added) unindex_sa(k, e.sa);  // an update: reqid or source may differ; the entry stays where it is
  e.sa = sa;
  if (sa.spi) index_put(sa_by_spi_, sa.spi, k);
  if (sa.reqid) index_put(sa_by_reqid_, sa.reqid, k);
  index_put(sa_by_addr_, AddrPair{sa.daddr, sa.saddr}, k);
  redirect(e);
  e.context.reset();
  return e;
}

void XfrmTable::unindex_sa(const SaKey& k, const XfrmSa& sa) {
  if (sa.spi) index_erase(sa_by_spi_, sa.spi, k);
  if (sa.reqid) index_erase(sa_by_reqid_, sa.reqid, k);
  index_erase(sa_by_addr_, AddrPair{sa.daddr, sa.saddr}, k);
}

void XfrmTable::erase_sa(std::map<SaKey, SaEntry>::iterator it) {
  unindex_sa(it->first, it->second.sa);
  sas_.erase(it);
}

void XfrmTable::put_policy(const XfrmPolicy& p) {
  const PolicyKey k = policy_key(p);
  auto it = policies_.find(k);
  if (it != policies_.end()) erase_policy(it);
  policies_.emplace(k, p);
  for (const auto& t : p.templates) {
    const Bucket b = bucket_of(t, p);
    switch (b.kind) {
      case BucketKind::spi:
        index_put(tmpl_by_spi_, b.value, k);
        break;
      case BucketKind::reqid:
        index_put(tmpl_by_reqid_, b.value, k);
        break;
      case BucketKind::addr:
        index_put(tmpl_by_addr_, b.addr, k);
        break;
      case BucketKind::wild:
        tmpl_wild_.insert(k);
        break;
    }
  }
  redirect_affected(p);
}

void XfrmTable::erase_policy(std::map<PolicyKey, XfrmPolicy>::iterator it) {
  const XfrmPolicy gone = std::move(it->second);
  const PolicyKey k = it->first;
  policies_.erase(it);
  for (const auto& t : gone.templates) {
    const Bucket b = bucket_of(t, gone);
    switch (b.kind) {
      case BucketKind::spi:
        index_erase(tmpl_by_spi_, b.value, k);
        break;
      case BucketKind::reqid:
        index_erase(tmpl_by_reqid_, b.value, k);
        break;
      case BucketKind::addr:
        index_erase(tmpl_by_addr_, b.addr, k);
        break;
      case BucketKind::wild:
        tmpl_wild_.erase(k);
        break;
    }
  }
  redirect_affected(gone);
}

void XfrmTable::redirect_affected(const XfrmPolicy& p) {
  if (sas_.empty()) return;
  for_each_candidate_sa(p, [&](SaEntry& e) { redirect(e); });
}

void XfrmTable::clear() {
  sas_.clear();
  policies_.clear();
  sa_by_spi_.clear();
  sa_by_reqid_.clear();
  sa_by_addr_.clear();
  tmpl_by_spi_.clear();
  tmpl_by_reqid_.clear();
  tmpl_by_addr_.clear();
  tmpl_wild_.clear();
}

std::shared_ptr<const SaContext> XfrmTable::context(const SaEntry& e) const {
  if (!e.context) {
    SaContext c{e.sa, netns_, e.direction, e.direction_source, e.direction_pending};
    // Packet records, many per context, copy this text; the one change
    // record of a context (sa-added, sa-expired, ...) is written from the fields.
    c.packet_json = sa_json(c, false);
    e.context = std::make_shared<const SaContext>(std::move(c));
  }
  return e.context;
}

void XfrmTable::load(std::vector<XfrmSa> sas, std::vector<XfrmPolicy> policies) {
  clear();
  for (const auto& p : policies) put_policy(p);
  for (const auto& sa : sas) put_sa(sa);
}

Event XfrmTable::base(EventKind k, TimePoint now) const {
  Event e;
  e.kind = k;
  e.source = Source::xfrm;
  e.time = now;
  e.netns = netns_;
  return e;
}

Event XfrmTable::sa_event(EventKind k, const SaEntry& s, TimePoint now) const {
  Event e = base(k, now);
  e.src = s.sa.saddr;
  e.dst = s.sa.daddr;
  e.spi = s.sa.spi;
  e.sa = context(s);
  return e;
}

Event XfrmTable::policy_event(EventKind k, const XfrmPolicy& p, TimePoint now) const {
  Event e = base(k, now);
  e.src = p.selector.saddr;
  e.dst = p.selector.daddr;
  e.policy = std::make_shared<const XfrmPolicy>(p);
  return e;
}

namespace {
std::string ns_text(const std::string& ns) { return ns.empty() ? "" : " in netns " + ns; }
std::string sa_text(const XfrmSa& sa) {
  std::string t =
      proto_name(sa.proto) + " SA " + spi_hex(sa.spi) + " " + sa.saddr.to_string() + " -> " + sa.daddr.to_string();
  if (sa.mark) t += " mark " + spi_hex(sa.mark->value) + "/" + spi_hex(sa.mark->mask);
  if (sa.if_id) t += " if_id " + std::to_string(*sa.if_id);
  return t;
}
std::string pol_text(const XfrmPolicy& p) {
  auto a = [](const std::optional<IpAddress>& x, std::uint8_t len) {
    return (x ? x->to_string() : std::string("any")) + "/" + std::to_string(len);
  };
  std::string t = policy_dir_name(p.dir) + " policy " + a(p.selector.saddr, p.selector.prefixlen_s) + " -> " +
                  a(p.selector.daddr, p.selector.prefixlen_d);
  if (p.mark) t += " mark " + spi_hex(p.mark->value) + "/" + spi_hex(p.mark->mask);
  if (p.if_id) t += " if_id " + std::to_string(*p.if_id);
  return t;
}
}  // namespace

std::vector<Event> XfrmTable::apply(const XfrmMessage& m, TimePoint now) {
  std::vector<Event> out;
  // The SA as a message describes it, with the direction the table knows (or
  // would derive) for it: for records on SAs that are going or gone.
  auto snapshot = [&](const XfrmSa& sa) {
    SaEntry e;
    e.sa = sa;
    if (const SaEntry* known = find(sa_key(sa))) {
      e.direction = known->direction;
      e.direction_source = known->direction_source;
      e.direction_pending = known->direction_pending;
    } else {
      redirect(e);
    }
    return e;
  };
  if (const auto* n = std::get_if<XfrmNewSa>(&m)) {
    const bool update = n->type == kXfrmMsgUpdSa;
    const SaEntry& slot = put_sa(n->sa);
    Event e = sa_event(EventKind::sa_added, slot, now);
    e.message = (update ? "updated " : "added ") + sa_text(n->sa) + ns_text(netns_);
    if (update) e.detail = {{"update", true}};
    out.push_back(std::move(e));
  } else if (const auto* d = std::get_if<XfrmDelSa>(&m)) {
    const SaKey k = d->sa ? sa_key(*d->sa) : sa_key(d->id, d->mark, d->if_id);
    auto it = sas_.find(k);
    // The DELSA carries the SA with its final stats: prefer it.
    SaEntry entry;
    bool known = true;
    if (d->sa) {
      entry = snapshot(*d->sa);
    } else if (it != sas_.end()) {
      entry = it->second;
    } else {
      known = false;
      entry.sa.daddr = d->id.daddr;
      entry.sa.spi = d->id.spi;
      entry.sa.proto = d->id.proto;
      entry.sa.mark = d->mark;
      entry.sa.if_id = d->if_id;
    }
    if (it != sas_.end()) erase_sa(it);
    Event e = sa_event(EventKind::sa_deleted, entry, now);
    if (!known) {
      e.src.reset();
      e.sa.reset();
    }
    e.message = "deleted " + sa_text(entry.sa) + ns_text(netns_);
    if (d->sa)
      e.detail = {{"final_stats",
                   {{"replay_window", d->sa->stats.replay_window},
                    {"replay", d->sa->stats.replay},
                    {"integrity_failed", d->sa->stats.integrity_failed}}}};
    out.push_back(std::move(e));
  } else if (const auto* x = std::get_if<XfrmExpire>(&m)) {
    const SaEntry entry = snapshot(x->sa);
    Event e = sa_event(EventKind::sa_expired, entry, now);
    e.message = std::string(x->hard ? "hard" : "soft") + " lifetime expired on " + sa_text(x->sa) + ns_text(netns_);
    e.detail = {{"expire", x->hard ? "hard" : "soft"}};
    // A hard expiry deletes the SA; the kernel sends no DELSA for it.
    if (x->hard)
      if (auto it = sas_.find(sa_key(x->sa)); it != sas_.end()) erase_sa(it);
    out.push_back(std::move(e));
  } else if (const auto* np = std::get_if<XfrmNewPolicy>(&m)) {
    const bool update = np->type == kXfrmMsgUpdPolicy;
    put_policy(np->policy);
    Event e = policy_event(EventKind::policy_added, np->policy, now);
    e.message = (update ? "updated " : "added ") + pol_text(np->policy) + ns_text(netns_);
    if (update) e.detail["update"] = true;
    out.push_back(std::move(e));
  } else if (const auto* dp = std::get_if<XfrmDelPolicy>(&m)) {
    std::optional<XfrmPolicy> gone = dp->policy;
    // The policy by its index: the id's when the deletion named one, else the
    // one in XFRMA_POLICY (a deletion by selector gives index 0 in the id and
    // the whole policy, index included, beside it). By selector only when
    // neither says, and then with everything else that tells policies apart
    // (0.0.0.0/0 policies on several xfrm interfaces differ only by if_id).
    const std::uint32_t index = dp->id.index ? dp->id.index : dp->policy ? dp->policy->index : 0;
    auto it = index ? policies_.find(PolicyKey{index, dp->id.dir}) : policies_.end();
    if (it == policies_.end() && index == 0)
      it = std::find_if(policies_.begin(), policies_.end(), [&](const auto& kv) {
        const XfrmPolicy& p = kv.second;
        return p.selector == dp->id.selector && p.dir == dp->id.dir && p.ptype == dp->ptype &&
               p.mark.value_or(XfrmMark{}) == dp->mark.value_or(XfrmMark{}) &&
               p.if_id.value_or(0) == dp->if_id.value_or(0);
      });
    if (it != policies_.end()) {
      if (!gone) gone = it->second;
      erase_policy(it);
    }
    if (!gone) {
      gone = XfrmPolicy{};
      gone->selector = dp->id.selector;
      gone->dir = dp->id.dir;
      gone->index = dp->id.index;
      gone->mark = dp->mark;
      gone->if_id = dp->if_id;
    }
    Event e = policy_event(EventKind::policy_deleted, *gone, now);
    e.message = "deleted " + pol_text(*gone) + ns_text(netns_);
    out.push_back(std::move(e));
  } else if (const auto* pe = std::get_if<XfrmPolicyExpire>(&m)) {
    Event e = policy_event(EventKind::policy_expired, pe->policy, now);
    e.message =
        std::string(pe->hard ? "hard" : "soft") + " lifetime expired on " + pol_text(pe->policy) + ns_text(netns_);
    e.detail["expire"] = pe->hard ? "hard" : "soft";
    if (pe->hard)
      if (auto it = policies_.find(policy_key(pe->policy)); it != policies_.end()) erase_policy(it);
    out.push_back(std::move(e));
  } else if (const auto* a = std::get_if<XfrmAcquire>(&m)) {
    Event e = base(EventKind::acquire, now);
    e.src = a->saddr;
    e.dst = a->daddr;
    e.spi = a->spi;
    e.message = "outbound traffic " + a->saddr.to_string() + " -> " + a->daddr.to_string() + " needs an " +
                proto_name(a->proto) + " SA that does not exist (ACQUIRE)" + ns_text(netns_);
    e.policy = std::make_shared<const XfrmPolicy>(a->policy);
    e.detail = {{"selector", selector_json(a->selector)}, {"acquire_seq", a->seq}};
    out.push_back(std::move(e));
  } else if (const auto* mp = std::get_if<XfrmMapping>(&m)) {
    Event e = base(EventKind::nat_mapping_changed, now);
    e.dst = mp->id.daddr;
    e.src = mp->new_saddr;
    e.spi = mp->id.spi;
    // MAPPING carries no mark: the SA is named only when one fits.
    const SaEntry* only = nullptr;
    int fits = 0;
    for (const SaEntry* s : find(mp->id.daddr, mp->id.spi))
      if (s->sa.proto == mp->id.proto && (mp->reqid == 0 || s->sa.reqid == mp->reqid)) {
        only = s;
        ++fits;
      }
    if (fits == 1) e.sa = context(*only);
    e.message = "NAT-T mapping of SPI " + spi_hex(mp->id.spi) + " changed from " + mp->old_saddr.to_string() + ":" +
                std::to_string(mp->old_sport) + " to " + mp->new_saddr.to_string() + ":" +
                std::to_string(mp->new_sport) + ns_text(netns_);
    e.detail = {{"mapping",
                 {{"old_src", mp->old_saddr.to_string()},
                  {"old_sport", mp->old_sport},
                  {"new_src", mp->new_saddr.to_string()},
                  {"new_sport", mp->new_sport},
                  {"reqid", mp->reqid}}}};
    out.push_back(std::move(e));
  } else if (const auto* mg = std::get_if<XfrmMigrate>(&m)) {
    json entries = json::array();
    for (const auto& en : mg->entries)
      entries.push_back({{"old_src", en.old_saddr.to_string()},
                         {"old_dst", en.old_daddr.to_string()},
                         {"new_src", en.new_saddr.to_string()},
                         {"new_dst", en.new_daddr.to_string()},
                         {"proto", proto_name(en.proto)},
                         {"mode", mode_name(en.mode)},
                         {"reqid", en.reqid}});
    Event e = base(EventKind::sa_migrated, now);
    e.src = mg->id.selector.saddr;
    e.dst = mg->id.selector.daddr;
    e.message = "SAs migrated (" + std::to_string(mg->entries.size()) + " entries) for " + policy_dir_name(mg->id.dir) +
                " policy" + ns_text(netns_);
    e.detail = {{"migrate", std::move(entries)}};
    out.push_back(std::move(e));
  } else if (const auto* f = std::get_if<XfrmFlushSa>(&m)) {
    for (auto it = sas_.begin(); it != sas_.end();) {
      auto next = std::next(it);
      if (f->proto == 0 || f->proto == 255 || it->second.sa.proto == f->proto) {
        Event e = sa_event(EventKind::sa_deleted, it->second, now);
        e.message = "deleted " + sa_text(it->second.sa) + " (SAD flush)" + ns_text(netns_);
        e.detail = {{"flush", true}};
        out.push_back(std::move(e));
        erase_sa(it);
      }
      it = next;
    }
  } else if (const auto* fp = std::get_if<XfrmFlushPolicy>(&m)) {
    for (auto it = policies_.begin(); it != policies_.end();) {
      auto next = std::next(it);
      if (it->second.ptype == fp->ptype) {
        Event e = policy_event(EventKind::policy_deleted, it->second, now);
        e.message = "deleted " + pol_text(it->second) + " (SPD flush)" + ns_text(netns_);
        e.detail["flush"] = true;
        out.push_back(std::move(e));
        erase_policy(it);
      }
      it = next;
    }
  } else if (const auto* df = std::get_if<XfrmPolicyDefault>(&m)) {
    const bool changed =
        !defaults_ || defaults_->in != df->in || defaults_->fwd != df->fwd || defaults_->out != df->out;
    json before = defaults_ ? json{{"in", default_name(defaults_->in)},
                                   {"fwd", default_name(defaults_->fwd)},
                                   {"out", default_name(defaults_->out)}}
                            : json(nullptr);
    defaults_ = *df;
    if (changed) {
      Event e = base(EventKind::policy_default_changed, now);
      e.message = "default policy is now in " + default_name(df->in) + ", fwd " + default_name(df->fwd) + ", out " +
                  default_name(df->out) + ns_text(netns_);
      e.detail = {
          {"default", {{"in", default_name(df->in)}, {"fwd", default_name(df->fwd)}, {"out", default_name(df->out)}}},
          {"previous", std::move(before)}};
      out.push_back(std::move(e));
    }
  }
  return out;
}

std::vector<Event> XfrmTable::resync(std::vector<XfrmSa> sas, std::vector<XfrmPolicy> policies, TimePoint now) {
  return diff(std::move(sas), std::move(policies), now, false);
}

std::vector<Event> XfrmTable::diff_while_stopped(std::vector<XfrmSa> sas, std::vector<XfrmPolicy> policies,
                                                 TimePoint now) {
  return diff(std::move(sas), std::move(policies), now, true);
}

std::vector<XfrmSa> XfrmTable::sas() const {
  std::vector<XfrmSa> v;
  v.reserve(sas_.size());
  for (const auto& [k, e] : sas_) v.push_back(e.sa);
  return v;
}

std::vector<XfrmPolicy> XfrmTable::policies() const {
  std::vector<XfrmPolicy> v;
  v.reserve(policies_.size());
  for (const auto& [k, p] : policies_) v.push_back(p);
  return v;
}

std::vector<Event> XfrmTable::diff(std::vector<XfrmSa> sas, std::vector<XfrmPolicy> policies, TimePoint now,
                                   bool while_stopped) {
  const std::string gone = while_stopped ? " (while the agent was stopped)" : " (found missing on resync)";
  const std::string found = while_stopped ? " (while the agent was stopped)" : " (found on resync)";
  std::vector<Event> out;
  std::set<PolicyKey> new_pols;
  for (const auto& p : policies) new_pols.insert(policy_key(p));
  std::set<SaKey> new_sas;
  for (const auto& sa : sas) new_sas.insert(sa_key(sa));
  for (const auto& [k, p] : policies_)
    if (!new_pols.contains(k)) {
      Event e = policy_event(EventKind::policy_deleted, p, now);
      e.message = "deleted " + pol_text(p) + gone + ns_text(netns_);
      out.push_back(std::move(e));
    }
  for (const auto& p : policies)
    if (!policies_.contains(policy_key(p))) {
      Event e = policy_event(EventKind::policy_added, p, now);
      e.message = "added " + pol_text(p) + found + ns_text(netns_);
      out.push_back(std::move(e));
    }
  for (const auto& [k, s] : sas_)
    if (!new_sas.contains(k)) {
      Event e = sa_event(EventKind::sa_deleted, s, now);
      e.message = "deleted " + sa_text(s.sa) + gone + ns_text(netns_);
      out.push_back(std::move(e));
    }
  std::set<SaKey> had;
  for (const auto& [k, s] : sas_) had.insert(k);
  load(std::move(sas), std::move(policies));
  for (const auto& [k, s] : sas_)
    if (!had.contains(k)) {
      Event e = sa_event(EventKind::sa_added, s, now);
      e.message = "added " + sa_text(s.sa) + found + ns_text(netns_);
      out.push_back(std::move(e));
    }
  for (auto& e : out) e.detail[while_stopped ? "while_stopped" : "resync"] = true;
  return out;
}

const SaEntry* XfrmTable::refresh(const XfrmSa& sa) {
  if (!sas_.contains(sa_key(sa))) return nullptr;
  return &put_sa(sa);
}

const SaEntry* XfrmTable::find(const SaKey& k) const {
  auto it = sas_.find(k);
  return it == sas_.end() ? nullptr : &it->second;
}

const XfrmPolicy* XfrmTable::find_policy(const PolicyKey& k) const {
  auto it = policies_.find(k);
  return it == policies_.end() ? nullptr : &it->second;
}

std::vector<const SaEntry*> XfrmTable::find(const IpAddress& daddr, std::uint32_t spi) const {
  std::vector<const SaEntry*> out;
  for_each_sa(daddr, spi, [&out](const SaEntry& s) { out.push_back(&s); });
  return out;
}

}  // namespace ipsec
