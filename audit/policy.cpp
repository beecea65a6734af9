#include "audit/policy.hpp"

namespace ipsec {

std::string_view policy_label(const AuditPolicy& p) {
  if (p.success && p.failure) return "Success and Failure";
  if (p.success) return "Success";
  if (p.failure) return "Failure";
  return "No Auditing";
}

nlohmann::json policy_json(const AuditPolicy& p) {
  return {{"success", p.success}, {"failure", p.failure}, {"label", std::string(policy_label(p))}};
}

Result<AuditPolicy> parse_audit_policy(std::string_view text) {
  using nlohmann::json;
  auto bad = [](std::string m) { return make_error(Errc::malformed, std::move(m)); };
  if (text.size() > kMaxPolicyFileBytes)
    return bad("policy file is larger than " + std::to_string(kMaxPolicyFileBytes) + " bytes");
  if (text.empty()) return make_error(Errc::truncated, "policy file is empty");
  if (text.find('\0') != std::string_view::npos) return bad("policy file contains a NUL byte");
  json doc;
  try {
    doc = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    return bad(std::string("policy file is not valid JSON (") + printable(e.what(), 120) + ")");
  } catch (...) {
    return bad("policy file cannot be parsed");
  }
  if (!doc.is_object()) return bad("policy file must hold a JSON object");
  AuditPolicy p;
  bool have_v = false, have_s = false, have_f = false;
  for (const auto& item : doc.items()) {
    const auto& k = item.key();
    const auto& v = item.value();
    if (k == "v") {
      if (!v.is_number_integer()) return bad("policy file: 'v' must be the integer 1");
      if (v.get<long long>() != 1)
        return make_error(Errc::unsupported, "policy file: version " + v.dump() + " is not supported (1 is)");
      have_v = true;
    } else if (k == "success" || k == "failure") {
      if (!v.is_boolean()) return bad("policy file: '" + k + "' must be true or false");
      (k == "success" ? p.success : p.failure) = v.get<bool>();
      (k == "success" ? have_s : have_f) = true;
    } else if (k == "label") {
      if (!v.is_string()) return bad("policy file: 'label' must be a string");
    } else {
      return bad("policy file: unknown key '" + printable(k) + "'");
    }
  }
  if (!have_v) return bad("policy file: 'v' is missing");
  if (!have_s) return bad("policy file: 'success' is missing");
  if (!have_f) return bad("policy file: 'failure' is missing");
  return p;
}

std::string serialize_audit_policy(const AuditPolicy& p) {
  nlohmann::json j = {{"v", 1}, {"success", p.success}, {"failure", p.failure},
                      {"label", std::string(policy_label(p))}};
  return j.dump() + "\n";
}

}  // namespace ipsec
