#include "agent/privileges.hpp"

#include <cap-ng.h>
#include <linux/capability.h>
#include <sys/prctl.h>

#include <cerrno>
#include <cstring>

namespace ipsec {

std::vector<int> required_capabilities(const Options& o) {
  std::vector<int> caps{CAP_AUDIT_READ, CAP_NET_ADMIN};
  if (o.enable_kernel_audit || o.audit_status_interval_s > 0) caps.push_back(CAP_AUDIT_CONTROL);
  for (const auto& n : o.netns) {
    if (!n.empty()) {
      caps.push_back(CAP_SYS_ADMIN);
      break;
    }
  }
  return caps;
}

std::string capability_names(const std::vector<int>& caps) {
  std::string s;
  for (int c : caps) {
    if (!s.empty()) s += ',';
    const char* n = capng_capability_to_name(static_cast<unsigned>(c));
    s += n ? "cap_" + std::string(n) : std::to_string(c);
  }
  return s;
}

Result<PrivilegeDrop> drop_privileges(const std::vector<int>& keep) {
  PrivilegeDrop r;
  capng_get_caps_process();
  for (int c : keep) {
    if (capng_have_capability(CAPNG_PERMITTED, static_cast<unsigned>(c)))
      r.kept.push_back(c);
    else
      r.missing.push_back(c);
  }
  // Dropping the bounding set needs CAP_SETPCAP, which root has and an
  // ambient-capability user normally has not; without it only the bounding
  // set stays (it limits what an execve could gain, and NO_NEW_PRIVS below
  // already rules that out).
  r.bounding_dropped = capng_have_capability(CAPNG_EFFECTIVE, CAP_SETPCAP) != 0;
  capng_clear(CAPNG_SELECT_ALL);
  for (int c : r.kept) {
    if (capng_update(CAPNG_ADD, static_cast<capng_type_t>(CAPNG_EFFECTIVE | CAPNG_PERMITTED | CAPNG_BOUNDING_SET),
                     static_cast<unsigned>(c)) != 0)
      return make_error(Errc::io, "capng_update failed for capability " + std::to_string(c));
  }
  // Ambient and inheritable stay empty: the agent executes nothing.
  const auto sel =
      r.bounding_dropped ? CAPNG_SELECT_ALL : static_cast<capng_select_t>(CAPNG_SELECT_CAPS | CAPNG_SELECT_AMBIENT);
  if (const int rc = capng_apply(sel); rc != 0)
    return make_error(Errc::io, "cannot drop capabilities (capng_apply " + std::to_string(rc) + ")", errno);
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    return make_error(Errc::io, std::string("PR_SET_NO_NEW_PRIVS: ") + std::strerror(errno), errno);
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
    return make_error(Errc::io, std::string("PR_SET_DUMPABLE: ") + std::strerror(errno), errno);
  return r;
}

}  // namespace ipsec
