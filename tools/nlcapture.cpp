// ipsec-audit-nlcapture: subscribe to netlink multicast groups (NETLINK_XFRM
// or NETLINK_AUDIT), optionally inside a named netns and optionally after
// sending a request, and append every datagram received, verbatim and
// nlmsghdr-framed, to a file. This is how tests/fixtures/ are captured; it
// reads through NetlinkSocket::receive, the agent's own read path.
//
// The output is the concatenation of the datagrams; since each is a sequence
// of aligned netlink messages, for_each_netlink_message walks the whole file.
#include <fcntl.h>
#include <linux/netlink.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "xfrm/fd.hpp"
#include "xfrm/ip_address.hpp"
#include "xfrm/kernel_audit.hpp"
#include "xfrm/netlink_socket.hpp"
#include "xfrm/netns.hpp"
#include "xfrm/secure_buffer.hpp"
#include "xfrm/xfrm_format.hpp"
#include "xfrm/xfrm_message.hpp"
#include "xfrm/xfrm_request.hpp"

using namespace ipsec;

namespace {

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

const char kUsage[] =
    "usage: ipsec-audit-nlcapture --out FILE [options]\n"
    "  --bus xfrm|audit        netlink family (default xfrm)\n"
    "  --group G               join multicast group G (repeatable); xfrm: acquire expire sa policy\n"
    "                          aevents migrate mapping, audit: readlog; or a number\n"
    "  --netns NAME            open the socket inside /run/netns/NAME\n"
    "  --dump sa|policy        send a dump request first (xfrm)\n"
    "  --get-default           send a GETDEFAULT request first (xfrm)\n"
    "  --get-sa DADDR SPI PROTO  send a GETSA request first (xfrm; SPI like 0x1001, PROTO a number)\n"
    "  --request FILE          send the nlmsghdr-framed request(s) in FILE first, verbatim\n"
    "  --count N               stop after N messages (not counting NLMSG_DONE/ERROR)\n"
    "  --timeout SECONDS       stop after this long (default: no limit)\n"
    "  --ready-file PATH       create PATH once subscribed and the request is sent\n"
    "  --print                 print one line per message on stdout (xfrm: parsed)\n"
    "Without --group, stops at the request's NLMSG_DONE or ACK.\n"
    "\n"
    "usage: ipsec-audit-nlcapture --decode FILE\n"
    "  parse a capture file of XFRM messages and print one line per message\n";

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr, "nlcapture: %s\n%s", msg.c_str(), kUsage);
  std::exit(2);
}

std::optional<unsigned long> parse_number(std::string_view s) {
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  const std::string t(s);
  errno = 0;
  const unsigned long v = std::strtoul(t.c_str(), &end, 0);
  if (errno != 0 || *end != '\0') return std::nullopt;
  return v;
}

unsigned group_number(int bus, std::string_view name) {
  if (auto n = parse_number(name)) return static_cast<unsigned>(*n);
  if (bus == NETLINK_AUDIT && name == "readlog") return kAuditGroupReadLog;
  if (bus == NETLINK_XFRM) {
    if (name == "acquire") return kXfrmGroupAcquire;
    if (name == "expire") return kXfrmGroupExpire;
    if (name == "sa") return kXfrmGroupSa;
    if (name == "policy") return kXfrmGroupPolicy;
    if (name == "aevents") return kXfrmGroupAevents;
    if (name == "migrate") return kXfrmGroupMigrate;
    if (name == "mapping") return kXfrmGroupMapping;
  }
  usage_error("unknown group " + std::string(name));
}

struct Options {
  std::string out;
  int bus{NETLINK_XFRM};
  std::vector<std::string> groups;
  std::string netns;
  std::vector<std::uint8_t> request;
  std::optional<unsigned long> count;
  std::optional<double> timeout;
  std::string ready_file;
  bool print{false};
};

