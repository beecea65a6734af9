// XFRM message parsers: live kernel fixtures (tests/fixtures/xfrm/*.bin, see
// the README there), synthetic ESP SA messages built here (this kernel has no
// ESP), malformed and truncated variants, and the key-material guarantee.
#include "xfrm/xfrm_message.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/netlink.h>
#include <linux/xfrm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "xfrm/netns.hpp"
#include "xfrm/xfrm_format.hpp"
#include "xfrm/xfrm_request.hpp"

using namespace ipsec;

namespace {

using Buf = std::vector<std::uint8_t>;

// ---- helpers ----

Buf read_fixture(const std::string& name) {
  std::ifstream in(std::string(FIXTURE_DIR) + "/xfrm/" + name, std::ios::binary);
  EXPECT_TRUE(in) << name;
  return Buf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

const char* const kLiveFixtures[] = {
    "acquire.bin",
    "getdefault-reply.bin",
    "migrate.bin",
    "newae-reply.bin",
    "policy-default.bin",
    "policy-del-v4.bin",
    "policy-dump.bin",
    "policy-expire.bin",
    "policy-flush-sub.bin",
    "policy-flush.bin",
    "policy-ifid-wildcard.bin",
    "policy-new-sub.bin",
    "policy-new-v4.bin",
    "policy-new-v6-mark.bin",
    "policy-swan-transport.bin",
    "policy-upd-v4.bin",
    "sa-del.bin",
    "sa-dump-larval.bin",
    "sa-expire-larval.bin",
    "sa-flush.bin",
    "sa-get-reply.bin",
};

// ESP SA fixtures captured in the ESP lab VM by capture-esp.sh, when present.
std::vector<std::string> esp_fixture_names() {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(std::string(FIXTURE_DIR) + "/xfrm")) {
    const std::string n = e.path().filename().string();
    if (n.rfind("esp-", 0) == 0 && e.path().extension() == ".bin") out.push_back(n);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Each netlink message of a capture file, copied out whole (header + payload, nlmsg_len bytes).
std::vector<Buf> split_messages(const Buf& file) {
  std::vector<Buf> out;
  std::size_t off = 0;
  auto walk = for_each_netlink_message(Bytes(file), [&](const NetlinkMessage& m) {
    const std::size_t len = NLMSG_HDRLEN + m.payload.size();
    const auto* start = m.payload.data() - NLMSG_HDRLEN;
    off = static_cast<std::size_t>(start - file.data());
    out.emplace_back(file.begin() + static_cast<std::ptrdiff_t>(off),
                     file.begin() + static_cast<std::ptrdiff_t>(off + len));
    return true;
  });
  EXPECT_TRUE(walk);
  return out;
}

std::uint16_t type_of(const Buf& msg) {
  nlmsghdr h{};
  std::memcpy(&h, msg.data(), sizeof h);
  return h.nlmsg_type;
}

bool is_control(std::uint16_t type) { return type < NLMSG_MIN_TYPE; }

// Parses the single message in `msg` (whose nlmsg_len may have been edited).
Result<XfrmMessage> parse_one(const Buf& msg) {
  Result<XfrmMessage> r = make_error(Errc::truncated, "no message in the buffer");
  auto walk = for_each_netlink_message(Bytes(msg), [&](const NetlinkMessage& m) {
    r = parse_xfrm_message(m);
    return false;
  });
  if (!walk) return walk.error();
  return r;
}

// All non-control messages of a fixture, parsed; fails the test on any error.
std::vector<XfrmMessage> parse_fixture(const std::string& name, std::vector<std::uint16_t>* flags = nullptr) {
  std::vector<XfrmMessage> out;
  for (const Buf& m : split_messages(read_fixture(name))) {
    if (is_control(type_of(m))) continue;
    auto r = parse_one(m);
    EXPECT_TRUE(r) << name << ": " << (r ? "" : r.error().message);
    if (!r) continue;
    out.push_back(*r);
    if (flags) {
      nlmsghdr h{};
      std::memcpy(&h, m.data(), sizeof h);
      flags->push_back(h.nlmsg_flags);
    }
  }
  return out;
}

IpAddress ip(const char* text) { return *IpAddress::parse(text); }

// ---- a builder for synthetic messages ----

class MsgBuilder {
 public:
  MsgBuilder(std::uint16_t type, const void* fixed, std::size_t len) : buf_(NLMSG_HDRLEN) {
    nlmsghdr h{};
    h.nlmsg_type = type;
    h.nlmsg_seq = 0;
    std::memcpy(buf_.data(), &h, sizeof h);
    append(fixed, len);
  }
  MsgBuilder& attr(std::uint16_t type, const void* data, std::size_t len) {
    nlattr a{};
    a.nla_len = static_cast<std::uint16_t>(NLA_HDRLEN + len);
    a.nla_type = type;
    append(&a, sizeof a);
    append(data, len);
    return *this;
  }
  MsgBuilder& raw(const Buf& bytes) {
    append(bytes.data(), bytes.size());
    return *this;
  }
  Buf done() const {
    Buf b = buf_;
    const auto len = static_cast<std::uint32_t>(b.size());
    std::memcpy(b.data(), &len, sizeof len);
    return b;
  }

 private:
  void append(const void* p, std::size_t n) {
    const auto* c = static_cast<const std::uint8_t*>(p);
    if (n) buf_.insert(buf_.end(), c, c + n);
    buf_.resize(NLMSG_ALIGN(buf_.size()));
  }
  Buf buf_;
};

Buf key_bytes(std::size_t n) {  // 0x01 0x02 0x03 ...
  Buf k(n);
  for (std::size_t i = 0; i < n; ++i) k[i] = static_cast<std::uint8_t>(i + 1);
  return k;
}

// An xfrm_algo* attribute payload: the fixed struct with name and lengths, then the key.
template <typename T>
Buf algo(const char* name, const Buf& key, std::uint32_t extra_bits = 0) {
  T a{};
  std::strncpy(a.alg_name, name, sizeof a.alg_name - 1);
  a.alg_key_len = static_cast<unsigned>(key.size() * 8);
  if constexpr (std::is_same_v<T, xfrm_algo_aead>) a.alg_icv_len = extra_bits;
  if constexpr (std::is_same_v<T, xfrm_algo_auth>) a.alg_trunc_len = extra_bits;
  Buf out(offsetof(T, alg_key));
  std::memcpy(out.data(), &a, out.size());
  out.insert(out.end(), key.begin(), key.end());
  return out;
}

xfrm_usersa_info sa_info_v4() {
  xfrm_usersa_info p{};
  inet_pton(AF_INET, "10.0.0.2", &p.id.daddr.a4);
  inet_pton(AF_INET, "10.0.0.1", &p.saddr.a4);
  p.id.spi = htonl(0x1001);
  p.id.proto = IPPROTO_ESP;
  p.family = AF_INET;
  p.reqid = 1;
  p.mode = XFRM_MODE_TRANSPORT;
  p.replay_window = 32;
  p.flags = XFRM_STATE_AF_UNSPEC;
  p.sel.family = AF_INET;
  p.sel.daddr.a4 = p.id.daddr.a4;
  p.sel.saddr.a4 = p.saddr.a4;
  p.sel.prefixlen_d = p.sel.prefixlen_s = 32;
  p.sel.proto = IPPROTO_UDP;
  p.sel.dport = htons(4500);
  p.sel.dport_mask = 0xffff;
  p.lft.hard_byte_limit = p.lft.soft_byte_limit = ~0ULL;
  p.lft.hard_add_expires_seconds = 3600;
  p.curlft.bytes = 1300;
  p.curlft.packets = 10;
  p.stats.replay = 2;
  p.stats.replay_window = 1;
  p.stats.integrity_failed = 3;
  return p;
}

xfrm_usersa_info sa_info_v6() {
  xfrm_usersa_info p{};
  inet_pton(AF_INET6, "fd00::2", p.id.daddr.a6);
  inet_pton(AF_INET6, "fd00::1", p.saddr.a6);
  p.id.spi = htonl(0x2001);
  p.id.proto = IPPROTO_ESP;
  p.family = AF_INET6;
  p.reqid = 3;
  p.mode = XFRM_MODE_TUNNEL;
  p.flags = XFRM_STATE_ESN;
  p.sel.family = AF_INET6;
  std::memcpy(p.sel.daddr.a6, p.id.daddr.a6, 16);
  std::memcpy(p.sel.saddr.a6, p.saddr.a6, 16);
  p.sel.prefixlen_d = p.sel.prefixlen_s = 128;
  return p;
}

const Buf kAeadKey = key_bytes(20);  // 0x0102...14: AES-128 key + 4-byte salt
const Buf kAuthKey = key_bytes(32);  // 0x0102...20
const Buf kEncKey = key_bytes(16);   // 0x0102...10

// NEWSA, v4, rfc4106(gcm(aes)) with NAT-T, mark, if_id, offload, direction,
// extra flags, a security context and an attribute type from the future.
Buf esp_aead_sa(std::uint16_t type = XFRM_MSG_NEWSA) {
  const auto p = sa_info_v4();
  MsgBuilder b(type, &p, sizeof p);
  const Buf aead = algo<xfrm_algo_aead>("rfc4106(gcm(aes))", kAeadKey, 128);
  b.attr(XFRMA_ALG_AEAD, aead.data(), aead.size());
  xfrm_replay_state rs{7, 5, 0x1f};
  b.attr(XFRMA_REPLAY_VAL, &rs, sizeof rs);
  xfrm_encap_tmpl e{};
  e.encap_type = 2;  // UDP_ENCAP_ESPINUDP
  e.encap_sport = htons(4500);
  e.encap_dport = htons(4501);
  b.attr(XFRMA_ENCAP, &e, sizeof e);
  xfrm_mark m{0x10, 0xff};
  b.attr(XFRMA_MARK, &m, sizeof m);
  const std::uint32_t if_id = 7, extra = XFRM_SA_XFLAG_DONT_ENCAP_DSCP;
  b.attr(XFRMA_IF_ID, &if_id, 4);
  b.attr(XFRMA_SA_EXTRA_FLAGS, &extra, 4);
  const std::uint8_t dir = 2;
  b.attr(33 /* XFRMA_SA_DIR */, &dir, 1);
  xfrm_user_offload off{4, XFRM_OFFLOAD_INBOUND};
  b.attr(XFRMA_OFFLOAD_DEV, &off, sizeof off);
  const Buf secctx = {1, 1, 0, 4, 0, 0, 0, 0, 'a', 'b', 'c', 0};
  b.attr(XFRMA_SEC_CTX, secctx.data(), secctx.size());
  const std::uint32_t future = 0xdeadbeef;
  b.attr(200, &future, 4);
  return b.done();
}

// The v6 ESN SA's attributes: hmac(sha256) (as AUTH and AUTH_TRUNC, as the
// kernel sends it), cbc(aes), deflate, and an ESN replay state with a bitmap.
void add_v6_sa_attrs(MsgBuilder& b) {
  const Buf auth = algo<xfrm_algo>("hmac(sha256)", kAuthKey);
  const Buf trunc = algo<xfrm_algo_auth>("hmac(sha256)", kAuthKey, 128);
  const Buf enc = algo<xfrm_algo>("cbc(aes)", kEncKey);
  const Buf comp = algo<xfrm_algo>("deflate", {});
  b.attr(XFRMA_ALG_AUTH, auth.data(), auth.size());
  b.attr(XFRMA_ALG_AUTH_TRUNC, trunc.data(), trunc.size());
  b.attr(XFRMA_ALG_CRYPT, enc.data(), enc.size());
  b.attr(XFRMA_ALG_COMP, comp.data(), comp.size());
  const xfrm_replay_state_esn head{4, 100, 90, 1, 2, 128};
  Buf esn(sizeof head + 4 * sizeof(std::uint32_t), 0);
  std::memcpy(esn.data(), &head, sizeof head);
  esn[sizeof head] = 0x5a;  // bitmap words are never copied out
  b.attr(XFRMA_REPLAY_ESN_VAL, esn.data(), esn.size());
}

Buf esp_esn_sa_v6() {
  const auto p = sa_info_v6();
  MsgBuilder b(XFRM_MSG_UPDSA, &p, sizeof p);
  add_v6_sa_attrs(b);
  return b.done();
}

// The xfrm_usersa_id naming the v6 SA.
xfrm_usersa_id sa_id_v6() {
  const auto p = sa_info_v6();
  xfrm_usersa_id id{};
  id.daddr = p.id.daddr;
  id.spi = p.id.spi;
  id.family = AF_INET6;
  id.proto = IPPROTO_ESP;
  return id;
}

// DELSA as the kernel builds it: the id, XFRMA_SA, then the SA's other attributes.
Buf esp_delsa_v6() {
  const auto p = sa_info_v6();
  const auto id = sa_id_v6();
  MsgBuilder b(XFRM_MSG_DELSA, &id, sizeof id);
  b.attr(XFRMA_SA, &p, sizeof p);
  add_v6_sa_attrs(b);
  return b.done();
}

Buf esp_expire_v4(bool hard) {
  xfrm_user_expire ue{};
  ue.state = sa_info_v4();
  ue.hard = hard ? 1 : 0;
  MsgBuilder b(XFRM_MSG_EXPIRE, &ue, sizeof ue);
  xfrm_mark m{0x10, 0xff};
  b.attr(XFRMA_MARK, &m, sizeof m);
  return b.done();
}

Buf mapping_v4() {
  xfrm_user_mapping um{};
  inet_pton(AF_INET, "10.0.0.2", &um.id.daddr.a4);
  um.id.spi = htonl(0x1001);
  um.id.family = AF_INET;
  um.id.proto = IPPROTO_ESP;
  um.reqid = 1;
  inet_pton(AF_INET, "192.0.2.1", &um.old_saddr.a4);
  inet_pton(AF_INET, "192.0.2.9", &um.new_saddr.a4);
  um.old_sport = htons(4500);
  um.new_sport = htons(61000);
  return MsgBuilder(XFRM_MSG_MAPPING, &um, sizeof um).done();
}

Buf newae_esn_v4() {
  xfrm_aevent_id ae{};
  inet_pton(AF_INET, "10.0.0.2", &ae.sa_id.daddr.a4);
  ae.sa_id.spi = htonl(0x1001);
  ae.sa_id.family = AF_INET;
  ae.sa_id.proto = IPPROTO_ESP;
  inet_pton(AF_INET, "10.0.0.1", &ae.saddr.a4);
  ae.flags = XFRM_AE_CR;
  ae.reqid = 1;
  MsgBuilder b(XFRM_MSG_NEWAE, &ae, sizeof ae);
  xfrm_replay_state_esn esn{0, 44, 0, 0, 0, 32};
  b.attr(XFRMA_REPLAY_ESN_VAL, &esn, sizeof esn);
  xfrm_lifetime_cur cur{602, 44, 1, 2};
  b.attr(XFRMA_LTIME_VAL, &cur, sizeof cur);
  const std::uint32_t thresh = 2, etimer = 10;
  b.attr(XFRMA_REPLAY_THRESH, &thresh, 4);
  b.attr(XFRMA_ETIMER_THRESH, &etimer, 4);
  return b.done();
}

std::vector<Buf> synthetic_messages() {
  return {esp_aead_sa(),  esp_aead_sa(XFRM_MSG_UPDSA), esp_esn_sa_v6(),
          esp_delsa_v6(), esp_expire_v4(true),         mapping_v4(),
          newae_esn_v4()};
}

// The fixed header size of each message type (what the parser requires before attributes).
std::size_t fixed_size(std::uint16_t type) {
  switch (type) {
    case XFRM_MSG_NEWSA:
    case XFRM_MSG_UPDSA:
      return sizeof(xfrm_usersa_info);
    case XFRM_MSG_DELSA:
      return sizeof(xfrm_usersa_id);
    case XFRM_MSG_EXPIRE:
      return sizeof(xfrm_user_expire);
    case XFRM_MSG_NEWPOLICY:
    case XFRM_MSG_UPDPOLICY:
      return sizeof(xfrm_userpolicy_info);
    case XFRM_MSG_DELPOLICY:
    case XFRM_MSG_MIGRATE:
      return sizeof(xfrm_userpolicy_id);
    case XFRM_MSG_POLEXPIRE:
      return sizeof(xfrm_user_polexpire);
    case XFRM_MSG_ACQUIRE:
      return sizeof(xfrm_user_acquire);
    case XFRM_MSG_MAPPING:
      return sizeof(xfrm_user_mapping);
    case XFRM_MSG_NEWAE:
      return sizeof(xfrm_aevent_id);
    case XFRM_MSG_FLUSHSA:
      return sizeof(xfrm_usersa_flush);
    case XFRM_MSG_GETDEFAULT:
    case XFRM_MSG_SETDEFAULT:
      return sizeof(xfrm_userpolicy_default);
    default:
      return 0;
  }
}

// Payload lengths at which a cut leaves a well-formed, shorter message: the
// end of the fixed header, or the end of an attribute (through its padding).
std::vector<std::size_t> clean_cut_lengths(const Buf& msg) {
  const Bytes payload = Bytes(msg).subspan(NLMSG_HDRLEN);
  const std::size_t fixed = fixed_size(type_of(msg));
  std::vector<std::size_t> ok;
  for (std::size_t n = fixed; n <= NLMSG_ALIGN(fixed) && n <= payload.size(); ++n) ok.push_back(n);
  std::size_t off = NLMSG_ALIGN(fixed);
  while (off + NLA_HDRLEN <= payload.size()) {
    nlattr a{};
    std::memcpy(&a, payload.data() + off, sizeof a);
    if (a.nla_len < NLA_HDRLEN) break;
    for (std::size_t n = off + a.nla_len; n <= off + NLA_ALIGN(a.nla_len); ++n) ok.push_back(n);
    off += NLA_ALIGN(a.nla_len);
  }
  return ok;
}

Buf with_len(Buf msg, std::size_t len) {  // the first `len` bytes, with nlmsg_len saying so
  msg.resize(len);
  const auto l = static_cast<std::uint32_t>(len);
  std::memcpy(msg.data(), &l, sizeof l);
  return msg;
}

template <typename T>
const T& as(const XfrmMessage& m) {
  EXPECT_TRUE(std::holds_alternative<T>(m));
  return std::get<T>(m);
}

// ---- the key-material check ----

std::string hex(const Buf& b, bool upper) {
  static const char* lo = "0123456789abcdef";
  static const char* up = "0123456789ABCDEF";
  std::string s;
  for (auto c : b) {
    s += (upper ? up : lo)[c >> 4];
    s += (upper ? up : lo)[c & 15];
  }
  return s;
}

std::string base64(const Buf& b) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string s;
  std::size_t i = 0;
  for (; i + 2 < b.size(); i += 3) {
    const unsigned v = (b[i] << 16) | (b[i + 1] << 8) | b[i + 2];
    s += t[(v >> 18) & 63];
    s += t[(v >> 12) & 63];
    s += t[(v >> 6) & 63];
    s += t[v & 63];
  }
  if (i + 1 == b.size()) {
    const unsigned v = b[i] << 16;
    s += t[(v >> 18) & 63];
    s += t[(v >> 12) & 63];
    s += "==";
  } else if (i + 2 == b.size()) {
    const unsigned v = (b[i] << 16) | (b[i + 1] << 8);
    s += t[(v >> 18) & 63];
    s += t[(v >> 12) & 63];
    s += t[(v >> 6) & 63];
    s += '=';
  }
  return s;
}

bool contains_bytes(const void* hay, std::size_t n, const Buf& needle) {
  const auto* h = static_cast<const std::uint8_t*>(hay);
  return std::search(h, h + n, needle.begin(), needle.end()) != h + n;
}

// Every way the key (or any 8-byte window of it) could show up in text.
void expect_no_key(const std::string& text, const Buf& key) {
  for (std::size_t start = 0; start + 8 <= key.size(); ++start) {
    const Buf w(key.begin() + static_cast<std::ptrdiff_t>(start), key.begin() + static_cast<std::ptrdiff_t>(start + 8));
    EXPECT_FALSE(contains_bytes(text.data(), text.size(), w)) << "raw key bytes in: " << text;
    EXPECT_EQ(text.find(hex(w, false)), std::string::npos) << text;
    EXPECT_EQ(text.find(hex(w, true)), std::string::npos) << text;
  }
  EXPECT_EQ(text.find(base64(key)), std::string::npos) << text;
  // Base64 of a window is alignment-dependent; check each of the three phases.
  for (std::size_t phase = 0; phase < 3; ++phase) {
    const Buf tail(key.begin() + static_cast<std::ptrdiff_t>(phase), key.end());
    std::string b = base64(tail);
    b = b.substr(0, (b.size() / 4 - 1) * 4);  // complete groups only, no padding
    if (b.size() >= 8) {
      EXPECT_EQ(text.find(b), std::string::npos) << text;
    }
  }
}

}  // namespace

// ---- live fixtures ----

TEST(XfrmLive, EveryFixtureParses) {
  for (const char* name : kLiveFixtures) {
    const auto msgs = split_messages(read_fixture(name));
    ASSERT_FALSE(msgs.empty()) << name;
    for (const Buf& m : msgs) {
      auto r = parse_one(m);
      ASSERT_TRUE(r) << name << ": " << r.error().message;
      if (!is_control(type_of(m))) {
        EXPECT_FALSE(std::holds_alternative<XfrmUnknown>(*r)) << name;
      }
    }
  }
}

TEST(XfrmLive, NewPolicyV4WithTemplate) {
  auto msgs = parse_fixture("policy-new-v4.bin");
  ASSERT_EQ(msgs.size(), 1u);
  const auto& m = as<XfrmNewPolicy>(msgs[0]);
  EXPECT_EQ(m.type, kXfrmMsgNewPolicy);
  const XfrmPolicy& p = m.policy;
  EXPECT_EQ(p.selector.family, AF_INET);
  EXPECT_EQ(p.selector.saddr, ip("10.0.0.1"));
  EXPECT_EQ(p.selector.daddr, ip("10.0.0.2"));
  EXPECT_EQ(p.selector.prefixlen_s, 32);
  EXPECT_EQ(p.selector.prefixlen_d, 32);
  EXPECT_EQ(p.dir, XFRM_POLICY_OUT);
  EXPECT_EQ(p.action, XFRM_POLICY_ALLOW);
  EXPECT_EQ(p.priority, 100u);
  EXPECT_EQ(p.index & 7, XFRM_POLICY_OUT);  // the kernel encodes the direction in the index
  EXPECT_EQ(p.ptype, XFRM_POLICY_TYPE_MAIN);
  EXPECT_EQ(p.lifetime.hard_byte_limit, ~0ULL);
  EXPECT_FALSE(p.mark);
  ASSERT_EQ(p.templates.size(), 1u);
  const XfrmTemplate& t = p.templates[0];
  EXPECT_EQ(t.saddr, ip("10.0.0.1"));
  EXPECT_EQ(t.daddr, ip("10.0.0.2"));
  EXPECT_EQ(t.proto, IPPROTO_ESP);
  EXPECT_EQ(t.spi, 0u);
  EXPECT_EQ(t.reqid, 1u);
  EXPECT_EQ(t.mode, XFRM_MODE_TRANSPORT);
  EXPECT_EQ(t.optional, 0);
  EXPECT_EQ(t.aalgos, 0xffffffffu);
  EXPECT_EQ(t.ealgos, 0xffffffffu);
}

TEST(XfrmLive, UpdatePolicy) {
  auto msgs = parse_fixture("policy-upd-v4.bin");
  ASSERT_EQ(msgs.size(), 1u);
  const auto& m = as<XfrmNewPolicy>(msgs[0]);
  EXPECT_EQ(m.type, kXfrmMsgUpdPolicy);
  ASSERT_EQ(m.policy.templates.size(), 1u);
  EXPECT_EQ(m.policy.templates[0].reqid, 2u);
}

TEST(XfrmLive, NewPolicyV6MarkIfIdTunnelTemplate) {
  auto msgs = parse_fixture("policy-new-v6-mark.bin");
  ASSERT_EQ(msgs.size(), 1u);
  const XfrmPolicy& p = as<XfrmNewPolicy>(msgs[0]).policy;
  EXPECT_EQ(p.selector.family, AF_INET6);
  EXPECT_EQ(p.selector.saddr, ip("fd00::1"));
  EXPECT_EQ(p.selector.daddr, ip("fd00::2"));
  EXPECT_EQ(p.selector.prefixlen_d, 128);
  EXPECT_EQ(p.selector.proto, IPPROTO_TCP);
  EXPECT_EQ(p.selector.dport, 443);
  EXPECT_EQ(p.selector.dport_mask, 0xffff);
  EXPECT_EQ(p.selector.sport_mask, 0);
  EXPECT_EQ(p.dir, XFRM_POLICY_IN);
  EXPECT_EQ(p.priority, 200u);
  ASSERT_TRUE(p.mark);
  EXPECT_EQ(p.mark->value, 0x10u);
  EXPECT_EQ(p.mark->mask, 0xffu);
  ASSERT_TRUE(p.if_id);
  EXPECT_EQ(*p.if_id, 7u);
  ASSERT_EQ(p.templates.size(), 1u);
  EXPECT_EQ(p.templates[0].mode, XFRM_MODE_TUNNEL);
  EXPECT_EQ(p.templates[0].optional, 1);  // level use
  EXPECT_EQ(p.templates[0].reqid, 3u);
  EXPECT_EQ(p.templates[0].saddr, ip("fd00::1"));
}

TEST(XfrmLive, SubPolicyAndDump) {
  auto sub = parse_fixture("policy-new-sub.bin");
  ASSERT_EQ(sub.size(), 1u);
  EXPECT_EQ(as<XfrmNewPolicy>(sub[0]).policy.ptype, XFRM_POLICY_TYPE_SUB);
  EXPECT_TRUE(as<XfrmNewPolicy>(sub[0]).policy.templates.empty());

  std::vector<std::uint16_t> flags;
  auto dump = parse_fixture("policy-dump.bin", &flags);
  ASSERT_EQ(dump.size(), 3u);
  for (std::size_t i = 0; i < dump.size(); ++i) {
    EXPECT_EQ(as<XfrmNewPolicy>(dump[i]).type, kXfrmMsgNewPolicy);
    EXPECT_TRUE(flags[i] & NLM_F_MULTI);
  }
  const auto msgs = split_messages(read_fixture("policy-dump.bin"));
  EXPECT_EQ(type_of(msgs.back()), NLMSG_DONE);
}

TEST(XfrmLive, DeletePolicyCarriesThePolicy) {
  auto msgs = parse_fixture("policy-del-v4.bin");
  ASSERT_EQ(msgs.size(), 1u);
  const auto& d = as<XfrmDelPolicy>(msgs[0]);
  EXPECT_EQ(d.id.dir, XFRM_POLICY_OUT);
  EXPECT_EQ(d.id.selector.daddr, ip("10.0.0.2"));
  EXPECT_EQ(d.ptype, XFRM_POLICY_TYPE_MAIN);
  ASSERT_TRUE(d.policy);
  EXPECT_EQ(d.policy->priority, 100u);
  ASSERT_EQ(d.policy->templates.size(), 1u);
  EXPECT_EQ(d.policy->templates[0].reqid, 2u);
}

TEST(XfrmLive, PolicyExpireSoftThenHard) {
  auto msgs = parse_fixture("policy-expire.bin");
  ASSERT_EQ(msgs.size(), 2u);
  const auto& soft = as<XfrmPolicyExpire>(msgs[0]);
  const auto& hard = as<XfrmPolicyExpire>(msgs[1]);
  EXPECT_FALSE(soft.hard);
  EXPECT_TRUE(hard.hard);
  EXPECT_EQ(hard.policy.dir, XFRM_POLICY_FWD);
  EXPECT_EQ(hard.policy.action, XFRM_POLICY_BLOCK);
  EXPECT_EQ(hard.policy.lifetime.soft_add_expires_seconds, 1u);
  EXPECT_EQ(hard.policy.lifetime.hard_add_expires_seconds, 2u);
  EXPECT_EQ(hard.policy.selector.saddr, ip("10.1.0.0"));
  EXPECT_EQ(hard.policy.selector.prefixlen_s, 16);
}

TEST(XfrmLive, DefaultPolicyNotificationAndReply) {
  for (const char* name : {"policy-default.bin", "getdefault-reply.bin"}) {
    auto msgs = parse_fixture(name);
    ASSERT_EQ(msgs.size(), 1u) << name;
    const auto& d = as<XfrmPolicyDefault>(msgs[0]);
    EXPECT_EQ(d.type, kXfrmMsgGetDefault);
    EXPECT_EQ(d.in, XFRM_USERPOLICY_BLOCK);
    EXPECT_EQ(d.fwd, XFRM_USERPOLICY_ACCEPT);
    EXPECT_EQ(d.out, XFRM_USERPOLICY_ACCEPT);
  }
}

TEST(XfrmLive, FlushPolicyMainAndSub) {
  auto main = parse_fixture("policy-flush.bin");
  ASSERT_EQ(main.size(), 1u);
  EXPECT_EQ(as<XfrmFlushPolicy>(main[0]).ptype, XFRM_POLICY_TYPE_MAIN);
  auto sub = parse_fixture("policy-flush-sub.bin");
  ASSERT_EQ(sub.size(), 1u);
  EXPECT_EQ(as<XfrmFlushPolicy>(sub[0]).ptype, XFRM_POLICY_TYPE_SUB);
}

TEST(XfrmLive, Acquire) {
  auto msgs = parse_fixture("acquire.bin");
  ASSERT_EQ(msgs.size(), 1u);
  const auto& a = as<XfrmAcquire>(msgs[0]);
  EXPECT_EQ(a.daddr, ip("10.0.0.2"));
  EXPECT_EQ(a.saddr, ip("10.0.0.1"));
  EXPECT_EQ(a.spi, 0u);
  EXPECT_EQ(a.proto, IPPROTO_ESP);
  EXPECT_EQ(a.selector.proto, IPPROTO_UDP);
  EXPECT_EQ(a.selector.dport, 9);
  EXPECT_EQ(a.selector.dport_mask, 0xffff);
  EXPECT_NE(a.selector.sport, 0);
  EXPECT_GT(a.selector.ifindex, 0);
  EXPECT_NE(a.seq, 0u);
  EXPECT_EQ(a.policy.dir, XFRM_POLICY_OUT);
  ASSERT_EQ(a.policy.templates.size(), 1u);
  EXPECT_EQ(a.policy.templates[0].reqid, 1u);
}

TEST(XfrmLive, LarvalSaFromDump) {
  std::vector<std::uint16_t> flags;
  auto msgs = parse_fixture("sa-dump-larval.bin", &flags);
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_TRUE(flags[0] & NLM_F_MULTI);
  const auto& n = as<XfrmNewSa>(msgs[0]);
  EXPECT_EQ(n.type, kXfrmMsgNewSa);
  const XfrmSa& sa = n.sa;
  EXPECT_EQ(sa.spi, 0u);  // larval
  EXPECT_EQ(sa.proto, IPPROTO_ESP);
  EXPECT_EQ(sa.reqid, 1u);
  EXPECT_EQ(sa.daddr, ip("10.0.0.2"));
  EXPECT_EQ(sa.saddr, ip("10.0.0.1"));
  EXPECT_EQ(sa.selector.proto, IPPROTO_UDP);
  EXPECT_FALSE(sa.aead || sa.auth || sa.enc || sa.comp);
  EXPECT_TRUE(sa.replay);
  // Captured on 6.18, which marks larval SAs as outbound (XFRMA_SA_DIR, 6.10+).
  ASSERT_TRUE(sa.sa_dir);
  EXPECT_EQ(*sa.sa_dir, 2);
}

TEST(XfrmLive, FlushSa) {
  auto msgs = parse_fixture("sa-flush.bin");
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(as<XfrmFlushSa>(msgs[0]).proto, 0);
}

TEST(XfrmLive, GetSaReplyWithUnspecSelector) {
  auto msgs = parse_fixture("sa-get-reply.bin");
  ASSERT_EQ(msgs.size(), 1u);
  const XfrmSa& sa = as<XfrmNewSa>(msgs[0]).sa;
  EXPECT_EQ(sa.spi, 0x1001u);
  EXPECT_EQ(sa.daddr, ip("10.0.0.3"));
  EXPECT_EQ(sa.reqid, 5u);
  // ALLOCSPI leaves the selector's family AF_UNSPEC; its addresses are the SA's.
  EXPECT_EQ(sa.selector.family, AF_UNSPEC);
  EXPECT_EQ(sa.selector.daddr, ip("10.0.0.3"));
  EXPECT_EQ(sa.selector.prefixlen_d, 32);
}

TEST(XfrmLive, AsyncEventReply) {
  auto msgs = parse_fixture("newae-reply.bin");
  ASSERT_EQ(msgs.size(), 1u);
  const auto& e = as<XfrmAsyncEvent>(msgs[0]);
  EXPECT_EQ(e.id.spi, 0x1001u);
  EXPECT_EQ(e.id.daddr, ip("10.0.0.3"));
  EXPECT_EQ(e.saddr, ip("10.0.0.1"));
  EXPECT_EQ(e.reqid, 5u);
  EXPECT_TRUE(e.replay);
  EXPECT_TRUE(e.current);
}

TEST(XfrmLive, DeleteSaCarriesTheSa) {
  auto msgs = parse_fixture("sa-del.bin");
  ASSERT_EQ(msgs.size(), 1u);
  const auto& d = as<XfrmDelSa>(msgs[0]);
  EXPECT_EQ(d.id.spi, 0x1001u);
  EXPECT_EQ(d.id.daddr, ip("10.0.0.3"));
  EXPECT_EQ(d.id.proto, IPPROTO_ESP);
  ASSERT_TRUE(d.sa);
  EXPECT_EQ(d.sa->reqid, 5u);
  EXPECT_EQ(d.sa->saddr, ip("10.0.0.1"));
}

TEST(XfrmLive, LarvalSaHardExpire) {
  auto msgs = parse_fixture("sa-expire-larval.bin");
  ASSERT_EQ(msgs.size(), 1u);
  const auto& e = as<XfrmExpire>(msgs[0]);
  EXPECT_TRUE(e.hard);
  EXPECT_EQ(e.sa.spi, 0x2001u);
  EXPECT_EQ(e.sa.daddr, ip("10.0.0.4"));
  EXPECT_EQ(e.sa.reqid, 6u);
  EXPECT_EQ(e.sa.lifetime.hard_add_expires_seconds, 1u);
}

TEST(XfrmLive, Migrate) {
  auto msgs = parse_fixture("migrate.bin");
  ASSERT_EQ(msgs.size(), 1u);
  const auto& m = as<XfrmMigrate>(msgs[0]);
  EXPECT_EQ(m.id.dir, XFRM_POLICY_OUT);
  EXPECT_EQ(m.id.selector.saddr, ip("10.0.0.0"));
  EXPECT_EQ(m.id.selector.daddr, ip("10.9.0.0"));
  EXPECT_EQ(m.ptype, XFRM_POLICY_TYPE_MAIN);
  ASSERT_EQ(m.entries.size(), 1u);
  const auto& e = m.entries[0];
  EXPECT_EQ(e.old_saddr, ip("192.0.2.1"));
  EXPECT_EQ(e.old_daddr, ip("192.0.2.2"));
  EXPECT_EQ(e.new_saddr, ip("192.0.2.11"));
  EXPECT_EQ(e.new_daddr, ip("192.0.2.12"));
  EXPECT_EQ(e.proto, IPPROTO_ESP);
  EXPECT_EQ(e.mode, XFRM_MODE_TUNNEL);
  EXPECT_EQ(e.reqid, 9u);
}

// ---- synthetic ESP SAs ----

TEST(XfrmSynthetic, AeadSaEveryField) {
  auto r = parse_one(esp_aead_sa());
  ASSERT_TRUE(r) << r.error().message;
  const auto& n = as<XfrmNewSa>(*r);
  EXPECT_EQ(n.type, kXfrmMsgNewSa);
  const XfrmSa& sa = n.sa;
  EXPECT_EQ(sa.daddr, ip("10.0.0.2"));
  EXPECT_EQ(sa.saddr, ip("10.0.0.1"));
  EXPECT_EQ(sa.spi, 0x1001u);
  EXPECT_EQ(sa.proto, IPPROTO_ESP);
  EXPECT_EQ(sa.reqid, 1u);
  EXPECT_EQ(sa.mode, XFRM_MODE_TRANSPORT);
  EXPECT_EQ(sa.flags, XFRM_STATE_AF_UNSPEC);
  EXPECT_FALSE(sa.esn());
  EXPECT_EQ(sa.replay_window, 32);
  EXPECT_EQ(sa.extra_flags, static_cast<std::uint32_t>(XFRM_SA_XFLAG_DONT_ENCAP_DSCP));
  EXPECT_EQ(sa.selector.dport, 4500);
  EXPECT_EQ(sa.selector.proto, IPPROTO_UDP);
  EXPECT_EQ(sa.lifetime.hard_add_expires_seconds, 3600u);
  EXPECT_EQ(sa.current.bytes, 1300u);
  EXPECT_EQ(sa.current.packets, 10u);
  EXPECT_EQ(sa.stats.replay, 2u);
  EXPECT_EQ(sa.stats.replay_window, 1u);
  EXPECT_EQ(sa.stats.integrity_failed, 3u);
  ASSERT_TRUE(sa.aead);
  EXPECT_EQ(sa.aead->name, "rfc4106(gcm(aes))");
  EXPECT_EQ(sa.aead->icv_bits, 128u);
  EXPECT_FALSE(sa.auth || sa.enc || sa.comp);
  ASSERT_TRUE(sa.replay);
  EXPECT_EQ(sa.replay->oseq, 7u);
  EXPECT_EQ(sa.replay->seq, 5u);
  EXPECT_EQ(sa.replay->bitmap, 0x1fu);
  ASSERT_TRUE(sa.encap);
  EXPECT_EQ(sa.encap->type, 2);
  EXPECT_EQ(sa.encap->sport, 4500);
  EXPECT_EQ(sa.encap->dport, 4501);
  EXPECT_EQ(sa.encap->oa, ip("0.0.0.0"));
  ASSERT_TRUE(sa.mark);
  EXPECT_EQ(sa.mark->value, 0x10u);
  ASSERT_TRUE(sa.if_id);
  EXPECT_EQ(*sa.if_id, 7u);
  ASSERT_TRUE(sa.sa_dir);
  EXPECT_EQ(*sa.sa_dir, 2);
  ASSERT_TRUE(sa.offload);
  EXPECT_EQ(sa.offload->ifindex, 4);
  EXPECT_EQ(sa.offload->flags, XFRM_OFFLOAD_INBOUND);
}

TEST(XfrmSynthetic, UpdSaIsANewSaOfTypeUpd) {
  auto r = parse_one(esp_aead_sa(XFRM_MSG_UPDSA));
  ASSERT_TRUE(r);
  EXPECT_EQ(as<XfrmNewSa>(*r).type, kXfrmMsgUpdSa);
}

TEST(XfrmSynthetic, EsnSaV6AuthEncComp) {
  auto r = parse_one(esp_esn_sa_v6());
  ASSERT_TRUE(r) << r.error().message;
  const XfrmSa& sa = as<XfrmNewSa>(*r).sa;
  EXPECT_EQ(sa.daddr, ip("fd00::2"));
  EXPECT_EQ(sa.spi, 0x2001u);
  EXPECT_EQ(sa.mode, XFRM_MODE_TUNNEL);
  EXPECT_TRUE(sa.esn());
  ASSERT_TRUE(sa.auth);
  EXPECT_EQ(sa.auth->name, "hmac(sha256)");
  ASSERT_TRUE(sa.auth->trunc_bits);
  EXPECT_EQ(*sa.auth->trunc_bits, 128u);
  ASSERT_TRUE(sa.enc);
  EXPECT_EQ(*sa.enc, "cbc(aes)");
  ASSERT_TRUE(sa.comp);
  EXPECT_EQ(*sa.comp, "deflate");
  EXPECT_FALSE(sa.aead);
  ASSERT_TRUE(sa.replay_esn);
  EXPECT_EQ(sa.replay_esn->bmp_len, 4u);
  EXPECT_EQ(sa.replay_esn->oseq, 100u);
  EXPECT_EQ(sa.replay_esn->seq, 90u);
  EXPECT_EQ(sa.replay_esn->oseq_hi, 1u);
  EXPECT_EQ(sa.replay_esn->seq_hi, 2u);
  EXPECT_EQ(sa.replay_esn->replay_window, 128u);
}

TEST(XfrmSynthetic, DelSaWithFinalSa) {
  auto r = parse_one(esp_delsa_v6());
  ASSERT_TRUE(r) << r.error().message;
  const auto& d = as<XfrmDelSa>(*r);
  EXPECT_EQ(d.id.spi, 0x2001u);
  EXPECT_EQ(d.id.daddr, ip("fd00::2"));
  ASSERT_TRUE(d.sa);
  EXPECT_EQ(d.sa->reqid, 3u);
  ASSERT_TRUE(d.sa->enc);
  EXPECT_EQ(*d.sa->enc, "cbc(aes)");

  // Without XFRMA_SA: just the id.
  const auto id = sa_id_v6();
  auto bare = parse_one(MsgBuilder(XFRM_MSG_DELSA, &id, sizeof id).done());
  ASSERT_TRUE(bare);
  EXPECT_FALSE(as<XfrmDelSa>(*bare).sa);
  EXPECT_FALSE(as<XfrmDelSa>(*bare).mark);

  // The id with its mark and if_id: SAs with the same id differ by them.
  const xfrm_mark mk{5, 0xffffffff};
  const std::uint32_t if_id = 9;
  auto marked = parse_one(MsgBuilder(XFRM_MSG_DELSA, &id, sizeof id)
                              .attr(XFRMA_MARK, &mk, sizeof mk)
                              .attr(XFRMA_IF_ID, &if_id, sizeof if_id)
                              .done());
  ASSERT_TRUE(marked) << marked.error().message;
  const auto& dm = as<XfrmDelSa>(*marked);
  ASSERT_TRUE(dm.mark);
  EXPECT_EQ(dm.mark->value, 5u);
  EXPECT_EQ(dm.mark->mask, 0xffffffffu);
  EXPECT_EQ(dm.if_id, 9u);
}

TEST(XfrmSynthetic, ExpireMappingAsyncEvent) {
  auto e = parse_one(esp_expire_v4(false));
  ASSERT_TRUE(e);
  EXPECT_FALSE(as<XfrmExpire>(*e).hard);
  EXPECT_EQ(as<XfrmExpire>(*e).sa.stats.integrity_failed, 3u);

  auto m = parse_one(mapping_v4());
  ASSERT_TRUE(m);
  const auto& map = as<XfrmMapping>(*m);
  EXPECT_EQ(map.id.spi, 0x1001u);
  EXPECT_EQ(map.old_saddr, ip("192.0.2.1"));
  EXPECT_EQ(map.new_saddr, ip("192.0.2.9"));
  EXPECT_EQ(map.old_sport, 4500);
  EXPECT_EQ(map.new_sport, 61000);

  auto a = parse_one(newae_esn_v4());
  ASSERT_TRUE(a);
  const auto& ae = as<XfrmAsyncEvent>(*a);
  EXPECT_EQ(ae.flags, static_cast<std::uint32_t>(XFRM_AE_CR));
  ASSERT_TRUE(ae.replay_esn);
  EXPECT_EQ(ae.replay_esn->oseq, 44u);
  ASSERT_TRUE(ae.current);
  EXPECT_EQ(ae.current->bytes, 602u);
  EXPECT_EQ(ae.replay_threshold, 2u);
  EXPECT_EQ(ae.timer_threshold, 10u);
}

TEST(XfrmSynthetic, UnknownTypeAndUnalignedPayload) {
  const std::uint32_t body = 0;
  auto u = parse_one(MsgBuilder(XFRM_MSG_REPORT, &body, 4).done());
  ASSERT_TRUE(u);
  EXPECT_EQ(as<XfrmUnknown>(*u).type, XFRM_MSG_REPORT);

  // A payload at an odd address parses the same (from an aligned copy).
  const Buf msg = esp_aead_sa();
  Buf shifted(msg.size() + 1);
  std::copy(msg.begin(), msg.end(), shifted.begin() + 1);
  NetlinkMessage nm;
  nm.type = XFRM_MSG_NEWSA;
  nm.payload = Bytes(shifted).subspan(1 + NLMSG_HDRLEN);
  auto r = parse_xfrm_message(nm);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(as<XfrmNewSa>(*r).sa, as<XfrmNewSa>(*parse_one(msg)).sa);
}

// ---- the key test ----

TEST(XfrmKeys, ParsedSaNeverHoldsKeyMaterial) {
  struct Case {
    Buf msg;
    std::vector<Buf> keys;
  };
  const Case cases[] = {
      {esp_aead_sa(), {kAeadKey}}, {esp_esn_sa_v6(), {kAuthKey, kEncKey}}, {esp_delsa_v6(), {kAuthKey, kEncKey}}};
  for (const Case& c : cases) {
    // The input really holds the key: the test would prove nothing otherwise.
    for (const Buf& k : c.keys) ASSERT_TRUE(contains_bytes(c.msg.data(), c.msg.size(), k));
    auto r = parse_one(c.msg);
    ASSERT_TRUE(r) << r.error().message;
    const std::string text = format_xfrm_message(*r);
    EXPECT_NE(text.find("spi=0x"), std::string::npos) << text;
    for (const Buf& k : c.keys) {
      expect_no_key(text, k);
      // Nor in the value's own bytes (the strings are short enough to live inside it).
      const Buf window(k.begin(), k.begin() + 8);
      EXPECT_FALSE(contains_bytes(&*r, sizeof(XfrmMessage), window));
    }
  }
}

// The same guarantee on real kernel bytes, once capture-esp.sh has been run
// in the ESP lab VM (it uses these same key patterns).
TEST(XfrmKeys, LabEspFixturesNeverYieldKeyMaterial) {
  const auto names = esp_fixture_names();
  if (names.empty()) GTEST_SKIP() << "no esp-*.bin yet: run capture-esp.sh in the ESP lab VM";
  bool saw_key_in_input = false;
  for (const auto& name : names) {
    for (const Buf& m : split_messages(read_fixture(name))) {
      if (is_control(type_of(m))) continue;
      for (const Buf& k : {kAeadKey, kAuthKey, kEncKey})
        saw_key_in_input = saw_key_in_input || contains_bytes(m.data(), m.size(), k);
      auto r = parse_one(m);
      ASSERT_TRUE(r) << name << ": " << r.error().message;
      EXPECT_FALSE(std::holds_alternative<XfrmUnknown>(*r)) << name;
      const std::string text = format_xfrm_message(*r);
      for (const Buf& k : {kAeadKey, kAuthKey, kEncKey}) expect_no_key(text, k);
    }
  }
  EXPECT_TRUE(saw_key_in_input) << "the lab fixtures should carry the known keys";
}

// ---- malformed input ----

TEST(XfrmMalformed, PayloadShorterThanFixedHeader) {
  for (std::uint16_t type :
       {XFRM_MSG_NEWSA, XFRM_MSG_UPDSA, XFRM_MSG_DELSA, XFRM_MSG_EXPIRE, XFRM_MSG_NEWPOLICY, XFRM_MSG_UPDPOLICY,
        XFRM_MSG_DELPOLICY, XFRM_MSG_POLEXPIRE, XFRM_MSG_ACQUIRE, XFRM_MSG_MAPPING, XFRM_MSG_MIGRATE, XFRM_MSG_FLUSHSA,
        XFRM_MSG_NEWAE, XFRM_MSG_GETDEFAULT, XFRM_MSG_SETDEFAULT}) {
    const std::size_t fixed = fixed_size(type);
    ASSERT_GT(fixed, 0u);
    const Buf zeros(fixed, 0);
    for (std::size_t n = 0; n < fixed; ++n) {
      NetlinkMessage m;
      m.type = type;
      m.payload = Bytes(zeros.data(), n);
      auto r = parse_xfrm_message(m);
      ASSERT_FALSE(r) << "type " << type << " payload " << n;
      EXPECT_EQ(r.error().code, Errc::truncated);
    }
  }
}

TEST(XfrmMalformed, EveryAttributeShortened) {
  // Rebuild each synthetic message with one attribute cut short by every
  // amount, its nla_len and the message length adjusted to match: for the
  // attributes the parser reads, that is always an error.
  for (const Buf& msg : synthetic_messages()) {
    const std::size_t fixed = NLMSG_HDRLEN + NLMSG_ALIGN(fixed_size(type_of(msg)));
    std::size_t off = fixed;
    while (off + NLA_HDRLEN <= msg.size()) {
      nlattr a{};
      std::memcpy(&a, msg.data() + off, sizeof a);
      const bool read = a.nla_type != XFRMA_SEC_CTX && a.nla_type != 200;
      for (std::size_t keep = 0; keep + NLA_HDRLEN < a.nla_len; ++keep) {
        Buf m(msg.begin(), msg.begin() + static_cast<std::ptrdiff_t>(off));
        nlattr cut = a;
        cut.nla_len = static_cast<std::uint16_t>(NLA_HDRLEN + keep);
        m.resize(m.size() + NLA_ALIGN(cut.nla_len));
        std::memcpy(m.data() + off, &cut, sizeof cut);
        std::memcpy(m.data() + off + NLA_HDRLEN, msg.data() + off + NLA_HDRLEN, keep);
        m.insert(m.end(), msg.begin() + static_cast<std::ptrdiff_t>(off + NLA_ALIGN(a.nla_len)), msg.end());
        auto r = parse_one(with_len(m, m.size()));
        if (read) {
          EXPECT_FALSE(r) << "type " << type_of(msg) << " attr " << a.nla_type << " kept " << keep;
        } else {
          EXPECT_TRUE(r) << "skipped attr " << a.nla_type;
        }
      }
      off += NLA_ALIGN(a.nla_len);
    }
  }
}

TEST(XfrmMalformed, LyingLengths) {
  const auto p = sa_info_v4();
  // alg_key_len claims more key than the attribute holds.
  Buf aead = algo<xfrm_algo_aead>("rfc4106(gcm(aes))", kAeadKey, 128);
  const unsigned too_long = 8 * 64;
  std::memcpy(aead.data() + offsetof(xfrm_algo_aead, alg_key_len), &too_long, 4);
  auto r = parse_one(MsgBuilder(XFRM_MSG_NEWSA, &p, sizeof p).attr(XFRMA_ALG_AEAD, aead.data(), aead.size()).done());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::malformed);

