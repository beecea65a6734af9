// Result<T>: a value or an Error, for the event path (no exceptions there).
// C++20 has no std::expected; this is the small subset the project uses.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace ipsec {

enum class Errc {
  truncated,     // input shorter than its own header says
  malformed,     // structurally wrong (bad syntax, bad length field)
  out_of_range,  // a number that does not fit its field
  unsupported,   // well-formed but of a kind this parser does not handle
  io,            // a system call failed (errno in Error::sys_errno)
};

struct Error {
  Errc code{Errc::malformed};
  std::string message;  // one readable sentence, no trailing period
  int sys_errno{0};
};

inline Error make_error(Errc c, std::string msg, int e = 0) { return Error{c, std::move(msg), e}; }

// Untrusted text quoted in an error message: at most `max` bytes of it (then
// "..."), anything but printable ASCII as \xNN, so the message stays one
// readable line whatever the input held.
inline std::string printable(std::string_view s, std::size_t max = 64) {
  constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (const char ch : s.substr(0, max)) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c <= 0x7e && c != '\\') {
      out += ch;
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  if (s.size() > max) out += "...";
  return out;
}

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T v) : v_(std::move(v)) {}      // NOLINT(google-explicit-constructor)
  Result(Error e) : v_(std::move(e)) {}  // NOLINT(google-explicit-constructor)
  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &std::get<0>(v_); }
  const T* operator->() const { return &std::get<0>(v_); }
  T& operator*() & { return std::get<0>(v_); }
  const T& operator*() const& { return std::get<0>(v_); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

struct Unit {};

}  // namespace ipsec
