#include "audit/pipeline.hpp"

#include <cstring>

#include "audit/catalogue.hpp"

namespace ipsec {

nlohmann::json sink_json(const Sink& s) {
  const auto& st = s.stats();
  nlohmann::json j = {
      {"name", std::string(s.name())}, {"written", st.written}, {"failed", st.failed}, {"healthy", st.healthy}};
  if (st.last_errno != 0) j["last_error"] = std::strerror(st.last_errno);
  if (st.reopens != 0) j["reopens"] = st.reopens;
  return j;
}

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
  for (auto& s : sinks_) {
    if (scheduler_ && s->batches_lines()) {
      s->hold(line_);
      if (s->held_bytes() >= kMaxHeldBytes) s->flush_held();
      if (!flush_scheduled_) {
        flush_scheduled_ = true;
        scheduler_([this] { flush(); });
      }
    } else {
      s->write_event(e, line_);
    }
  }
  for (std::size_t i = 0; i < sinks_.size(); ++i) {
    const auto t = sinks_[i]->take_transition();
    if (t != SinkTransition::none) submit_health(*sinks_[i], t);
  }
}

void Pipeline::submit_health(const Sink& s, SinkTransition t) {
  const auto& st = s.stats();
  Event h;
  h.source = Source::agent;
  h.time = std::chrono::system_clock::now();
  auto out = sink_json(s);
  if (t == SinkTransition::failed) {
    h.kind = EventKind::output_failed;
    h.message = "output " + std::string(s.name()) + " failed (" + std::strerror(st.last_errno) +
                "): records to it are counted as lost and retried with each new record";
    out["lost"] = st.episode_failed;  // so far: the records of this write
  } else {
    h.kind = EventKind::output_recovered;
    h.message = "output " + std::string(s.name()) + " works again; " + std::to_string(st.episode_failed) +
                " records were lost while it failed";
    out["lost"] = st.episode_failed;
  }
  h.detail = {{"output", std::move(out)}};
  submit(h);
}

void Pipeline::flush() {
  flush_scheduled_ = false;
  for (auto& s : sinks_) s->flush_held();
  // Health records of the flush are submitted (and, batching, held) now.
  for (std::size_t i = 0; i < sinks_.size(); ++i) {
    const auto t = sinks_[i]->take_transition();
    if (t != SinkTransition::none) submit_health(*sinks_[i], t);
  }
}

std::vector<std::string> Pipeline::reopen() {
  flush();  // held records belong to the file as it was before the reopen
  std::vector<std::string> errors;
  for (auto& s : sinks_)
    if (auto r = s->reopen(); !r) errors.push_back(std::string(s->name()) + ": " + r.error().message);
  return errors;
}

void Pipeline::check_outputs() {
  flush();
  for (std::size_t i = 0; i < sinks_.size(); ++i) {
    auto& s = *sinks_[i];
    if (auto what = s.check(); what && what->reopened) {
      Event h;
      h.kind = EventKind::output_recovered;
      h.source = Source::agent;
      h.time = std::chrono::system_clock::now();
      h.message = "output " + std::string(s.name()) + ": " + what->what +
                  " (records written between the change and now went to the old file)";
      auto out = sink_json(s);
      out["reason"] = what->what;
      h.detail = {{"output", std::move(out)}};
      submit(h);
    }
    // A reopen that failed left the sink failing: one output-failed for it.
    if (const auto t = s.take_transition(); t != SinkTransition::none) submit_health(s, t);
  }
}

}  // namespace ipsec