  // ESN bmp_len beyond the attribute.
  xfrm_replay_state_esn esn{64, 0, 0, 0, 0, 2048};
  r = parse_one(MsgBuilder(XFRM_MSG_NEWSA, &p, sizeof p).attr(XFRMA_REPLAY_ESN_VAL, &esn, sizeof esn).done());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::malformed);

  // nla_len beyond the message.
  Buf m = esp_aead_sa();
  const std::size_t first_attr = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof p);
  const std::uint16_t huge = 0xfff0;
  std::memcpy(m.data() + first_attr, &huge, 2);
  r = parse_one(m);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::truncated);

  // nla_len shorter than an attribute header.
  m = esp_aead_sa();
  const std::uint16_t tiny = 2;
  std::memcpy(m.data() + first_attr, &tiny, 2);
  EXPECT_FALSE(parse_one(m));

  // nlmsg_len beyond the datagram, and shorter than a header.
  m = esp_aead_sa();
  const std::uint32_t more = static_cast<std::uint32_t>(m.size() + 4), less = 8;
  std::memcpy(m.data(), &more, 4);
  EXPECT_FALSE(parse_one(m));
  std::memcpy(m.data(), &less, 4);
  EXPECT_FALSE(parse_one(m));

  // A scalar attribute longer than its type (exact length).
  const std::uint64_t wide_if_id = 7;
  EXPECT_FALSE(parse_one(MsgBuilder(XFRM_MSG_NEWSA, &p, sizeof p).attr(XFRMA_IF_ID, &wide_if_id, 8).done()));

  // Templates that are not whole entries, and more than XFRM_MAX_DEPTH of them.
  xfrm_userpolicy_info pi{};
  pi.sel.family = AF_INET;
  const Buf partial(sizeof(xfrm_user_tmpl) + 4, 0);
  EXPECT_FALSE(parse_one(
      MsgBuilder(XFRM_MSG_NEWPOLICY, &pi, sizeof pi).attr(XFRMA_TMPL, partial.data(), partial.size()).done()));
  std::vector<xfrm_user_tmpl> seven(7);
  for (auto& t : seven) t.family = AF_INET;
  EXPECT_FALSE(parse_one(MsgBuilder(XFRM_MSG_NEWPOLICY, &pi, sizeof pi)
                             .attr(XFRMA_TMPL, seven.data(), 7 * sizeof(xfrm_user_tmpl))
                             .done()));
  seven.resize(6);
  EXPECT_TRUE(parse_one(MsgBuilder(XFRM_MSG_NEWPOLICY, &pi, sizeof pi)
                            .attr(XFRMA_TMPL, seven.data(), 6 * sizeof(xfrm_user_tmpl))
                            .done()));

  // MIGRATE without its entries.
  xfrm_userpolicy_id pid{};
  pid.sel.family = AF_INET;
  EXPECT_FALSE(parse_one(MsgBuilder(XFRM_MSG_MIGRATE, &pid, sizeof pid).done()));
}

