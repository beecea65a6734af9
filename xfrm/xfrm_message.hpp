// XFRM netlink protocol (NETLINK_XFRM): pure parsers from nlmsghdr-framed
// messages to value types. No I/O, no logging, no exceptions on the parse
// path; all functions are reentrant and thread-safe. The request builders are
// in xfrm_request.hpp, the text formatter in xfrm_format.hpp.
//
// Key material: the kernel puts SA keys in XFRMA_ALG_* attributes of NEWSA,
// UPDSA, DELSA, EXPIRE and GETSA replies. The value types below hold only
// allow-listed fields; algorithm attributes contribute their NAME and bit
// lengths, never a key byte. Callers that keep the raw datagram should wipe it.
//
// Every attribute is checked against a per-message-type table (type ->
// minimum payload length) before any read; unknown attributes are skipped; a
// short fixed header or attribute is an error. Addresses follow the family
// field of the structure that carries them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "xfrm/ip_address.hpp"
#include "xfrm/netlink_message.hpp"
#include "xfrm/result.hpp"

namespace ipsec {

// ---- message types (linux/xfrm.h, checked against it in the .cpp) ----
inline constexpr std::uint16_t kXfrmMsgNewSa = 0x10;
inline constexpr std::uint16_t kXfrmMsgDelSa = 0x11;
inline constexpr std::uint16_t kXfrmMsgGetSa = 0x12;
inline constexpr std::uint16_t kXfrmMsgNewPolicy = 0x13;
inline constexpr std::uint16_t kXfrmMsgDelPolicy = 0x14;
inline constexpr std::uint16_t kXfrmMsgGetPolicy = 0x15;
inline constexpr std::uint16_t kXfrmMsgAcquire = 0x17;
inline constexpr std::uint16_t kXfrmMsgExpire = 0x18;
inline constexpr std::uint16_t kXfrmMsgUpdPolicy = 0x19;
inline constexpr std::uint16_t kXfrmMsgUpdSa = 0x1a;
inline constexpr std::uint16_t kXfrmMsgPolExpire = 0x1b;
inline constexpr std::uint16_t kXfrmMsgFlushSa = 0x1c;
inline constexpr std::uint16_t kXfrmMsgFlushPolicy = 0x1d;
inline constexpr std::uint16_t kXfrmMsgNewAe = 0x1e;
inline constexpr std::uint16_t kXfrmMsgGetAe = 0x1f;
inline constexpr std::uint16_t kXfrmMsgMigrate = 0x21;
inline constexpr std::uint16_t kXfrmMsgMapping = 0x26;
inline constexpr std::uint16_t kXfrmMsgSetDefault = 0x27;
inline constexpr std::uint16_t kXfrmMsgGetDefault = 0x28;

// ---- multicast groups (enum xfrm_nlgroups); join with NetlinkSocket::join_group ----
inline constexpr unsigned kXfrmGroupAcquire = 1;  // ACQUIRE
inline constexpr unsigned kXfrmGroupExpire = 2;   // EXPIRE (SA), POLEXPIRE
inline constexpr unsigned kXfrmGroupSa = 3;       // NEWSA, UPDSA, DELSA, FLUSHSA
inline constexpr unsigned kXfrmGroupPolicy = 4;   // NEW/UPD/DELPOLICY, FLUSHPOLICY, GETDEFAULT after SETDEFAULT
// Opt-in only: once anyone listens here, the kernel sends a NEWAE for every
// SA every net.core.xfrm_aevent_rseqth (default 2) packets, plus on timers.
inline constexpr unsigned kXfrmGroupAevents = 5;
inline constexpr unsigned kXfrmGroupMigrate = 7;  // MIGRATE
inline constexpr unsigned kXfrmGroupMapping = 8;  // MAPPING (NAT-T port change)

// Bits of XfrmSa::flags (linux/xfrm.h XFRM_STATE_*) that callers test.
inline constexpr std::uint8_t kXfrmStateEsn = 128;  // XFRM_STATE_ESN

// ---- value types ----

// The kernel's xfrm_selector. `family` is the raw field. Addresses are set
// for AF_INET / AF_INET6, and for an SA's AF_UNSPEC selector (larval SAs from
// ALLOCSPI have one) in the SA's family; otherwise they are empty.
struct XfrmSelector {
  std::uint16_t family{0};
  std::optional<IpAddress> daddr, saddr;
  std::uint8_t prefixlen_d{0}, prefixlen_s{0};
  std::uint16_t dport{0}, dport_mask{0}, sport{0}, sport_mask{0};  // host order
  std::uint8_t proto{0};
  std::int32_t ifindex{0};
  friend bool operator==(const XfrmSelector&, const XfrmSelector&) = default;
};

struct XfrmLifetimeCfg {
  std::uint64_t soft_byte_limit{0}, hard_byte_limit{0};
  std::uint64_t soft_packet_limit{0}, hard_packet_limit{0};
  std::uint64_t soft_add_expires_seconds{0}, hard_add_expires_seconds{0};
  std::uint64_t soft_use_expires_seconds{0}, hard_use_expires_seconds{0};
  friend bool operator==(const XfrmLifetimeCfg&, const XfrmLifetimeCfg&) = default;
};

struct XfrmLifetimeCur {
  std::uint64_t bytes{0}, packets{0}, add_time{0}, use_time{0};
  friend bool operator==(const XfrmLifetimeCur&, const XfrmLifetimeCur&) = default;
};

struct XfrmStats {
  std::uint32_t replay_window{0};  // packets dropped below the window
  std::uint32_t replay{0};         // packets replayed inside the window
  std::uint32_t integrity_failed{0};
  friend bool operator==(const XfrmStats&, const XfrmStats&) = default;
};

struct XfrmAeadAlg {
  std::string name;
  std::uint32_t icv_bits{0};
  friend bool operator==(const XfrmAeadAlg&, const XfrmAeadAlg&) = default;
};

struct XfrmAuthAlg {
  std::string name;
  std::optional<std::uint32_t> trunc_bits;  // only from XFRMA_ALG_AUTH_TRUNC
  friend bool operator==(const XfrmAuthAlg&, const XfrmAuthAlg&) = default;
};

struct XfrmReplayState {  // XFRMA_REPLAY_VAL
  std::uint32_t oseq{0}, seq{0}, bitmap{0};
  friend bool operator==(const XfrmReplayState&, const XfrmReplayState&) = default;
};

struct XfrmReplayEsnState {  // XFRMA_REPLAY_ESN_VAL, without the bitmap words
  std::uint32_t bmp_len{0};  // in 32-bit words
  std::uint32_t oseq{0}, seq{0}, oseq_hi{0}, seq_hi{0};
  std::uint32_t replay_window{0};
  friend bool operator==(const XfrmReplayEsnState&, const XfrmReplayEsnState&) = default;
};

struct XfrmEncap {                   // XFRMA_ENCAP (NAT-T)
  std::uint16_t type{0};             // UDP_ENCAP_ESPINUDP (2), ...
  std::uint16_t sport{0}, dport{0};  // host order
  IpAddress oa;                      // original address, in the SA's family
  friend bool operator==(const XfrmEncap&, const XfrmEncap&) = default;
};

struct XfrmMark {
  std::uint32_t value{0}, mask{0};
  friend bool operator==(const XfrmMark&, const XfrmMark&) = default;
};

struct XfrmOffload {  // XFRMA_OFFLOAD_DEV
  std::int32_t ifindex{0};
  std::uint8_t flags{0};
  friend bool operator==(const XfrmOffload&, const XfrmOffload&) = default;
};

// One SA (xfrm_usersa_info plus its attributes), key material excluded.
struct XfrmSa {
  IpAddress daddr, saddr;
  std::uint32_t spi{0};  // host order
  std::uint8_t proto{0};
  std::uint32_t reqid{0};
  std::uint8_t mode{0};
  std::uint8_t flags{0};
  std::uint32_t extra_flags{0};   // XFRMA_SA_EXTRA_FLAGS, 0 when absent
  std::uint8_t replay_window{0};  // the legacy 8-bit field; see replay_esn for ESN SAs
  XfrmSelector selector;
  XfrmLifetimeCfg lifetime;
  XfrmLifetimeCur current;
  XfrmStats stats;
  std::optional<XfrmAeadAlg> aead;
  std::optional<XfrmAuthAlg> auth;
  std::optional<std::string> enc;   // name only
  std::optional<std::string> comp;  // name only
  std::optional<XfrmReplayState> replay;
  std::optional<XfrmReplayEsnState> replay_esn;
  std::optional<XfrmEncap> encap;
  std::optional<XfrmMark> mark;
  std::optional<std::uint32_t> if_id;
  std::optional<std::uint8_t> sa_dir;  // XFRMA_SA_DIR (kernel >= 6.10): 1 in, 2 out
  std::optional<XfrmOffload> offload;
  bool esn() const { return (flags & kXfrmStateEsn) != 0; }
  friend bool operator==(const XfrmSa&, const XfrmSa&) = default;
};

// xfrm_usersa_id: how the kernel names an SA.
struct XfrmSaId {
  IpAddress daddr;
  std::uint32_t spi{0};  // host order
  std::uint8_t proto{0};
  friend bool operator==(const XfrmSaId&, const XfrmSaId&) = default;
};

struct XfrmTemplate {    // xfrm_user_tmpl
  IpAddress daddr;       // id.daddr
  std::uint32_t spi{0};  // id.spi, host order
  std::uint8_t proto{0};
  IpAddress saddr;
  std::uint32_t reqid{0};
  std::uint8_t mode{0}, share{0}, optional{0};
  std::uint32_t aalgos{0}, ealgos{0}, calgos{0};
  friend bool operator==(const XfrmTemplate&, const XfrmTemplate&) = default;
};

// One policy (xfrm_userpolicy_info plus its attributes).
struct XfrmPolicy {
  XfrmSelector selector;
  XfrmLifetimeCfg lifetime;
  XfrmLifetimeCur current;
  std::uint32_t priority{0}, index{0};
  std::uint8_t dir{0};     // 0 in, 1 out, 2 fwd
  std::uint8_t action{0};  // 0 allow, 1 block
  std::uint8_t flags{0}, share{0};
  std::vector<XfrmTemplate> templates;
  std::uint8_t ptype{0};  // XFRMA_POLICY_TYPE: 0 main (also when absent), 1 sub
  std::optional<XfrmMark> mark;
  std::optional<std::uint32_t> if_id;
  friend bool operator==(const XfrmPolicy&, const XfrmPolicy&) = default;
};

// xfrm_userpolicy_id: how the kernel names a policy (by index or selector).
struct XfrmPolicyId {
  XfrmSelector selector;
  std::uint32_t index{0};
  std::uint8_t dir{0};
  friend bool operator==(const XfrmPolicyId&, const XfrmPolicyId&) = default;
};

// NEWSA, UPDSA, and a GETSA reply / SA dump entry (which the kernel types NEWSA).
struct XfrmNewSa {
  std::uint16_t type{kXfrmMsgNewSa};  // kXfrmMsgNewSa or kXfrmMsgUpdSa
  XfrmSa sa;
};

// DELSA: the id with its mark and if_id (which tell SAs with the same id
// apart), and the whole SA with its final stats when XFRMA_SA is present.
struct XfrmDelSa {
  XfrmSaId id;
  std::optional<XfrmSa> sa;
  std::optional<XfrmMark> mark;
  std::optional<std::uint32_t> if_id;
};

struct XfrmExpire {  // EXPIRE (of an SA)
  XfrmSa sa;
  bool hard{false};
};

struct XfrmNewPolicy {                    // NEWPOLICY, UPDPOLICY, and a policy dump entry
  std::uint16_t type{kXfrmMsgNewPolicy};  // kXfrmMsgNewPolicy or kXfrmMsgUpdPolicy
  XfrmPolicy policy;
};

// DELPOLICY: the id plus its type/mark/if_id attributes, and the whole policy
// when XFRMA_POLICY is present (the kernel sends it).
struct XfrmDelPolicy {
  XfrmPolicyId id;
  std::uint8_t ptype{0};
  std::optional<XfrmMark> mark;
  std::optional<std::uint32_t> if_id;
  std::optional<XfrmPolicy> policy;
};

struct XfrmPolicyExpire {  // POLEXPIRE (e.g. `limit time-hard` on a policy)
  XfrmPolicy policy;
  bool hard{false};
};

// ACQUIRE: the kernel wants an SA for `id`/`saddr`. It creates a larval SA
// (SPI 0) at the same time. `policy` is the policy that matched, with its
// templates. The id/saddr family is the family of the matching template (first
// template with the same proto), else the selector's.
struct XfrmAcquire {
  IpAddress daddr;
  std::uint32_t spi{0};
  std::uint8_t proto{0};
  IpAddress saddr;
  XfrmSelector selector;
  XfrmPolicy policy;
  std::uint32_t aalgos{0}, ealgos{0}, calgos{0};
  std::uint32_t seq{0};  // the kernel's acquire sequence (matched by the new SA's seq)
};

struct XfrmMapping {  // MAPPING: a NAT-T peer's address or port changed
  XfrmSaId id;
  std::uint32_t reqid{0};
  IpAddress old_saddr, new_saddr;
  std::uint16_t old_sport{0}, new_sport{0};  // host order
};

struct XfrmMigrateEntry {  // xfrm_user_migrate
  IpAddress old_daddr, old_saddr, new_daddr, new_saddr;
  std::uint8_t proto{0}, mode{0};
  std::uint32_t reqid{0};
  friend bool operator==(const XfrmMigrateEntry&, const XfrmMigrateEntry&) = default;
};

struct XfrmMigrate {
  XfrmPolicyId id;
  std::uint8_t ptype{0};
  std::vector<XfrmMigrateEntry> entries;
};

struct XfrmFlushSa {
  std::uint8_t proto{0};  // 0 = all (IPSEC_PROTO_ANY is 255 on requests)
};

struct XfrmFlushPolicy {
  std::uint8_t ptype{0};
};

// GETDEFAULT reply or notification (the kernel multicasts GETDEFAULT on the
// POLICY group after a SETDEFAULT), or a SETDEFAULT. Values: 0 unspec, 1 block, 2 accept.
struct XfrmPolicyDefault {
  std::uint16_t type{kXfrmMsgGetDefault};
  std::uint8_t in{0}, fwd{0}, out{0};
};

// NEWAE (async event: replay/lifetime counters of one SA).
struct XfrmAsyncEvent {
  XfrmSaId id;
  IpAddress saddr;
  std::uint32_t flags{0};  // XFRM_AE_* (0x10 replay threshold, 0x20 timer, ...)
  std::uint32_t reqid{0};
  std::optional<XfrmReplayState> replay;
  std::optional<XfrmReplayEsnState> replay_esn;
  std::optional<XfrmLifetimeCur> current;
  std::optional<std::uint32_t> replay_threshold, timer_threshold;
  std::optional<XfrmMark> mark;
  std::optional<std::uint32_t> if_id;
};

struct XfrmUnknown {  // any other message type (including NLMSG_DONE / NLMSG_ERROR)
  std::uint16_t type{0};
};

using XfrmMessage = std::variant<XfrmNewSa, XfrmDelSa, XfrmExpire, XfrmNewPolicy, XfrmDelPolicy, XfrmPolicyExpire,
                                 XfrmAcquire, XfrmMapping, XfrmMigrate, XfrmFlushSa, XfrmFlushPolicy, XfrmPolicyDefault,
                                 XfrmAsyncEvent, XfrmUnknown>;

// ---- parsing ----

// Parses one message (from for_each_netlink_message). Errors: Errc::truncated
// (a fixed header or attribute shorter than its type requires, or an attribute
// running past the message), Errc::malformed (a family other than AF_INET /
// AF_INET6 where one is required, a length field that lies, an array attribute
// that is not whole elements). The result owns all its data.
Result<XfrmMessage> parse_xfrm_message(const NetlinkMessage& message);

// The message type's name ("NEWSA", ...), or nullptr if unknown.
const char* xfrm_message_name(std::uint16_t type);

}  // namespace ipsec
