#include "audit/log_query.hpp"

namespace ipsec {

int run_log_command(std::string_view cmd, const std::vector<std::string>& /*args*/, std::ostream& /*out*/,
                    std::ostream& err) {
  err << "ipsec-auditctl: " << cmd << ": not built in this version\n";
  return 2;
}

}  // namespace ipsec
