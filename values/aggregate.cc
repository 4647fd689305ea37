#include "values/aggregate.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>

#include "pipeline/coding.h"

namespace inferscope {
namespace {
// Version 1: no flags. Version 2 (written only when a flag is set, so plain aggregates keep their
// version-1 bytes): a u8 of flags right after the version byte (bit 0: bucket_bounded). Version 3:
// the byte alone, an empty Aggregate{} (a request group's optional metrics that no event of the
// pane carried: 76 bytes each in version 1, most of a checkpointed pane's bytes).
constexpr uint8_t kFormatVersion = 1;
constexpr uint8_t kFormatVersionFlags = 2;
constexpr uint8_t kFormatEmpty = 3;
constexpr uint8_t kFlagBucketBounded = 1;

// Whether `a` equals Aggregate{} exactly (bit for bit), so that decoding it gives the same bytes.
bool Pristine(const Aggregate& a) {
  static const Aggregate kEmpty;
  auto same = [](double x, double y) {
    return std::bit_cast<uint64_t>(x) == std::bit_cast<uint64_t>(y);
  };
  return a.count == 0 && a.events == 0 && a.errors == 0 && !a.bucket_bounded &&
         same(a.sum, kEmpty.sum) && same(a.min, kEmpty.min) && same(a.max, kEmpty.max) &&
         same(a.mean, kEmpty.mean) && same(a.m2, kEmpty.m2) && same(a.last, kEmpty.last) &&
         a.last_time_ms == kEmpty.last_time_ms && a.sketch == kEmpty.sketch;
}
}  // namespace

// Non-finite values are ignored, as DDSketch::Add does, so that `count` always equals the
// sketch's count and one bad value cannot poison the moments.
void Aggregate::Add(double value, int64_t time_ms) {
  if (!std::isfinite(value)) return;
  ++count;
  sum += value;
  if (value < min) min = value;
  if (value > max) max = value;
  const double delta = value - mean;
  mean += delta / static_cast<double>(count);
  m2 += delta * (value - mean);
  if (time_ms > last_time_ms || (time_ms == last_time_ms && value > last)) {
    last = value;
    last_time_ms = time_ms;
  }
  sketch.Add(value);
}

void Aggregate::AddBuckets(const double* upper, const double* count_in, uint32_t buckets,
                           double sum_in, int64_t time_ms) {
  // The highest finite bound (the +Inf bucket clamps to it).
  double top = 0;
  for (uint32_t i = 0; i < buckets; ++i) {
    if (std::isfinite(upper[i])) top = std::max(top, upper[i]);
  }
  uint64_t n = 0;
  double lo_seen = std::numeric_limits<double>::infinity();
  double hi_seen = -std::numeric_limits<double>::infinity();
  double mid_sum = 0;  // Σ c·mid, for the spread around the bucket midpoints
  double mid_sq = 0;   // Σ c·mid²
  double lower = 0;
  for (uint32_t i = 0; i < buckets; ++i) {
    double hi = upper[i];
    if (std::isnan(hi)) continue;
    if (hi == std::numeric_limits<double>::infinity()) hi = top;
    double lo = i == 0 ? std::min(0.0, hi) : lower;
    if (hi < lo) hi = lo;
    lower = hi;
    const double c = count_in[i];
    if (!(c >= 0.5) || !std::isfinite(c)) continue;
    // At most 2^53 per bucket (beyond, doubles are no longer whole numbers; llround of 2^63 is
    // undefined), and the sketch cuts what would pass its kMaxCount.
    const auto k = static_cast<uint64_t>(std::llround(std::min(c, 0x1p53)));
    sketch.AddUniform(lo, hi, k);
    n += k;
    lo_seen = std::min(lo_seen, lo);
    hi_seen = std::max(hi_seen, hi);
    const double mid = 0.5 * (lo + hi);
    mid_sum += static_cast<double>(k) * mid;
    mid_sq += static_cast<double>(k) * mid * mid;
  }
  bucket_bounded = true;
  if (n == 0) return;
  events += n;
  const auto nb = static_cast<double>(n);
  // The exact sum when it is consistent with the buckets; else the midpoint estimate.
  double batch_sum =
      std::isfinite(sum_in) && sum_in >= lo_seen * nb && sum_in <= hi_seen * nb ? sum_in : mid_sum;
  const double batch_mean = batch_sum / nb;
  const double batch_m2 =
      std::max(0.0, mid_sq - 2 * batch_mean * mid_sum + nb * batch_mean * batch_mean);
  if (count == 0) {
    mean = batch_mean;
    m2 = batch_m2;
  } else {
    const auto na = static_cast<double>(count);
    const double total = na + nb;
    const double delta = batch_mean - mean;
    mean += delta * (nb / total);
    m2 += batch_m2 + delta * delta * (na * nb / total);
  }
  count += n;
  sum += batch_sum;
  min = std::min(min, lo_seen);
  max = std::max(max, hi_seen);
  if (time_ms > last_time_ms || (time_ms == last_time_ms && batch_mean > last)) {
    last = batch_mean;
    last_time_ms = time_ms;
  }
}

void Aggregate::Merge(const Aggregate& other) {
  bucket_bounded = bucket_bounded || other.bucket_bounded;
  events += other.events;
  errors += other.errors;
  if (other.count == 0) return;
  if (count == 0) {
    mean = other.mean;
    m2 = other.m2;
  } else {
    const auto na = static_cast<double>(count);
    const auto nb = static_cast<double>(other.count);
    const double n = na + nb;
    const double delta = other.mean - mean;
    mean += delta * (nb / n);
    m2 += other.m2 + delta * delta * (na * nb / n);
  }
  count += other.count;
  sum += other.sum;
  if (other.min < min) min = other.min;
  if (other.max > max) max = other.max;
  if (other.last_time_ms > last_time_ms ||
      (other.last_time_ms == last_time_ms && other.last > last)) {
    last = other.last;
    last_time_ms = other.last_time_ms;
  }
  // Every Aggregate's sketch uses the default accuracy (DecodeFrom enforces it), so this cannot
  // fail.
  (void)sketch.Merge(other.sketch);
}

void Aggregate::Clear() {
  count = 0;
  events = 0;
  errors = 0;
  sum = 0;
  min = std::numeric_limits<double>::infinity();
  max = -std::numeric_limits<double>::infinity();
  mean = 0;
  m2 = 0;
  last = 0;
  last_time_ms = std::numeric_limits<int64_t>::min();
  sketch.Clear();
  bucket_bounded = false;
}

// Format (version 1):
//   u8 version | varint count | varint events | varint errors |
//   f64 sum, min, max, mean, m2, last | varint zigzag(last_time_ms) | DDSketch
// Format version 2: u8 version | u8 flags | the rest as version 1.
void Aggregate::EncodeTo(std::string* out) const {
  if (Pristine(*this)) {
    out->push_back(static_cast<char>(kFormatEmpty));
    return;
  }
  if (bucket_bounded) {
    out->push_back(static_cast<char>(kFormatVersionFlags));
    out->push_back(static_cast<char>(kFlagBucketBounded));
  } else {
    out->push_back(static_cast<char>(kFormatVersion));
  }
  PutVarint(out, count);
  PutVarint(out, events);
  PutVarint(out, errors);
  for (double d : {sum, min, max, mean, m2, last}) PutDouble(out, d);
  const auto t = static_cast<uint64_t>(last_time_ms);
  PutVarint(out, (t << 1) ^ static_cast<uint64_t>(last_time_ms >> 63));
  sketch.EncodeTo(out);
}

Status Aggregate::DecodeFrom(std::string_view in, Aggregate* out) {
  auto corrupt = [](std::string_view what) {
    std::string message = "Aggregate: ";
    message.append(what);
    return Status::Corruption(std::move(message));
  };
  const uint8_t version = in.empty() ? 0 : static_cast<uint8_t>(in.front());
  if (version == kFormatEmpty) {
    if (in.size() != 1) return corrupt("trailing bytes");
    *out = Aggregate();
    return Status::Ok();
  }
  if (version != kFormatVersion && version != kFormatVersionFlags) {
    return corrupt("unknown format version");
  }
  in.remove_prefix(1);
  Aggregate agg;
  if (version == kFormatVersionFlags) {
    if (in.empty()) return corrupt("truncated flags");
    const auto flags = static_cast<uint8_t>(in.front());
    if ((flags & ~kFlagBucketBounded) != 0) return corrupt("unknown flags");
    agg.bucket_bounded = (flags & kFlagBucketBounded) != 0;
    in.remove_prefix(1);
  }
  uint64_t zigzag_time = 0;
  if (!GetVarint(&in, &agg.count) || !GetVarint(&in, &agg.events) || !GetVarint(&in, &agg.errors)) {
    return corrupt("truncated counts");
  }
  for (double* d : {&agg.sum, &agg.min, &agg.max, &agg.mean, &agg.m2, &agg.last}) {
    if (!GetDouble(&in, d)) return corrupt("truncated moments");
    if (std::isnan(*d)) return corrupt("NaN moment");
  }
  if (!GetVarint(&in, &zigzag_time)) return corrupt("truncated last time");
  agg.last_time_ms =
      static_cast<int64_t>(zigzag_time >> 1) ^ -static_cast<int64_t>(zigzag_time & 1);
  INFERSCOPE_RETURN_IF_ERROR(DDSketch::DecodeFrom(&in, &agg.sketch).WithContext("Aggregate"));
  if (!in.empty()) return corrupt("trailing bytes");
  if (agg.errors > agg.events) return corrupt("more errors than events");
  if (agg.sketch.count() != agg.count) return corrupt("sketch count differs from count");
  if (agg.sketch.relative_accuracy() != DDSketch::kDefaultRelativeAccuracy) {
    return corrupt("unexpected sketch accuracy");
  }
  if (agg.count > 0 && !(agg.min <= agg.max && agg.m2 >= 0)) return corrupt("inconsistent moments");
  *out = std::move(agg);
  return Status::Ok();
}

double Aggregate::Quantile(double q) const {
  const double v = sketch.Quantile(q);
  if (count == 0 || std::isnan(v)) return v;
  return std::clamp(v, min, max);
}

SummaryStats Summarize(const Aggregate& agg, int64_t window_ms) {
  SummaryStats s;
  s.count = agg.count;
  s.sum = agg.sum;
  s.events = agg.events;
  s.errors = agg.errors;
  s.error_ratio = agg.error_ratio();
  s.rate_per_s = window_ms > 0 ? static_cast<double>(agg.count) / (window_ms / 1000.0) : 0;
  if (agg.count == 0) {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    s.p50 = s.p90 = s.p95 = s.p99 = nan;
    return s;  // mean, min, max, variance and last stay 0
  }
  s.mean = agg.mean;
  s.min = agg.min;
  s.max = agg.max;
  s.variance = agg.variance();
  s.last = agg.last;
  s.p50 = agg.Quantile(0.50);
  s.p90 = agg.Quantile(0.90);
  s.p95 = agg.Quantile(0.95);
  s.p99 = agg.Quantile(0.99);
  return s;
}

}  // namespace inferscope