TEST(XfrmMalformed, BogusFamilies) {
  auto p = sa_info_v4();
  p.family = AF_UNIX;
  auto r = parse_one(MsgBuilder(XFRM_MSG_NEWSA, &p, sizeof p).done());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::malformed);

  p = sa_info_v4();
  p.sel.family = 99;
  EXPECT_FALSE(parse_one(MsgBuilder(XFRM_MSG_NEWSA, &p, sizeof p).done()));

  p = sa_info_v4();
  p.sel.prefixlen_d = 33;  // beyond an IPv4 address
  r = parse_one(MsgBuilder(XFRM_MSG_NEWSA, &p, sizeof p).done());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::out_of_range);

  xfrm_userpolicy_info pi{};
  pi.sel.family = AF_INET;
  xfrm_user_tmpl t{};
  t.family = 0;
  EXPECT_FALSE(parse_one(MsgBuilder(XFRM_MSG_NEWPOLICY, &pi, sizeof pi).attr(XFRMA_TMPL, &t, sizeof t).done()));
  pi.sel.family = AF_UNSPEC;  // a policy's selector always has a family
  EXPECT_FALSE(parse_one(MsgBuilder(XFRM_MSG_NEWPOLICY, &pi, sizeof pi).done()));

  xfrm_user_mapping um{};
  um.id.family = 1234;
  EXPECT_FALSE(parse_one(MsgBuilder(XFRM_MSG_MAPPING, &um, sizeof um).done()));

  // The DELSA id and the SA inside it are checked separately.
  Buf d = esp_delsa_v6();
  const std::uint16_t bogus = 77;
  std::memcpy(d.data() + NLMSG_HDRLEN + offsetof(xfrm_usersa_id, family), &bogus, 2);
  EXPECT_FALSE(parse_one(d));
}

