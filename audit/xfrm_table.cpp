#include "audit/xfrm_table.hpp"

#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <limits>

#include "audit/normalize.hpp"

namespace ipsec {

using nlohmann::json;

namespace {

constexpr std::uint64_t kInf = std::numeric_limits<std::uint64_t>::max();  // XFRM_INF

json limit(std::uint64_t v) { return v == kInf ? json(nullptr) : json(v); }

json lifetime_json(const XfrmLifetimeCfg& l) {
  return {{"soft",
           {{"bytes", limit(l.soft_byte_limit)},
            {"packets", limit(l.soft_packet_limit)},
            {"add_seconds", l.soft_add_expires_seconds},
            {"use_seconds", l.soft_use_expires_seconds}}},
          {"hard",
           {{"bytes", limit(l.hard_byte_limit)},
            {"packets", limit(l.hard_packet_limit)},
            {"add_seconds", l.hard_add_expires_seconds},
            {"use_seconds", l.hard_use_expires_seconds}}}};
}

json current_json(const XfrmLifetimeCur& c) {
  return {{"bytes", c.bytes}, {"packets", c.packets}, {"add_time", c.add_time}, {"use_time", c.use_time}};
}

std::string default_name(std::uint8_t v) { return v == 1 ? "block" : v == 2 ? "accept" : "unspec"; }

bool template_matches(const XfrmTemplate& t, const XfrmSa& sa) {
  if (t.proto != sa.proto) return false;
  if (t.reqid != 0 && t.reqid != sa.reqid) return false;
  if (t.mode != sa.mode) return false;
  // Transport-mode templates usually leave the addresses unspecified.
  if (!t.daddr.is_unspecified() && t.daddr != sa.daddr) return false;
  return true;
}

}  // namespace

SaKey sa_key(const XfrmSa& sa) { return SaKey{sa.daddr, sa.spi, sa.proto}; }

std::string proto_name(std::uint8_t p) {
  switch (p) {
    case IPPROTO_ESP:
      return "esp";
    case IPPROTO_AH:
      return "ah";
    case IPPROTO_COMP:
      return "comp";
    case IPPROTO_ROUTING:
      return "route2";
    case IPPROTO_DSTOPTS:
      return "hao";
    default:
      return std::to_string(p);
  }
}

std::string mode_name(std::uint8_t m) {
  switch (m) {
    case 0:
      return "transport";
    case 1:
      return "tunnel";
    case 2:
      return "ro";
    case 3:
      return "in_trigger";
    case 4:
      return "beet";
    default:
      return std::to_string(m);
  }
}

std::string policy_dir_name(std::uint8_t d) {
  return d == 0 ? "in" : d == 1 ? "out" : d == 2 ? "fwd" : std::to_string(d);
}

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

json policy_json(const XfrmPolicy& p) {
  json tmpls = json::array();
  for (const auto& t : p.templates) {
    json tj = {
        {"proto", proto_name(t.proto)}, {"mode", mode_name(t.mode)}, {"reqid", t.reqid}, {"optional", t.optional != 0}};
    if (!t.saddr.is_unspecified()) tj["src"] = t.saddr.to_string();
    if (!t.daddr.is_unspecified()) tj["dst"] = t.daddr.to_string();
    if (t.spi) tj["spi"] = t.spi;
    tmpls.push_back(std::move(tj));
  }
  json j = {{"dir", policy_dir_name(p.dir)},
            {"action", p.action == 0 ? "allow" : "block"},
            {"priority", p.priority},
            {"index", p.index},
            {"ptype", p.ptype == 0 ? "main" : "sub"},
            {"selector", selector_json(p.selector)},
            {"templates", std::move(tmpls)},
            {"lifetime", lifetime_json(p.lifetime)}};
  if (p.mark) j["mark"] = {{"value", p.mark->value}, {"mask", p.mark->mask}};
  if (p.if_id) j["if_id"] = *p.if_id;
  return j;
}

json sa_json(const XfrmSa& sa, const std::string& netns, const std::string& direction,
             const std::string& direction_source) {
  json algs = json::object();
  if (sa.aead) algs["aead"] = {{"name", sa.aead->name}, {"icv_bits", sa.aead->icv_bits}};
  if (sa.auth) {
    algs["auth"] = {{"name", sa.auth->name}};
    if (sa.auth->trunc_bits) algs["auth"]["trunc_bits"] = *sa.auth->trunc_bits;
  }
  if (sa.enc) algs["enc"] = {{"name", *sa.enc}};
  if (sa.comp) algs["comp"] = {{"name", *sa.comp}};
  const std::uint32_t window = sa.replay_esn ? sa.replay_esn->replay_window : sa.replay_window;
  json j = {{"netns", netns},
            {"spi", sa.spi},
            {"proto", proto_name(sa.proto)},
            {"src", sa.saddr.to_string()},
            {"dst", sa.daddr.to_string()},
            {"reqid", sa.reqid},
            {"mode", mode_name(sa.mode)},
            {"algorithms", std::move(algs)},
            {"replay_window", window},
            {"esn", sa.esn()},
            {"lifetime", lifetime_json(sa.lifetime)},
            {"current", current_json(sa.current)},
            {"selector", selector_json(sa.selector)},
            {"direction", direction},
            {"direction_source", direction_source}};
  if (sa.encap)
    j["encap"] = {{"type", sa.encap->type == 2   ? "espinudp"
                           : sa.encap->type == 1 ? "espinudp-nonike"
                                                 : std::to_string(sa.encap->type)},
                  {"sport", sa.encap->sport},
                  {"dport", sa.encap->dport}};
  if (sa.mark) j["mark"] = {{"value", sa.mark->value}, {"mask", sa.mark->mask}};
  if (sa.if_id) j["if_id"] = *sa.if_id;
  if (sa.spi == 0) j["larval"] = true;
  return j;
}

SaEntry XfrmTable::make_entry(const XfrmSa& sa) const {
  SaEntry e;
  e.sa = sa;
  if (sa.sa_dir && (*sa.sa_dir == 1 || *sa.sa_dir == 2)) {
    e.direction = *sa.sa_dir == 1 ? "in" : "out";
    e.direction_source = "kernel";
  } else {
    // This kernel stores no direction for an SA: a policy whose template it
    // satisfies says which way it is used.
    bool in = false, out = false;
    for (const auto& [idx, p] : policies_)
      for (const auto& t : p.templates)
        if (template_matches(t, sa)) (p.dir == 1 ? out : in) = true;
    if (in != out) {
      e.direction = in ? "in" : "out";
      e.direction_source = "policy";
    }
  }
  e.json = std::make_shared<const std::string>(sa_json(sa, netns_, e.direction, e.direction_source).dump());
  return e;
}

void XfrmTable::rebuild_directions() {
  for (auto& [k, e] : sas_) e = make_entry(e.sa);
}

void XfrmTable::load(std::vector<XfrmSa> sas, std::vector<XfrmPolicy> policies) {
  policies_.clear();
  for (auto& p : policies) policies_[p.index] = std::move(p);
  sas_.clear();
  for (const auto& sa : sas) sas_[sa_key(sa)] = make_entry(sa);
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
  e.sa_json = s.json;
  return e;
}

Event XfrmTable::policy_event(EventKind k, const XfrmPolicy& p, TimePoint now) const {
  Event e = base(k, now);
  e.src = p.selector.saddr;
  e.dst = p.selector.daddr;
  e.detail = {{"policy", policy_json(p)}};
  return e;
}

namespace {
std::string ns_text(const std::string& ns) { return ns.empty() ? "" : " in netns " + ns; }
std::string sa_text(const XfrmSa& sa) {
  return proto_name(sa.proto) + " SA " + spi_hex(sa.spi) + " " + sa.saddr.to_string() + " -> " + sa.daddr.to_string();
}
std::string pol_text(const XfrmPolicy& p) {
  auto a = [](const std::optional<IpAddress>& x, std::uint8_t len) {
    return (x ? x->to_string() : std::string("any")) + "/" + std::to_string(len);
  };
  return policy_dir_name(p.dir) + " policy " + a(p.selector.saddr, p.selector.prefixlen_s) + " -> " +
         a(p.selector.daddr, p.selector.prefixlen_d);
}
}  // namespace

std::vector<Event> XfrmTable::apply(const XfrmMessage& m, TimePoint now) {
  std::vector<Event> out;
  if (const auto* n = std::get_if<XfrmNewSa>(&m)) {
    const SaKey k = sa_key(n->sa);
    const bool update = n->type == kXfrmMsgUpdSa;
    auto& slot = sas_[k] = make_entry(n->sa);
    Event e = sa_event(EventKind::sa_added, slot, now);
    e.message = (update ? "updated " : "added ") + sa_text(n->sa) + ns_text(netns_);
    if (update) e.detail = {{"update", true}};
    out.push_back(std::move(e));
  } else if (const auto* d = std::get_if<XfrmDelSa>(&m)) {
    const SaKey k{d->id.daddr, d->id.spi, d->id.proto};
    auto it = sas_.find(k);
    // The DELSA carries the SA with its final stats: prefer it.
    SaEntry entry = d->sa ? make_entry(*d->sa) : it != sas_.end() ? it->second : SaEntry{};
    if (!d->sa && it == sas_.end()) {
      entry.sa.daddr = d->id.daddr;
      entry.sa.spi = d->id.spi;
      entry.sa.proto = d->id.proto;
    }
    if (it != sas_.end()) sas_.erase(it);
    Event e = sa_event(EventKind::sa_deleted, entry, now);
    if (!d->sa && !entry.json) e.src.reset();
    e.message = "deleted " + sa_text(entry.sa) + ns_text(netns_);
    if (d->sa)
      e.detail = {{"final_stats",
                   {{"replay_window", d->sa->stats.replay_window},
                    {"replay", d->sa->stats.replay},
                    {"integrity_failed", d->sa->stats.integrity_failed}}}};
    out.push_back(std::move(e));
  } else if (const auto* x = std::get_if<XfrmExpire>(&m)) {
    const SaEntry entry = make_entry(x->sa);
    Event e = sa_event(EventKind::sa_expired, entry, now);
    e.message = std::string(x->hard ? "hard" : "soft") + " lifetime expired on " + sa_text(x->sa) + ns_text(netns_);
    e.detail = {{"expire", x->hard ? "hard" : "soft"}};
    // A hard expiry deletes the SA; the kernel sends no DELSA for it.
    if (x->hard) sas_.erase(sa_key(x->sa));
    out.push_back(std::move(e));
  } else if (const auto* np = std::get_if<XfrmNewPolicy>(&m)) {
    const bool update = np->type == kXfrmMsgUpdPolicy;
    policies_[np->policy.index] = np->policy;
    rebuild_directions();
    Event e = policy_event(EventKind::policy_added, np->policy, now);
    e.message = (update ? "updated " : "added ") + pol_text(np->policy) + ns_text(netns_);
    if (update) e.detail["update"] = true;
    out.push_back(std::move(e));
  } else if (const auto* dp = std::get_if<XfrmDelPolicy>(&m)) {
    std::optional<XfrmPolicy> gone = dp->policy;
    auto it = dp->id.index ? policies_.find(dp->id.index) : policies_.end();
    if (it == policies_.end())
      it = std::find_if(policies_.begin(), policies_.end(), [&](const auto& kv) {
        return kv.second.selector == dp->id.selector && kv.second.dir == dp->id.dir && kv.second.ptype == dp->ptype;
      });
    if (it != policies_.end()) {
      if (!gone) gone = it->second;
      policies_.erase(it);
    }
    if (!gone) {
      gone = XfrmPolicy{};
      gone->selector = dp->id.selector;
      gone->dir = dp->id.dir;
      gone->index = dp->id.index;
    }
    rebuild_directions();
    Event e = policy_event(EventKind::policy_deleted, *gone, now);
    e.message = "deleted " + pol_text(*gone) + ns_text(netns_);
    out.push_back(std::move(e));
  } else if (const auto* pe = std::get_if<XfrmPolicyExpire>(&m)) {
    Event e = policy_event(EventKind::policy_expired, pe->policy, now);
    e.message =
        std::string(pe->hard ? "hard" : "soft") + " lifetime expired on " + pol_text(pe->policy) + ns_text(netns_);
    e.detail["expire"] = pe->hard ? "hard" : "soft";
    if (pe->hard) {
      policies_.erase(pe->policy.index);
      rebuild_directions();
    }
    out.push_back(std::move(e));
  } else if (const auto* a = std::get_if<XfrmAcquire>(&m)) {
    Event e = base(EventKind::acquire, now);
    e.src = a->saddr;
    e.dst = a->daddr;
    e.spi = a->spi;
    e.message = "outbound traffic " + a->saddr.to_string() + " -> " + a->daddr.to_string() + " needs an " +
                proto_name(a->proto) + " SA that does not exist (ACQUIRE)" + ns_text(netns_);
    e.detail = {{"policy", policy_json(a->policy)}, {"selector", selector_json(a->selector)}, {"acquire_seq", a->seq}};
    out.push_back(std::move(e));
  } else if (const auto* mp = std::get_if<XfrmMapping>(&m)) {
    Event e = base(EventKind::nat_mapping_changed, now);
    e.dst = mp->id.daddr;
    e.src = mp->new_saddr;
    e.spi = mp->id.spi;
    if (const auto* s = find(SaKey{mp->id.daddr, mp->id.spi, mp->id.proto})) e.sa_json = s->json;
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
      if (f->proto != 0 && f->proto != 255 && it->second.sa.proto != f->proto) {
        ++it;
        continue;
      }
      Event e = sa_event(EventKind::sa_deleted, it->second, now);
      e.message = "deleted " + sa_text(it->second.sa) + " (SAD flush)" + ns_text(netns_);
      e.detail = {{"flush", true}};
      out.push_back(std::move(e));
      it = sas_.erase(it);
    }
  } else if (const auto* fp = std::get_if<XfrmFlushPolicy>(&m)) {
    for (auto it = policies_.begin(); it != policies_.end();) {
      if (it->second.ptype != fp->ptype) {
        ++it;
        continue;
      }
      Event e = policy_event(EventKind::policy_deleted, it->second, now);
      e.message = "deleted " + pol_text(it->second) + " (SPD flush)" + ns_text(netns_);
      e.detail["flush"] = true;
      out.push_back(std::move(e));
      it = policies_.erase(it);
    }
    rebuild_directions();
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
  std::vector<Event> out;
  std::map<std::uint32_t, XfrmPolicy> newp;
  for (auto& p : policies) newp[p.index] = std::move(p);
  for (const auto& [idx, p] : policies_)
    if (!newp.contains(idx)) {
      Event e = policy_event(EventKind::policy_deleted, p, now);
      e.message = "deleted " + pol_text(p) + " (found missing on resync)" + ns_text(netns_);
      out.push_back(std::move(e));
    }
  for (const auto& [idx, p] : newp)
    if (!policies_.contains(idx)) {
      Event e = policy_event(EventKind::policy_added, p, now);
      e.message = "added " + pol_text(p) + " (found on resync)" + ns_text(netns_);
      out.push_back(std::move(e));
    }
  policies_ = std::move(newp);

  std::map<SaKey, SaEntry> news;
  for (const auto& sa : sas) news[sa_key(sa)] = make_entry(sa);
  for (const auto& [k, s] : sas_)
    if (!news.contains(k)) {
      Event e = sa_event(EventKind::sa_deleted, s, now);
      e.message = "deleted " + sa_text(s.sa) + " (found missing on resync)" + ns_text(netns_);
      out.push_back(std::move(e));
    }
  for (const auto& [k, s] : news)
    if (!sas_.contains(k)) {
      Event e = sa_event(EventKind::sa_added, s, now);
      e.message = "added " + sa_text(s.sa) + " (found on resync)" + ns_text(netns_);
      out.push_back(std::move(e));
    }
  sas_ = std::move(news);
  for (auto& e : out) e.detail["resync"] = true;
  return out;
}

const SaEntry* XfrmTable::refresh(const XfrmSa& sa) {
  auto it = sas_.find(sa_key(sa));
  if (it == sas_.end()) return nullptr;
  it->second = make_entry(sa);
  return &it->second;
}

const SaEntry* XfrmTable::find(const SaKey& k) const {
  auto it = sas_.find(k);
  return it == sas_.end() ? nullptr : &it->second;
}

std::vector<const SaEntry*> XfrmTable::find(const IpAddress& daddr, std::uint32_t spi) const {
  std::vector<const SaEntry*> out;
  if (spi == 0) return out;
  for (auto it = sas_.lower_bound(SaKey{daddr, spi, 0});
       it != sas_.end() && it->first.daddr == daddr && it->first.spi == spi; ++it)
    out.push_back(&it->second);
  return out;
}

}  // namespace ipsec
