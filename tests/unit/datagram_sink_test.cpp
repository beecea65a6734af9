#include "audit/datagram_sink.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "audit/catalogue.hpp"
#include "audit/json_writer.hpp"

using namespace ipsec;

namespace {

Event packet_event() {
  Event e;
  e.kind = EventKind::incorrect_spi;
  e.source = Source::kernel_audit;
  e.time = std::chrono::system_clock::time_point(std::chrono::seconds(1795394846) + std::chrono::nanoseconds(80123456));
  e.src = IpAddress::parse("fd00::1");
  e.dst = IpAddress::parse("192.0.2.2");
  e.spi = 0x1234;
  e.seq = 7;
  e.netns = "vpn\"]\\";
  e.message = "bad SPI\nsecond line";
  return e;
}

std::string field(const JournalFields& f, std::string_view name) {
  for (const auto& [n, v] : f)
    if (n == name) return v;
  return "<absent>";
}

}  // namespace

TEST(Journal, FieldsOfAPacketRecord) {
  const auto e = packet_event();
  const auto f = journal_fields(e, "{\"x\":1}\n");
  EXPECT_EQ(field(f, "MESSAGE_ID"), journal_message_id(EventKind::incorrect_spi));
  EXPECT_EQ(field(f, "MESSAGE_ID").size(), 32u);
  EXPECT_EQ(field(f, "PRIORITY"), "5");
  EXPECT_EQ(field(f, "SYSLOG_IDENTIFIER"), "ipsec-auditd");
  EXPECT_EQ(field(f, "IPSEC_EVENT"), "incorrect-spi");
  EXPECT_EQ(field(f, "IPSEC_EVENT_ID"), "4965");
  EXPECT_EQ(field(f, "IPSEC_AUDIT_CLASS"), "success");
  EXPECT_EQ(field(f, "IPSEC_SPI"), "4660");
  EXPECT_EQ(field(f, "IPSEC_SPI_HEX"), "0x00001234");
  EXPECT_EQ(field(f, "IPSEC_SRC"), "fd00::1");
  EXPECT_EQ(field(f, "IPSEC_DST"), "192.0.2.2");
  EXPECT_EQ(field(f, "IPSEC_SEQ"), "7");
  EXPECT_EQ(field(f, "IPSEC_NETNS"), "vpn\"]\\");
  EXPECT_EQ(field(f, "IPSEC_RECORD"), "{\"x\":1}");
  EXPECT_EQ(field(f, "IPSEC_COUNT"), "<absent>");
  EXPECT_EQ(field(f, "MESSAGE"), "bad SPI\nsecond line");
}

TEST(Journal, AgentRecordsHaveOnlyTheirFieldsAndPriorityByClass) {
  Event e;
  e.kind = EventKind::service_started;
  auto f = journal_fields(e, "{}\n");
  EXPECT_EQ(field(f, "PRIORITY"), "6");
  EXPECT_EQ(field(f, "MESSAGE"), "service-started");
  EXPECT_EQ(field(f, "IPSEC_SPI"), "<absent>");
  EXPECT_EQ(field(f, "IPSEC_SRC"), "<absent>");
  e.kind = EventKind::output_failed;
  EXPECT_EQ(field(journal_fields(e, "{}\n"), "PRIORITY"), "4");
  e.kind = EventKind::critical_failure;
  EXPECT_EQ(field(journal_fields(e, "{}\n"), "PRIORITY"), "3");
}

TEST(Journal, MessageIdsAreFixedAndDistinct) {
  // Published in docs/journald.md: a changed ID breaks operators' queries.
  EXPECT_EQ(journal_message_id(EventKind::integrity_check_failed), "48219ede04a7441a825d33e0fdde8037");
  for (std::size_t i = 0; i < kEventKindCount; ++i) {
    const auto id = journal_message_id(static_cast<EventKind>(i));
    EXPECT_EQ(id.find_first_not_of("0123456789abcdef"), std::string_view::npos) << id;
  }
}

