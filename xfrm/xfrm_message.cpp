#include "xfrm/xfrm_message.hpp"

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/netlink.h>
#include <linux/xfrm.h>
#include <string.h>
#include <sys/socket.h>

#include <array>
#include <cinttypes>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <type_traits>
#include <utility>

namespace ipsec {

static_assert(kXfrmMsgNewSa == XFRM_MSG_NEWSA && kXfrmMsgDelSa == XFRM_MSG_DELSA && kXfrmMsgGetSa == XFRM_MSG_GETSA);
static_assert(kXfrmMsgNewPolicy == XFRM_MSG_NEWPOLICY && kXfrmMsgDelPolicy == XFRM_MSG_DELPOLICY &&
              kXfrmMsgGetPolicy == XFRM_MSG_GETPOLICY);
static_assert(kXfrmMsgAcquire == XFRM_MSG_ACQUIRE && kXfrmMsgExpire == XFRM_MSG_EXPIRE &&
              kXfrmMsgUpdPolicy == XFRM_MSG_UPDPOLICY && kXfrmMsgUpdSa == XFRM_MSG_UPDSA &&
              kXfrmMsgPolExpire == XFRM_MSG_POLEXPIRE);
static_assert(kXfrmMsgFlushSa == XFRM_MSG_FLUSHSA && kXfrmMsgFlushPolicy == XFRM_MSG_FLUSHPOLICY &&
              kXfrmMsgNewAe == XFRM_MSG_NEWAE && kXfrmMsgGetAe == XFRM_MSG_GETAE);
static_assert(kXfrmMsgMigrate == XFRM_MSG_MIGRATE && kXfrmMsgMapping == XFRM_MSG_MAPPING &&
              kXfrmMsgSetDefault == XFRM_MSG_SETDEFAULT && kXfrmMsgGetDefault == XFRM_MSG_GETDEFAULT);
static_assert(kXfrmGroupAcquire == XFRMNLGRP_ACQUIRE && kXfrmGroupExpire == XFRMNLGRP_EXPIRE &&
              kXfrmGroupSa == XFRMNLGRP_SA && kXfrmGroupPolicy == XFRMNLGRP_POLICY &&
              kXfrmGroupAevents == XFRMNLGRP_AEVENTS && kXfrmGroupMigrate == XFRMNLGRP_MIGRATE &&
              kXfrmGroupMapping == XFRMNLGRP_MAPPING);
static_assert(kXfrmStateEsn == XFRM_STATE_ESN);

namespace {

// Attribute types newer than the installed uapi header.
constexpr std::uint16_t kXfrmaSaDir = 33;  // __u8, kernel >= 6.10

// XFRM_MAX_DEPTH (include/net/xfrm.h): the kernel never builds longer
// template or migrate arrays, so anything longer is not from the kernel.
constexpr std::size_t kMaxDepth = 6;
// XFRMA_REPLAY_ESN_MAX bits, in 32-bit bitmap words.
constexpr std::uint32_t kMaxEsnBitmapWords = XFRMA_REPLAY_ESN_MAX / 32;

// ---- the declarative attribute tables ----

// What a message type reads of one attribute type. `min == 0` means "not
// read": such attributes (and types beyond the table) are skipped unseen.
// Scalars are `exact` (checked by mnl_attr_validate2, which also rejects a
// longer payload); structs have a minimum, because the variable-length ones
// (algorithms, arrays, the ESN bitmap) are longer than their fixed part.
struct AttrRule {
  std::uint16_t min{0};
  bool exact{false};
};
constexpr std::size_t kTableSize = 48;
using AttrTable = std::array<AttrRule, kTableSize>;

constexpr AttrTable make_table(std::initializer_list<std::pair<std::uint16_t, AttrRule>> rules) {
  AttrTable t{};
  for (const auto& [type, rule] : rules) t[type] = rule;
  return t;
}

constexpr AttrRule at_least(std::size_t n) { return AttrRule{static_cast<std::uint16_t>(n), false}; }
constexpr AttrRule exactly(std::size_t n) { return AttrRule{static_cast<std::uint16_t>(n), true}; }

// The fixed part of each variable-length algorithm attribute (name[64] + lengths).
constexpr std::size_t kAlgoFixed = offsetof(xfrm_algo, alg_key);
constexpr std::size_t kAlgoAuthFixed = offsetof(xfrm_algo_auth, alg_key);
constexpr std::size_t kAlgoAeadFixed = offsetof(xfrm_algo_aead, alg_key);
constexpr std::size_t kEsnFixed = offsetof(xfrm_replay_state_esn, bmp);

// The same table with more rules (a DELSA reads what a NEWSA reads, plus XFRMA_SA).
constexpr AttrTable extend(AttrTable t, std::initializer_list<std::pair<std::uint16_t, AttrRule>> rules) {
  for (const auto& [type, rule] : rules) t[type] = rule;
  return t;
}

// An SA's attributes: algorithms (names only are read), replay state, NAT-T,
// mark, interface id, flags, direction, offload.
constexpr AttrTable kSaTable = make_table({
    {XFRMA_ALG_AUTH, at_least(kAlgoFixed)},
    {XFRMA_ALG_CRYPT, at_least(kAlgoFixed)},
    {XFRMA_ALG_COMP, at_least(kAlgoFixed)},
    {XFRMA_ALG_AEAD, at_least(kAlgoAeadFixed)},
    {XFRMA_ALG_AUTH_TRUNC, at_least(kAlgoAuthFixed)},
    {XFRMA_ENCAP, at_least(sizeof(xfrm_encap_tmpl))},
    {XFRMA_REPLAY_VAL, at_least(sizeof(xfrm_replay_state))},
    {XFRMA_REPLAY_ESN_VAL, at_least(kEsnFixed)},
    {XFRMA_MARK, at_least(sizeof(xfrm_mark))},
    {XFRMA_IF_ID, exactly(4)},
    {XFRMA_SA_EXTRA_FLAGS, exactly(4)},
    {kXfrmaSaDir, exactly(1)},
    {XFRMA_OFFLOAD_DEV, at_least(sizeof(xfrm_user_offload))},
});
constexpr AttrTable kDelSaTable = extend(kSaTable, {{XFRMA_SA, at_least(sizeof(xfrm_usersa_info))}});

// A policy's attributes (also ACQUIRE's and POLEXPIRE's).
constexpr AttrTable kPolicyTable = make_table({
    {XFRMA_TMPL, at_least(sizeof(xfrm_user_tmpl))},
    {XFRMA_POLICY_TYPE, at_least(sizeof(xfrm_userpolicy_type))},
    {XFRMA_MARK, at_least(sizeof(xfrm_mark))},
    {XFRMA_IF_ID, exactly(4)},
});
constexpr AttrTable kDelPolicyTable = extend(kPolicyTable, {{XFRMA_POLICY, at_least(sizeof(xfrm_userpolicy_info))}});

constexpr AttrTable kMigrateTable = make_table({
    {XFRMA_MIGRATE, at_least(sizeof(xfrm_user_migrate))},
    {XFRMA_POLICY_TYPE, at_least(sizeof(xfrm_userpolicy_type))},
});
constexpr AttrTable kFlushPolicyTable = make_table({{XFRMA_POLICY_TYPE, at_least(sizeof(xfrm_userpolicy_type))}});
constexpr AttrTable kAeTable = make_table({
    {XFRMA_REPLAY_VAL, at_least(sizeof(xfrm_replay_state))},
    {XFRMA_REPLAY_ESN_VAL, at_least(kEsnFixed)},
    {XFRMA_LTIME_VAL, at_least(sizeof(xfrm_lifetime_cur))},
    {XFRMA_REPLAY_THRESH, exactly(4)},
    {XFRMA_ETIMER_THRESH, exactly(4)},
    {XFRMA_MARK, at_least(sizeof(xfrm_mark))},
    {XFRMA_IF_ID, exactly(4)},
});

// The payloads of the attributes a table admits, each already length-checked.
struct Attrs {
  std::array<Bytes, kTableSize> payload{};
  std::array<bool, kTableSize> present{};
  bool has(std::uint16_t type) const { return present[type]; }
  Bytes get(std::uint16_t type) const { return payload[type]; }
};

struct Walk {
  const AttrTable* table;
  Attrs* out;
  const std::uint8_t* base;
  std::size_t end{0};  // offset just past the last well-formed attribute (aligned)
  std::uint16_t bad_type{0};
};

int on_attribute(const nlattr* attr, void* data) {
  auto* w = static_cast<Walk*>(data);
  const auto* at = reinterpret_cast<const std::uint8_t*>(attr);
  w->end = static_cast<std::size_t>(at - w->base) + MNL_ALIGN(attr->nla_len);
  const std::uint16_t type = mnl_attr_get_type(attr);
  if (type >= kTableSize) return MNL_CB_OK;
  const AttrRule rule = (*w->table)[type];
  if (rule.min == 0) return MNL_CB_OK;
  const bool ok = rule.exact ? mnl_attr_validate2(attr, MNL_TYPE_UNSPEC, rule.min) == 0
                             : mnl_attr_get_payload_len(attr) >= rule.min;
  if (!ok) {
    w->bad_type = type;
    return MNL_CB_ERROR;
  }
  w->out->payload[type] =
      Bytes(static_cast<const std::uint8_t*>(mnl_attr_get_payload(attr)), mnl_attr_get_payload_len(attr));
  w->out->present[type] = true;  // a repeated attribute: the last one wins, as in the kernel
  return MNL_CB_OK;
}

Result<Attrs> parse_attrs(Bytes attrs, const AttrTable& table) {
  Attrs out;
  if (attrs.empty()) return out;
  Walk w{&table, &out, attrs.data()};
  const int rc = mnl_attr_parse_payload(attrs.data(), attrs.size(), on_attribute, &w);
  if (rc == MNL_CB_ERROR)
    return make_error(Errc::truncated, "attribute " + std::to_string(w.bad_type) + " shorter than its type");
  // libmnl stops quietly at an attribute that does not fit; that is a
  // truncated message, not the end of the list.
  if (w.end < attrs.size()) return make_error(Errc::truncated, "attribute runs past the end of the message");
  return out;
}

// The attributes after a fixed header of `fixed` bytes (aligned as the kernel aligns it).
Bytes after_header(Bytes payload, std::size_t fixed) {
  const std::size_t start = NLMSG_ALIGN(fixed);
  return payload.size() > start ? payload.subspan(start) : Bytes{};
}

// memcpy into a kernel struct; the caller has checked the size (the table or a header check).
template <typename T>
T load(Bytes b) {
  static_assert(std::is_trivially_copyable_v<T>);
  T v{};
  std::memcpy(&v, b.data(), b.size() < sizeof v ? b.size() : sizeof v);
  return v;
}

template <typename T>
Result<T> load_header(Bytes payload, const char* what) {
  if (payload.size() < sizeof(T))
    return make_error(Errc::truncated, std::string(what) + " shorter than " + std::to_string(sizeof(T)) + " bytes");
  return load<T>(payload);
}

std::uint32_t load_u32(Bytes b) { return load<std::uint32_t>(b); }

Result<IpAddress> address(const xfrm_address_t& a, std::uint16_t family) {
  if (family == AF_INET) return IpAddress::from_v4(&a.a4);
  if (family == AF_INET6) return IpAddress::from_v6(a.a6);
  return make_error(Errc::malformed, "address family " + std::to_string(family) + " is neither inet nor inet6");
}

// An SA's selector may have family AF_UNSPEC (a larval SA made by ALLOCSPI
// has one, with its prefix lengths set): its addresses are then in the SA's
// family, as iproute2 reads them. `sa_family` is that family, 0 elsewhere.
Result<XfrmSelector> selector(const xfrm_selector& s, std::uint16_t sa_family = AF_UNSPEC) {
  XfrmSelector r;
  r.family = s.family;
  const std::uint16_t family = s.family != AF_UNSPEC ? s.family : sa_family;
  if (family != AF_UNSPEC) {
    auto d = address(s.daddr, family);
    if (!d) return d.error();
    auto a = address(s.saddr, family);
    if (!a) return a.error();
    r.daddr = *d;
    r.saddr = *a;
    const unsigned max_len = family == AF_INET ? 32 : 128;
    if (s.prefixlen_d > max_len || s.prefixlen_s > max_len)
      return make_error(Errc::out_of_range, "selector prefix length beyond the address");
  }
  r.prefixlen_d = s.prefixlen_d;
  r.prefixlen_s = s.prefixlen_s;
  r.dport = ntohs(s.dport);
  r.dport_mask = ntohs(s.dport_mask);
  r.sport = ntohs(s.sport);
  r.sport_mask = ntohs(s.sport_mask);
  r.proto = s.proto;
  r.ifindex = s.ifindex;
  return r;
}

XfrmLifetimeCfg lifetime_cfg(const xfrm_lifetime_cfg& c) {
  return {c.soft_byte_limit,          c.hard_byte_limit,          c.soft_packet_limit,
          c.hard_packet_limit,        c.soft_add_expires_seconds, c.hard_add_expires_seconds,
          c.soft_use_expires_seconds, c.hard_use_expires_seconds};
}

XfrmLifetimeCur lifetime_cur(const xfrm_lifetime_cur& c) { return {c.bytes, c.packets, c.add_time, c.use_time}; }

// An algorithm's name: bounded by its 64-byte field, printable ASCII only.
// The key that follows is checked for length (a lying length is malformed)
// but never read.
Result<std::string> algorithm_name(Bytes attr, std::size_t fixed, std::uint32_t key_bits) {
  if (attr.size() < fixed + (static_cast<std::uint64_t>(key_bits) + 7) / 8)
    return make_error(Errc::malformed, "algorithm key length beyond its attribute");
  const char* name = reinterpret_cast<const char*>(attr.data());
  const std::size_t n = strnlen(name, sizeof(xfrm_algo{}.alg_name));
  std::string out(name, n);
  for (char c : out)
    if (c < 0x21 || c > 0x7e) return make_error(Errc::malformed, "algorithm name is not printable");
  return out;
}

Result<XfrmReplayEsnState> replay_esn(Bytes b) {
  const auto r = load<xfrm_replay_state_esn>(b);
  if (r.bmp_len > kMaxEsnBitmapWords || b.size() < kEsnFixed + std::size_t{r.bmp_len} * 4)
    return make_error(Errc::malformed, "ESN replay bitmap length beyond its attribute");
  return XfrmReplayEsnState{r.bmp_len, r.oseq, r.seq, r.oseq_hi, r.seq_hi, r.replay_window};
}

XfrmReplayState replay_state(Bytes b) {
  const auto r = load<xfrm_replay_state>(b);
  return {r.oseq, r.seq, r.bitmap};
}

XfrmMark mark(Bytes b) {
  const auto m = load<xfrm_mark>(b);
  return {m.v, m.m};
}

// The fixed part of an SA.
Result<XfrmSa> sa_from_info(const xfrm_usersa_info& p) {
  XfrmSa sa;
  auto d = address(p.id.daddr, p.family);
  if (!d) return d.error();
  auto s = address(p.saddr, p.family);
  if (!s) return s.error();
  auto sel = selector(p.sel, p.family);
  if (!sel) return sel.error();
  sa.daddr = *d;
  sa.saddr = *s;
  sa.spi = ntohl(p.id.spi);
  sa.proto = p.id.proto;
  sa.reqid = p.reqid;
  sa.mode = p.mode;
  sa.flags = p.flags;
  sa.replay_window = p.replay_window;
  sa.selector = std::move(*sel);
  sa.lifetime = lifetime_cfg(p.lft);
  sa.current = lifetime_cur(p.curlft);
  sa.stats = {p.stats.replay_window, p.stats.replay, p.stats.integrity_failed};
  return sa;
}

Result<Unit> apply_sa_attrs(const Attrs& a, std::uint16_t family, XfrmSa& sa) {
  if (a.has(XFRMA_ALG_AEAD)) {
    const auto alg = load<xfrm_algo_aead>(a.get(XFRMA_ALG_AEAD));
    auto name = algorithm_name(a.get(XFRMA_ALG_AEAD), kAlgoAeadFixed, alg.alg_key_len);
    if (!name) return name.error();
    sa.aead = XfrmAeadAlg{std::move(*name), alg.alg_icv_len};
  }
  if (a.has(XFRMA_ALG_AUTH)) {
    const auto alg = load<xfrm_algo>(a.get(XFRMA_ALG_AUTH));
    auto name = algorithm_name(a.get(XFRMA_ALG_AUTH), kAlgoFixed, alg.alg_key_len);
    if (!name) return name.error();
    sa.auth = XfrmAuthAlg{std::move(*name), std::nullopt};
  }
  // The kernel sends both AUTH and AUTH_TRUNC for one algorithm; TRUNC has the truncation.
  if (a.has(XFRMA_ALG_AUTH_TRUNC)) {
    const auto alg = load<xfrm_algo_auth>(a.get(XFRMA_ALG_AUTH_TRUNC));
    auto name = algorithm_name(a.get(XFRMA_ALG_AUTH_TRUNC), kAlgoAuthFixed, alg.alg_key_len);
    if (!name) return name.error();
    sa.auth = XfrmAuthAlg{std::move(*name), alg.alg_trunc_len};
  }
  if (a.has(XFRMA_ALG_CRYPT)) {
    const auto alg = load<xfrm_algo>(a.get(XFRMA_ALG_CRYPT));
    auto name = algorithm_name(a.get(XFRMA_ALG_CRYPT), kAlgoFixed, alg.alg_key_len);
    if (!name) return name.error();
    sa.enc = std::move(*name);
  }
  if (a.has(XFRMA_ALG_COMP)) {
    const auto alg = load<xfrm_algo>(a.get(XFRMA_ALG_COMP));
    auto name = algorithm_name(a.get(XFRMA_ALG_COMP), kAlgoFixed, alg.alg_key_len);
    if (!name) return name.error();
    sa.comp = std::move(*name);
  }
  if (a.has(XFRMA_REPLAY_VAL)) sa.replay = replay_state(a.get(XFRMA_REPLAY_VAL));
  if (a.has(XFRMA_REPLAY_ESN_VAL)) {
    auto r = replay_esn(a.get(XFRMA_REPLAY_ESN_VAL));
    if (!r) return r.error();
    sa.replay_esn = *r;
  }
  if (a.has(XFRMA_ENCAP)) {
    const auto e = load<xfrm_encap_tmpl>(a.get(XFRMA_ENCAP));
    auto oa = address(e.encap_oa, family);
    if (!oa) return oa.error();
    sa.encap = XfrmEncap{e.encap_type, ntohs(e.encap_sport), ntohs(e.encap_dport), *oa};
  }
  if (a.has(XFRMA_MARK)) sa.mark = mark(a.get(XFRMA_MARK));
  if (a.has(XFRMA_IF_ID)) sa.if_id = load_u32(a.get(XFRMA_IF_ID));
  if (a.has(XFRMA_SA_EXTRA_FLAGS)) sa.extra_flags = load_u32(a.get(XFRMA_SA_EXTRA_FLAGS));
  if (a.has(kXfrmaSaDir)) sa.sa_dir = a.get(kXfrmaSaDir)[0];
  if (a.has(XFRMA_OFFLOAD_DEV)) {
    const auto o = load<xfrm_user_offload>(a.get(XFRMA_OFFLOAD_DEV));
    sa.offload = XfrmOffload{o.ifindex, o.flags};
  }
  return Unit{};
}

// Elements of an array attribute (XFRMA_TMPL, XFRMA_MIGRATE): whole elements only.
template <typename T>
Result<std::vector<T>> array_of(Bytes b, const char* what) {
  if (b.size() % sizeof(T) != 0 || b.size() / sizeof(T) > kMaxDepth)
    return make_error(Errc::malformed, std::string(what) + " is not 1 to 6 whole entries");
  std::vector<T> out;
  for (std::size_t off = 0; off < b.size(); off += sizeof(T)) out.push_back(load<T>(b.subspan(off, sizeof(T))));
  return out;
}

Result<std::vector<XfrmTemplate>> templates(Bytes b) {
  auto raw = array_of<xfrm_user_tmpl>(b, "XFRMA_TMPL");
  if (!raw) return raw.error();
  std::vector<XfrmTemplate> out;
  for (const auto& t : *raw) {
    XfrmTemplate x;
    auto d = address(t.id.daddr, t.family);
    if (!d) return d.error();
    auto s = address(t.saddr, t.family);
    if (!s) return s.error();
    x.daddr = *d;
    x.saddr = *s;
    x.spi = ntohl(t.id.spi);
    x.proto = t.id.proto;
    x.reqid = t.reqid;
    x.mode = t.mode;
    x.share = t.share;
    x.optional = t.optional;
    x.aalgos = t.aalgos;
    x.ealgos = t.ealgos;
    x.calgos = t.calgos;
    out.push_back(x);
  }
  return out;
}

std::uint8_t policy_type(const Attrs& a) {
  return a.has(XFRMA_POLICY_TYPE) ? load<xfrm_userpolicy_type>(a.get(XFRMA_POLICY_TYPE)).type : 0;
}

Result<XfrmPolicy> policy_from_info(const xfrm_userpolicy_info& p) {
  auto sel = selector(p.sel);
  if (!sel) return sel.error();
  if (p.sel.family == AF_UNSPEC) return make_error(Errc::malformed, "policy selector without a family");
  XfrmPolicy r;
  r.selector = std::move(*sel);
  r.lifetime = lifetime_cfg(p.lft);
  r.current = lifetime_cur(p.curlft);
  r.priority = p.priority;
  r.index = p.index;
  r.dir = p.dir;
  r.action = p.action;
  r.flags = p.flags;
  r.share = p.share;
  return r;
}

Result<Unit> apply_policy_attrs(const Attrs& a, XfrmPolicy& p) {
  if (a.has(XFRMA_TMPL)) {
    auto t = templates(a.get(XFRMA_TMPL));
    if (!t) return t.error();
    p.templates = std::move(*t);
  }
  p.ptype = policy_type(a);
  if (a.has(XFRMA_MARK)) p.mark = mark(a.get(XFRMA_MARK));
  if (a.has(XFRMA_IF_ID)) p.if_id = load_u32(a.get(XFRMA_IF_ID));
  return Unit{};
}

Result<XfrmPolicyId> policy_id(const xfrm_userpolicy_id& id) {
  auto sel = selector(id.sel);
  if (!sel) return sel.error();
  return XfrmPolicyId{std::move(*sel), id.index, id.dir};
}

Result<XfrmSaId> sa_id(const xfrm_usersa_id& id) {
  auto d = address(id.daddr, id.family);
  if (!d) return d.error();
  return XfrmSaId{*d, ntohl(id.spi), id.proto};
}

// ---- one parser per message kind ----

Result<XfrmMessage> parse_new_sa(std::uint16_t type, Bytes payload) {
  auto info = load_header<xfrm_usersa_info>(payload, "xfrm_usersa_info");
  if (!info) return info.error();
  auto attrs = parse_attrs(after_header(payload, sizeof(xfrm_usersa_info)), kSaTable);
  if (!attrs) return attrs.error();
  auto sa = sa_from_info(*info);
  if (!sa) return sa.error();
  if (auto r = apply_sa_attrs(*attrs, info->family, *sa); !r) return r.error();
  return XfrmMessage(XfrmNewSa{type, std::move(*sa)});
}

Result<XfrmMessage> parse_del_sa(Bytes payload) {
  auto raw = load_header<xfrm_usersa_id>(payload, "xfrm_usersa_id");
  if (!raw) return raw.error();
  auto attrs = parse_attrs(after_header(payload, sizeof(xfrm_usersa_id)), kDelSaTable);
  if (!attrs) return attrs.error();
  auto id = sa_id(*raw);
  if (!id) return id.error();
  XfrmDelSa del{*id, std::nullopt, std::nullopt, std::nullopt};
  if (attrs->has(XFRMA_MARK)) del.mark = mark(attrs->get(XFRMA_MARK));
  if (attrs->has(XFRMA_IF_ID)) del.if_id = load_u32(attrs->get(XFRMA_IF_ID));
  // The kernel puts the SA's fixed part in XFRMA_SA and its other attributes
  // (algorithms, replay state, mark...) beside it at the top level.
  if (attrs->has(XFRMA_SA)) {
    const auto info = load<xfrm_usersa_info>(attrs->get(XFRMA_SA));
    auto sa = sa_from_info(info);
    if (!sa) return sa.error();
    if (auto r = apply_sa_attrs(*attrs, info.family, *sa); !r) return r.error();
    del.sa = std::move(*sa);
  }
  return XfrmMessage(std::move(del));
}

Result<XfrmMessage> parse_expire(Bytes payload) {
  auto ue = load_header<xfrm_user_expire>(payload, "xfrm_user_expire");
  if (!ue) return ue.error();
  auto attrs = parse_attrs(after_header(payload, sizeof(xfrm_user_expire)), kSaTable);
  if (!attrs) return attrs.error();
  auto sa = sa_from_info(ue->state);
  if (!sa) return sa.error();
  if (auto r = apply_sa_attrs(*attrs, ue->state.family, *sa); !r) return r.error();
  return XfrmMessage(XfrmExpire{std::move(*sa), ue->hard != 0});
}

Result<XfrmMessage> parse_new_policy(std::uint16_t type, Bytes payload) {
  auto info = load_header<xfrm_userpolicy_info>(payload, "xfrm_userpolicy_info");
  if (!info) return info.error();
  auto attrs = parse_attrs(after_header(payload, sizeof(xfrm_userpolicy_info)), kPolicyTable);
  if (!attrs) return attrs.error();
  auto p = policy_from_info(*info);
  if (!p) return p.error();
  if (auto r = apply_policy_attrs(*attrs, *p); !r) return r.error();
  return XfrmMessage(XfrmNewPolicy{type, std::move(*p)});
}

Result<XfrmMessage> parse_del_policy(Bytes payload) {
  auto raw = load_header<xfrm_userpolicy_id>(payload, "xfrm_userpolicy_id");
  if (!raw) return raw.error();
  auto attrs = parse_attrs(after_header(payload, sizeof(xfrm_userpolicy_id)), kDelPolicyTable);
  if (!attrs) return attrs.error();
  auto id = policy_id(*raw);
  if (!id) return id.error();
  XfrmDelPolicy del;
  del.id = std::move(*id);
  del.ptype = policy_type(*attrs);
  if (attrs->has(XFRMA_MARK)) del.mark = mark(attrs->get(XFRMA_MARK));
  if (attrs->has(XFRMA_IF_ID)) del.if_id = load_u32(attrs->get(XFRMA_IF_ID));
  if (attrs->has(XFRMA_POLICY)) {
    auto p = policy_from_info(load<xfrm_userpolicy_info>(attrs->get(XFRMA_POLICY)));
    if (!p) return p.error();
    if (auto r = apply_policy_attrs(*attrs, *p); !r) return r.error();
    del.policy = std::move(*p);
  }
  return XfrmMessage(std::move(del));
}

Result<XfrmMessage> parse_policy_expire(Bytes payload) {
  auto pe = load_header<xfrm_user_polexpire>(payload, "xfrm_user_polexpire");
  if (!pe) return pe.error();
  auto attrs = parse_attrs(after_header(payload, sizeof(xfrm_user_polexpire)), kPolicyTable);
  if (!attrs) return attrs.error();
  auto p = policy_from_info(pe->pol);
  if (!p) return p.error();
  if (auto r = apply_policy_attrs(*attrs, *p); !r) return r.error();
  return XfrmMessage(XfrmPolicyExpire{std::move(*p), pe->hard != 0});
}

Result<XfrmMessage> parse_acquire(Bytes payload) {
  auto ua = load_header<xfrm_user_acquire>(payload, "xfrm_user_acquire");
  if (!ua) return ua.error();
  auto attrs = parse_attrs(after_header(payload, sizeof(xfrm_user_acquire)), kPolicyTable);
  if (!attrs) return attrs.error();
  auto p = policy_from_info(ua->policy);
  if (!p) return p.error();
  if (auto r = apply_policy_attrs(*attrs, *p); !r) return r.error();
  // xfrm_user_acquire has no family of its own: the larval SA takes its
  // family from the template it was made for (which may differ from the
  // selector's in a tunnel).
  std::uint16_t family = ua->sel.family;
  for (const auto& t : p->templates) {
    if (t.proto == ua->id.proto) {
      family = t.daddr.family == Family::inet ? AF_INET : AF_INET6;
      break;
    }
  }
  auto d = address(ua->id.daddr, family);
  if (!d) return d.error();
  auto s = address(ua->saddr, family);
  if (!s) return s.error();
  auto sel = selector(ua->sel);
  if (!sel) return sel.error();
  XfrmAcquire a;
  a.daddr = *d;
  a.spi = ntohl(ua->id.spi);
  a.proto = ua->id.proto;
  a.saddr = *s;
  a.selector = std::move(*sel);
  a.policy = std::move(*p);
  a.aalgos = ua->aalgos;
  a.ealgos = ua->ealgos;
  a.calgos = ua->calgos;
  a.seq = ua->seq;
  return XfrmMessage(std::move(a));
}

Result<XfrmMessage> parse_mapping(Bytes payload) {
  auto um = load_header<xfrm_user_mapping>(payload, "xfrm_user_mapping");
  if (!um) return um.error();
  auto id = sa_id(um->id);
  if (!id) return id.error();
  auto o = address(um->old_saddr, um->id.family);
  if (!o) return o.error();
  auto n = address(um->new_saddr, um->id.family);
  if (!n) return n.error();
  return XfrmMessage(XfrmMapping{*id, um->reqid, *o, *n, ntohs(um->old_sport), ntohs(um->new_sport)});
}

Result<XfrmMessage> parse_migrate(Bytes payload) {
  auto raw = load_header<xfrm_userpolicy_id>(payload, "xfrm_userpolicy_id");
  if (!raw) return raw.error();
  auto attrs = parse_attrs(after_header(payload, sizeof(xfrm_userpolicy_id)), kMigrateTable);
  if (!attrs) return attrs.error();
  auto id = policy_id(*raw);
  if (!id) return id.error();
  XfrmMigrate m;
  m.id = std::move(*id);
  m.ptype = policy_type(*attrs);
  if (!attrs->has(XFRMA_MIGRATE)) return make_error(Errc::malformed, "MIGRATE without XFRMA_MIGRATE");
  auto entries = array_of<xfrm_user_migrate>(attrs->get(XFRMA_MIGRATE), "XFRMA_MIGRATE");
  if (!entries) return entries.error();
  for (const auto& e : *entries) {
    XfrmMigrateEntry x;
    auto od = address(e.old_daddr, e.old_family);
    auto os = address(e.old_saddr, e.old_family);
    auto nd = address(e.new_daddr, e.new_family);
    auto ns = address(e.new_saddr, e.new_family);
    for (auto* r : {&od, &os, &nd, &ns})
      if (!*r) return r->error();
    x.old_daddr = *od;
    x.old_saddr = *os;
    x.new_daddr = *nd;
    x.new_saddr = *ns;
    x.proto = e.proto;
    x.mode = e.mode;
    x.reqid = e.reqid;
    m.entries.push_back(x);
  }
  return XfrmMessage(std::move(m));
}

Result<XfrmMessage> parse_async_event(Bytes payload) {
  auto ae = load_header<xfrm_aevent_id>(payload, "xfrm_aevent_id");
  if (!ae) return ae.error();
  auto attrs = parse_attrs(after_header(payload, sizeof(xfrm_aevent_id)), kAeTable);
  if (!attrs) return attrs.error();
  auto id = sa_id(ae->sa_id);
  if (!id) return id.error();
  auto s = address(ae->saddr, ae->sa_id.family);
  if (!s) return s.error();
  XfrmAsyncEvent e;
  e.id = *id;
  e.saddr = *s;
  e.flags = ae->flags;
  e.reqid = ae->reqid;
  if (attrs->has(XFRMA_REPLAY_VAL)) e.replay = replay_state(attrs->get(XFRMA_REPLAY_VAL));
  if (attrs->has(XFRMA_REPLAY_ESN_VAL)) {
    auto r = replay_esn(attrs->get(XFRMA_REPLAY_ESN_VAL));
    if (!r) return r.error();
    e.replay_esn = *r;
  }
  if (attrs->has(XFRMA_LTIME_VAL)) e.current = lifetime_cur(load<xfrm_lifetime_cur>(attrs->get(XFRMA_LTIME_VAL)));
  if (attrs->has(XFRMA_REPLAY_THRESH)) e.replay_threshold = load_u32(attrs->get(XFRMA_REPLAY_THRESH));
  if (attrs->has(XFRMA_ETIMER_THRESH)) e.timer_threshold = load_u32(attrs->get(XFRMA_ETIMER_THRESH));
  if (attrs->has(XFRMA_MARK)) e.mark = mark(attrs->get(XFRMA_MARK));
  if (attrs->has(XFRMA_IF_ID)) e.if_id = load_u32(attrs->get(XFRMA_IF_ID));
  return XfrmMessage(std::move(e));
}

Result<XfrmMessage> parse_aligned(const NetlinkMessage& m) {
  const Bytes p = m.payload;
  switch (m.type) {
    case XFRM_MSG_NEWSA:
    case XFRM_MSG_UPDSA:
      return parse_new_sa(m.type, p);
    case XFRM_MSG_DELSA:
      return parse_del_sa(p);
    case XFRM_MSG_EXPIRE:
      return parse_expire(p);
    case XFRM_MSG_NEWPOLICY:
    case XFRM_MSG_UPDPOLICY:
      return parse_new_policy(m.type, p);
    case XFRM_MSG_DELPOLICY:
      return parse_del_policy(p);
    case XFRM_MSG_POLEXPIRE:
      return parse_policy_expire(p);
    case XFRM_MSG_ACQUIRE:
      return parse_acquire(p);
    case XFRM_MSG_MAPPING:
      return parse_mapping(p);
    case XFRM_MSG_MIGRATE:
      return parse_migrate(p);
    case XFRM_MSG_NEWAE:
      return parse_async_event(p);
    case XFRM_MSG_FLUSHSA: {
      auto f = load_header<xfrm_usersa_flush>(p, "xfrm_usersa_flush");
      if (!f) return f.error();
      return XfrmMessage(XfrmFlushSa{f->proto});
    }
    case XFRM_MSG_FLUSHPOLICY: {
      // No fixed header: the payload is attributes only (or empty).
      auto attrs = parse_attrs(p, kFlushPolicyTable);
      if (!attrs) return attrs.error();
      return XfrmMessage(XfrmFlushPolicy{policy_type(*attrs)});
    }
    case XFRM_MSG_GETDEFAULT:
    case XFRM_MSG_SETDEFAULT: {
      auto d = load_header<xfrm_userpolicy_default>(p, "xfrm_userpolicy_default");
      if (!d) return d.error();
      return XfrmMessage(XfrmPolicyDefault{m.type, d->in, d->fwd, d->out});
    }
    default:
      return XfrmMessage(XfrmUnknown{m.type});
  }
}

}  // namespace

Result<XfrmMessage> parse_xfrm_message(const NetlinkMessage& message) {
  // libmnl reads nlattr headers in place; a payload that is not 4-byte
  // aligned (a caller's odd buffer) is parsed from an aligned copy instead.
  if (reinterpret_cast<std::uintptr_t>(message.payload.data()) % NLA_ALIGNTO != 0) {
    // The copy may hold an SA's keys: wiped before it is freed.
    std::vector<std::uint8_t> copy(message.payload.begin(), message.payload.end());
    NetlinkMessage aligned = message;
    aligned.payload = Bytes(copy);
    auto parsed = parse_aligned(aligned);
    explicit_bzero(copy.data(), copy.size());
    return parsed;
  }
  return parse_aligned(message);
}

const char* xfrm_message_name(std::uint16_t type) {
  switch (type) {
    case XFRM_MSG_NEWSA:
      return "NEWSA";
    case XFRM_MSG_DELSA:
      return "DELSA";
    case XFRM_MSG_GETSA:
      return "GETSA";
    case XFRM_MSG_NEWPOLICY:
      return "NEWPOLICY";
    case XFRM_MSG_DELPOLICY:
      return "DELPOLICY";
    case XFRM_MSG_GETPOLICY:
      return "GETPOLICY";
    case XFRM_MSG_ALLOCSPI:
      return "ALLOCSPI";
    case XFRM_MSG_ACQUIRE:
      return "ACQUIRE";
    case XFRM_MSG_EXPIRE:
      return "EXPIRE";
    case XFRM_MSG_UPDPOLICY:
      return "UPDPOLICY";
    case XFRM_MSG_UPDSA:
      return "UPDSA";
    case XFRM_MSG_POLEXPIRE:
      return "POLEXPIRE";
    case XFRM_MSG_FLUSHSA:
      return "FLUSHSA";
    case XFRM_MSG_FLUSHPOLICY:
      return "FLUSHPOLICY";
    case XFRM_MSG_NEWAE:
      return "NEWAE";
    case XFRM_MSG_GETAE:
      return "GETAE";
    case XFRM_MSG_REPORT:
      return "REPORT";
    case XFRM_MSG_MIGRATE:
      return "MIGRATE";
    case XFRM_MSG_NEWSADINFO:
      return "NEWSADINFO";
    case XFRM_MSG_GETSADINFO:
      return "GETSADINFO";
    case XFRM_MSG_NEWSPDINFO:
      return "NEWSPDINFO";
    case XFRM_MSG_GETSPDINFO:
      return "GETSPDINFO";
    case XFRM_MSG_MAPPING:
      return "MAPPING";
    case XFRM_MSG_SETDEFAULT:
      return "SETDEFAULT";
    case XFRM_MSG_GETDEFAULT:
      return "GETDEFAULT";
    default:
      return nullptr;
  }
}

}  // namespace ipsec
