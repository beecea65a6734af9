#include "xfrm/audit_record.hpp"

#include <algorithm>
#include <charconv>
#include <chrono>

namespace ipsec {
namespace {

constexpr std::size_t kMaxFields = 64;  // a 1415 record has about a dozen

template <typename T>
bool parse_uint(std::string_view s, T* out, int base = 10) {
  if (s.empty()) return false;
  T v{};
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
  if (ec != std::errc{} || p != s.data() + s.size()) return false;
  *out = v;
  return true;
}

bool parse_hex32(std::string_view s, std::uint32_t* out) {
  if (s.size() < 3 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X')) return false;
  return parse_uint(s.substr(2), out, 16);
}

// The key comes from the record: printable() keeps the message one line.
Error field_error(std::string_view key, std::string_view what) {
  std::string m = "field " + printable(key, 32);
  m += ": ";
  m.append(what);
  return make_error(Errc::malformed, std::move(m));
}

// spi=4097(0x1001): both spellings must agree. A bare decimal is accepted too.
bool parse_spi(std::string_view v, std::uint32_t* out) {
  const auto open = v.find('(');
  if (open == std::string_view::npos) return parse_uint(v, out);
  if (v.back() != ')') return false;
  std::uint32_t dec = 0, hex = 0;
  if (!parse_uint(v.substr(0, open), &dec)) return false;
  if (!parse_hex32(v.substr(open + 1, v.size() - open - 2), &hex)) return false;
  if (dec != hex) return false;
  *out = dec;
  return true;
}

}  // namespace

Result<AuditHeader> parse_audit_header(std::string_view text, std::string_view* rest) {
  constexpr std::string_view kOpen = "audit(";
  if (text.substr(0, kOpen.size()) != kOpen) return make_error(Errc::malformed, "record does not start with audit(");
  text.remove_prefix(kOpen.size());
  const auto close = text.find("):");
  if (close == std::string_view::npos) return make_error(Errc::truncated, "audit header is not closed");
  const std::string_view stamp = text.substr(0, close);
  const auto dot = stamp.find('.');
  const auto colon = stamp.find(':');
  if (dot == std::string_view::npos || colon == std::string_view::npos || colon < dot)
    return make_error(Errc::malformed, "audit header is not SEC.MSEC:SERIAL");
  AuditHeader h;
  // The record's time becomes a system_clock time point (nanoseconds since
  // 1970 in 64 bits: up to the year 2262), so later seconds are refused here.
  constexpr auto kMaxSec = std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::system_clock::duration::max() - std::chrono::seconds(1))
                               .count();
  std::uint64_t sec = 0;
  if (!parse_uint(stamp.substr(0, dot), &sec) || sec > static_cast<std::uint64_t>(kMaxSec))
    return make_error(Errc::out_of_range, "audit header seconds are not a number before the year 2262");
  h.sec = static_cast<std::int64_t>(sec);
  const std::string_view ms = stamp.substr(dot + 1, colon - dot - 1);
  if (ms.size() != 3 || !parse_uint(ms, &h.msec))
    return make_error(Errc::malformed, "audit header milliseconds are not 3 digits");
  if (!parse_uint(stamp.substr(colon + 1), &h.serial))
    return make_error(Errc::out_of_range, "audit header serial is not a 64-bit number");
  text.remove_prefix(close + 2);
  while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
  *rest = text;
  return h;
}

namespace {

std::string_view trim_record(std::string_view text) {
  while (!text.empty() && (text.back() == '\0' || text.back() == '\n')) text.remove_suffix(1);
  return text;
}

// One key=value field into `r`; an error when its value does not parse or it
// appears twice (then `r` is unchanged).
std::optional<Error> parse_field(std::string_view key, std::string_view val, IpsecAuditRecord& r) {
  auto dup = [&](bool present) { return present ? std::optional<Error>(field_error(key, "appears twice")) : std::nullopt; };
  if (key == "op") {
    if (!r.op.empty()) return dup(true);
    if (val.empty()) return field_error(key, "empty");
    r.op.assign(val);
  } else if (key == "src" || key == "dst") {
    auto& slot = key == "src" ? r.src : r.dst;
    if (slot) return dup(true);
    slot = IpAddress::parse(val);
    if (!slot) return field_error(key, "not an IP address");
  } else if (key == "spi") {
    if (r.spi) return dup(true);
    std::uint32_t v = 0;
    if (!parse_spi(val, &v)) return field_error(key, "not N(0xN) with equal values");
    r.spi = v;
  } else if (key == "seqno") {
    if (r.seqno) return dup(true);
    std::uint32_t v = 0;
    if (!parse_uint(val, &v)) return field_error(key, "not a 32-bit number");
    r.seqno = v;
  } else if (key == "flowlbl") {
    if (r.flowlbl) return dup(true);
    std::uint32_t v = 0;
    if (!parse_hex32(val, &v) || v > 0xFFFFF) return field_error(key, "not a 20-bit hex flow label");
    r.flowlbl = v;
  } else if (key == "auid" || key == "ses") {
    auto& slot = key == "auid" ? r.auid : r.ses;
    if (slot) return dup(true);
    std::uint32_t v = 0;
    if (!parse_uint(val, &v)) return field_error(key, "not a 32-bit number");
    slot = v;
  } else if (key == "subj") {
    if (r.subj) return dup(true);
    r.subj = std::string(val);
  } else if (key == "res") {
    if (r.res) return dup(true);
    std::uint32_t v = 0;
    if (!parse_uint(val, &v) || v > 1) return field_error(key, "not 0 or 1");
    r.res = static_cast<std::int32_t>(v);
  } else if (key == "src_prefixlen" || key == "dst_prefixlen") {
    auto& slot = key == "src_prefixlen" ? r.src_prefixlen : r.dst_prefixlen;
    if (slot) return dup(true);
    std::uint32_t v = 0;
    if (!parse_uint(val, &v) || v > 128) return field_error(key, "not a prefix length");
    slot = static_cast<std::uint8_t>(v);
  } else {
    for (const auto& kv : r.other)
      if (kv.first == key) return dup(true);
    r.other.emplace_back(std::string(key), std::string(val));
  }
  return std::nullopt;
}

// The fields after the header, into `r`. Strict (`problem` null): the first
// problem is the result. Lenient: a token with no key=value right after subj=
// is more of the label (an LSM context with a space, "subj=/usr/bin/x
// (enforce)"); any other token or field that does not parse is skipped, and
// the first problem is kept in *problem.
Result<Unit> parse_fields(std::string_view body, IpsecAuditRecord& r, std::string* problem) {
  std::size_t nfields = 0;
  bool after_subj = false;
  auto fail = [&](const Error& e) {
    if (problem != nullptr && problem->empty()) *problem = e.message;
    return problem == nullptr;
  };
  while (true) {
    while (!body.empty() && body.front() == ' ') body.remove_prefix(1);
    if (body.empty()) break;
    if (++nfields > kMaxFields) {
      const Error e = make_error(Errc::out_of_range, "more than 64 fields");
      if (fail(e)) return e;
      break;  // the rest stays in the raw text
    }
    const auto eq = body.find('=');
    const auto sp = body.find(' ');
    if (eq == std::string_view::npos || (sp != std::string_view::npos && sp < eq) || eq == 0) {
      const std::string_view token = body.substr(0, sp);
      body.remove_prefix(token.size());
      if (problem != nullptr && after_subj) {
        if (problem->empty()) *problem = "field subj: a label with a space (taken as one label)";
        r.subj->append(" ").append(token);
        continue;
      }
      const Error e = make_error(Errc::malformed, "token without key=value");
      if (fail(e)) return e;
      continue;
    }
    const std::string_view key = body.substr(0, eq);
    body.remove_prefix(eq + 1);
    std::string_view val;
    if (!body.empty() && body.front() == '"') {
      const auto endq = body.find('"', 1);
      if (endq == std::string_view::npos) {
        const Error e = field_error(key, "unterminated quoted value");
        if (fail(e)) return e;
        break;  // nothing after it can be told apart
      }
      val = body.substr(1, endq - 1);
      body.remove_prefix(endq + 1);
      if (!body.empty() && body.front() != ' ') {
        const Error e = field_error(key, "junk after quoted value");
        if (fail(e)) return e;
        body.remove_prefix(std::min(body.find(' '), body.size()));
        after_subj = false;
        continue;
      }
    } else {
      // The space found above ends the value too: the text is scanned once.
      const auto end = sp == std::string_view::npos ? body.size() : sp - eq - 1;
      val = body.substr(0, end);
      body.remove_prefix(end);
    }
    if (auto e = parse_field(key, val, r)) {
      if (fail(*e)) return *e;
      after_subj = false;
      continue;
    }
    after_subj = key == "subj";
  }
  return Unit{};
}

}  // namespace

Result<IpsecAuditRecord> parse_ipsec_audit_record(std::string_view text) {
  text = trim_record(text);
  IpsecAuditRecord r;
  std::string_view body;
  auto hdr = parse_audit_header(text, &body);
  if (!hdr) return hdr.error();
  r.header = *hdr;
  if (auto f = parse_fields(body, r, nullptr); !f) return f.error();
  if (r.op.empty()) return make_error(Errc::malformed, "record has no op field");
  if (r.src && r.dst && r.src->family != r.dst->family)
    return make_error(Errc::malformed, "src and dst are of different address families");
  return r;
}

SalvagedAuditRecord salvage_ipsec_audit_record(std::string_view text) {
  text = trim_record(text);
  SalvagedAuditRecord s;
  s.text.assign(text.substr(0, kMaxSalvagedText));
  std::string_view body;
  auto hdr = parse_audit_header(text, &body);
  if (!hdr) {
    s.problem = hdr.error().message;
    return s;  // no header: no field can be trusted to be one
  }
  s.header = *hdr;
  s.fields.header = *hdr;
  (void)parse_fields(body, s.fields, &s.problem);
  if (s.fields.op.empty() && s.problem.empty()) s.problem = "record has no op field";
  if (s.fields.src && s.fields.dst && s.fields.src->family != s.fields.dst->family) {
    if (s.problem.empty()) s.problem = "src and dst are of different address families";
    s.fields.src.reset();
    s.fields.dst.reset();
  }
  return s;
}

}  // namespace ipsec
