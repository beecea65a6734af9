#include "xfrm/audit_record.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

using namespace ipsec;

namespace {
// Real lines recorded from Debian's 6.1 kernel (shared/kernel-facts/audit.log).
constexpr const char* kReplay =
    "audit(1795394830.804:16): op=SA-replayed-pkt src=10.0.0.1 dst=10.0.0.2 spi=4097(0x1001) seqno=1";
constexpr const char* kIcv =
    "audit(1795394826.304:15): op=SA-icv-failure src=10.0.0.1 dst=10.0.0.2 spi=4097(0x1001) seqno=100";
constexpr const char* kNotFound6 =
    "audit(1795394846.080:25): op=SA-notfound src=fd00:0000:0000:0000:0000:0000:0000:0001 "
    "dst=fd00:0000:0000:0000:0000:0000:0000:0002 flowlbl=0x22e28 spi=57005(0xdead) seqno=1";
constexpr const char* kOverflow =
    "audit(1795394855.316:32): op=SA-replay-overflow src=10.0.0.1 dst=10.0.0.2 spi=4099(0x1003)";
constexpr const char* kSpdAdd =
    "audit(1795394816.852:7): op=SPD-add auid=4294967295 ses=4294967295 subj=unconfined res=1 src=10.0.0.1 "
    "dst=10.0.0.2";
}  // namespace

TEST(AuditRecord, ReplayedPacket) {
  auto r = parse_ipsec_audit_record(kReplay);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->header.sec, 1795394830);
  EXPECT_EQ(r->header.msec, 804u);
  EXPECT_EQ(r->header.serial, 16u);
  EXPECT_EQ(r->op, "SA-replayed-pkt");
  EXPECT_EQ(r->src->to_string(), "10.0.0.1");
  EXPECT_EQ(r->dst->to_string(), "10.0.0.2");
  EXPECT_EQ(*r->spi, 0x1001u);
  EXPECT_EQ(*r->seqno, 1u);
  EXPECT_FALSE(r->flowlbl);
  EXPECT_TRUE(r->other.empty());
}

TEST(AuditRecord, IcvFailure) {
  auto r = parse_ipsec_audit_record(kIcv);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->op, "SA-icv-failure");
  EXPECT_EQ(*r->seqno, 100u);
}

TEST(AuditRecord, NotFoundV6ExpandedAddressesAndFlowLabel) {
  auto r = parse_ipsec_audit_record(kNotFound6);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->src->family, Family::inet6);
  EXPECT_EQ(r->src->to_string(), "fd00::1");
  EXPECT_EQ(r->dst->to_string(), "fd00::2");
  EXPECT_EQ(*r->flowlbl, 0x22e28u);
  EXPECT_EQ(*r->spi, 0xdeadu);
}

TEST(AuditRecord, NotFoundWithoutSpiOrSeq) {
  auto r = parse_ipsec_audit_record("audit(1.000:1): op=SA-notfound src=10.0.0.1 dst=10.0.0.2");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_FALSE(r->spi);
  EXPECT_FALSE(r->seqno);
}

TEST(AuditRecord, OverflowHasNoSeq) {
  auto r = parse_ipsec_audit_record(kOverflow);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->op, "SA-replay-overflow");
  EXPECT_EQ(*r->spi, 0x1003u);
  EXPECT_FALSE(r->seqno);
}

TEST(AuditRecord, SpdAddSubjectFields) {
  auto r = parse_ipsec_audit_record(kSpdAdd);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->op, "SPD-add");
  EXPECT_EQ(*r->auid, 4294967295u);
  EXPECT_EQ(*r->ses, 4294967295u);
  EXPECT_EQ(*r->subj, "unconfined");
  EXPECT_EQ(*r->res, 1);
  EXPECT_FALSE(r->spi);
}

