#include "audit/state_snapshot.hpp"

#include "audit/xfrm_table.hpp"

#include <cstdint>
#include <limits>

namespace ipsec {

using nlohmann::json;

namespace {

json ip(const IpAddress& a) { return a.to_string(); }

json sel_json(const XfrmSelector& s) {
  json j = {{"family", s.family},         {"prefixlen_d", s.prefixlen_d}, {"prefixlen_s", s.prefixlen_s},
            {"dport", s.dport},           {"dport_mask", s.dport_mask},   {"sport", s.sport},
            {"sport_mask", s.sport_mask}, {"proto", s.proto},             {"ifindex", s.ifindex}};
  if (s.daddr) j["daddr"] = ip(*s.daddr);
  if (s.saddr) j["saddr"] = ip(*s.saddr);
  return j;
}

void put_mark(json& j, const std::optional<XfrmMark>& m, const std::optional<std::uint32_t>& if_id) {
  if (m) j["mark"] = {{"value", m->value}, {"mask", m->mask}};
  if (if_id) j["if_id"] = *if_id;
}

json sa_json(const XfrmSa& sa) {
  json j = {{"daddr", ip(sa.daddr)}, {"saddr", ip(sa.saddr)}, {"spi", sa.spi},     {"proto", sa.proto},
            {"reqid", sa.reqid},     {"mode", sa.mode},       {"flags", sa.flags}, {"selector", sel_json(sa.selector)}};
  put_mark(j, sa.mark, sa.if_id);
  return j;
}

json pol_json(const XfrmPolicy& p) {
  json t = json::array();
  for (const auto& x : p.templates)
    t.push_back({{"daddr", ip(x.daddr)},
                 {"saddr", ip(x.saddr)},
                 {"spi", x.spi},
                 {"proto", x.proto},
                 {"reqid", x.reqid},
                 {"mode", x.mode},
                 {"share", x.share},
                 {"optional", x.optional}});
  json j = {{"index", p.index},       {"dir", p.dir},     {"action", p.action},
            {"priority", p.priority}, {"ptype", p.ptype}, {"selector", sel_json(p.selector)},
            {"templates", std::move(t)}};
  put_mark(j, p.mark, p.if_id);
  return j;
}

// Reading back: every access is checked; the first problem is the error.
struct Reader {
  std::string problem;
  bool ok() const { return problem.empty(); }
  void fail(const std::string& what) {
    if (problem.empty()) problem = what;
  }
  const json* field(const json& o, const char* k) {
    if (!o.is_object()) {
      fail("not an object where one was expected");
      return nullptr;
    }
    auto it = o.find(k);
    if (it == o.end()) {
      fail(std::string("missing '") + k + "'");
      return nullptr;
    }
    return &*it;
  }
  template <typename T>
  T num(const json& o, const char* k) {
    const json* v = field(o, k);
    if (!v) return T{};
    if (!v->is_number_integer()) {
      fail(std::string("'") + k + "' is not a whole number");
      return T{};
    }
    using L = std::numeric_limits<T>;
    if (v->is_number_unsigned()) {
      const auto x = v->get<std::uint64_t>();
      if (x <= static_cast<std::uint64_t>(L::max())) return static_cast<T>(x);
    } else {
      const auto x = v->get<std::int64_t>();
      if (x >= static_cast<std::int64_t>(L::min()) && x <= static_cast<std::int64_t>(L::max()))
        return static_cast<T>(x);
    }
    fail(std::string("'") + k + "' is out of range");
    return T{};
  }
  IpAddress addr(const json& o, const char* k) {
    const json* v = field(o, k);
    if (!v) return {};
    if (!v->is_string()) {
      fail(std::string("'") + k + "' is not a string");
      return {};
    }
    auto a = IpAddress::parse(v->get<std::string>());
    if (!a) {
      fail(std::string("'") + k + "' is not an IP address");
      return {};
    }
    return *a;
  }
  std::optional<IpAddress> opt_addr(const json& o, const char* k) {
    if (!o.is_object() || !o.contains(k)) return std::nullopt;
    return addr(o, k);
  }
  XfrmSelector selector(const json& o) {
    XfrmSelector s;
    const json* j = field(o, "selector");
    if (!j) return s;
    s.family = num<std::uint16_t>(*j, "family");
    s.prefixlen_d = num<std::uint8_t>(*j, "prefixlen_d");
    s.prefixlen_s = num<std::uint8_t>(*j, "prefixlen_s");
    s.dport = num<std::uint16_t>(*j, "dport");
    s.dport_mask = num<std::uint16_t>(*j, "dport_mask");
    s.sport = num<std::uint16_t>(*j, "sport");
    s.sport_mask = num<std::uint16_t>(*j, "sport_mask");
    s.proto = num<std::uint8_t>(*j, "proto");
    s.ifindex = num<std::int32_t>(*j, "ifindex");
    s.daddr = opt_addr(*j, "daddr");
    s.saddr = opt_addr(*j, "saddr");
    return s;
  }
  void mark(const json& o, std::optional<XfrmMark>& m, std::optional<std::uint32_t>& if_id) {
    if (o.contains("mark")) {
      const json& mj = o["mark"];
      m = XfrmMark{num<std::uint32_t>(mj, "value"), num<std::uint32_t>(mj, "mask")};
    }
    if (o.contains("if_id")) if_id = num<std::uint32_t>(o, "if_id");
  }
  XfrmSa sa(const json& o) {
    XfrmSa s;
    if (!o.is_object()) {
      fail("an SA is not an object");
      return s;
    }
    s.daddr = addr(o, "daddr");
    s.saddr = addr(o, "saddr");
    s.spi = num<std::uint32_t>(o, "spi");
    s.proto = num<std::uint8_t>(o, "proto");
    s.reqid = num<std::uint32_t>(o, "reqid");
    s.mode = num<std::uint8_t>(o, "mode");
    s.flags = num<std::uint8_t>(o, "flags");
    s.selector = selector(o);
    mark(o, s.mark, s.if_id);
    return s;
  }
  XfrmPolicy policy(const json& o) {
    XfrmPolicy p;
    if (!o.is_object()) {
      fail("a policy is not an object");
      return p;
    }
    p.index = num<std::uint32_t>(o, "index");
    p.dir = num<std::uint8_t>(o, "dir");
    p.action = num<std::uint8_t>(o, "action");
    p.priority = num<std::uint32_t>(o, "priority");
    p.ptype = num<std::uint8_t>(o, "ptype");
    p.selector = selector(o);
    mark(o, p.mark, p.if_id);
    const json* t = field(o, "templates");
    if (t && !t->is_array()) fail("'templates' is not an array");
    if (t && t->is_array())
      for (const auto& x : *t) {
        XfrmTemplate tm;
        tm.daddr = addr(x, "daddr");
        tm.saddr = addr(x, "saddr");
        tm.spi = num<std::uint32_t>(x, "spi");
        tm.proto = num<std::uint8_t>(x, "proto");
        tm.reqid = num<std::uint32_t>(x, "reqid");
        tm.mode = num<std::uint8_t>(x, "mode");
        tm.share = num<std::uint8_t>(x, "share");
        tm.optional = num<std::uint8_t>(x, "optional");
        p.templates.push_back(tm);
      }
    return p;
  }
};

}  // namespace

std::string snapshot_text(const StateSnapshot& s) {
  json ns = json::object();
  for (const auto& [label, t] : s) {
    json sas = json::array(), pols = json::array();
    for (const auto& sa : t.sas) sas.push_back(sa_json(sa));
    for (const auto& p : t.policies) pols.push_back(pol_json(p));
    ns[label] = {{"sas", std::move(sas)}, {"policies", std::move(pols)}};
  }
  return json{{"format", kStateSnapshotFormat}, {"netns", std::move(ns)}}.dump() + "\n";
}

Result<StateSnapshot> parse_snapshot(std::string_view text) {
  const json doc = json::parse(text.begin(), text.end(), nullptr, false);
  if (doc.is_discarded()) return make_error(Errc::malformed, "state snapshot is not valid JSON");
  if (!doc.is_object() || doc.value("format", json()) != kStateSnapshotFormat)
    return make_error(Errc::unsupported, std::string("state snapshot is not in the format ") + kStateSnapshotFormat);
  const auto it = doc.find("netns");
  if (it == doc.end() || !it->is_object()) return make_error(Errc::malformed, "state snapshot has no 'netns' object");
  StateSnapshot out;
  Reader r;
  for (const auto& [label, t] : it->items()) {
    NetnsTables nt;
    const json* sas = r.field(t, "sas");
    const json* pols = r.field(t, "policies");
    if (!r.ok()) break;
    if (!sas->is_array() || !pols->is_array()) {
      r.fail("'sas' or 'policies' is not an array");
      break;
    }
    for (const auto& s : *sas) nt.sas.push_back(r.sa(s));
    for (const auto& p : *pols) nt.policies.push_back(r.policy(p));
    if (!r.ok()) break;
    out.emplace(label, std::move(nt));
  }
  if (!r.ok()) return make_error(Errc::malformed, "state snapshot: " + printable(r.problem, 200));
  return out;
}

std::vector<Event> changes_while_stopped(const std::string& netns, NetnsTables before, NetnsTables now,
                                         std::chrono::system_clock::time_point t) {
  XfrmTable table(netns);
  table.load(std::move(before.sas), std::move(before.policies));
  return table.diff_while_stopped(std::move(now.sas), std::move(now.policies), t);
}

}  // namespace ipsec
