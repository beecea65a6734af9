// The control protocol parser (audit/control_protocol): every request shape,
// and garbage of every kind gets an error, never a crash or an exception.
#include "audit/control_protocol.hpp"

#include <gtest/gtest.h>

#include <random>
#include <string>

using namespace ipsec;

namespace {

ControlErrorCode code_of(std::string_view line) {
  auto r = parse_control_request(line);
  EXPECT_FALSE(r.ok()) << line;
  return r ? ControlErrorCode::internal : control_error_for(r.error());
}

}  // namespace

TEST(ControlProtocol, Commands) {
  for (auto [text, cmd] : {std::pair{"get", ControlCommand::get}, std::pair{"status", ControlCommand::status},
                           std::pair{"check", ControlCommand::check}}) {
    auto r = parse_control_request(std::string(R"({"v":1,"cmd":")") + text + "\"}");
    ASSERT_TRUE(r.ok()) << text;
    EXPECT_EQ(r->cmd, cmd);
    EXPECT_FALSE(r->success);
    EXPECT_TRUE(r->id.is_null());
  }
  auto s = parse_control_request(R"({"v":1,"cmd":"set","success":false,"id":"a7"})");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->cmd, ControlCommand::set);
  EXPECT_EQ(s->success, false);
  EXPECT_FALSE(s->failure);
  EXPECT_EQ(s->id, "a7");
  auto both = parse_control_request(" {\"failure\":true, \"success\":true, \"cmd\":\"set\", \"v\":1, \"id\":42}\r");
  ASSERT_TRUE(both.ok());
  EXPECT_EQ(both->success, true);
  EXPECT_EQ(both->failure, true);
  EXPECT_EQ(both->id, 42);
}

TEST(ControlProtocol, RoundTripOfTheClientsLine) {
  ControlRequest r;
  r.cmd = ControlCommand::set;
  r.failure = false;
  auto line = control_request_line(r);
  ASSERT_EQ(line.back(), '\n');
  line.pop_back();
  auto back = parse_control_request(line);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->cmd, ControlCommand::set);
  EXPECT_EQ(back->failure, false);
  EXPECT_FALSE(back->success);
}

TEST(ControlProtocol, WrongShapes) {
  EXPECT_EQ(code_of(R"({"cmd":"get"})"), ControlErrorCode::bad_request);                  // no v
  EXPECT_EQ(code_of(R"({"v":"1","cmd":"get"})"), ControlErrorCode::bad_request);          // v a string
  EXPECT_EQ(code_of(R"({"v":1.0,"cmd":"get"})"), ControlErrorCode::bad_request);          // v a float
  EXPECT_EQ(code_of(R"({"v":2,"cmd":"get"})"), ControlErrorCode::unsupported_version);
  EXPECT_EQ(code_of(R"({"v":0,"cmd":"get"})"), ControlErrorCode::unsupported_version);
  EXPECT_EQ(code_of(R"({"v":-1,"cmd":"get"})"), ControlErrorCode::unsupported_version);
  EXPECT_EQ(code_of(R"({"v":1})"), ControlErrorCode::bad_request);                        // no cmd
  EXPECT_EQ(code_of(R"({"v":1,"cmd":7})"), ControlErrorCode::bad_request);
  EXPECT_EQ(code_of(R"({"v":1,"cmd":"reboot"})"), ControlErrorCode::bad_request);
  EXPECT_EQ(code_of(R"({"v":1,"cmd":"GET"})"), ControlErrorCode::bad_request);
  EXPECT_EQ(code_of(R"({"v":1,"cmd":"set"})"), ControlErrorCode::bad_request);            // nothing to set
  EXPECT_EQ(code_of(R"({"v":1,"cmd":"set","success":1})"), ControlErrorCode::bad_request);
  EXPECT_EQ(code_of(R"({"v":1,"cmd":"set","success":"true"})"), ControlErrorCode::bad_request);
  EXPECT_EQ(code_of(R"({"v":1,"cmd":"set","failure":null})"), ControlErrorCode::bad_request);
  EXPECT_EQ(code_of(R"({"v":1,"cmd":"get","success":true})"), ControlErrorCode::bad_request);
  EXPECT_EQ(code_of(R"({"v":1,"cmd":"get","extra":true})"), ControlErrorCode::bad_request);
  EXPECT_EQ(code_of(R"({"v":1,"cmd":"get","id":[1]})"), ControlErrorCode::bad_request);
  EXPECT_EQ(code_of(R"({"v":1,"cmd":"get","id":1.5})"), ControlErrorCode::bad_request);
  EXPECT_EQ(code_of(R"({"v":1,"cmd":"get","id":")" + std::string(300, 'x') + "\"}"),
            ControlErrorCode::bad_request);
  EXPECT_EQ(code_of(R"(["get"])"), ControlErrorCode::bad_request);
  EXPECT_EQ(code_of("1"), ControlErrorCode::bad_request);
  EXPECT_EQ(code_of("null"), ControlErrorCode::bad_request);
}

TEST(ControlProtocol, ErrorsKeepAValidId) {
  nlohmann::json id;
  EXPECT_FALSE(parse_control_request(R"({"v":1,"cmd":"get","success":true,"id":"q1"})", &id).ok());
  EXPECT_EQ(id, "q1");
  nlohmann::json none;
  EXPECT_FALSE(parse_control_request(R"({"v":1,"cmd":"get","id":[1]})", &none).ok());
  EXPECT_TRUE(none.is_null());
}

