// ipsec-auditctl's log commands, `events` and `report`: read the JSON Lines
// audit log. Stub: the real implementation comes with the log query work.
#pragma once

#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace ipsec {

// `cmd` is "events" or "report", `args` what follows it on the command line.
// Returns the process exit status (0 ok, 2 usage).
int run_log_command(std::string_view cmd, const std::vector<std::string>& args, std::ostream& out,
                    std::ostream& err);

}  // namespace ipsec
