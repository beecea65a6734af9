#include "audit/json_writer.hpp"

#include <array>
#include <charconv>
#include <cstring>
#include <ctime>
#include <limits>

#include "audit/catalogue.hpp"

namespace ipsec {
namespace {

void append_uint(std::string& out, std::uint64_t v) {
  char b[24];
  auto [p, ec] = std::to_chars(b, b + sizeof b, v);
  (void)ec;
  out.append(b, p);
}

void append_int(std::string& out, std::int64_t v) {
  char b[24];
  auto [p, ec] = std::to_chars(b, b + sizeof b, v);
  (void)ec;
  out.append(b, p);
}

// A member's `,"k":` as one literal: K("spi") is ",\"spi\":" (one append
// of a length known at compile time).
#define K(name) ",\"" name "\":"

void key(std::string& out, std::string_view k) { out.append(k); }

// ,"k": of a key known only at run time (detail members).
void dyn_key(std::string& out, std::string_view k) {
  out += ",\"";
  out.append(k);
  out += "\":";
}

template <typename T>
void opt_uint(std::string& out, std::string_view k, const std::optional<T>& v) {
  key(out, k);
  if (v)
    append_uint(out, *v);
  else
    out += "null";
}

// Written only when present (where the schema says the key may be absent).
template <typename T>
void if_uint(std::string& out, std::string_view k, const std::optional<T>& v) {
  if (!v) return;
  key(out, k);
  append_uint(out, *v);
}

void if_string(std::string& out, std::string_view k, const std::optional<std::string>& v) {
  if (!v) return;
  key(out, k);
  append_json_string(out, *v);
}

// An address needs no escaping: its text goes straight between the quotes.
void addr_string(std::string& out, const IpAddress& a) {
  out += '"';
  a.append_to(out);
  out += '"';
}

void opt_addr(std::string& out, std::string_view k, const std::optional<IpAddress>& a) {
  key(out, k);
  if (a)
    addr_string(out, *a);
  else
    out += "null";
}

// Text known to need no escaping (names from this program's own tables).
void plain_string(std::string& out, std::string_view v) {
  out += '"';
  out.append(v);
  out += '"';
}

void addr_member(std::string& out, std::string_view k, const IpAddress& a) {
  key(out, k);
  addr_string(out, a);
}

// ---- the `sa` object (allow-listed fields of XfrmSa, never key material) ----

constexpr std::uint64_t kXfrmInf = ~std::uint64_t{0};  // XFRM_INF: no limit

// `key` for the first member of an object (no leading comma).
void first_key(std::string& out, std::string_view k) {
  out += '"';
  out.append(k);
  out += "\":";
}

void limit(std::string& out, std::string_view k, std::uint64_t v) {
  key(out, k);
  if (v == kXfrmInf)
    out += "null";
  else
    append_uint(out, v);
}

void uint_member(std::string& out, std::string_view k, std::uint64_t v) {
  key(out, k);
  append_uint(out, v);
}

void string_member(std::string& out, std::string_view k, std::string_view v) {
  key(out, k);
  append_json_string(out, v);
}

void append_limits(std::string& out, std::uint64_t bytes, std::uint64_t packets, std::uint64_t add, std::uint64_t use) {
  out += "{\"bytes\":";
  if (bytes == kXfrmInf)
    out += "null";
  else
    append_uint(out, bytes);
  limit(out, K("packets"), packets);
  uint_member(out, K("add_seconds"), add);
  uint_member(out, K("use_seconds"), use);
  out += '}';
}

void append_lifetime(std::string& out, const XfrmLifetimeCfg& l) {
  first_key(out, "soft");
  append_limits(out, l.soft_byte_limit, l.soft_packet_limit, l.soft_add_expires_seconds, l.soft_use_expires_seconds);
  key(out, K("hard"));
  append_limits(out, l.hard_byte_limit, l.hard_packet_limit, l.hard_add_expires_seconds, l.hard_use_expires_seconds);
}

void append_selector(std::string& out, const XfrmSelector& s) {
  first_key(out, "src");
  if (s.saddr)
    addr_string(out, *s.saddr);
  else
    out += "null";
  opt_addr(out, K("dst"), s.daddr);
  uint_member(out, K("src_prefixlen"), s.prefixlen_s);
  uint_member(out, K("dst_prefixlen"), s.prefixlen_d);
  uint_member(out, K("proto"), s.proto);
  if (s.sport_mask) uint_member(out, K("sport"), s.sport);
  if (s.dport_mask) uint_member(out, K("dport"), s.dport);
  if (s.ifindex) {
    key(out, K("ifindex"));
    append_int(out, s.ifindex);
  }
}

void append_mark(std::string& out, const std::optional<XfrmMark>& m) {
  if (!m) return;
  key(out, K("mark"));
  out += "{\"value\":";
  append_uint(out, m->value);
  uint_member(out, K("mask"), m->mask);
  out += '}';
}

// `full`: the whole object (change records); otherwise only what names the SA
// (packet records): no lifetime (configuration) and no current (a counter
// snapshot, stale on a packet record).
void append_sa(std::string& out, const SaContext& c, bool full) {
  const XfrmSa& sa = c.sa;
  out += '{';
  first_key(out, "netns");
  append_json_string(out, c.netns);
  uint_member(out, K("spi"), sa.spi);
  string_member(out, K("proto"), proto_name(sa.proto));
  addr_member(out, K("src"), sa.saddr);
  addr_member(out, K("dst"), sa.daddr);
  uint_member(out, K("reqid"), sa.reqid);
  string_member(out, K("mode"), mode_name(sa.mode));
  key(out, K("algorithms"));
  out += '{';
  std::string_view sep;
  auto alg = [&](std::string_view k, const std::string& name) {
    out.append(sep);
    sep = ",";
    first_key(out, k);
    out += "{\"name\":";
    append_json_string(out, name);
  };
  if (sa.aead) {
    alg("aead", sa.aead->name);
    uint_member(out, K("icv_bits"), sa.aead->icv_bits);
    out += '}';
  }
  if (sa.auth) {
    alg("auth", sa.auth->name);
    if (sa.auth->trunc_bits) uint_member(out, K("trunc_bits"), *sa.auth->trunc_bits);
    out += '}';
  }
  if (sa.enc) {
    alg("enc", *sa.enc);
    out += '}';
  }
  if (sa.comp) {
    alg("comp", *sa.comp);
    out += '}';
  }
  out += '}';
  uint_member(out, K("replay_window"), sa.replay_esn ? sa.replay_esn->replay_window : sa.replay_window);
  key(out, K("esn"));
  out += sa.esn() ? "true" : "false";
  if (full) {
    key(out, K("lifetime"));
    out += '{';
    append_lifetime(out, sa.lifetime);
    out += '}';
    key(out, K("current"));
    out += "{\"bytes\":";
    append_uint(out, sa.current.bytes);
    uint_member(out, K("packets"), sa.current.packets);
    uint_member(out, K("add_time"), sa.current.add_time);
    uint_member(out, K("use_time"), sa.current.use_time);
    out += '}';
  }
  key(out, K("selector"));
  out += '{';
  append_selector(out, sa.selector);
  out += '}';
  string_member(out, K("direction"), direction_name(c.direction));
  string_member(out, K("direction_source"), direction_source_name(c.direction_source));
  if (c.direction == SaDirection::unknown && c.direction_pending != DirectionPending::none)
    string_member(out, K("direction_reason"), direction_pending_name(c.direction_pending));
  if (sa.encap) {
    key(out, K("encap"));
    out += "{\"type\":";
    append_json_string(out, sa.encap->type == 2   ? "espinudp"
                            : sa.encap->type == 1 ? "espinudp-nonike"
                                                  : std::to_string(sa.encap->type));
    uint_member(out, K("sport"), sa.encap->sport);
    uint_member(out, K("dport"), sa.encap->dport);
    out += '}';
  }
  append_mark(out, sa.mark);
  if_uint(out, K("if_id"), sa.if_id);
  if (sa.spi == 0) {
    key(out, K("larval"));
    out += "true";
  }
  out += '}';
}

// The `audit` object (what the kernel audit record said beyond the packet
// fields); with `serial`, an audit candidate of an ambiguous change.
void append_audit(std::string& out, const KernelAuditFields& a, std::optional<std::uint64_t> serial) {
  out += "{\"op\":";
  append_json_string(out, a.op);
  if_uint(out, K("audit_serial"), serial);
  if_uint(out, K("auid"), a.auid);
  if_uint(out, K("ses"), a.ses);
  if_string(out, K("subj"), a.subj);
  if (a.res) {
    key(out, K("res"));
    append_int(out, *a.res);
  }
  if_uint(out, K("src_prefixlen"), a.src_prefixlen);
  if_uint(out, K("dst_prefixlen"), a.dst_prefixlen);
  if (!a.other.empty()) {
    key(out, K("fields"));
    out += '{';
    bool first = true;
    for (const auto& [k, v] : a.other) {
      if (!first) out += ',';
      first = false;
      append_json_string(out, k);
      out += ':';
      append_json_string(out, v);
    }
    out += '}';
  }
  out += '}';
}

void append_policy(std::string& out, const XfrmPolicy& p) {
  out += '{';
  first_key(out, "dir");
  append_json_string(out, policy_dir_name(p.dir));
  string_member(out, K("action"), p.action == 0 ? "allow" : "block");
  uint_member(out, K("priority"), p.priority);
  uint_member(out, K("index"), p.index);
  string_member(out, K("ptype"), p.ptype == 0 ? "main" : "sub");
  key(out, K("selector"));
  out += '{';
  append_selector(out, p.selector);
  out += '}';
  key(out, K("templates"));
  out += '[';
  for (std::size_t i = 0; i < p.templates.size(); ++i) {
    const XfrmTemplate& t = p.templates[i];
    if (i) out += ',';
    out += '{';
    first_key(out, "proto");
    append_json_string(out, proto_name(t.proto));
    string_member(out, K("mode"), mode_name(t.mode));
    uint_member(out, K("reqid"), t.reqid);
    key(out, K("optional"));
    out += t.optional ? "true" : "false";
    if (!t.saddr.is_unspecified()) addr_member(out, K("src"), t.saddr);
    if (!t.daddr.is_unspecified()) addr_member(out, K("dst"), t.daddr);
    if (t.spi) uint_member(out, K("spi"), t.spi);
    out += '}';
  }
  out += ']';
  key(out, K("lifetime"));
  out += '{';
  append_lifetime(out, p.lifetime);
  out += '}';
  append_mark(out, p.mark);
  if_uint(out, K("if_id"), p.if_id);
  out += '}';
}

// One candidate of an ambiguous match, or an SA the kernel did not match.
void append_candidate(std::string& out, const SaCandidate& c) {
  const SaContext& s = *c.sa;
  out += '{';
  first_key(out, "netns");
  append_json_string(out, s.netns);
  string_member(out, K("proto"), proto_name(s.sa.proto));
  uint_member(out, K("spi"), s.sa.spi);
  addr_member(out, K("src"), s.sa.saddr);
  addr_member(out, K("dst"), s.sa.daddr);
  string_member(out, K("direction"), direction_name(s.direction));
  append_mark(out, s.sa.mark);
  if_uint(out, K("if_id"), s.sa.if_id);
  if (c.reason != CandidateReason::none) string_member(out, K("reason"), candidate_reason_name(c.reason));
  out += '}';
}
}  // namespace

std::size_t utf8_len(std::string_view s, std::size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  std::size_t n = 0;
  std::uint32_t cp = 0;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
    cp = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    cp = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    cp = c & 0x07;
  } else
    return 0;
  if (i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    const auto cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (cc & 0x3F);
  }
  if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
    return 0;
  return n;
}

