// The bodies of the libFuzzer targets, one function per parser of untrusted
// input, in a library built in every tree: the fuzzers (fuzz_main.cpp, clang
// only) call them on generated inputs, and tests/unit replays the regression
// inputs in tests/fixtures/fuzz/<name>/ through them in the normal build.
//
// Each function feeds its input through the parser the way the agent does and
// on into the JSON writer where the agent would, and returns "" or the
// invariant the input broke (a crash or sanitizer report is a finding too).
#pragma once

#include <span>
#include <string>

#include "xfrm/netlink_message.hpp"

namespace ipsec::fuzz {

// One kernel audit record's text (MAC_IPSEC_EVENT) -> Event -> JSON line.
std::string audit_text(Bytes input);
// One NETLINK_AUDIT datagram, as KernelAuditSource reads it: framing, then
// every MAC_IPSEC_EVENT record -> Event -> JSON line.
std::string audit_datagram(Bytes input);
// A reply to AUDIT_GET: framing, NLMSG_ERROR, audit_status.
std::string audit_status(Bytes input);
// One or more XFRM datagrams: framing, parse_xfrm_message, a fresh XfrmTable
// per input, every record it makes -> JSON line.
std::string xfrm_message(Bytes input);
// One NETLINK_NETFILTER datagram from nfnetlink_log: framing, then every
// packet message -> parse_nflog_packet (with the L3/L4 headers).
std::string nflog_datagram(Bytes input);
// The config file (JSON) applied to default options.
std::string config(Bytes input);
// The agent's other text inputs: /proc/net/xfrm_stat (parse_xfrm_stat) and
// the state snapshot (parse_snapshot, then the while_stopped diff both ways
// -> JSON lines).
std::string state_text(Bytes input);
// A control socket request line (parse_control_request), and the same bytes
// as the audit policy file (parse_audit_policy, written back and read again).
std::string control_request(Bytes input);

struct Target {
  const char* name;
  std::string (*run)(Bytes);
};
// Every target above, by name (the fuzzer is fuzz_<name>).
std::span<const Target> targets();

}  // namespace ipsec::fuzz
