#include "workflows/canary.h"

#include <algorithm>
#include <cmath>
#include <span>

namespace inferscope {

std::string_view CanaryVerdictName(CanaryVerdict verdict) {
  switch (verdict) {
    case CanaryVerdict::kContinue:
      return "continue";
    case CanaryVerdict::kImproved:
      return "improved";
    case CanaryVerdict::kRegressed:
      return "regressed";
    case CanaryVerdict::kNoEffect:
      return "no_effect";
  }
  return "continue";
}

Status CanaryOptions::Validate() const {
  if (!(alpha > 0 && alpha < 0.5)) return Status::InvalidArgument("alpha must be in (0, 0.5)");
  if (!(min_effect >= 0 && std::isfinite(min_effect))) {
    return Status::InvalidArgument("min_effect must be >= 0");
  }
  if (!(quantile > 0 && quantile < 1)) return Status::InvalidArgument("quantile must be in (0, 1)");
  if (min_samples < 2) return Status::InvalidArgument("min_samples must be >= 2");
  return Status::Ok();
}

namespace {

// What the judgement needs of one period's sample: its size, a quantile, and the rank comparison
// with another (SketchSample: the engine's sketches; RawSample: sorted raw values).
struct SketchSample {
  const DDSketch* sketch;
  uint64_t count() const { return sketch->count(); }
  double Quantile(double q) const { return sketch->Quantile(q); }
  friend Result<RankComparison> Compare(const SketchSample& x, const SketchSample& y) {
    return CompareSketches(*x.sketch, *y.sketch);
  }
};
struct RawSample {
  std::span<const double> values;  // sorted
  uint64_t count() const { return values.size(); }
  // The value at rank q (n − 1), rounded down: DDSketch::Quantile's rank.
  double Quantile(double q) const {
    if (values.empty()) return 0;
    const auto rank = static_cast<size_t>(q * static_cast<double>(values.size() - 1));
    return values[std::min(rank, values.size() - 1)];
  }
  friend Result<RankComparison> Compare(const RawSample& x, const RawSample& y) {
    return CompareSortedSamples(x.values, y.values);
  }
};

template <typename S>
Result<CanaryEvidence> Judge(const S& before, const S& after, const S* peers_before,
                             const S* peers_after, double dispersion, double fraction,
                             bool lower_is_better, const CanaryOptions& options) {
  CanaryEvidence e;
  e.fraction = std::clamp(std::isfinite(fraction) ? fraction : 1.0, 1e-6, 1.0);
  e.n_before = before.count();
  e.n_after = after.count();
  const bool with_peers = peers_before != nullptr;
  uint64_t fewest = std::min(e.n_before, e.n_after);
  if (with_peers) fewest = std::min({fewest, peers_before->count(), peers_after->count()});
  e.boundary = NormalQuantile(1 - options.alpha / 2) / std::sqrt(e.fraction);
  if (fewest < options.min_samples) {
    e.verdict = e.fraction >= 1 ? CanaryVerdict::kNoEffect : CanaryVerdict::kContinue;
    return e;
  }

  e.before_q = before.Quantile(options.quantile);
  e.after_q = after.Quantile(options.quantile);
  e.ratio = e.before_q != 0 ? e.after_q / e.before_q : 1;
  if (with_peers) {
    e.peer_adjusted = true;
    Result<RankComparison> now = Compare(after, *peers_after);
    if (!now.ok()) return now.status();
    Result<RankComparison> then = Compare(before, *peers_before);
    if (!then.ok()) return then.status();
    e.auc_shift = now->auc - then->auc;
    const double se = std::hypot(now->auc_se, then->auc_se);
    e.z = se > 0 ? e.auc_shift / se : 0;
    const double q_peers_before = peers_before->Quantile(options.quantile);
    const double q_peers_after = peers_after->Quantile(options.quantile);
    if (q_peers_before != 0 && q_peers_after != 0) e.ratio /= q_peers_after / q_peers_before;
  } else {
    Result<RankComparison> r = Compare(after, before);
    if (!r.ok()) return r.status();
    e.auc_shift = r->auc - 0.5;
    e.z = r->z;
  }
  if (std::isfinite(dispersion) && dispersion > 1) {
    e.dispersion = dispersion;
    e.z /= std::sqrt(dispersion);
  }
  e.p_value = NormalUpperTail(std::abs(e.z));

  const bool went_up = e.z > 0;
  const double moved =
      went_up ? e.ratio - 1 : 1 - e.ratio;  // relative move in the test's direction
  if (std::abs(e.z) >= e.boundary && moved >= options.min_effect) {
    e.verdict = went_up == lower_is_better ? CanaryVerdict::kRegressed : CanaryVerdict::kImproved;
  } else if (e.fraction >= 1) {
    e.verdict = CanaryVerdict::kNoEffect;
  }
  return e;
}

}  // namespace

double DispersionOf(std::span<const double> pane_z, size_t min_panes) {
  size_t n = 0;
  double mean = 0, m2 = 0;  // Welford
  for (double z : pane_z) {
    if (!std::isfinite(z)) continue;
    ++n;
    const double d = z - mean;
    mean += d / static_cast<double>(n);
    m2 += d * (z - mean);
  }
  if (n < std::max<size_t>(min_panes, 2)) return 1;
  return std::max(1.0, m2 / static_cast<double>(n - 1));
}

Result<CanaryEvidence> JudgeCanary(const CanarySamples& samples, double fraction,
                                   bool lower_is_better, const CanaryOptions& options) {
  INFERSCOPE_RETURN_IF_ERROR(options.Validate());
  if (samples.before == nullptr || samples.after == nullptr) {
    return Status::InvalidArgument("canary: the before and after samples are required");
  }
  if ((samples.peers_before == nullptr) != (samples.peers_after == nullptr)) {
    return Status::InvalidArgument("canary: give both peer periods or neither");
  }
  const SketchSample before{samples.before}, after{samples.after};
  const SketchSample peers_before{samples.peers_before}, peers_after{samples.peers_after};
  const bool with_peers = samples.peers_before != nullptr;
  return Judge(before, after, with_peers ? &peers_before : nullptr,
               with_peers ? &peers_after : nullptr, samples.dispersion, fraction, lower_is_better,
               options);
}

Result<CanaryEvidence> JudgeCanaryRaw(const RawCanarySamples& samples, double fraction,
                                      bool lower_is_better, const CanaryOptions& options) {
  INFERSCOPE_RETURN_IF_ERROR(options.Validate());
  for (std::span<const double> s :
       {samples.before, samples.after, samples.peers_before, samples.peers_after}) {
    if (!std::is_sorted(s.begin(), s.end())) {
      return Status::InvalidArgument("canary: raw samples must be sorted");
    }
  }
  const RawSample before{samples.before}, after{samples.after};
  const RawSample peers_before{samples.peers_before}, peers_after{samples.peers_after};
  return Judge(before, after, samples.with_peers ? &peers_before : nullptr,
               samples.with_peers ? &peers_after : nullptr, samples.dispersion, fraction,
               lower_is_better, options);
}

Result<CanaryEvidence> JudgeProportion(const ProportionSamples& samples, double fraction,
                                       bool lower_is_better, const CanaryOptions& options) {
  INFERSCOPE_RETURN_IF_ERROR(options.Validate());
  if ((samples.peers_before == nullptr) != (samples.peers_after == nullptr)) {
    return Status::InvalidArgument("canary: give both peer periods or neither");
  }
  CanaryEvidence e;
  e.fraction = std::clamp(std::isfinite(fraction) ? fraction : 1.0, 1e-6, 1.0);
  e.n_before = samples.before.events;
  e.n_after = samples.after.events;
  const bool with_peers = samples.peers_before != nullptr;
  uint64_t fewest = std::min(e.n_before, e.n_after);
  if (with_peers) {
    fewest = std::min({fewest, samples.peers_before->events, samples.peers_after->events});
  }
  e.boundary = NormalQuantile(1 - options.alpha / 2) / std::sqrt(e.fraction);
  if (fewest < options.min_samples) {
    e.verdict = e.fraction >= 1 ? CanaryVerdict::kNoEffect : CanaryVerdict::kContinue;
    return e;
  }
  const double pb = samples.before.ratio();
  const double pa = samples.after.ratio();
  const double nb = static_cast<double>(e.n_before);
  const double na = static_cast<double>(e.n_after);
  e.before_q = pb;
  e.after_q = pa;
  // A before rate of 0 is replaced by half an error (continuity) for the ratio only.
  auto rate_ratio = [](double after, double before, double n_before) {
    const double base = before > 0 ? before : 0.5 / n_before;
    return after / base;
  };
  e.ratio = rate_ratio(pa, pb, nb);
  double diff = pa - pb;
  double se = 0;
  if (with_peers) {
    e.peer_adjusted = true;
    const double qb = samples.peers_before->ratio();
    const double qa = samples.peers_after->ratio();
    const double mb = static_cast<double>(samples.peers_before->events);
    const double ma = static_cast<double>(samples.peers_after->events);
    diff -= qa - qb;
    se = std::sqrt(pa * (1 - pa) / na + pb * (1 - pb) / nb + qa * (1 - qa) / ma +
                   qb * (1 - qb) / mb);
    const double peers_ratio = rate_ratio(qa, qb, mb);
    if (peers_ratio > 0) e.ratio /= peers_ratio;
  } else {
    const double pooled = (pa * na + pb * nb) / (na + nb);
    se = std::sqrt(pooled * (1 - pooled) * (1 / na + 1 / nb));
  }
  e.auc_shift = diff;
  e.z = se > 0 ? diff / se : 0;
  e.p_value = NormalUpperTail(std::abs(e.z));
  const bool went_up = e.z > 0;
  const double moved = went_up ? e.ratio - 1 : 1 - e.ratio;
  if (std::abs(e.z) >= e.boundary && moved >= options.min_effect) {
    e.verdict = went_up == lower_is_better ? CanaryVerdict::kRegressed : CanaryVerdict::kImproved;
  } else if (e.fraction >= 1) {
    e.verdict = CanaryVerdict::kNoEffect;
  }
  return e;
}

}  // namespace inferscope