namespace {
// Bytes that go into a JSON string as themselves: printable ASCII but '"' and '\\'.
constexpr std::array<bool, 256> kSafe = [] {
  std::array<bool, 256> t{};
  for (int c = 0x20; c < 0x7F; ++c) t[static_cast<std::size_t>(c)] = c != '"' && c != '\\';
  return t;
}();

// Length of the run at the start of s that needs no escaping: eight bytes at
// a time while none of them is a control byte, '"', '\\', 0x7F or >= 0x80
// (each test only says whether such a byte is in the word), then bytewise.
std::size_t safe_run(std::string_view s) {
  constexpr std::uint64_t kOnes = 0x0101010101010101ULL;
  constexpr std::uint64_t kHigh = 0x8080808080808080ULL;
  auto has_zero = [](std::uint64_t v) { return (v - kOnes) & ~v & kHigh; };
  std::size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    std::uint64_t x;
    std::memcpy(&x, s.data() + i, 8);
    const std::uint64_t bad = (x & kHigh) | ((x - kOnes * 0x20) & ~x & kHigh) | has_zero(x ^ (kOnes * '"')) |
                              has_zero(x ^ (kOnes * '\\')) | has_zero(x ^ (kOnes * 0x7F));
    if (bad) break;
  }
  while (i < s.size() && kSafe[static_cast<unsigned char>(s[i])]) ++i;
  return i;
}
}  // namespace

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  for (std::size_t i = 0; i < s.size();) {
    // A run of printable ASCII that needs no escape goes in with one append.
    const std::size_t j = i + safe_run(s.substr(i));
    if (j > i) {
      out.append(s.data() + i, j - i);
      i = j;
      if (i == s.size()) break;
    }
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      switch (c) {
        case '"':
          out += "\\\"";
          break;
        case '\\':
          out += "\\\\";
          break;
        case '\n':
          out += "\\n";
          break;
        case '\r':
          out += "\\r";
          break;
        case '\t':
          out += "\\t";
          break;
        default: {
          const char u[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xF]};
          out.append(u, sizeof u);
        }
      }
      ++i;
      continue;
    }
    const std::size_t n = utf8_len(s, i);
    if (n == 0) {
      out += "\\ufffd";
      ++i;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  out += '"';
}

