#include "audit/json_writer.hpp"

#include <charconv>
#include <ctime>

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

void key(std::string& out, std::string_view k) {
  out += ',';
  out += '"';
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

void opt_addr(std::string& out, std::string_view k, const std::optional<IpAddress>& a) {
  key(out, k);
  if (a)
    append_json_string(out, a->to_string());
  else
    out += "null";
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

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  for (std::size_t i = 0; i < s.size();) {
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
        default:
          if (c < 0x20 || c == 0x7F) {
            out += "\\u00";
            out += kHex[c >> 4];
            out += kHex[c & 0xF];
          } else {
            out += static_cast<char>(c);
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

void append_rfc3339(std::string& out, std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  const auto ns = duration_cast<nanoseconds>(t.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ns / 1000000000);
  long frac = static_cast<long>(ns % 1000000000);
  if (frac < 0) {
    frac += 1000000000;
    --secs;
  }
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char b[48];
  const std::size_t n = std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S", &tm);
  out.append(b, n);
  char f[16];
  std::snprintf(f, sizeof f, ".%09ldZ", frac);
  out += f;
}

void JsonWriter::write(const Event& e, std::string& out) const {
  const auto& cat = catalogue(e.kind);
  out += "{\"schema\":\"";
  out.append(kSchemaId);
  out += '"';
  key(out, "time");
  out += '"';
  append_rfc3339(out, e.time);
  out += '"';
  key(out, "kernel_time");
  if (e.kernel) {
    const auto kt = std::chrono::system_clock::time_point(std::chrono::seconds(e.kernel->sec) +
                                                          std::chrono::milliseconds(e.kernel->msec));
    out += '"';
    append_rfc3339(out, kt);
    out += '"';
  } else {
    out += "null";
  }
  key(out, "audit_serial");
  if (e.kernel)
    append_uint(out, e.kernel->serial);
  else
    out += "null";
  key(out, "event");
  append_json_string(out, cat.name);
  key(out, "event_id");
  if (cat.windows_id)
    append_int(out, *cat.windows_id);
  else
    out += "null";
  key(out, "audit_class");
  append_json_string(out, audit_class_name(cat.audit_class));
  key(out, "family");
  const auto fam = e.src ? std::optional(e.src->family) : e.dst ? std::optional(e.dst->family) : std::nullopt;
  if (fam)
    append_json_string(out, family_name(*fam));
  else
    out += "null";
  opt_uint(out, "spi", e.spi);
  opt_addr(out, "src", e.src);
  opt_addr(out, "dst", e.dst);
  opt_uint(out, "seq", e.seq);
  opt_uint(out, "flow_label", e.flow_label);
  key(out, "sa");
  if (e.sa_json)
    out += *e.sa_json;
  else
    out += "null";
  key(out, "source");
  append_json_string(out, source_name(e.source));
  key(out, "count");
  append_uint(out, e.count);
  key(out, "host");
  append_json_string(out, host_);
  key(out, "message");
  append_json_string(out, e.message);
  if_string(out, "replay_detail", e.replay_detail);
  if_string(out, "netns", e.netns);
  if_string(out, "correlation", e.correlation);
  if (e.audit) {
    const auto& a = *e.audit;
    key(out, "audit");
    out += "{\"op\":";
    append_json_string(out, a.op);
    if_uint(out, "auid", a.auid);
    if_uint(out, "ses", a.ses);
    if_string(out, "subj", a.subj);
    if (a.res) {
      key(out, "res");
      append_int(out, *a.res);
    }
    if_uint(out, "src_prefixlen", a.src_prefixlen);
    if_uint(out, "dst_prefixlen", a.dst_prefixlen);
    if (!a.other.empty()) {
      key(out, "fields");
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
  if (e.detail.is_object()) {
    for (const auto& [k, v] : e.detail.items()) {
      key(out, k);
      out += v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
  }
  out += "}\n";
}

}  // namespace ipsec
