// Normaliser: kernel audit records -> Events. Pure: the receive time is passed in.
#pragma once

#include <chrono>

#include "audit/event.hpp"
#include "xfrm/audit_record.hpp"

namespace ipsec {

Event event_from_ipsec_audit(const IpsecAuditRecord& rec, std::chrono::system_clock::time_point received);
// The same, taking the record's strings instead of copying them.
Event event_from_ipsec_audit(IpsecAuditRecord&& rec, std::chrono::system_clock::time_point received);

// A record the strict parser refused: always a kernel-ipsec-event (what it
// says is not understood well enough to be named), with what could be parsed
// and the raw text and the problem under `unparsed`.
Event event_from_salvaged_ipsec_audit(const SalvagedAuditRecord& rec, std::chrono::system_clock::time_point received);

// Appends " on SPI 0x.. from A to B, sequence number N, flow label 0x.." for
// what the event has.
void append_flow(std::string& message, const Event& e);

// An events-lost record: `counter` names what said so, `at_least` when the
// kernel gave no exact count.
Event make_events_lost(Source source, std::uint64_t count, const char* counter, bool at_least, std::string message);

// "0x1001"-style SPI text for messages.
std::string spi_hex(std::uint32_t spi);
void append_hex(std::string& out, std::uint32_t v);

}  // namespace ipsec