TEST(XfrmMalformed, AlgorithmNameBoundedAndPrintable) {
  const auto p = sa_info_v4();
  // 64 name bytes and no NUL: the name is the 64 bytes, nothing beyond.
  Buf enc = algo<xfrm_algo>("x", kEncKey);
  std::fill(enc.begin(), enc.begin() + 64, 'a');
  auto r = parse_one(MsgBuilder(XFRM_MSG_NEWSA, &p, sizeof p).attr(XFRMA_ALG_CRYPT, enc.data(), enc.size()).done());
  ASSERT_TRUE(r);
  EXPECT_EQ(*as<XfrmNewSa>(*r).sa.enc, std::string(64, 'a'));
  enc[3] = '\n';
  EXPECT_FALSE(
      parse_one(MsgBuilder(XFRM_MSG_NEWSA, &p, sizeof p).attr(XFRMA_ALG_CRYPT, enc.data(), enc.size()).done()));
}

// Every prefix of every message: with the original nlmsg_len the framing
// rejects it; with nlmsg_len rewritten to the cut, the parser must fail
// unless the cut falls exactly after the fixed header or an attribute. Run
// under -fsanitize=address,undefined to check that no cut reads out of bounds.
TEST(XfrmTruncation, EveryByteOffsetOfEveryMessage) {
  std::vector<Buf> all = synthetic_messages();
  std::vector<std::string> names(std::begin(kLiveFixtures), std::end(kLiveFixtures));
  for (const auto& n : esp_fixture_names()) names.push_back(n);
  for (const auto& name : names)
    for (Buf& m : split_messages(read_fixture(name)))
      if (!is_control(type_of(m))) all.push_back(std::move(m));
  std::size_t cuts = 0;
  for (const Buf& msg : all) {
    const auto clean = clean_cut_lengths(msg);
    for (std::size_t k = 0; k < msg.size(); ++k) {
      const Buf prefix(msg.begin(), msg.begin() + static_cast<std::ptrdiff_t>(k));
      std::size_t seen = 0;
      auto walk = for_each_netlink_message(Bytes(prefix), [&](const NetlinkMessage&) {
        ++seen;
        return true;
      });
      EXPECT_TRUE(!walk || seen == 0) << "type " << type_of(msg) << " cut " << k;
      if (k < NLMSG_HDRLEN) continue;
      auto r = parse_one(with_len(msg, k));
      const bool is_clean = std::find(clean.begin(), clean.end(), k - NLMSG_HDRLEN) != clean.end();
      if (!is_clean) {
        EXPECT_FALSE(r) << "type " << type_of(msg) << " cut " << k;
      }
      ++cuts;
    }
  }
  EXPECT_GT(cuts, 5000u);
}

