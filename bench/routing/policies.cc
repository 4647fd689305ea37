#include "bench/routing/policies.h"

#include <algorithm>
#include <cmath>

namespace inferscope::bench::routing {
namespace {

template <typename T>
T& Grow(std::vector<T>* v, uint32_t index) {
  if (index >= v->size()) v->resize(index + 1);
  return (*v)[index];
}

// Two distinct candidate positions at random (the same one when there is only one).
std::pair<size_t, size_t> TwoChoices(std::mt19937_64* rng, size_t n) {
  if (n == 1) return {0, 0};
  const size_t a = std::uniform_int_distribution<size_t>(0, n - 1)(*rng);
  size_t b = std::uniform_int_distribution<size_t>(0, n - 2)(*rng);
  if (b >= a) ++b;
  return {a, b};
}

// The position of the smallest key, ties broken uniformly at random (reservoir sampling).
template <typename Key>
size_t ArgMinRandomTies(std::mt19937_64* rng, size_t n, Key key) {
  size_t best = 0, ties = 1;
  double best_key = key(0);
  for (size_t i = 1; i < n; ++i) {
    const double k = key(i);
    if (k < best_key) {
      best = i;
      best_key = k;
      ties = 1;
    } else if (k == best_key && std::uniform_int_distribution<size_t>(0, ties++)(*rng) == 0) {
      best = i;
    }
  }
  return best;
}

}  // namespace

size_t StaticWeightsRouter::Pick(const sim::Request&,
                                 std::span<const sim::InstanceView> candidates) {
  double total = 0;
  size_t best = 0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const uint32_t inst = candidates[i].index;
    const double w = inst < weights_.size() ? weights_[inst] : 1;
    total += w;
    Grow(&current_, inst) += w;
    if (current_[inst] > current_[candidates[best].index]) best = i;
  }
  current_[candidates[best].index] -= total;
  return best;
}

size_t LeastBusyRouter::Pick(const sim::Request&, std::span<const sim::InstanceView> candidates) {
  const size_t pick = ArgMinRandomTies(&rng_, candidates.size(), [&](size_t i) {
    return static_cast<double>(Grow(&in_flight_, candidates[i].index));
  });
  ++in_flight_[candidates[pick].index];
  return pick;
}

void LeastBusyRouter::OnOutcome(const sim::RequestOutcome& outcome) {
  uint32_t& n = Grow(&in_flight_, outcome.instance);
  if (n > 0) --n;
}

size_t P2cLeastRequestRouter::Pick(const sim::Request&,
                                   std::span<const sim::InstanceView> candidates) {
  auto [a, b] = TwoChoices(&rng_, candidates.size());
  const uint32_t na = Grow(&in_flight_, candidates[a].index);
  const uint32_t nb = Grow(&in_flight_, candidates[b].index);
  const size_t pick = nb < na ? b : a;
  ++in_flight_[candidates[pick].index];
  return pick;
}

void P2cLeastRequestRouter::OnOutcome(const sim::RequestOutcome& outcome) {
  uint32_t& n = Grow(&in_flight_, outcome.instance);
  if (n > 0) --n;
}

PeakEwmaRouter::Metric& PeakEwmaRouter::At(uint32_t instance) { return Grow(&metrics_, instance); }

void PeakEwmaRouter::Observe(Metric* m, double rtt_ms, double now_ms) const {
  const double td = std::max(now_ms - m->stamp_ms, 0.0);
  const double w = std::exp(-td / decay_ms_);
  if (rtt_ms > m->cost) {
    m->cost = rtt_ms;
  } else {
    m->cost = m->cost * w + rtt_ms * (1.0 - w);
  }
  m->stamp_ms = now_ms;
}

double PeakEwmaRouter::Load(uint32_t instance, double now_ms) {
  static constexpr double kPenalty = static_cast<double>(INT64_MAX >> 16);
  Metric& m = At(instance);
  Observe(&m, 0.0, now_ms);
  if (m.cost == 0.0 && m.pending != 0) return kPenalty + m.pending;
  return m.cost * (m.pending + 1);
}

size_t PeakEwmaRouter::Pick(const sim::Request& request,
                            std::span<const sim::InstanceView> candidates) {
  auto [a, b] = TwoChoices(&rng_, candidates.size());
  const double la = Load(candidates[a].index, request.arrival_ms);
  const double lb = Load(candidates[b].index, request.arrival_ms);
  const size_t pick = lb < la ? b : a;
  ++At(candidates[pick].index).pending;
  return pick;
}

void PeakEwmaRouter::OnOutcome(const sim::RequestOutcome& outcome) {
  Metric& m = At(outcome.instance);
  if (m.pending > 0) --m.pending;
  const double rtt = rtt_e2e_ || outcome.ttft_ms < 0 ? outcome.e2e_ms : outcome.ttft_ms;
  Observe(&m, rtt, outcome.time_ms);
}

size_t LatencyAverageRouter::Pick(const sim::Request&,
                                  std::span<const sim::InstanceView> candidates) {
  return ArgMinRandomTies(&rng_, candidates.size(), [&](size_t i) {
    const Samples& s = Grow(&samples_, candidates[i].index);
    return s.ring.empty() ? 0.0 : s.sum / static_cast<double>(s.ring.size());
  });
}

void LatencyAverageRouter::OnOutcome(const sim::RequestOutcome& outcome) {
  Samples& s = Grow(&samples_, outcome.instance);
  const double v = outcome.ok() && outcome.ttft_ms >= 0 ? outcome.ttft_ms : failure_ms_;
  if (s.ring.size() < window_) {
    s.ring.push_back(v);
  } else {
    s.sum -= s.ring[s.next];
    s.ring[s.next] = v;
    s.next = (s.next + 1) % window_;
  }
  s.sum += v;
}

size_t OracleRouter::Pick(const sim::Request& request,
                          std::span<const sim::InstanceView> candidates) {
  return utility_->Score(request, candidates, &scores_, quality_lag_ms_);
}

}  // namespace inferscope::bench::routing
