// Serialises an Event to one JSON line (schema "ipsec-audit/1", documented in
// docs/schema/ipsec-audit-1.schema.json). Serialise once, write to every sink.
// Any byte sequence that is not valid UTF-8 is written as U+FFFD, so the
// output is always valid JSON whatever the kernel text contained.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "audit/event.hpp"

namespace ipsec {

inline constexpr std::string_view kSchemaId = "ipsec-audit/1";

class JsonWriter {
 public:
  explicit JsonWriter(std::string host);
  // Appends the record and a '\n' to `out`.
  void write(const Event& e, std::string& out) const;

 private:
  std::string host_json_;  // the host as a JSON string, quotes included
};

// The `sa` object of a record naming this SA: `full` on change records (what
// SaContext::json caches), the SA's identity only on packet records (what
// SaContext::packet_json caches: no lifetime, no current).
std::string sa_json(const SaContext& c, bool full = true);
void append_json_string(std::string& out, std::string_view s);
// Length of the valid UTF-8 sequence at s[i], or 0 if it is not one.
std::size_t utf8_len(std::string_view s, std::size_t i);
// RFC 3339, UTC, nanoseconds: 2026-11-23T21:50:24.123456789Z
void append_rfc3339(std::string& out, std::chrono::system_clock::time_point t);

}  // namespace ipsec
