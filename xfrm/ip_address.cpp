#include "xfrm/ip_address.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace ipsec {

namespace {
// glibc's inet_pton4, over a string_view (no copy, no NUL, no call): 1 to 3
// decimal digits per octet, no leading zero, at most 255, exactly four.
bool parse_v4(std::string_view s, std::uint8_t* out) {
  std::uint8_t tmp[4] = {0, 0, 0, 0};
  int octet = 0;
  bool saw_digit = false;
  for (const char ch : s) {
    if (ch >= '0' && ch <= '9') {
      const unsigned v = tmp[octet] * 10U + static_cast<unsigned>(ch - '0');
      if (saw_digit && tmp[octet] == 0) return false;
      if (v > 255) return false;
      tmp[octet] = static_cast<std::uint8_t>(v);
      saw_digit = true;
    } else if (ch == '.' && saw_digit) {
      if (octet == 3) return false;
      ++octet;
      saw_digit = false;
    } else {
      return false;
    }
  }
  if (octet != 3 || !saw_digit) return false;
  std::memcpy(out, tmp, 4);
  return true;
}
}  // namespace

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
  if (text.find(':') == std::string_view::npos) {
    // The audit records' usual case, without inet_pton (same rules).
    IpAddress a;
    if (!parse_v4(text, a.bytes.data())) return std::nullopt;
    a.family = Family::inet;
    return a;
  }
  char buf[INET6_ADDRSTRLEN + 8];
  if (text.empty() || text.size() >= sizeof buf || text.find('\0') != std::string_view::npos) return std::nullopt;
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  IpAddress a;
  if (inet_pton(AF_INET6, buf, a.bytes.data()) != 1) return std::nullopt;
  a.family = Family::inet6;
  return a;
}

IpAddress IpAddress::from_v4(const void* p) {
  IpAddress a;
  a.family = Family::inet;
  std::memcpy(a.bytes.data(), p, 4);
  return a;
}

IpAddress IpAddress::from_v6(const void* p) {
  IpAddress a;
  a.family = Family::inet6;
  std::memcpy(a.bytes.data(), p, 16);
  return a;
}

namespace {

char* put_dec8(char* p, unsigned v) {
  if (v >= 100) {
    *p++ = static_cast<char>('0' + v / 100);
    v %= 100;
    *p++ = static_cast<char>('0' + v / 10);
    *p++ = static_cast<char>('0' + v % 10);
  } else if (v >= 10) {
    *p++ = static_cast<char>('0' + v / 10);
    *p++ = static_cast<char>('0' + v % 10);
  } else {
    *p++ = static_cast<char>('0' + v);
  }
  return p;
}

char* put_v4(char* p, const std::uint8_t* b) {
  p = put_dec8(p, b[0]);
  *p++ = '.';
  p = put_dec8(p, b[1]);
  *p++ = '.';
  p = put_dec8(p, b[2]);
  *p++ = '.';
  return put_dec8(p, b[3]);
}

// "%x" of a 16-bit word: lower case, no leading zeros.
char* put_hex16(char* p, unsigned w) {
  static constexpr char kHex[] = "0123456789abcdef";
  bool started = false;
  for (int shift = 12; shift >= 0; shift -= 4) {
    const unsigned d = (w >> shift) & 0xF;
    if (d != 0 || started || shift == 0) {
      *p++ = kHex[d];
      started = true;
    }
  }
  return p;
}

}  // namespace

// IPv6 exactly as glibc's inet_ntop writes it (RFC 5952): the longest run of
// two or more zero words (the first of equal runs) becomes "::", and
// ::a.b.c.d / ::ffff:a.b.c.d keep their IPv4 tail in dotted form.
std::size_t IpAddress::format(char* out) const {
  const std::uint8_t* b = bytes.data();
  if (family == Family::inet) return static_cast<std::size_t>(put_v4(out, b) - out);
  unsigned w[8];
  for (int i = 0; i < 8; ++i) w[i] = (unsigned{b[2 * i]} << 8) | b[2 * i + 1];
  int best = -1, best_len = 0, cur = -1, cur_len = 0;
  for (int i = 0; i < 8; ++i) {
    if (w[i] == 0) {
      if (cur == -1) {
        cur = i;
        cur_len = 1;
      } else {
        ++cur_len;
      }
    } else if (cur != -1) {
      if (best == -1 || cur_len > best_len) {
        best = cur;
        best_len = cur_len;
      }
      cur = -1;
    }
  }
  if (cur != -1 && (best == -1 || cur_len > best_len)) {
    best = cur;
    best_len = cur_len;
  }
  if (best != -1 && best_len < 2) best = -1;
  char* p = out;
  for (int i = 0; i < 8; ++i) {
    if (best != -1 && i >= best && i < best + best_len) {
      if (i == best) *p++ = ':';
      continue;
    }
    if (i != 0) *p++ = ':';
    if (i == 6 && best == 0 && (best_len == 6 || (best_len == 5 && w[5] == 0xffff))) {
      p = put_v4(p, b + 12);
      return static_cast<std::size_t>(p - out);
    }
    p = put_hex16(p, w[i]);
  }
  if (best != -1 && best + best_len == 8) *p++ = ':';
  return static_cast<std::size_t>(p - out);
}

void IpAddress::append_to(std::string& out) const {
  char buf[kMaxText];
  out.append(buf, format(buf));
}

std::string IpAddress::to_string() const {
  char buf[kMaxText];
  return std::string(buf, format(buf));
}

bool IpAddress::is_unspecified() const {
  const std::size_t n = family == Family::inet ? 4 : 16;
  return std::all_of(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n),
                     [](std::uint8_t b) { return b == 0; });
}

const char* family_name(Family f) { return f == Family::inet ? "inet" : "inet6"; }

}  // namespace ipsec
