#include "audit/reconcile.hpp"

#include <algorithm>

namespace ipsec {

std::uint64_t counter_delta(std::uint64_t before, std::uint64_t after) { return after >= before ? after - before : after; }

std::uint64_t shortfall(std::uint64_t counted, std::uint64_t seen, std::uint64_t already_lost) {
  const std::uint64_t accounted = seen + already_lost;
  return counted > accounted ? counted - accounted : 0;
}

void Reconciler::close(const LossKey& k) {
  auto it = entries_.find(k);
  if (it != entries_.end() && it->second.closing == 0) it->second.closing = 1;
}

void Reconciler::close_if(const std::function<bool(const LossKey&)>& pred) {
  for (auto& [k, e] : entries_)
    if (e.closing == 0 && pred(k)) e.closing = 1;
}

std::vector<Loss> Reconciler::settle(bool final) {
  std::vector<Loss> out;
  for (auto it = entries_.begin(); it != entries_.end();) {
    auto& e = it->second;
    if (const auto l = shortfall(final ? e.counted : e.settled, e.seen, e.lost); l > 0) {
      std::uint64_t matched = 0;
      for (auto c = credit_.rbegin(); c != credit_.rend() && matched < l; ++c) {  // the oldest first
        const std::uint64_t m = std::min(l - matched, *c);
        *c -= m;
        matched += m;
      }
      e.lost += l;
      e.already_reported += matched;
      out.push_back(Loss{it->first, l - matched, l, matched});
    }
    e.settled = e.counted;
    if (e.closing == 2) {
      auto& g = gone_[it->first.counter];
      g.counted += e.counted;
      g.seen += e.seen;
      g.lost += e.lost;
      g.already_reported += e.already_reported;
      it = entries_.erase(it);
      continue;
    }
    if (e.closing == 1) e.closing = 2;
    ++it;
  }
  // The credit ages; what is older than kCreditSettles settles goes.
  if (!final) {
    for (std::size_t i = credit_.size() - 1; i > 0; --i) credit_[i] = credit_[i - 1];
    credit_[0] = 0;
  }
  return out;
}

nlohmann::json Reconciler::totals() const {
  std::map<std::string, Entry> sum = gone_;
  for (const auto& [k, e] : entries_) {
    auto& s = sum[k.counter];
    s.counted += e.counted;
    s.seen += e.seen;
    s.lost += e.lost;
    s.already_reported += e.already_reported;
  }
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [name, s] : sum)
    j[name] = {{"counted", s.counted}, {"seen", s.seen}, {"lost", s.lost}, {"already_reported", s.already_reported}};
  return j;
}

}  // namespace ipsec