Options parse_options(int argc, char** argv) {
  Options o;
  std::vector<std::string_view> args(argv + 1, argv + argc);
  auto need = [&](std::size_t& i, std::size_t n) {
    if (i + n >= args.size()) usage_error(std::string(args[i]) + " needs an argument");
  };
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string_view a = args[i];
    if (a == "--out") {
      need(i, 1);
      o.out = args[++i];
    } else if (a == "--bus") {
      need(i, 1);
      const std::string_view b = args[++i];
      if (b == "xfrm")
        o.bus = NETLINK_XFRM;
      else if (b == "audit")
        o.bus = NETLINK_AUDIT;
      else
        usage_error("unknown bus");
    } else if (a == "--group") {
      need(i, 1);
      o.groups.emplace_back(args[++i]);
    } else if (a == "--netns") {
      need(i, 1);
      o.netns = args[++i];
    } else if (a == "--dump") {
      need(i, 1);
      const std::string_view what = args[++i];
      if (what == "sa")
        o.request = build_xfrm_dump_sa(1);
      else if (what == "policy")
        o.request = build_xfrm_dump_policy(1);
      else
        usage_error("--dump takes sa or policy");
    } else if (a == "--get-default") {
      o.request = build_xfrm_get_default(1);
    } else if (a == "--get-sa") {
      need(i, 3);
      const auto daddr = IpAddress::parse(args[i + 1]);
      const auto spi = parse_number(args[i + 2]);
      const auto proto = parse_number(args[i + 3]);
      if (!daddr || !spi || !proto || *spi > 0xffffffffUL || *proto > 255) usage_error("bad --get-sa arguments");
      o.request = build_xfrm_get_sa(
          1, XfrmSaRef{*daddr, static_cast<std::uint32_t>(*spi), static_cast<std::uint8_t>(*proto), {}, {}});
      i += 3;
    } else if (a == "--request") {
      need(i, 1);
      std::ifstream in(std::string(args[++i]), std::ios::binary);
      if (!in) usage_error("cannot read the request file");
      o.request.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    } else if (a == "--count") {
      need(i, 1);
      o.count = parse_number(args[++i]);
      if (!o.count) usage_error("bad --count");
    } else if (a == "--timeout") {
      need(i, 1);
      char* end = nullptr;
      const std::string t(args[++i]);
      o.timeout = std::strtod(t.c_str(), &end);
      if (*end != '\0' || *o.timeout <= 0) usage_error("bad --timeout");
    } else if (a == "--ready-file") {
      need(i, 1);
      o.ready_file = args[++i];
    } else if (a == "--print") {
      o.print = true;
    } else if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else {
      usage_error("unknown argument " + std::string(a));
    }
  }
  if (o.out.empty()) usage_error("--out is required");
  if (o.groups.empty() && o.request.empty()) usage_error("nothing to capture: give --group and/or a request");
  return o;
}