TEST(ControlProtocol, HugeNumbers) {
  EXPECT_EQ(code_of(R"({"v":1e999,"cmd":"get"})"), ControlErrorCode::bad_request);
  EXPECT_EQ(code_of(R"({"v":18446744073709551617,"cmd":"get"})"), ControlErrorCode::bad_request);
  EXPECT_EQ(code_of(R"({"v":18446744073709551615,"cmd":"get"})"), ControlErrorCode::unsupported_version);
  EXPECT_EQ(code_of(R"({"v":1,"cmd":"get","id":123456789012345678901234567890})"), ControlErrorCode::bad_request);
  EXPECT_EQ(code_of("{\"v\":1" + std::string(5000, '0') + ",\"cmd\":\"get\"}"), ControlErrorCode::bad_request);
}

TEST(ControlProtocol, Garbage) {
  for (std::string_view s : {"", " ", "{", "}", "{\"v\":1,\"cmd\":\"get\"", "{\"v\":1,\"cmd\":\"get\"}}",
                             "GET / HTTP/1.1", "\xff\xfe{}", "{\"v\":1,\"cmd\":\"g\xc3\x28t\"}",
                             "{\"v\":1,\"cmd\":\"get\",\"id\":\"\xed\xa0\x80\"}", "{'v':1}", "{\"v\":1,}"}) {
    auto r = parse_control_request(s);
    ASSERT_FALSE(r.ok()) << printable(s);
    EXPECT_EQ(control_error_for(r.error()), ControlErrorCode::bad_request);
    EXPECT_TRUE(control_error_is_fatal(r.error())) << printable(s);
  }
}

TEST(ControlProtocol, Nul) {
  const std::string s("{\"v\":1,\"cmd\":\"get\"}\0", 20);
  auto r = parse_control_request(s);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("NUL"), std::string::npos);
  const std::string in_string("{\"v\":1,\"cmd\":\"g\0t\"}", 19);
  EXPECT_FALSE(parse_control_request(in_string).ok());
}

TEST(ControlProtocol, Nesting) {
  // Depth 8 in all is allowed (the request object is level 1) ...
  std::string ok8 = R"({"v":1,"cmd":"get","id":)";
  // ... but an id cannot be an array, so check depth through an unknown key.
  auto depth_line = [](int levels) {
    std::string s = R"({"v":1,"cmd":"get","x":)";
    for (int i = 1; i < levels; ++i) s += '[';
    for (int i = 1; i < levels; ++i) s += ']';
    return s + "}";
  };
  auto r8 = parse_control_request(depth_line(8));
  ASSERT_FALSE(r8.ok());
  EXPECT_NE(r8.error().message.find("unknown key"), std::string::npos) << r8.error().message;
  auto r9 = parse_control_request(depth_line(9));
  ASSERT_FALSE(r9.ok());
  EXPECT_NE(r9.error().message.find("nested"), std::string::npos) << r9.error().message;
  // Brackets inside strings do not count.
  auto in_str = parse_control_request(R"({"v":1,"cmd":"get","id":"[[[[[[[[[[[[{{{{{{{{{{{"})");
  EXPECT_TRUE(in_str.ok());
  // 64 KiB of '[': refused before any parsing.
  EXPECT_EQ(code_of(std::string(kMaxControlRequestBytes, '[')), ControlErrorCode::bad_request);
  EXPECT_EQ(code_of(std::string(kMaxControlRequestBytes / 2, '{')), ControlErrorCode::bad_request);
}

TEST(ControlProtocol, TooLarge) {
  std::string s = R"({"v":1,"cmd":"get","id":")" + std::string(kMaxControlRequestBytes, 'a') + "\"}";
  auto r = parse_control_request(s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(control_error_for(r.error()), ControlErrorCode::too_large);
  EXPECT_TRUE(control_error_is_fatal(r.error()));
}

TEST(ControlProtocol, RandomBytesNeverThrow) {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int> byte(0, 255), len(0, 300);
  const std::string alphabet = "{}[]\":,01 truefalsnv\\cmdgetsx\xff\xc3";
  std::uniform_int_distribution<std::size_t> pick(0, alphabet.size() - 1);
  for (int i = 0; i < 20000; ++i) {
    std::string s(static_cast<std::size_t>(len(rng)), '\0');
    for (auto& c : s) c = static_cast<char>(i % 2 ? byte(rng) : alphabet[pick(rng)]);
    auto r = parse_control_request(s);  // must not throw or crash
    if (!r) {
      EXPECT_FALSE(r.error().message.empty());
    }
  }
}

TEST(ControlProtocol, Responses) {
  auto ok = control_ok({{"policy", {{"success", true}}}}, "x1");
  ASSERT_EQ(ok.back(), '\n');
  EXPECT_EQ(ok.find('\n'), ok.size() - 1);
  auto r = parse_control_response(ok);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->ok);
  EXPECT_EQ(r->result["policy"]["success"], true);
  auto err = control_error(ControlErrorCode::refused, "set needs uid 0 or group x\n\xff");
  EXPECT_EQ(err.find('\n'), err.size() - 1);  // the message's newline is escaped
  auto e = parse_control_response(err);
  ASSERT_TRUE(e.ok());
  EXPECT_FALSE(e->ok);
  EXPECT_EQ(e->error_code, "refused");
  EXPECT_FALSE(parse_control_response("nonsense").ok());
  EXPECT_FALSE(parse_control_response(R"({"v":2,"ok":true,"result":{}})").ok());
  EXPECT_FALSE(parse_control_response(R"({"v":1,"ok":true})").ok());
}
