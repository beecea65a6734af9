#include "audit/control_protocol.hpp"

#include <cstring>

namespace ipsec {

namespace {

using nlohmann::json;

Error bad(std::string m) { return make_error(Errc::malformed, std::move(m)); }
// A line that is no JSON object at all: answered, then the connection closes.
Error garbage(std::string m) { return make_error(Errc::truncated, std::move(m)); }

// Deepest nesting of [ and { outside strings, stopping once past `limit`.
// Runs before the JSON parser so that no deep structure is ever built.
int nesting_depth(std::string_view s, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (const char c : s) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > deepest) deepest = depth;
      if (deepest > limit) return deepest;
    } else if (c == ']' || c == '}') {
      if (depth > 0) --depth;
    }
  }
  return deepest;
}

}  // namespace

std::string_view control_command_name(ControlCommand c) {
  switch (c) {
    case ControlCommand::get:
      return "get";
    case ControlCommand::set:
      return "set";
    case ControlCommand::status:
      return "status";
    case ControlCommand::check:
      return "check";
  }
  return "get";
}

std::string_view control_error_name(ControlErrorCode c) {
  switch (c) {
    case ControlErrorCode::bad_request:
      return "bad-request";
    case ControlErrorCode::refused:
      return "refused";
    case ControlErrorCode::unsupported_version:
      return "unsupported-version";
    case ControlErrorCode::too_large:
      return "too-large";
    case ControlErrorCode::internal:
      return "internal";
  }
  return "internal";
}

ControlErrorCode control_error_for(const Error& e) {
  if (e.code == Errc::out_of_range) return ControlErrorCode::too_large;
  if (e.code == Errc::unsupported) return ControlErrorCode::unsupported_version;
  return ControlErrorCode::bad_request;
}

bool control_error_is_fatal(const Error& e) { return e.code == Errc::truncated || e.code == Errc::out_of_range; }

Result<ControlRequest> parse_control_request(std::string_view line) { return parse_control_request(line, nullptr); }

Result<ControlRequest> parse_control_request(std::string_view line, nlohmann::json* id_out) {
  if (line.size() > kMaxControlRequestBytes)
    return make_error(Errc::out_of_range,
                      "request longer than " + std::to_string(kMaxControlRequestBytes) + " bytes");
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.find('\0') != std::string_view::npos) return garbage("request contains a NUL byte");
  if (nesting_depth(line, kMaxControlDepth) > kMaxControlDepth)
    return garbage("request nested deeper than " + std::to_string(kMaxControlDepth) + " levels");
  json doc;
  try {
    doc = json::parse(line.begin(), line.end());
  } catch (const json::parse_error& e) {
    return garbage("request is not valid JSON (at byte " + std::to_string(e.byte) + ")");
  } catch (...) {
    return garbage("request cannot be parsed");
  }
  if (!doc.is_object()) return garbage("request must be a JSON object");

  ControlRequest r;
  // The id first, so that a known id can be checked even when others fail.
  if (auto it = doc.find("id"); it != doc.end()) {
    if (it->is_string()) {
      if (it->get_ref<const std::string&>().size() > kMaxControlIdBytes)
        return bad("'id' is longer than " + std::to_string(kMaxControlIdBytes) + " bytes");
    } else if (!it->is_number_integer()) {
      return bad("'id' must be a string or an integer");
    }
    r.id = *it;
    if (id_out) *id_out = r.id;
  }
  auto v = doc.find("v");
  if (v == doc.end()) return bad("'v' (the protocol version, 1) is missing");
  if (!v->is_number_integer()) return bad("'v' must be an integer (the protocol version, 1)");
  if (!(v->is_number_unsigned() && v->get<std::uint64_t>() == kControlProtocolVersion))
    return make_error(Errc::unsupported, "protocol version " + v->dump() + " is not supported (1 is)");

  auto cmd = doc.find("cmd");
  if (cmd == doc.end()) return bad("'cmd' is missing");
  if (!cmd->is_string()) return bad("'cmd' must be a string");
  const auto& name = cmd->get_ref<const std::string&>();
  if (name == "get")
    r.cmd = ControlCommand::get;
  else if (name == "set")
    r.cmd = ControlCommand::set;
  else if (name == "status")
    r.cmd = ControlCommand::status;
  else if (name == "check")
    r.cmd = ControlCommand::check;
  else
    return bad("unknown cmd '" + printable(name) + "' (get, set, status, check)");

  for (const auto& item : doc.items()) {
    const auto& k = item.key();
    if (k == "v" || k == "cmd" || k == "id") continue;
    if (k == "success" || k == "failure") {
      if (r.cmd != ControlCommand::set) return bad("'" + k + "' is only for cmd set");
      if (!item.value().is_boolean()) return bad("'" + k + "' must be true or false");
      (k == "success" ? r.success : r.failure) = item.value().get<bool>();
    } else {
      return bad("unknown key '" + printable(k) + "'");
    }
  }
  if (r.cmd == ControlCommand::set && !r.success && !r.failure)
    return bad("set needs 'success', 'failure' or both");
  return r;
}

std::string control_ok(const json& result, const json& id) {
  json j = {{"v", kControlProtocolVersion}, {"ok", true}, {"result", result}};
  if (!id.is_null()) j["id"] = id;
  return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string control_error(ControlErrorCode code, std::string_view message, const json& id) {
  json j = {{"v", kControlProtocolVersion},
            {"ok", false},
            {"error", {{"code", std::string(control_error_name(code))}, {"message", std::string(message)}}}};
  if (!id.is_null()) j["id"] = id;
  return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string control_request_line(const ControlRequest& r) {
  json j = {{"v", kControlProtocolVersion}, {"cmd", std::string(control_command_name(r.cmd))}};
  if (r.success) j["success"] = *r.success;
  if (r.failure) j["failure"] = *r.failure;
  if (!r.id.is_null()) j["id"] = r.id;
  return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

Result<ControlResponse> parse_control_response(std::string_view line) {
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  json doc;
  try {
    doc = json::parse(line.begin(), line.end());
  } catch (...) {
    return bad("the agent's answer is not valid JSON");
  }
  if (!doc.is_object()) return bad("the agent's answer is not a JSON object");
  auto v = doc.find("v");
  if (v == doc.end() || !v->is_number_integer() || v->get<long long>() != kControlProtocolVersion)
    return make_error(Errc::unsupported, "the agent answers in another protocol version");
  auto ok = doc.find("ok");
  if (ok == doc.end() || !ok->is_boolean()) return bad("the agent's answer has no 'ok'");
  ControlResponse r;
  r.ok = ok->get<bool>();
  if (r.ok) {
    auto res = doc.find("result");
    if (res == doc.end() || !res->is_object()) return bad("the agent's answer has no 'result' object");
    r.result = std::move(*res);
  } else {
    auto err = doc.find("error");
    if (err == doc.end() || !err->is_object()) return bad("the agent's answer has no 'error' object");
    auto c = err->find("code");
    auto m = err->find("message");
    r.error_code = c != err->end() && c->is_string() ? c->get<std::string>() : "internal";
    r.error_message = m != err->end() && m->is_string() ? m->get<std::string>() : "";
  }
  return r;
}

}  // namespace ipsec
