#include "bench/routing/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace inferscope::bench::routing {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double Quantile(std::vector<double>* v, double q) {
  if (v->empty()) return kNaN;
  const auto k = static_cast<size_t>(q * static_cast<double>(v->size() - 1));
  std::nth_element(v->begin(), v->begin() + static_cast<std::ptrdiff_t>(k), v->end());
  return (*v)[k];
}

double Ratio(uint64_t a, uint64_t b) {
  return b == 0 ? kNaN : static_cast<double>(a) / static_cast<double>(b);
}

}  // namespace

double ExpectedCalibrationError(std::span<const double> confidence,
                                std::span<const uint8_t> correct, int bins) {
  const size_t n = std::min(confidence.size(), correct.size());
  if (n == 0 || bins < 1) return 0;
  std::vector<double> conf_sum(static_cast<size_t>(bins)), hits(static_cast<size_t>(bins));
  std::vector<uint64_t> count(static_cast<size_t>(bins));
  for (size_t i = 0; i < n; ++i) {
    const double c = std::clamp(confidence[i], 0.0, 1.0);
    const auto b = std::min(static_cast<size_t>(c * bins), static_cast<size_t>(bins - 1));
    conf_sum[b] += c;
    hits[b] += correct[i] != 0 ? 1 : 0;
    ++count[b];
  }
  double ece = 0;
  for (size_t b = 0; b < count.size(); ++b) {
    if (count[b] == 0) continue;
    const double m = static_cast<double>(count[b]);
    ece += m / static_cast<double>(n) * std::abs(hits[b] / m - conf_sum[b] / m);
  }
  return ece;
}

void Scorer::OnDecision(double t_ms, std::span<const uint32_t> candidates,
                        std::span<const uint8_t> unhealthy, std::span<const uint8_t> failing,
                        size_t chosen, double regret, bool best, double confidence) {
  ++decisions_;
  regret_sum_ += regret;
  if (confidence >= 0) {
    any_confidence_ = true;
    confidence_.push_back(confidence);
    correct_.push_back(best ? 1 : 0);
  }
  unhealthy_.OnDecision(options_, t_ms, candidates, unhealthy, chosen);
  failing_.OnDecision(options_, t_ms, candidates, failing, chosen);
}

void Scorer::Tracker::OnDecision(const Options& options, double t_ms,
                                 std::span<const uint32_t> candidates, std::span<const uint8_t> bad,
                                 size_t chosen) {
  for (size_t i = 0; i < candidates.size(); ++i) {
    const uint32_t inst = candidates[i];
    if (inst >= episodes.size()) episodes.resize(inst + 1);
    Episode& e = episodes[inst];
    if (!bad[i]) {
      if (e.open) {
        if (!e.detected) ++undetected;
        e.open = false;
      }
      continue;
    }
    if (!e.open) {
      e.open = true;
      e.detected = false;
      e.start_ms = t_ms;
      e.window.assign(options.window, 0);
      e.times.assign(options.window, 0);
      e.next = e.filled = e.sum = 0;
      ++episode_count;
    }
    const bool here = i == chosen;
    if (e.detected) {
      ++after_total;
      after_bad += here ? 1 : 0;
      continue;
    }
    ++before_total;
    before_bad += here ? 1 : 0;
    e.sum -= e.window[e.next];
    e.window[e.next] = here ? 1 : 0;
    e.times[e.next] = t_ms;
    e.sum += e.window[e.next];
    e.next = (e.next + 1) % e.window.size();
    e.filled = std::min(e.filled + 1, e.window.size());
    if (e.filled == e.window.size() &&
        static_cast<double>(e.sum) <=
            options.detect_share * static_cast<double>(e.window.size()) + 1e-9) {
      // Detected from the window's first decision (the oldest in the ring, at e.next).
      e.detected = true;
      ++detected;
      shift_sum_ms += e.times[e.next] - e.start_ms;
      before_total -= e.window.size();
      before_bad -= e.sum;
      after_total += e.window.size();
      after_bad += e.sum;
    }
  }
}

void Scorer::Tracker::Finish() {
  for (Episode& e : episodes) {
    if (!e.open) continue;
    if (!e.detected) ++undetected;
    e.open = false;
  }
}

void Scorer::OnOutcome(const sim::RequestOutcome& o) {
  ++outcomes_;
  cost_ += o.cost_usd;
  if (o.capability_violation) ++violations_;
  if (!o.ok()) return;
  ++ok_;
  quality_sum_ += o.quality;
  ttft_.push_back(o.ttft_ms);
  e2e_.push_back(o.e2e_ms);
}

PolicyMetrics Scorer::Finish() {
  unhealthy_.Finish();
  failing_.Finish();
  PolicyMetrics m;
  m.decisions = decisions_;
  m.outcomes = outcomes_;
  m.success_rate = Ratio(ok_, outcomes_);
  m.mean_regret = decisions_ == 0 ? kNaN : regret_sum_ / static_cast<double>(decisions_);
  m.ttft_p50_ms = Quantile(&ttft_, 0.5);
  m.ttft_p95_ms = Quantile(&ttft_, 0.95);
  m.e2e_p50_ms = Quantile(&e2e_, 0.5);
  m.e2e_p95_ms = Quantile(&e2e_, 0.95);
  m.cost_usd = cost_;
  m.mean_quality = ok_ == 0 ? kNaN : quality_sum_ / static_cast<double>(ok_);
  const Tracker& u = unhealthy_;
  m.unhealthy_fraction = Ratio(u.before_bad + u.after_bad, u.before_total + u.after_total);
  m.unhealthy_before = Ratio(u.before_bad, u.before_total);
  m.unhealthy_after = Ratio(u.after_bad, u.after_total);
  m.episodes = u.episode_count;
  m.undetected = u.undetected;
  m.shift_ms = u.detected == 0 ? kNaN : u.shift_sum_ms / static_cast<double>(u.detected);
  const Tracker& f = failing_;
  m.failing_fraction = Ratio(f.before_bad + f.after_bad, f.before_total + f.after_total);
  m.failing_before = Ratio(f.before_bad, f.before_total);
  m.failing_after = Ratio(f.after_bad, f.after_total);
  m.capability_violations = violations_;
  m.ece = any_confidence_ ? ExpectedCalibrationError(confidence_, correct_) : kNaN;
  return m;
}

}  // namespace inferscope::bench::routing