// ---- requests ----

TEST(XfrmRequests, DumpsAndGets) {
  auto check = [](const Buf& req, std::uint16_t type, std::uint16_t flags, std::size_t payload) {
    int n = 0;
    auto w = for_each_netlink_message(Bytes(req), [&](const NetlinkMessage& m) {
      EXPECT_EQ(m.type, type);
      EXPECT_EQ(m.flags, flags);
      EXPECT_EQ(m.seq, 9u);
      EXPECT_EQ(m.payload.size(), payload);
      ++n;
      return true;
    });
    EXPECT_TRUE(w);
    EXPECT_EQ(n, 1);
  };
  check(build_xfrm_dump_sa(9), XFRM_MSG_GETSA, NLM_F_REQUEST | NLM_F_DUMP, 0);
  check(build_xfrm_dump_policy(9), XFRM_MSG_GETPOLICY, NLM_F_REQUEST | NLM_F_DUMP, 0);
  // The 3-byte struct is padded to 4, as the kernel pads its own messages.
  check(build_xfrm_get_default(9), XFRM_MSG_GETDEFAULT, NLM_F_REQUEST | NLM_F_ACK,
        NLMSG_ALIGN(sizeof(xfrm_userpolicy_default)));

  const Buf get = build_xfrm_get_sa(9, XfrmSaRef{ip("fd00::2"), 0x2001, IPPROTO_ESP, {}, {}});
  check(get, XFRM_MSG_GETSA, NLM_F_REQUEST | NLM_F_ACK, sizeof(xfrm_usersa_id));
  xfrm_usersa_id id{};
  std::memcpy(&id, get.data() + NLMSG_HDRLEN, sizeof id);
  EXPECT_EQ(id.spi, htonl(0x2001));
  EXPECT_EQ(id.family, AF_INET6);
  EXPECT_EQ(id.proto, IPPROTO_ESP);
  EXPECT_EQ(IpAddress::from_v6(id.daddr.a6), ip("fd00::2"));

  const Buf get4 = build_xfrm_get_sa(1, XfrmSaRef{ip("10.0.0.2"), 0x1001, IPPROTO_ESP, {}, {}});
  std::memcpy(&id, get4.data() + NLMSG_HDRLEN, sizeof id);
  EXPECT_EQ(id.family, AF_INET);
  EXPECT_EQ(IpAddress::from_v4(&id.daddr.a4), ip("10.0.0.2"));
  EXPECT_EQ(id.daddr.a6[1], 0u);  // nothing but the four address bytes
}

