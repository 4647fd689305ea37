#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include "pipeline/status.h"
#include "values/sketch.h"

namespace inferscope {

// Aggregate is the mergeable summary of one series over one interval (a pane, or a window merged
// from panes): moments, extremes, the last value, request counts and a quantile sketch.
//
// Merge is associative and commutative for everything but `last`, which keeps the value with the
// latest event time (ties: the larger value, so merge order never matters). Variance uses Welford
// updates and Chan's parallel merge; it is the population variance.
struct alignas(64) Aggregate {
  uint64_t count = 0;  // values observed
  uint64_t events =
      0;  // events attributed to the series (requests, including ones without this value)
  uint64_t errors = 0;  // failed requests among `events`
  double sum = 0;
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();
  double mean = 0;
  double m2 = 0;  // sum of squared deviations from the mean
  double last = 0;
  int64_t last_time_ms = std::numeric_limits<int64_t>::min();  // event time of `last`
  DDSketch sketch;
  // Some of the values came as histogram buckets (AddBuckets): quantiles are then only known to
  // within the width of the bucket around them, not to the sketch's relative accuracy. Sticky
  // across Merge; stored (format version 2).
  bool bucket_bounded = false;

  // Records one value observed at event time `time_ms`.
  void Add(double value, int64_t time_ms);
  // Records the observations of one histogram interval: bucket i holds `count[i]` observations in
  // (upper[i-1], upper[i]] (bucket 0: (0, upper[0]]; a last bound of +Inf clamps to the highest
  // finite bound, as Prometheus' histogram_quantile does). `sum` is their exact sum: count and
  // mean stay exact; min/max become the bounds of the lowest/highest non-empty bucket, the
  // variance assumes each bucket's observations sit at its midpoint, `last` is the interval's
  // mean. Counts are rounded to integers; negative or non-finite counts and bounds are ignored.
  // Marks the aggregate bucket_bounded. Also counts the observations as events (requests).
  void AddBuckets(const double* upper, const double* count, uint32_t buckets, double sum,
                  int64_t time_ms);
  // Records one event (request) for the error ratio; `error` when it failed.
  void AddEvent(bool error) {
    ++events;
    errors += error ? 1 : 0;
  }
  void Merge(const Aggregate& other);
  // Back to empty, keeping the sketch's capacity.
  void Clear();

  double variance() const { return count == 0 ? 0 : m2 / static_cast<double>(count); }
  double error_ratio() const { return events == 0 ? 0 : static_cast<double>(errors) / events; }
  // The q-quantile from the sketch (within its relative accuracy of the value at rank
  // q * (count - 1)), clamped to [min, max]: a sketch bin's representative value can lie beyond
  // the extreme values it holds, and a p99 above the max would be a contradiction. NaN when empty.
  double Quantile(double q) const;

  void EncodeTo(std::string* out) const;
  static Status DecodeFrom(std::string_view in, Aggregate* out);
};

// Two cache lines: the moments (80 bytes) and the 40-byte sketch. The window operator keeps one per
// series and open pane, so this is most of an engine's memory per series.
static_assert(sizeof(Aggregate) == 128, "Aggregate grew past two cache lines");

// Statistics of an Aggregate over a window of `window_ms` (what the API and the PUB sink publish).
// Quantiles are NaN when no values were observed.
struct SummaryStats {
  uint64_t count = 0;
  double sum = 0, mean = 0, min = 0, max = 0, variance = 0, last = 0;
  double p50 = 0, p90 = 0, p95 = 0, p99 = 0;
  double rate_per_s = 0;  // count / window seconds
  double error_ratio = 0;
  uint64_t events = 0, errors = 0;
};
SummaryStats Summarize(const Aggregate& agg, int64_t window_ms);

}  // namespace inferscope
