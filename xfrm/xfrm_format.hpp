// Text form of parsed XFRM messages, for diagnostics (ipsec-audit-nlcapture)
// and tests. Pure.
#pragma once

#include <string>

#include "xfrm/xfrm_message.hpp"

namespace ipsec {

// Every field of the value as one line of `key=value` text. Contains only
// what the value holds, so never key material.
std::string format_xfrm_message(const XfrmMessage& message);

}  // namespace ipsec