TEST(Journal, NativeProtocolEncoding) {
  std::string out;
  append_journal_datagram(out, {{"MESSAGE", "one\ntwo"}, {"IPSEC_SPI", "1"}});
  const std::string want = std::string("MESSAGE\n") + std::string("\x07\0\0\0\0\0\0\0", 8) + "one\ntwo\nIPSEC_SPI=1\n";
  EXPECT_EQ(out, want);
}

TEST(Syslog, Rfc5424Message) {
  const auto e = packet_event();
  std::string out;
  append_rfc5424(out, e, "{\"x\":1}\n", "vm1", 42);
  EXPECT_EQ(out,
            "<85>1 2026-11-23T00:47:26.080123Z vm1 ipsec-auditd 42 incorrect-spi "
            "[ipsec@32473 event=\"incorrect-spi\" event_id=\"4965\" class=\"success\" source=\"kernel-audit\" "
            "spi=\"4660\" src=\"fd00::1\" dst=\"192.0.2.2\" seq=\"7\" netns=\"vpn\\\"\\]\\\\\"] "
            "\xEF\xBB\xBF{\"x\":1}");
}

TEST(Syslog, HeaderFieldsThatAreNotPrintableBecomeNil) {
  Event e;
  e.kind = EventKind::critical_failure;
  std::string out;
  append_rfc5424(out, e, "{}\n", "bad host", 1);
  EXPECT_EQ(out.substr(0, 4), "<83>");
  EXPECT_NE(out.find(" - ipsec-auditd 1 critical-failure [ipsec@32473 "), std::string::npos) << out;
}

TEST(Syslog, SdValueEscapes) {
  std::string out;
  append_sd_value(out, std::string("a\"b\\c]d\x01\xff\xc3\xa9", 11));
  EXPECT_EQ(out, "a\\\"b\\\\c\\]d??\xc3\xa9");
}

namespace {
struct Receiver {
  std::filesystem::path path;
  int fd{-1};
  Receiver() {
    path = std::filesystem::temp_directory_path() / ("ipsec-audit-dgram-" + std::to_string(::getpid()));
    std::filesystem::remove(path);
    fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) ADD_FAILURE() << "bind " << path;
  }
  ~Receiver() {
    ::close(fd);
    std::filesystem::remove(path);
  }
  std::string take() {
    char buf[65536];
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
  }
};
}  // namespace

TEST(DatagramSink, SendsJournalDatagramsAndCountsAStuckReceiverWithoutBlocking) {
  Receiver rx;
  auto s = DatagramSink::open(DatagramSink::Format::journald, rx.path.string());
  ASSERT_TRUE(s) << s.error().message;
  const auto e = packet_event();
  std::string line;
  JsonWriter("h").write(e, line);
  ASSERT_TRUE((*s)->write_event(e, line));
  const auto got = rx.take();
  EXPECT_NE(got.find("IPSEC_EVENT=incorrect-spi\n"), std::string::npos);
  EXPECT_NE(got.find(std::string("MESSAGE_ID=") + std::string(journal_message_id(e.kind)) + "\n"), std::string::npos);
  // Nobody reads: the queue fills and records fail, the call returns.
  for (int i = 0; i < 5000 && (*s)->stats().failed == 0; ++i) (*s)->write_event(e, line);
  EXPECT_GT((*s)->stats().failed, 0u);
  EXPECT_EQ((*s)->stats().last_errno, EAGAIN);
}

TEST(DatagramSink, AnAbsentReceiverIsAFailureAndItsReturnARecovery) {
  const auto path = std::filesystem::temp_directory_path() / ("ipsec-audit-dgram-" + std::to_string(::getpid()));
  std::filesystem::remove(path);
  auto s = DatagramSink::open(DatagramSink::Format::syslog, path.string());
  ASSERT_TRUE(s);
  const auto e = packet_event();
  EXPECT_FALSE((*s)->write_event(e, "{}\n"));
  EXPECT_EQ((*s)->take_transition(), SinkTransition::failed);
  Receiver rx;
  EXPECT_TRUE((*s)->write_event(e, "{}\n"));
  EXPECT_EQ((*s)->take_transition(), SinkTransition::recovered);
  EXPECT_EQ(rx.take().substr(0, 6), "<85>1 ");
}
