#include "audit/pipeline.hpp"

#include "audit/catalogue.hpp"

namespace ipsec {

void Pipeline::submit(const Event& e) {
  ++stats_.submitted;
  const auto& c = catalogue(e.kind);
  if (!c.always_written && !policy_.allows(c.audit_class)) {
    ++stats_.suppressed;
    return;
  }
  ++stats_.by_kind[static_cast<std::size_t>(e.kind)];
  line_.clear();
  writer_.write(e, line_);
  for (auto& s : sinks_) s->write(line_);
}

std::vector<std::string> Pipeline::reopen() {
  std::vector<std::string> errors;
  for (auto& s : sinks_)
    if (auto r = s->reopen(); !r) errors.push_back(std::string(s->name()) + ": " + r.error().message);
  return errors;
}

}  // namespace ipsec