TEST(AuditRecord, PrefixLengthsAndUnknownFieldsKept) {
  auto r = parse_ipsec_audit_record(
      "audit(1.001:2): op=SPD-delete auid=0 ses=1 subj=system_u:system_r:ipsec_t:s0 res=1 src=10.1.0.0 "
      "src_prefixlen=16 dst=10.2.0.0 dst_prefixlen=24 newfield=\"quoted value\" other=x\n");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r->src_prefixlen, 16);
  EXPECT_EQ(*r->dst_prefixlen, 24);
  EXPECT_EQ(*r->subj, "system_u:system_r:ipsec_t:s0");
  ASSERT_EQ(r->other.size(), 2u);
  EXPECT_EQ(r->other[0].first, "newfield");
  EXPECT_EQ(r->other[0].second, "quoted value");
  EXPECT_EQ(r->other[1].second, "x");
}

TEST(AuditRecord, UnknownOpIsKept) {
  auto r = parse_ipsec_audit_record("audit(5.000:9): op=SA-future-thing src=10.0.0.1 dst=10.0.0.2 spi=1(0x1)");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->op, "SA-future-thing");
}

TEST(AuditRecord, TrailingNulAndNewlineIgnored) {
  std::string s = std::string(kReplay) + "\n";
  s.push_back('\0');
  EXPECT_TRUE(parse_ipsec_audit_record(s));
}

struct Bad {
  const char* text;
  Errc code;
};

class AuditRecordMalformed : public ::testing::TestWithParam<Bad> {};

TEST_P(AuditRecordMalformed, ClearErrorNoCrash) {
  auto r = parse_ipsec_audit_record(GetParam().text);
  ASSERT_FALSE(r) << GetParam().text;
  EXPECT_EQ(r.error().code, GetParam().code) << r.error().message;
  EXPECT_FALSE(r.error().message.empty());
}

INSTANTIATE_TEST_SUITE_P(
    Inputs, AuditRecordMalformed,
    ::testing::Values(
        Bad{"", Errc::malformed}, Bad{"audit(", Errc::truncated}, Bad{"audit(1795394830.804:16", Errc::truncated},
        Bad{"audit(1795394830.80:16): op=x", Errc::malformed}, Bad{"audit(x.804:16): op=x", Errc::out_of_range},
        Bad{"audit(1.804:99999999999999999999999): op=x", Errc::out_of_range},
        Bad{"audit(99999999999999999999.804:1): op=x", Errc::out_of_range},
        Bad{"audit(1.000:1): src=10.0.0.1", Errc::malformed},                             // no op
        Bad{"audit(1.000:1): op=SA-icv-failure src=10.0.0.1 dst=10.0", Errc::malformed},  // truncated address
        Bad{"audit(1.000:1): op=SA-icv-failure spi=4097(0x1002)", Errc::malformed},       // disagreeing SPI
        Bad{"audit(1.000:1): op=SA-icv-failure spi=4294967296(0x100000000)", Errc::malformed},
        Bad{"audit(1.000:1): op=SA-icv-failure seqno=99999999999", Errc::malformed},
        Bad{"audit(1.000:1): op=SA-icv-failure seqno=-1", Errc::malformed},
        Bad{"audit(1.000:1): op=SA-notfound flowlbl=0x100000", Errc::malformed},  // > 20 bits
        Bad{"audit(1.000:1): op=SA-notfound flowlbl=22e28", Errc::malformed},
        Bad{"audit(1.000:1): op=SA-icv-failure src=10.0.0.1 src=10.0.0.3", Errc::malformed},  // duplicate
        Bad{"audit(1.000:1): op=SA-icv-failure x=1 x=2", Errc::malformed},
        Bad{"audit(1.000:1): op=SA-icv-failure src=10.0.0.1 dst=fd00::2", Errc::malformed},  // mixed families
        Bad{"audit(1.000:1): op=SA-icv-failure garbage", Errc::malformed},
        Bad{"audit(1.000:1): op=SA-icv-failure subj=\"unterminated", Errc::malformed},
        Bad{"audit(1.000:1): op=SA-icv-failure res=2", Errc::malformed},
        Bad{"audit(1.000:1): op=SPD-add src_prefixlen=129", Errc::malformed},
        Bad{"audit(1.000:1): op= src=10.0.0.1", Errc::malformed}, Bad{"audit(1.000:1): =x op=y", Errc::malformed}));

