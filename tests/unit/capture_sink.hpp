// A sink that keeps each record as parsed JSON, for pipeline tests.
#pragma once

#include <nlohmann/json.hpp>

#include <string_view>
#include <vector>

#include "audit/sink.hpp"

namespace ipsec {

struct Capture final : public Sink {
  std::vector<nlohmann::json> records;
  std::string_view name() const override { return "capture"; }
  bool write(std::string_view lines) override {
    records.push_back(nlohmann::json::parse(lines));
    count_written(1);
    return true;
  }
};

}  // namespace ipsec
