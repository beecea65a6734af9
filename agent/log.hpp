// The agent's own diagnostics (not audit records) go to stderr, one line each;
// under systemd that is the journal. Only the top level (agent/) logs.
#pragma once

#include <string_view>

namespace ipsec {

enum class LogLevel { error, warning, info };
void log(LogLevel level, std::string_view message);

}  // namespace ipsec
