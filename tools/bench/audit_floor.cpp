// ipsec-audit-floor: the cheapest reader of the kernel audit stream that
// still keeps every record, as a floor for the side-by-side benchmark
// (issue 17; tools/bench/sidebyside.py runs it next to auditd + laurel and
// the agent). It does what any consumer of AUDIT_NLGRP_READLOG must do and
// nothing more: join the group, sleep until the socket is readable, then
// read it every `tick_ms` with recvmmsg(2) until a read finds it empty, and
// append each record's text as one line to a file, one writev(2) per
// recvmmsg. No parse, no JSON, no SA, no accounting: whatever the agent
// costs above this reader is what its work costs; what this reader costs is
// what receiving the stream costs under the same kernel.
//
// Usage: ipsec-audit-floor OUTFILE [tick_ms]   (SIGTERM/SIGINT: stop)
// A benchmark tool, not part of the agent.
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/netlink.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace {

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

constexpr int kSlots = 64;
constexpr std::size_t kSlotBytes = 9000;  // MAX_AUDIT_MESSAGE_LENGTH 8970 + header

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s OUTFILE [tick_ms]\n", argv[0]);
    return 2;
  }
  const int tick_ms = argc > 2 ? std::atoi(argv[2]) : 50;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);

  const int out = ::open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (out < 0) {
    std::perror("open");
    return 1;
  }
  const int fd = ::socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_AUDIT);
  if (fd < 0) {
    std::perror("socket");
    return 1;
  }
  const int rcvbuf = 8 << 20;
  (void)::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);
  sockaddr_nl addr{};
  addr.nl_family = AF_NETLINK;
  addr.nl_groups = 1u << (AUDIT_NLGRP_READLOG - 1);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    std::perror("bind");
    return 1;
  }

  static std::array<std::array<char, kSlotBytes>, kSlots> bufs;
  std::array<iovec, kSlots> riov{};
  std::array<mmsghdr, kSlots> msgs{};
  std::array<iovec, 2 * kSlots> wiov{};
  static const char nl = '\n';
  unsigned long long records = 0, datagrams = 0, enobufs = 0, reads = 0, writes = 0, wakeups = 0;

  while (!g_stop) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, -1) < 0) continue;  // EINTR: look at g_stop
    ++wakeups;
    // Busy: read on the tick grid until a read finds the socket empty.
    for (bool busy = true; busy && !g_stop;) {
      const timespec ts{0, static_cast<long>(tick_ms) * 1000000L};
      ::nanosleep(&ts, nullptr);
      busy = false;
      for (;;) {
        for (int i = 0; i < kSlots; ++i) {
          riov[i] = {bufs[i].data(), kSlotBytes};
          msgs[i].msg_hdr = {};
          msgs[i].msg_hdr.msg_iov = &riov[i];
          msgs[i].msg_hdr.msg_iovlen = 1;
        }
        ++reads;
        const int n = ::recvmmsg(fd, msgs.data(), kSlots, MSG_DONTWAIT, nullptr);
        if (n < 0) {
          if (errno == ENOBUFS) {
            ++enobufs;
            continue;
          }
          break;  // EAGAIN: empty
        }
        busy = true;
        int w = 0;
        for (int i = 0; i < n; ++i) {
          ++datagrams;
          const auto len = msgs[i].msg_len;
          if (len < NLMSG_HDRLEN) continue;
          const auto* h = reinterpret_cast<const nlmsghdr*>(bufs[i].data());
          const std::size_t body = h->nlmsg_len > NLMSG_HDRLEN && h->nlmsg_len <= len ? h->nlmsg_len - NLMSG_HDRLEN : 0;
          if (body == 0) continue;
          ++records;
          wiov[w++] = {bufs[i].data() + NLMSG_HDRLEN, body};
          wiov[w++] = {const_cast<char*>(&nl), 1};
        }
        if (w > 0) {
          ++writes;
          if (::writev(out, wiov.data(), w) < 0) std::perror("writev");
        }
        if (n < kSlots) break;
      }
    }
  }
  std::fprintf(stderr, "floor: records %llu datagrams %llu enobufs %llu recvmmsg %llu writev %llu wakeups %llu\n",
               records, datagrams, enobufs, reads, writes, wakeups);
  return 0;
}
