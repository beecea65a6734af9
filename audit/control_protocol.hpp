// The control protocol between ipsec-auditctl and ipsec-auditd, version 1
// (docs/control-protocol.md): NDJSON over a Unix stream socket, one JSON
// object per line each way. Pure functions: text in, a request or an error
// out; never throws.
//
//   request   {"v":1,"cmd":"get"|"set"|"status"|"check","success":bool?,"failure":bool?,"id":...?}
//   response  {"v":1,"ok":true,"result":{...}}
//             {"v":1,"ok":false,"error":{"code":"...","message":"..."}}
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "xfrm/result.hpp"

namespace ipsec {

inline constexpr int kControlProtocolVersion = 1;
// Longest request line, without its '\n'.
inline constexpr std::size_t kMaxControlRequestBytes = 64 * 1024;
// Deepest nesting of arrays and objects in a request (the request object is 1).
inline constexpr int kMaxControlDepth = 8;
// Longest "id" string echoed back.
inline constexpr std::size_t kMaxControlIdBytes = 256;

enum class ControlCommand { get, set, status, check };
std::string_view control_command_name(ControlCommand c);

struct ControlRequest {
  ControlCommand cmd{ControlCommand::get};
  std::optional<bool> success, failure;  // set only; at least one of them
  nlohmann::json id;                     // null, a string or an integer: echoed
};

// The error codes of a response.
enum class ControlErrorCode { bad_request, refused, unsupported_version, too_large, internal };
std::string_view control_error_name(ControlErrorCode c);
// What a parse error means on the wire: too_large (Errc::out_of_range),
// unsupported_version (Errc::unsupported), else bad_request.
ControlErrorCode control_error_for(const Error& e);

// One request line (without the '\n'). Untrusted: any bytes at all.
Result<ControlRequest> parse_control_request(std::string_view line);
// The same; on an error, `*id` gets the request's "id" when it was a valid
// one (so that errors can echo it too), else stays null.
Result<ControlRequest> parse_control_request(std::string_view line, nlohmann::json* id);
// Whether the line was a JSON object at all (a line that is not gets its
// error and the connection is closed).
bool control_error_is_fatal(const Error& e);

// Response lines, '\n' included. `id` null: not echoed.
std::string control_ok(const nlohmann::json& result, const nlohmann::json& id = nullptr);
std::string control_error(ControlErrorCode code, std::string_view message, const nlohmann::json& id = nullptr);
// A request line for the client, '\n' included.
std::string control_request_line(const ControlRequest& r);

// A response as the client sees it.
struct ControlResponse {
  bool ok{false};
  nlohmann::json result;  // ok
  std::string error_code, error_message;  // !ok
};
Result<ControlResponse> parse_control_response(std::string_view line);

}  // namespace ipsec