// The kernel finds a marked SA for GETSA only by XFRMA_MARK (without it it
// looks up mark 0): the request carries the SA's mark, and its if_id.
TEST(XfrmRequests, GetSaCarriesMarkAndIfId) {
  XfrmSa sa;
  sa.daddr = ip("10.0.0.2");
  sa.spi = 0x1001;
  sa.proto = IPPROTO_ESP;
  sa.mark = XfrmMark{7, 0xff};
  sa.if_id = 42;
  const Buf req = build_xfrm_get_sa(3, sa_ref(sa));
  int n = 0;
  std::optional<xfrm_mark> mark;
  std::optional<std::uint32_t> if_id;
  bool attrs_whole = true;
  auto w = for_each_netlink_message(Bytes(req), [&](const NetlinkMessage& m) {
    ++n;
    EXPECT_EQ(m.type, XFRM_MSG_GETSA);
    EXPECT_EQ(m.flags, NLM_F_REQUEST | NLM_F_ACK);
    std::size_t off = NLMSG_ALIGN(sizeof(xfrm_usersa_id));
    while (off + sizeof(nlattr) <= m.payload.size()) {
      nlattr a{};
      std::memcpy(&a, m.payload.data() + off, sizeof a);
      if (a.nla_len < sizeof a || off + a.nla_len > m.payload.size()) {
        attrs_whole = false;
        break;
      }
      const std::uint8_t* body = m.payload.data() + off + NLA_HDRLEN;
      if (a.nla_type == XFRMA_MARK && a.nla_len == NLA_HDRLEN + sizeof(xfrm_mark)) {
        xfrm_mark v{};
        std::memcpy(&v, body, sizeof v);
        mark = v;
      }
      if (a.nla_type == XFRMA_IF_ID && a.nla_len == NLA_HDRLEN + 4) {
        std::uint32_t v = 0;
        std::memcpy(&v, body, 4);
        if_id = v;
      }
      off += NLA_ALIGN(a.nla_len);
    }
    return true;
  });
  EXPECT_TRUE(w);
  EXPECT_EQ(n, 1);
  EXPECT_TRUE(attrs_whole);
  ASSERT_TRUE(mark);
  EXPECT_EQ(mark->v, 7u);
  EXPECT_EQ(mark->m, 0xffu);
  ASSERT_TRUE(if_id);
  EXPECT_EQ(*if_id, 42u);
  // No mark, no if_id: the bare xfrm_usersa_id.
  sa.mark.reset();
  sa.if_id.reset();
  EXPECT_EQ(build_xfrm_get_sa(3, sa_ref(sa)).size(), NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(xfrm_usersa_id)));
}