namespace {

// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's
// civil_from_days): no gmtime_r, no time zone lock.
void civil_from_days(std::int64_t z, std::int64_t* y, unsigned* m, unsigned* d) {
  z += 719468;
  const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = static_cast<std::int64_t>(yoe) + era * 400 + (*m <= 2);
}

void put2(char* p, unsigned v) {
  p[0] = static_cast<char>('0' + v / 10);
  p[1] = static_cast<char>('0' + v % 10);
}

// "YYYY-MM-DDTHH:MM:SS" of `secs`, as strftime("%Y-%m-%dT%H:%M:%S") of
// gmtime_r writes it; the last second's text is kept (records come in runs
// within one second).
struct SecondText {
  std::int64_t secs{std::numeric_limits<std::int64_t>::min()};
  char text[32]{};
  std::size_t len{0};
};

void format_second(SecondText& c, std::int64_t secs) {
  std::int64_t days = secs / 86400;
  std::int64_t rem = secs % 86400;
  if (rem < 0) {
    rem += 86400;
    --days;
  }
  std::int64_t y = 0;
  unsigned m = 0, d = 0;
  civil_from_days(days, &y, &m, &d);
  char* p = c.text;
  if (y >= 0 && y <= 9999) {
    const auto yy = static_cast<unsigned>(y);
    put2(p, yy / 100);
    put2(p + 2, yy % 100);
    p += 4;
  } else {
    auto [e, ec] = std::to_chars(p, p + 20, y);
    (void)ec;
    p = e;
  }
  *p++ = '-';
  put2(p, m);
  p += 2;
  *p++ = '-';
  put2(p, d);
  p += 2;
  *p++ = 'T';
  const auto r = static_cast<unsigned>(rem);
  put2(p, r / 3600);
  p[2] = ':';
  put2(p + 3, r / 60 % 60);
  p[5] = ':';
  put2(p + 6, r % 60);
  p += 8;
  c.len = static_cast<std::size_t>(p - c.text);
  c.secs = secs;
}

// Its members in nlohmann's order (sorted), as when it was a `detail` object.
void append_inference(std::string& out, const ReplayInference& r) {
  key(out, K("replay_inference"));
  out += "{\"counter_delta\":{\"replay\":";
  append_uint(out, r.replay_delta);
  uint_member(out, K("replay_window"), r.replay_window_delta);
  out += "},\"method\":\"sequence number against the current replay window\"";
  uint_member(out, K("records"), r.records);
  uint_member(out, K("window"), r.window);
  uint_member(out, K("window_top"), r.window_top);
  out += '}';
}

}  // namespace

