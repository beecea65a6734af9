#include "tests/fuzz/fuzz_targets.hpp"

#include <linux/netlink.h>

#include <array>
#include <chrono>
#include <string_view>

#include "agent/options.hpp"
#include "audit/control_protocol.hpp"
#include "audit/json_writer.hpp"
#include "audit/policy.hpp"
#include "audit/normalize.hpp"
#include "audit/state_snapshot.hpp"
#include "audit/xfrm_table.hpp"
#include "tests/fuzz/json_check.hpp"
#include "xfrm/audit_record.hpp"
#include "xfrm/kernel_audit.hpp"
#include "xfrm/nflog_message.hpp"
#include "xfrm/xfrm_message.hpp"
#include "xfrm/xfrm_stat.hpp"

namespace ipsec::fuzz {
namespace {

// A fixed clock: the same input always gives the same output.
const std::chrono::system_clock::time_point kNow{std::chrono::seconds(1795394826)};

// Errors are one readable line (the agent logs them as such).
std::string check_error(const Error& e, std::string_view what) {
  if (e.message.empty()) return std::string(what) + ": error without a message";
  if (e.message.find('\n') != std::string::npos) return std::string(what) + ": error message spans lines";
  return {};
}

// What the writer makes of `e` is exactly one line of valid JSON.
std::string write_checked(const JsonWriter& w, const Event& e) {
  std::string out;
  w.write(e, out);
  return is_one_json_line(out) ? "" : "record is not one line of valid JSON: " + out;
}

std::string_view as_text(Bytes b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

std::string audit_record(std::string_view text, const JsonWriter& w) {
  auto rec = parse_ipsec_audit_record(text);
  if (!rec) return check_error(rec.error(), "audit record");
  return write_checked(w, event_from_ipsec_audit(*rec, kNow));
}

}  // namespace

std::string audit_text(Bytes input) { return audit_record(as_text(input), JsonWriter("fuzz")); }

std::string audit_datagram(Bytes input) {
  const JsonWriter w("fuzz");
  std::string broken;
  auto walk = for_each_netlink_message(input, [&](const NetlinkMessage& m) {
    if (m.type == kAuditMacIpsecEvent) broken = audit_record(audit_record_text(m.payload), w);
    return broken.empty();
  });
  if (!broken.empty()) return broken;
  return walk ? "" : check_error(walk.error(), "audit datagram");
}

std::string audit_status(Bytes input) {
  std::string broken;
  auto walk = for_each_netlink_message(input, [&](const NetlinkMessage& m) {
    if (m.type == kAuditGet) {
      auto st = parse_audit_status(m.payload);
      if (!st) broken = check_error(st.error(), "audit_status");
    } else if (m.type == NLMSG_ERROR) {
      auto err = parse_netlink_error(m.payload);
      if (!err) broken = check_error(err.error(), "NLMSG_ERROR");
    }
    return broken.empty();
  });
  if (!broken.empty()) return broken;
  return walk ? "" : check_error(walk.error(), "audit reply datagram");
}

std::string xfrm_message(Bytes input) {
  const JsonWriter w("fuzz");
  XfrmTable table("fuzz");
  std::string broken;
  auto walk = for_each_netlink_message(input, [&](const NetlinkMessage& m) {
    auto p = parse_xfrm_message(m);
    if (!p) {
      broken = check_error(p.error(), "XFRM message");
      return broken.empty();
    }
    for (const auto& e : table.apply(*p, kNow)) {
      broken = write_checked(w, e);
      if (!broken.empty()) return false;
    }
    return true;
  });
  if (!broken.empty()) return broken;
  return walk ? "" : check_error(walk.error(), "XFRM datagram");
}

std::string nflog_datagram(Bytes input) {
  std::string broken;
  auto walk = for_each_netlink_message(input, [&](const NetlinkMessage& m) {
    if (m.type != kNflogMsgPacket) return true;
    auto p = parse_nflog_packet(m);
    if (!p) {
      broken = check_error(p.error(), "NFLOG message");
    } else if (p->ip && p->ip->fragment && !p->ip->first_fragment() && (p->ip->sport || p->ip->spi)) {
      broken = "a later fragment has transport fields";
    }
    return broken.empty();
  });
  if (!broken.empty()) return broken;
  return walk ? "" : check_error(walk.error(), "NFLOG datagram");
}

std::string config(Bytes input) {
  Options o;
  auto r = apply_config(as_text(input), o);
  return r ? "" : check_error(r.error(), "config");
}

std::string state_text(Bytes input) {
  const auto text = as_text(input);
  if (auto st = parse_xfrm_stat(text); !st) {
    if (auto b = check_error(st.error(), "xfrm_stat"); !b.empty()) return b;
  }
  auto snap = parse_snapshot(text);
  if (!snap) return check_error(snap.error(), "state snapshot");
  const JsonWriter w("fuzz");
  for (auto& [label, tables] : *snap) {
    for (const auto& e : changes_while_stopped(label, tables, NetnsTables{}, kNow))
      if (auto b = write_checked(w, e); !b.empty()) return b;
    for (const auto& e : changes_while_stopped(label, NetnsTables{}, tables, kNow))
      if (auto b = write_checked(w, e); !b.empty()) return b;
  }
  return "";
}

std::string control_request(Bytes input) {
  const auto text = as_text(input);
  nlohmann::json id;
  auto r = parse_control_request(text, &id);
  if (!r) {
    if (auto b = check_error(r.error(), "control request"); !b.empty()) return b;
    if (!id.is_null() && !id.is_string() && !id.is_number_integer()) return "error echoes an id of another type";
  } else if (r->cmd == ControlCommand::set && !r->success && !r->failure) {
    return "set accepted without a switch";
  }
  // The same bytes as the policy file: a value or an error, and a value
  // written back reads back the same.
  auto p = parse_audit_policy(text);
  if (!p) return check_error(p.error(), "policy file");
  auto again = parse_audit_policy(serialize_audit_policy(*p));
  if (!again || again->success != p->success || again->failure != p->failure)
    return "policy file does not read back what was written";
  return "";
}

std::span<const Target> targets() {
  static constexpr std::array kTargets{
      Target{"audit_text", audit_text},     Target{"audit_datagram", audit_datagram},
      Target{"audit_status", audit_status}, Target{"xfrm_message", xfrm_message},
      Target{"config", config},         Target{"state_text", state_text},
      Target{"nflog_datagram", nflog_datagram}, Target{"control_request", control_request},
  };
  return kTargets;
}

}  // namespace ipsec::fuzz