// ---- netns ----

TEST(Netns, RejectsNamesThatAreNotPlainFileNames) {
  for (const char* bad : {"", ".", "..", "a/b", "../etc"}) {
    auto s = open_netlink_socket_in_netns(bad, NETLINK_XFRM);
    ASSERT_FALSE(s) << bad;
    EXPECT_EQ(s.error().code, Errc::malformed);
  }
  auto missing = ScopedNetns::enter("xt-does-not-exist-4242");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Errc::io);
}

// Live: needs root and iproute2, so only with IPSEC_AUDIT_NETNS_TESTS=1. It
// creates and deletes its own netns `xt-unit-PID`.
TEST(Netns, SocketLivesInTheNamespaceAndTheThreadComesBack) {
  if (std::getenv("IPSEC_AUDIT_NETNS_TESTS") == nullptr || geteuid() != 0)
    GTEST_SKIP() << "set IPSEC_AUDIT_NETNS_TESTS=1 and run as root";
  const std::string name = "xt-unit-" + std::to_string(getpid());
  ASSERT_EQ(std::system(("ip netns add " + name).c_str()), 0);
  auto inode = [](const char* path) {
    struct stat st {};
    return ::stat(path, &st) == 0 ? st.st_ino : 0;
  };
  const auto before = inode("/proc/thread-self/ns/net");
  auto sock = open_netlink_socket_in_netns(name, NETLINK_XFRM);
  EXPECT_EQ(inode("/proc/thread-self/ns/net"), before);
  ASSERT_TRUE(sock) << sock.error().message;
  // The socket sees the netns's policy database (one policy), not the host's.
  ASSERT_EQ(std::system(("ip -n " + name + " xfrm policy add src 10.77.0.0/16 dst 10.78.0.0/16 dir in").c_str()), 0);
  std::vector<XfrmPolicy> policies;
  const Buf req = build_xfrm_dump_policy(5);
  auto t = sock->transact(
      req, 5,
      [&](const NetlinkMessage& m) {
        auto r = parse_xfrm_message(m);
        if (r && std::holds_alternative<XfrmNewPolicy>(*r)) policies.push_back(std::get<XfrmNewPolicy>(*r).policy);
      },
      ReplyKind::dump);
  EXPECT_TRUE(t) << (t ? "" : t.error().message);
  ASSERT_EQ(policies.size(), 1u);
  EXPECT_EQ(policies[0].selector.saddr, ip("10.77.0.0"));
  // The kernel accepts a GETSA that carries XFRMA_MARK and XFRMA_IF_ID: no
  // such SA (ESRCH), not an invalid request (EINVAL).
  XfrmSa probe;
  probe.daddr = ip("10.77.0.1");
  probe.spi = 0x4242;
  probe.proto = IPPROTO_ESP;
  probe.mark = XfrmMark{1, 0xffffffff};
  probe.if_id = 7;
  auto g = sock->transact(build_xfrm_get_sa(6, sa_ref(probe)), 6, [](const NetlinkMessage&) {}, ReplyKind::ack);
  ASSERT_FALSE(g);
  EXPECT_EQ(g.error().sys_errno, ESRCH) << g.error().message;
  EXPECT_EQ(std::system(("ip netns del " + name).c_str()), 0);
}