TEST(AuditRecord, NonUtf8AndControlBytesAreKeptNotFatal) {
  const std::string s = std::string("audit(1.000:1): op=SA-x\xff\xfe src=10.0.0.1 note=\x01\x80\xc3");
  auto r = parse_ipsec_audit_record(s);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->op, "SA-x\xff\xfe");
}

TEST(AuditRecord, HugeInputRefusedNotSlow) {
  std::string s = "audit(1.000:1): op=SA-icv-failure";
  for (int i = 0; i < 100000; ++i) s += " k" + std::to_string(i) + "=v";
  auto r = parse_ipsec_audit_record(s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::out_of_range);
}

namespace {
struct Unparsable {
  std::string op, spi, subj, text;
};

std::vector<Unparsable> load_unparsable() {
  std::ifstream in(std::string(FIXTURE_DIR) + "/audit/unparsable.txt");
  std::vector<Unparsable> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line.rfind("EXPECT ", 0) == 0) {
      Unparsable u;
      std::stringstream ss(line.substr(7));
      std::getline(ss, u.op, '|');
      std::getline(ss, u.spi, '|');
      std::getline(ss, u.subj);
      out.push_back(u);
    } else if (!out.empty()) {
      out.back().text = line;
    }
  }
  return out;
}
}  // namespace

TEST(AuditRecordSalvage, EveryFixtureIsRefusedStrictlyButSalvaged) {
  const auto cases = load_unparsable();
  ASSERT_EQ(cases.size(), 6u);
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    EXPECT_FALSE(parse_ipsec_audit_record(c.text));
    const SalvagedAuditRecord s = salvage_ipsec_audit_record(c.text);
    EXPECT_FALSE(s.problem.empty());
    EXPECT_EQ(s.text, c.text);
    EXPECT_EQ(s.fields.op, c.op == "-" ? "" : c.op);
    EXPECT_EQ(s.fields.spi ? std::to_string(*s.fields.spi) : "-", c.spi);
    EXPECT_EQ(s.fields.subj.value_or("-"), c.subj);
  }
}

TEST(AuditRecordSalvage, LabelWithSpaceKeepsTheFieldsAfterIt) {
  const auto s = salvage_ipsec_audit_record(
      "audit(1795394816.900:8): op=SAD-add auid=0 ses=3 subj=/usr/sbin/charon (enforce) res=1 src=10.0.0.1 "
      "dst=10.0.0.2 spi=4097(0x1001)\n");
  ASSERT_TRUE(s.header);
  EXPECT_EQ(s.header->serial, 8u);
  EXPECT_EQ(s.problem, "field subj: a label with a space (taken as one label)");
  EXPECT_EQ(*s.fields.res, 1);
  EXPECT_EQ(s.fields.dst->to_string(), "10.0.0.2");
  EXPECT_EQ(*s.fields.auid, 0u);
}

TEST(AuditRecordSalvage, NoHeaderKeepsOnlyTheText) {
  const auto s = salvage_ipsec_audit_record("garbage without a header");
  EXPECT_FALSE(s.header);
  EXPECT_FALSE(s.problem.empty());
  EXPECT_EQ(s.text, "garbage without a header");
  EXPECT_TRUE(s.fields.op.empty());
}

TEST(AuditRecordSalvage, RawTextIsBounded) {
  const std::string big = "audit(1.000:1): op=x " + std::string(20000, 'a');
  const auto s = salvage_ipsec_audit_record(big);
  EXPECT_EQ(s.text.size(), kMaxSalvagedText);
}
