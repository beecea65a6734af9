#include "agent/log.hpp"

#include <unistd.h>

#include <string>

namespace ipsec {

void log(LogLevel level, std::string_view message) {
  // "<N>" is the sd-daemon(3) level prefix journald understands; on a
  // terminal it stays readable.
  std::string line = level == LogLevel::error     ? "<3>ipsec-auditd: error: "
                     : level == LogLevel::warning ? "<4>ipsec-auditd: warning: "
                                                  : "<6>ipsec-auditd: ";
  line.append(message);
  line += '\n';
  (void)!::write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace ipsec
