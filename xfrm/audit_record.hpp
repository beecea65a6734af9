// Kernel audit records: pure parsers from the text the kernel multicasts on
// NETLINK_AUDIT (group AUDIT_NLGRP_READLOG) to value types. No I/O here.
//
// A MAC_IPSEC_EVENT (type 1415) record as this kernel family writes it:
//   audit(1795394826.304:15): op=SA-icv-failure src=10.0.0.1 dst=10.0.0.2 spi=4097(0x1001) seqno=4
// Packet records (op=SA-*) take the serial and time of whatever task was
// current, so the serial is not a join key for them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "xfrm/ip_address.hpp"
#include "xfrm/result.hpp"

namespace ipsec {

inline constexpr std::uint16_t kAuditMacIpsecEvent = 1415;  // AUDIT_MAC_IPSEC_EVENT

struct AuditHeader {
  std::int64_t sec{0};
  std::uint32_t msec{0};
  std::uint64_t serial{0};
};

// One MAC_IPSEC_EVENT record. Fields the kernel omits stay empty; fields this
// parser does not know are kept verbatim, in order, in `other`.
struct IpsecAuditRecord {
  AuditHeader header;
  std::string op;
  std::optional<IpAddress> src, dst;
  std::optional<std::uint32_t> spi, seqno, flowlbl;
  std::optional<std::uint32_t> auid, ses;
  std::optional<std::string> subj;
  std::optional<std::int32_t> res;
  std::optional<std::uint8_t> src_prefixlen, dst_prefixlen;
  std::vector<std::pair<std::string, std::string>> other;
};

// "audit(SEC.MSEC:SERIAL): " at the start of `text`; on success `rest` is what follows.
Result<AuditHeader> parse_audit_header(std::string_view text, std::string_view* rest);

// The whole record text (trailing NULs and newlines are ignored).
Result<IpsecAuditRecord> parse_ipsec_audit_record(std::string_view text);

// What can still be read of a record parse_ipsec_audit_record refuses (one
// token it does not understand must not lose the whole record): the header if
// it parses, every field that parses (a token with no key=value right after
// subj= is taken as more of the label: LSM contexts may hold a space), the raw
// text (at most kMaxSalvagedText bytes) and the first problem met.
inline constexpr std::size_t kMaxSalvagedText = 8970;  // MAX_AUDIT_MESSAGE_LENGTH
struct SalvagedAuditRecord {
  std::optional<AuditHeader> header;
  IpsecAuditRecord fields;
  std::string text;
  std::string problem;  // empty when the record parses strictly after all
};
SalvagedAuditRecord salvage_ipsec_audit_record(std::string_view text);

}  // namespace ipsec
