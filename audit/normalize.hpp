// Normaliser: kernel audit records -> Events. Pure: the receive time is passed in.
#pragma once

#include <chrono>

#include "audit/event.hpp"
#include "xfrm/audit_record.hpp"

namespace ipsec {

Event event_from_ipsec_audit(const IpsecAuditRecord& rec, std::chrono::system_clock::time_point received);

// "0x1001"-style SPI text for messages.
std::string spi_hex(std::uint32_t spi);

}  // namespace ipsec
