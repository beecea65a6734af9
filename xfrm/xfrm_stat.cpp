#include "xfrm/xfrm_stat.hpp"

#include <unistd.h>

#include <cerrno>
#include <charconv>

namespace ipsec {

namespace {
bool is_name_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}
bool is_blank(char c) { return c == ' ' || c == '\t'; }
constexpr std::size_t kMaxLines = 256;
constexpr std::size_t kMaxBytes = 16 * 1024;
}  // namespace

Result<XfrmStat> parse_xfrm_stat(std::string_view text) {
  XfrmStat out;
  std::size_t lines = 0;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    if (line.empty()) continue;
    if (++lines > kMaxLines) return make_error(Errc::out_of_range, "xfrm_stat: more than 256 lines");
    auto bad = [&](const char* why) {
      return make_error(Errc::malformed, std::string("xfrm_stat: ") + why + " in line '" + printable(line) + "'");
    };
    std::size_t i = 0;
    while (i < line.size() && is_name_char(line[i])) ++i;
    if (i == 0) return bad("no counter name");
    const std::string_view name = line.substr(0, i);
    const std::size_t name_end = i;
    while (i < line.size() && is_blank(line[i])) ++i;
    if (i == name_end) return bad("no blank after the name");
    std::string_view num = line.substr(i);
    while (!num.empty() && is_blank(num.back())) num.remove_suffix(1);
    if (num.empty()) return bad("no value");
    std::uint64_t v = 0;
    const auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), v);
    if (ec == std::errc::result_out_of_range)
      return make_error(Errc::out_of_range, "xfrm_stat: value too large in line '" + printable(line) + "'");
    if (ec != std::errc{} || p != num.data() + num.size()) return bad("value is not a decimal number");
    if (!out.counters.emplace(std::string(name), v).second) return bad("repeated counter");
  }
  return out;
}

Result<XfrmStat> read_xfrm_stat(int fd) {
  if (::lseek(fd, 0, SEEK_SET) < 0) return make_error(Errc::io, "xfrm_stat: seek failed", errno);
  std::string text;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return make_error(Errc::io, "xfrm_stat: read failed", errno);
    }
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
    if (text.size() > kMaxBytes) return make_error(Errc::out_of_range, "xfrm_stat: larger than 16 KiB");
  }
  return parse_xfrm_stat(text);
}

}  // namespace ipsec
