// The audit policy on disk: <state_dir>/audit-policy.json, read at start and
// on SIGHUP, written atomically on every change (a temp file in the same
// directory, fsync, rename over the old one, fsync of the directory): after a
// crash the file holds the old policy or the new one, never a mix.
#pragma once

#include <string>

#include "audit/policy.hpp"
#include "xfrm/result.hpp"

namespace ipsec {

inline constexpr const char* kPolicyFileName = "audit-policy.json";

struct PolicyLoad {
  enum class State {
    loaded,    // the file was read and is valid
    missing,   // no file: the caller uses the default (and writes it)
    rejected,  // corrupt, truncated, unreadable, too large, not a regular file
  };
  State state{State::missing};
  AuditPolicy policy;  // loaded only
  std::string error;   // rejected only: why, one line
};

class PolicyStore {
 public:
  explicit PolicyStore(std::string state_dir);
  const std::string& path() const { return path_; }
  // Never throws; never blocks on a FIFO; does not follow a symlink.
  PolicyLoad load() const;
  Result<Unit> save(const AuditPolicy& p) const;

 private:
  std::string dir_, path_;
};

}  // namespace ipsec
