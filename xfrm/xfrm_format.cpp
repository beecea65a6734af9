// The text formatter of XFRM values: diagnostics for tools and tests.
#include "xfrm/xfrm_format.hpp"

#include <linux/xfrm.h>
#include <sys/socket.h>

#include <cinttypes>
#include <cstdio>
#include <string>
#include <variant>

namespace ipsec {

namespace {

class Line {
 public:
  template <typename T>
  void num(const char* key, T v) {
    add(key, std::to_string(v));
  }
  void hex(const char* key, std::uint32_t v) {
    char b[16];
    std::snprintf(b, sizeof b, "0x%" PRIx32, v);
    add(key, b);
  }
  void str(const char* key, const std::string& v) { add(key, v); }
  void addr(const char* key, const IpAddress& a) { add(key, a.to_string()); }
  template <typename T, typename F>
  void opt(const std::optional<T>& v, F&& f) {
    if (v) f(*v);
  }
  void prefix(const std::string& p) { prefix_ = p; }
  const std::string& prefix() const { return prefix_; }
  std::string take() { return std::move(out_); }

  void add(const char* key, const std::string& v) {
    if (!out_.empty()) out_ += ' ';
    out_ += prefix_;
    out_ += key;
    out_ += '=';
    out_ += v;
  }

 private:
  std::string out_, prefix_;
};

struct Scope {  // prefixes keys ("policy.", "tmpl0.") for its lifetime; scopes nest
  Scope(Line& l, const std::string& p) : line(l), saved(l.prefix()) { line.prefix(saved + p); }
  ~Scope() { line.prefix(saved); }
  Line& line;
  std::string saved;
};

void put(Line& l, const XfrmSelector& s) {
  l.num("sel.family", s.family);
  l.opt(s.daddr, [&](const IpAddress& a) { l.add("sel.daddr", a.to_string() + "/" + std::to_string(s.prefixlen_d)); });
  l.opt(s.saddr, [&](const IpAddress& a) { l.add("sel.saddr", a.to_string() + "/" + std::to_string(s.prefixlen_s)); });
  if (!s.daddr) {
    l.num("sel.prefixlen_d", s.prefixlen_d);
    l.num("sel.prefixlen_s", s.prefixlen_s);
  }
  l.add("sel.dport", std::to_string(s.dport) + "/" + std::to_string(s.dport_mask));
  l.add("sel.sport", std::to_string(s.sport) + "/" + std::to_string(s.sport_mask));
  l.num("sel.proto", s.proto);
  l.num("sel.ifindex", s.ifindex);
}

void put(Line& l, const XfrmLifetimeCfg& c) {
  l.num("lft.soft_bytes", c.soft_byte_limit);
  l.num("lft.hard_bytes", c.hard_byte_limit);
  l.num("lft.soft_packets", c.soft_packet_limit);
  l.num("lft.hard_packets", c.hard_packet_limit);
  l.num("lft.soft_add", c.soft_add_expires_seconds);
  l.num("lft.hard_add", c.hard_add_expires_seconds);
  l.num("lft.soft_use", c.soft_use_expires_seconds);
  l.num("lft.hard_use", c.hard_use_expires_seconds);
}

void put(Line& l, const XfrmLifetimeCur& c) {
  l.num("cur.bytes", c.bytes);
  l.num("cur.packets", c.packets);
  l.num("cur.add_time", c.add_time);
  l.num("cur.use_time", c.use_time);
}

void put(Line& l, const XfrmMark& m) { l.add("mark", std::to_string(m.value) + "/" + std::to_string(m.mask)); }

void put(Line& l, const XfrmReplayState& r) {
  l.num("replay.oseq", r.oseq);
  l.num("replay.seq", r.seq);
  l.hex("replay.bitmap", r.bitmap);
}

void put(Line& l, const XfrmReplayEsnState& r) {
  l.num("esn.bmp_len", r.bmp_len);
  l.num("esn.oseq", r.oseq);
  l.num("esn.seq", r.seq);
  l.num("esn.oseq_hi", r.oseq_hi);
  l.num("esn.seq_hi", r.seq_hi);
  l.num("esn.replay_window", r.replay_window);
}

void put(Line& l, const XfrmSa& sa) {
  l.addr("src", sa.saddr);
  l.addr("dst", sa.daddr);
  l.hex("spi", sa.spi);
  l.num("proto", sa.proto);
  l.num("reqid", sa.reqid);
  l.num("mode", sa.mode);
  l.hex("flags", sa.flags);
  l.hex("extra_flags", sa.extra_flags);
  l.num("replay_window", sa.replay_window);
  l.num("esn", sa.esn() ? 1 : 0);
  put(l, sa.selector);
  put(l, sa.lifetime);
  put(l, sa.current);
  l.num("stats.replay_window", sa.stats.replay_window);
  l.num("stats.replay", sa.stats.replay);
  l.num("stats.integrity_failed", sa.stats.integrity_failed);
  l.opt(sa.aead, [&](const XfrmAeadAlg& a) {
    l.str("aead", a.name);
    l.num("aead.icv_bits", a.icv_bits);
  });
  l.opt(sa.auth, [&](const XfrmAuthAlg& a) {
    l.str("auth", a.name);
    l.opt(a.trunc_bits, [&](std::uint32_t t) { l.num("auth.trunc_bits", t); });
  });
  l.opt(sa.enc, [&](const std::string& n) { l.str("enc", n); });
  l.opt(sa.comp, [&](const std::string& n) { l.str("comp", n); });
  l.opt(sa.replay, [&](const XfrmReplayState& r) { put(l, r); });
  l.opt(sa.replay_esn, [&](const XfrmReplayEsnState& r) { put(l, r); });
  l.opt(sa.encap, [&](const XfrmEncap& e) {
    l.num("encap.type", e.type);
    l.num("encap.sport", e.sport);
    l.num("encap.dport", e.dport);
    l.addr("encap.oa", e.oa);
  });
  l.opt(sa.mark, [&](const XfrmMark& m) { put(l, m); });
  l.opt(sa.if_id, [&](std::uint32_t v) { l.num("if_id", v); });
  l.opt(sa.sa_dir, [&](std::uint8_t v) { l.num("sa_dir", v); });
  l.opt(sa.offload, [&](const XfrmOffload& o) {
    l.num("offload.ifindex", o.ifindex);
    l.hex("offload.flags", o.flags);
  });
}

void put(Line& l, const XfrmTemplate& t) {
  l.addr("src", t.saddr);
  l.addr("dst", t.daddr);
  l.hex("spi", t.spi);
  l.num("proto", t.proto);
  l.num("reqid", t.reqid);
  l.num("mode", t.mode);
  l.num("share", t.share);
  l.num("optional", t.optional);
  l.hex("aalgos", t.aalgos);
  l.hex("ealgos", t.ealgos);
  l.hex("calgos", t.calgos);
}

void put(Line& l, const XfrmPolicy& p) {
  put(l, p.selector);
  put(l, p.lifetime);
  put(l, p.current);
  l.num("priority", p.priority);
  l.num("index", p.index);
  l.num("dir", p.dir);
  l.num("action", p.action);
  l.hex("flags", p.flags);
  l.num("share", p.share);
  l.num("ptype", p.ptype);
  l.opt(p.mark, [&](const XfrmMark& m) { put(l, m); });
  l.opt(p.if_id, [&](std::uint32_t v) { l.num("if_id", v); });
  for (std::size_t i = 0; i < p.templates.size(); ++i) {
    Scope s(l, "tmpl" + std::to_string(i) + ".");
    put(l, p.templates[i]);
  }
}

void put(Line& l, const XfrmSaId& id) {
  l.addr("dst", id.daddr);
  l.hex("spi", id.spi);
  l.num("proto", id.proto);
}

void put(Line& l, const XfrmPolicyId& id) {
  put(l, id.selector);
  l.num("index", id.index);
  l.num("dir", id.dir);
}

template <class... F>
struct Overloaded : F... {
  using F::operator()...;
};
template <class... F>
Overloaded(F...) -> Overloaded<F...>;

}  // namespace

std::string format_xfrm_message(const XfrmMessage& message) {
  Line l;
  std::visit(Overloaded{
                 [&](const XfrmNewSa& m) {
                   l.str("msg", xfrm_message_name(m.type) ? xfrm_message_name(m.type) : "?");
                   put(l, m.sa);
                 },
                 [&](const XfrmDelSa& m) {
                   l.str("msg", "DELSA");
                   put(l, m.id);
                   l.opt(m.mark, [&](const XfrmMark& k) { put(l, k); });
                   l.opt(m.if_id, [&](std::uint32_t v) { l.num("if_id", v); });
                   l.opt(m.sa, [&](const XfrmSa& sa) {
                     Scope s(l, "sa.");
                     put(l, sa);
                   });
                 },
                 [&](const XfrmExpire& m) {
                   l.str("msg", "EXPIRE");
                   l.num("hard", m.hard ? 1 : 0);
                   put(l, m.sa);
                 },
                 [&](const XfrmNewPolicy& m) {
                   l.str("msg", xfrm_message_name(m.type) ? xfrm_message_name(m.type) : "?");
                   put(l, m.policy);
                 },
                 [&](const XfrmDelPolicy& m) {
                   l.str("msg", "DELPOLICY");
                   put(l, m.id);
                   l.num("ptype", m.ptype);
                   l.opt(m.mark, [&](const XfrmMark& k) { put(l, k); });
                   l.opt(m.if_id, [&](std::uint32_t v) { l.num("if_id", v); });
                   l.opt(m.policy, [&](const XfrmPolicy& p) {
                     Scope s(l, "policy.");
                     put(l, p);
                   });
                 },
                 [&](const XfrmPolicyExpire& m) {
                   l.str("msg", "POLEXPIRE");
                   l.num("hard", m.hard ? 1 : 0);
                   put(l, m.policy);
                 },
                 [&](const XfrmAcquire& m) {
                   l.str("msg", "ACQUIRE");
                   l.addr("src", m.saddr);
                   l.addr("dst", m.daddr);
                   l.hex("spi", m.spi);
                   l.num("proto", m.proto);
                   put(l, m.selector);
                   l.hex("aalgos", m.aalgos);
                   l.hex("ealgos", m.ealgos);
                   l.hex("calgos", m.calgos);
                   l.num("seq", m.seq);
                   Scope s(l, "policy.");
                   put(l, m.policy);
                 },
                 [&](const XfrmMapping& m) {
                   l.str("msg", "MAPPING");
                   put(l, m.id);
                   l.num("reqid", m.reqid);
                   l.add("old", m.old_saddr.to_string() + ":" + std::to_string(m.old_sport));
                   l.add("new", m.new_saddr.to_string() + ":" + std::to_string(m.new_sport));
                 },
                 [&](const XfrmMigrate& m) {
                   l.str("msg", "MIGRATE");
                   put(l, m.id);
                   l.num("ptype", m.ptype);
                   for (std::size_t i = 0; i < m.entries.size(); ++i) {
                     const auto& e = m.entries[i];
                     Scope s(l, "m" + std::to_string(i) + ".");
                     l.add("old", e.old_saddr.to_string() + "->" + e.old_daddr.to_string());
                     l.add("new", e.new_saddr.to_string() + "->" + e.new_daddr.to_string());
                     l.num("proto", e.proto);
                     l.num("mode", e.mode);
                     l.num("reqid", e.reqid);
                   }
                 },
                 [&](const XfrmFlushSa& m) {
                   l.str("msg", "FLUSHSA");
                   l.num("proto", m.proto);
                 },
                 [&](const XfrmFlushPolicy& m) {
                   l.str("msg", "FLUSHPOLICY");
                   l.num("ptype", m.ptype);
                 },
                 [&](const XfrmPolicyDefault& m) {
                   l.str("msg", xfrm_message_name(m.type) ? xfrm_message_name(m.type) : "?");
                   l.num("in", m.in);
                   l.num("fwd", m.fwd);
                   l.num("out", m.out);
                 },
                 [&](const XfrmAsyncEvent& m) {
                   l.str("msg", "NEWAE");
                   put(l, m.id);
                   l.addr("src", m.saddr);
                   l.hex("flags", m.flags);
                   l.num("reqid", m.reqid);
                   l.opt(m.replay, [&](const XfrmReplayState& r) { put(l, r); });
                   l.opt(m.replay_esn, [&](const XfrmReplayEsnState& r) { put(l, r); });
                   l.opt(m.current, [&](const XfrmLifetimeCur& c) { put(l, c); });
                   l.opt(m.replay_threshold, [&](std::uint32_t v) { l.num("replay_thresh", v); });
                   l.opt(m.timer_threshold, [&](std::uint32_t v) { l.num("etimer_thresh", v); });
                   l.opt(m.mark, [&](const XfrmMark& k) { put(l, k); });
                   l.opt(m.if_id, [&](std::uint32_t v) { l.num("if_id", v); });
                 },
                 [&](const XfrmUnknown& m) {
                   l.str("msg", "UNKNOWN");
                   l.num("type", m.type);
                 },
             },
             message);
  return l.take();
}

}  // namespace ipsec