void append_rfc3339(std::string& out, std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  const auto ns = duration_cast<nanoseconds>(t.time_since_epoch()).count();
  std::int64_t secs = ns / 1000000000;
  long frac = static_cast<long>(ns % 1000000000);
  if (frac < 0) {
    frac += 1000000000;
    --secs;
  }
  thread_local SecondText cache;
  if (cache.secs != secs) format_second(cache, secs);
  char b[48];
  std::memcpy(b, cache.text, cache.len);
  char* p = b + cache.len;
  *p++ = '.';
  for (int i = 8; i >= 0; --i) {
    p[i] = static_cast<char>('0' + frac % 10);
    frac /= 10;
  }
  p += 9;
  *p++ = 'Z';
  out.append(b, static_cast<std::size_t>(p - b));
}

std::string sa_json(const SaContext& c, bool full) {
  std::string out;
  out.reserve(full ? 640 : 512);
  append_sa(out, c, full);
  return out;
}

JsonWriter::JsonWriter(std::string host) { append_json_string(host_json_, host); }

void JsonWriter::write(const Event& e, std::string& out) const {
  const auto& cat = catalogue(e.kind);
  out.reserve(out.size() + 1024);
  out += "{\"schema\":\"";
  out.append(kSchemaId);
  out += '"';
  key(out, K("time"));
  out += '"';
  append_rfc3339(out, e.time);
  out += '"';
  key(out, K("kernel_time"));
  if (e.kernel) {
    const auto kt = std::chrono::system_clock::time_point(std::chrono::seconds(e.kernel->sec) +
                                                          std::chrono::milliseconds(e.kernel->msec));
    out += '"';
    append_rfc3339(out, kt);
    out += '"';
  } else {
    out += "null";
  }
  key(out, K("audit_serial"));
  if (e.kernel)
    append_uint(out, e.kernel->serial);
  else
    out += "null";
  key(out, K("event"));
  plain_string(out, cat.name);
  key(out, K("event_id"));
  if (cat.windows_id)
    append_int(out, *cat.windows_id);
  else
    out += "null";
  key(out, K("audit_class"));
  plain_string(out, audit_class_name(cat.audit_class));
  key(out, K("family"));
  const auto fam = e.src ? std::optional(e.src->family) : e.dst ? std::optional(e.dst->family) : std::nullopt;
  if (fam)
    plain_string(out, family_name(*fam));
  else
    out += "null";
  opt_uint(out, K("spi"), e.spi);
  opt_addr(out, K("src"), e.src);
  opt_addr(out, K("dst"), e.dst);
  opt_uint(out, K("seq"), e.seq);
  opt_uint(out, K("flow_label"), e.flow_label);
  key(out, K("sa"));
  if (e.sa) {
    const bool full = !is_packet_event(e.kind);
    const std::string& text = full ? e.sa->json : e.sa->packet_json;
    if (!text.empty())
      out += text;
    else
      append_sa(out, *e.sa, full);
  } else {
    out += "null";
  }
  key(out, K("source"));
  plain_string(out, source_name(e.source));
  key(out, K("count"));
  append_uint(out, e.count);
  key(out, K("host"));
  out.append(host_json_);
  key(out, K("message"));
  append_json_string(out, e.message);
  if_string(out, K("replay_detail"), e.replay_detail);
  if (e.replay_basis) string_member(out, K("replay_basis"), replay_basis_name(*e.replay_basis));
  if_string(out, K("replay_reason"), e.replay_reason);
  if_string(out, K("netns"), e.netns);
  if (e.correlation) string_member(out, K("correlation"), correlation_name(*e.correlation));
  if (e.sa_match != SaMatch::none) string_member(out, K("sa_match"), sa_match_name(e.sa_match));
  if (!e.sa_candidates.empty()) {
    key(out, K("sa_candidates"));
    out += '[';
    for (std::size_t i = 0; i < e.sa_candidates.size(); ++i) {
      if (i) out += ',';
      append_candidate(out, e.sa_candidates[i]);
    }
    out += ']';
  }
  if (e.audit) {
    key(out, K("audit"));
    append_audit(out, *e.audit, std::nullopt);
  }
  if (!e.audit_candidates.empty()) {
    key(out, K("audit_candidates"));
    out += '[';
    for (std::size_t i = 0; i < e.audit_candidates.size(); ++i) {
      if (i) out += ',';
      const auto& c = e.audit_candidates[i];
      append_audit(out, c.audit, c.kernel ? std::optional<std::uint64_t>(c.kernel->serial) : std::nullopt);
    }
    out += ']';
  }
  if (e.policy) {
    key(out, K("policy"));
    append_policy(out, *e.policy);
  }
  // `detail`'s members in key order (nlohmann's object is a sorted map), the
  // typed replay_inference among them where its key falls.
  constexpr std::string_view kInference = "replay_inference";
  bool inference = e.replay_inference.has_value();
  if (e.detail.is_object()) {
    for (const auto& [k, v] : e.detail.items()) {
      if (inference && std::string_view(k) > kInference) {
        append_inference(out, *e.replay_inference);
        inference = false;
      }
      dyn_key(out, k);
      out += v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
  }
  if (inference) append_inference(out, *e.replay_inference);
  out += "}\n";
}

}  // namespace ipsec
