#include "audit/pipeline.hpp"

#include <algorithm>
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

nlohmann::json records_json(const PipelineStats& st, bool every_kind) {
  nlohmann::json by = nlohmann::json::object();
  std::uint64_t written = 0;
  for (std::size_t i = 0; i < kEventKindCount; ++i) {
    written += st.written[i];
    if (!every_kind && st.received[i] == 0 && st.summaries[i] == 0) continue;
    nlohmann::json k = {{"received", st.received[i]},
                        {"written", st.written[i]},
                        {"suppressed", st.suppressed_by_kind[i]},
                        {"summarised", st.summarised[i]}};
    if (st.summaries[i] != 0) k["summary_records"] = st.summaries[i];
    by[std::string(catalogue(static_cast<EventKind>(i)).name)] = std::move(k);
  }
  return {{"submitted", st.submitted},
          {"written", written},
          {"suppressed", st.suppressed},
          {"by_event", std::move(by)}};
}

void Pipeline::submit(const Event& e) {
  ++stats_.submitted;
  const auto k = static_cast<std::size_t>(e.kind);
  ++stats_.received[k];
  if (e.kind == EventKind::events_lost) count_lost(e);
  const auto& c = catalogue(e.kind);
  if (!c.always_written && !policy_.allows(c.audit_class)) {
    ++stats_.suppressed;
    ++stats_.suppressed_by_kind[k];
    return;
  }
  if (FloodLimiter::limited(e) && !flood_.admit(e, limiter_now())) {
    ++stats_.summarised[k];
    return;
  }
  ++stats_.written[k];
  write(e);
}

void Pipeline::count_lost(const Event& e) {
  std::string_view name = "unknown";
  if (e.detail.is_object()) {
    const auto lost = e.detail.find("lost");
    if (lost != e.detail.end() && lost->is_object()) {
      const auto c = lost->find("counter");
      if (c != lost->end() && c->is_string()) name = c->get_ref<const std::string&>();
    }
  }
  auto& v = stats_.lost;
  auto it = std::find_if(v.begin(), v.end(), [name](const auto& p) { return p.first == name; });
  if (it == v.end() && v.size() >= PipelineStats::kMaxLostCounters)
    it = std::find_if(v.begin(), v.end(), [](const auto& p) { return p.first == "other"; });
  if (it == v.end()) {
    v.emplace_back(std::string(v.size() + 1 >= PipelineStats::kMaxLostCounters ? "other" : name), 0);
    it = v.end() - 1;
  }
  it->second += e.count;
}

void Pipeline::write_due_summaries() {
  flood_.collect(now_(), due_);
  write_summaries();
}

void Pipeline::flush_summaries() {
  flood_.flush(due_);
  write_summaries();
}

void Pipeline::write_summaries() {
  // A summary is written whatever the switches say now: the records it
  // stands for were let through when they came.
  for (const auto& s : due_) {
    ++stats_.summaries[static_cast<std::size_t>(s.kind)];
    write(s);
  }
  due_.clear();
}

FloodLimiter::Clock::time_point Pipeline::limiter_now() {
  // Batching, one clock read per batch (its records came with one read of a
  // source; under emulation a clock read can be a trap): the flush forgets it.
  if (batch_now_) return *batch_now_;
  const auto t = now_();
  if (scheduler_ && line_sinks_) {
    batch_now_ = t;
    schedule_flush();
  }
  return t;
}

void Pipeline::schedule_flush() {
  if (flush_scheduled_) return;
  flush_scheduled_ = true;
  scheduler_([this] { flush(); });
}

void Pipeline::note_sinks() {
  line_sinks_ = std::any_of(sinks_.begin(), sinks_.end(), [](const auto& s) { return s->batches_lines(); });
}

void Pipeline::write(const Event& e) {
  ++stats_.by_kind[static_cast<std::size_t>(e.kind)];
  const bool batching = scheduler_ && line_sinks_;
  // Batching, the record goes straight into the batch the line sinks get at
  // flush; the other sinks (datagrams) see it there too.
  std::string& out = batching ? batch_ : line_;
  if (!batching) line_.clear();
  const std::size_t start = out.size();
  writer_.write(e, out);
  const std::string_view line(out.data() + start, out.size() - start);
  if (batching) {
    ++batch_records_;
    schedule_flush();
  }
  for (auto& s : sinks_)
    if (!batching || !s->batches_lines()) s->write_event(e, line);
  if (batching && batch_.size() >= kMaxHeldBytes) flush_batch();
  for (std::size_t i = 0; i < sinks_.size(); ++i) {
    const auto t = sinks_[i]->take_transition();
    if (t != SinkTransition::none) submit_health(*sinks_[i], t);
  }
}

void Pipeline::flush_batch() {
  if (batch_.empty()) return;
  for (auto& s : sinks_)
    if (s->batches_lines()) s->write_counted(batch_, batch_records_);
  batch_.clear();
  batch_records_ = 0;
  // A batch can be large: do not keep its buffer around after a burst.
  if (batch_.capacity() > (1u << 20)) std::string().swap(batch_);
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
  batch_now_.reset();
  flush_batch();
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