bool write_all(int fd, const std::uint8_t* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

// Walks a capture file with the parsers the agent uses; exit status 1 if any message fails to parse.
int decode(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "nlcapture: cannot read %s\n", path.c_str());
    return 1;
  }
  const std::vector<std::uint8_t> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  int status = 0;
  auto walk = for_each_netlink_message(Bytes(data), [&](const NetlinkMessage& m) {
    if (m.type == NLMSG_DONE || m.type == NLMSG_ERROR || m.type == NLMSG_NOOP) {
      std::printf("control type=%u\n", m.type);
      return true;
    }
    auto x = parse_xfrm_message(m);
    if (!x) status = 1;
    std::printf("%s\n", x ? format_xfrm_message(*x).c_str() : ("PARSE ERROR: " + x.error().message).c_str());
    return true;
  });
  if (!walk) {
    std::fprintf(stderr, "nlcapture: bad framing: %s\n", walk.error().message.c_str());
    return 1;
  }
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string_view(argv[1]) == "--decode") return decode(argv[2]);
  const Options o = parse_options(argc, argv);

  auto sock = o.netns.empty() ? NetlinkSocket::open(o.bus) : open_netlink_socket_in_netns(o.netns, o.bus);
  if (!sock) {
    std::fprintf(stderr, "nlcapture: %s\n", sock.error().message.c_str());
    return 1;
  }
  (void)sock->set_receive_buffer(4 << 20);
  for (const auto& g : o.groups) {
    if (auto j = sock->join_group(group_number(o.bus, g)); !j) {
      std::fprintf(stderr, "nlcapture: group %s: %s\n", g.c_str(), j.error().message.c_str());
      return 1;
    }
  }
  // XFRM captures hold SA messages verbatim, keys included: owner-only, also
  // when appending to a file that was there before.
  UniqueFd out(::open(o.out.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!out.valid() || ::fchmod(out.get(), 0600) != 0) {
    std::fprintf(stderr, "nlcapture: open %s: %s\n", o.out.c_str(), std::strerror(errno));
    return 1;
  }
  if (o.bus == NETLINK_XFRM)
    std::fprintf(stderr,
                 "nlcapture: WARNING: %s receives raw XFRM messages; SA messages carry their keys. It is written mode "
                 "0600: keep it secret, never commit a capture of real SAs.\n",
                 o.out.c_str());

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  if (!o.request.empty()) {
    if (auto s = sock->send(o.request); !s) {
      std::fprintf(stderr, "nlcapture: %s\n", s.error().message.c_str());
      return 1;
    }
  }
  if (!o.ready_file.empty()) UniqueFd(::open(o.ready_file.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));

  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  SecureBuffer buf(256 * 1024);
  unsigned long messages = 0, datagrams = 0, overruns = 0, rejected = 0;
  bool finished = false;
  while (!g_stop && !finished) {
    int wait_ms = -1;
    if (o.timeout) {
      const double left = *o.timeout - std::chrono::duration<double>(Clock::now() - start).count();
      if (left <= 0) break;
      wait_ms = static_cast<int>(left * 1000) + 1;
    }
    pollfd p{sock->fd(), POLLIN, 0};
    const int pr = ::poll(&p, 1, wait_ms);
    if (pr < 0 && errno != EINTR) {
      std::perror("nlcapture: poll");
      return 1;
    }
    if (pr <= 0) continue;
    const auto r = sock->receive(buf.span());
    switch (r.status) {
      case NetlinkSocket::RecvStatus::again:
        continue;
      case NetlinkSocket::RecvStatus::overrun:
        ++overruns;
        std::fprintf(stderr, "nlcapture: ENOBUFS, the kernel dropped messages\n");
        continue;
      case NetlinkSocket::RecvStatus::rejected:
        ++rejected;
        continue;
      case NetlinkSocket::RecvStatus::truncated:
        ++rejected;
        buf.wipe(r.size);
        std::fprintf(stderr, "nlcapture: a datagram was truncated (MSG_TRUNC): dropped\n");
        continue;
      case NetlinkSocket::RecvStatus::error:
        std::fprintf(stderr, "nlcapture: receive: %s\n", std::strerror(r.err));
        return 1;
      case NetlinkSocket::RecvStatus::ok:
        break;
    }
    const Bytes datagram(buf.data(), r.size);
    // The kernel does not pad audit datagrams to NLMSG_ALIGNTO; pad each one
    // so that the file is one valid nlmsghdr stream (the padding is shorter
    // than a header and for_each_netlink_message skips it).
    static const std::uint8_t kZeros[NLMSG_ALIGNTO] = {};
    const std::size_t pad = NLMSG_ALIGN(datagram.size()) - datagram.size();
    if (!write_all(out.get(), datagram.data(), datagram.size()) || !write_all(out.get(), kZeros, pad)) {
      std::fprintf(stderr, "nlcapture: write %s: %s\n", o.out.c_str(), std::strerror(errno));
      return 1;
    }
    ++datagrams;
    auto walk = for_each_netlink_message(datagram, [&](const NetlinkMessage& m) {
      if (m.type == NLMSG_DONE || m.type == NLMSG_ERROR) {
        if (m.type == NLMSG_ERROR) {
          auto e = parse_netlink_error(m.payload);
          if (e && *e != 0) std::fprintf(stderr, "nlcapture: kernel error: %s\n", std::strerror(-*e));
        }
        if (o.groups.empty()) finished = true;
        return true;
      }
      if (m.type == NLMSG_NOOP) return true;
      ++messages;
      if (o.print) {
        if (o.bus == NETLINK_XFRM) {
          auto x = parse_xfrm_message(m);
          std::printf("%s\n", x ? format_xfrm_message(*x).c_str() : ("PARSE ERROR: " + x.error().message).c_str());
        } else {
          std::printf("type=%u %.*s\n", m.type, static_cast<int>(audit_record_text(m.payload).size()),
                      audit_record_text(m.payload).data());
        }
        std::fflush(stdout);
      }
      if (o.count && messages >= *o.count) finished = true;
      return true;
    });
    if (!walk) std::fprintf(stderr, "nlcapture: bad framing: %s\n", walk.error().message.c_str());
    buf.wipe(r.size);
  }
  std::fprintf(stderr, "nlcapture: %lu messages in %lu datagrams to %s (%lu overruns, %lu rejected)\n", messages,
               datagrams, o.out.c_str(), overruns, rejected);
  return 0;
}
