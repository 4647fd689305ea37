#include "sources/prom_convert.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>
#include <utility>

namespace inferscope {
namespace {

uint64_t HashSeries(std::string_view s) {
  // FNV-1a, 64 bits: a collision between two series of one target is vanishingly unlikely at the
  // bounded series count, and would only merge two counters' histories.
  uint64_t h = 1469598103934665603ull;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h;
}

constexpr std::string_view kHistogramMetrics[] = {"ttft_ms", "tpot_ms", "e2e_ms", "queue_time_ms"};
constexpr std::string_view kHistogramMeans[] = {"ttft_mean_ms", "tpot_mean_ms", "e2e_mean_ms",
                                                "queue_time_mean_ms"};

int HistogramMetricIndex(std::string_view metric) {
  for (int i = 0; i < 4; ++i) {
    if (metric == kHistogramMetrics[i]) return i;
  }
  return -1;
}

// A histogram series' identity: its family and every label but `le`, in page order.
uint64_t HistogramKey(const PromSample& sample) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](std::string_view s) {
    for (char c : s) {
      h ^= static_cast<unsigned char>(c);
      h *= 1099511628211ull;
    }
    h ^= 0xff;
    h *= 1099511628211ull;
  };
  mix(sample.family);
  for (size_t i = 0; i < sample.num_labels; ++i) {
    const PromLabel& l = sample.labels[i];
    if (l.name == "le") continue;
    mix(l.name);
    mix(l.value);
  }
  return h;
}

bool IsRatio(PromConversion c) {
  return c == PromConversion::kRatioNumerator || c == PromConversion::kRatioDenominator;
}

}  // namespace

std::string_view PromHistogramErrorName(PromHistogramError error) {
  switch (error) {
    case PromHistogramError::kNone:
      return "";
    case PromHistogramError::kTooManyBuckets:
      return "too_many_buckets";
    case PromHistogramError::kBadBound:
      return "bad_bound";
    case PromHistogramError::kBadCount:
      return "bad_count";
    case PromHistogramError::kLayoutChanged:
      return "layout_changed";
    case PromHistogramError::kCount_:
      break;
  }
  return "";
}

PromHistogramError PromHistogramAddBucket(PromHistogramSnapshot& snapshot, double le,
                                          double cumulative) {
  if (std::isnan(le) || le == -std::numeric_limits<double>::infinity()) {
    return PromHistogramError::kBadBound;
  }
  if (!std::isfinite(cumulative) || cumulative < 0) return PromHistogramError::kBadCount;
  uint32_t at = snapshot.buckets;
  while (at > 0 && snapshot.le[at - 1] > le) --at;
  if (at > 0 && snapshot.le[at - 1] == le) return PromHistogramError::kBadBound;
  if (snapshot.buckets >= HistogramDelta::kMaxBuckets) return PromHistogramError::kTooManyBuckets;
  for (uint32_t i = snapshot.buckets; i > at; --i) {
    snapshot.le[i] = snapshot.le[i - 1];
    snapshot.cumulative[i] = snapshot.cumulative[i - 1];
  }
  snapshot.le[at] = le;
  snapshot.cumulative[at] = cumulative;
  ++snapshot.buckets;
  return PromHistogramError::kNone;
}

PromHistogramError PromHistogramDeltaOf(const PromHistogramSnapshot& prev,
                                        const PromHistogramSnapshot& cur, double scale,
                                        HistogramDelta* out, bool* reset_out) {
  if (reset_out != nullptr) *reset_out = false;
  const uint32_t n = cur.buckets;
  if (n == 0 || n > HistogramDelta::kMaxBuckets) {
    return n == 0 ? PromHistogramError::kBadBound : PromHistogramError::kTooManyBuckets;
  }
  for (uint32_t i = 0; i < n; ++i) {
    if (std::isnan(cur.le[i]) || (i > 0 && !(cur.le[i] > cur.le[i - 1]))) {
      return PromHistogramError::kBadBound;
    }
    if (!std::isfinite(cur.cumulative[i]) || cur.cumulative[i] < 0 ||
        (i > 0 && cur.cumulative[i] < cur.cumulative[i - 1])) {
      return PromHistogramError::kBadCount;
    }
  }
  if (prev.buckets != n) return PromHistogramError::kLayoutChanged;
  bool reset = cur.has_count && prev.has_count && cur.count < prev.count;
  for (uint32_t i = 0; i < n; ++i) {
    if (prev.le[i] != cur.le[i]) return PromHistogramError::kLayoutChanged;
    if (cur.cumulative[i] < prev.cumulative[i]) reset = true;
  }
  if (reset_out != nullptr) *reset_out = reset;
  double below = 0;  // the cumulative delta of the bucket below
  double total = 0;
  for (uint32_t i = 0; i < n; ++i) {
    const double cumulative = reset ? cur.cumulative[i] : cur.cumulative[i] - prev.cumulative[i];
    const double c = std::max(0.0, cumulative - below);
    below = std::max(below, cumulative);
    out->upper[i] = std::isinf(cur.le[i]) ? cur.le[i] : cur.le[i] * scale;
    out->count[i] = c;
    total += c;
  }
  out->buckets = n;
  out->total = total;
  if (cur.has_sum && (reset || prev.has_sum)) {
    out->sum = (reset ? cur.sum : cur.sum - prev.sum) * scale;
  } else {
    out->sum = std::numeric_limits<double>::quiet_NaN();  // unknown: the bucket midpoints stand in
  }
  return PromHistogramError::kNone;
}

std::string_view PromHistogramMetric(PromEngine engine, std::string_view family, double* scale) {
  const PromMapping* row = FindPromMapping(engine, family, PromRole::kSum);
  if (row == nullptr || row->conversion != PromConversion::kRatioNumerator) return {};
  for (int i = 0; i < 4; ++i) {
    if (row->metric == kHistogramMeans[i]) {
      if (scale != nullptr) *scale = row->scale;
      return kHistogramMetrics[i];
    }
  }
  return {};
}

class PromConvertSink final : public PromSampleSink {
 public:
  explicit PromConvertSink(PromConverter& converter) : converter_(converter) {}
  void OnSample(const PromSample& sample) override { converter_.OnSample(sample); }

 private:
  PromConverter& converter_;
};

PromConverter::PromConverter(Options options, Interner& interner)
    : options_(std::move(options)), interner_(interner), parser_(options_.parser) {
  series_.reserve(std::min<size_t>(options_.max_series, 1024));
  metric_ids_.assign(PromMetricNames().size(), 0);
}

StringId PromConverter::ModelOf(const PromSample& sample) {
  const PromLabel* label = nullptr;
  for (const std::string& name : options_.model_labels) {
    label = sample.Label(name);
    if (label != nullptr && !label->value.empty()) break;
    label = nullptr;
  }
  std::string_view raw;
  if (label != nullptr) {
    raw = label->value;
  } else {
    raw = options_.default_model.empty() ? std::string_view("_") : options_.default_model;
  }
  if (last_model_ != 0 && raw == last_model_raw_) return last_model_;
  last_model_raw_.assign(raw);
  if (label != nullptr && label->escaped) {
    UnescapeLabelValue(raw, unescaped_);
    last_model_ = interner_.Intern(unescaped_);
  } else {
    last_model_ = interner_.Intern(raw);
  }
  return last_model_;
}

PromConverter::Acc* PromConverter::Accumulator(uint16_t slot, StringId model,
                                               const PromMapping& row) {
  // Numerator and denominator rows of one ratio share an accumulator.
  const PromConversion conversion = row.conversion == PromConversion::kRatioDenominator
                                        ? PromConversion::kRatioNumerator
                                        : row.conversion;
  for (Acc& acc : accs_) {
    if (acc.slot == slot && acc.model == model && acc.conversion == conversion) return &acc;
  }
  Acc& acc = accs_.emplace_back();
  acc.slot = slot;
  acc.model = model;
  acc.conversion = conversion;
  acc.combine = row.combine;
  return &acc;
}

void PromConverter::OnHistogramSample(const PromSample& sample, std::string_view metric,
                                      double scale) {
  const uint64_t key = HistogramKey(sample);
  auto [it, added] = cur_index_.try_emplace(key, static_cast<uint32_t>(cur_hists_.size()));
  if (added) {
    const StringId model = ModelOf(sample);
    if (model == 0) {
      ++stats_->intern_refused;
      cur_index_.erase(it);
      return;
    }
    CurrentHistogram& h = cur_hists_.emplace_back();
    h.key = key;
    h.family = HashSeries(sample.family);
    h.metric = static_cast<uint8_t>(HistogramMetricIndex(metric));
    h.model = model;
    h.scale = scale;
    h.error = PromHistogramError::kNone;
    h.snapshot.buckets = 0;
    h.snapshot.has_sum = h.snapshot.has_count = false;
  }
  CurrentHistogram& h = cur_hists_[it->second];
  if (h.error != PromHistogramError::kNone) return;
  switch (sample.role) {
    case PromRole::kBucket: {
      const PromLabel* le = sample.Label("le");
      double bound = 0;
      if (le == nullptr || !ParsePromDouble(le->value, &bound)) {
        h.error = PromHistogramError::kBadBound;
        return;
      }
      h.error = PromHistogramAddBucket(h.snapshot, bound, sample.value);
      return;
    }
    case PromRole::kSum:
      h.snapshot.sum = sample.value;
      h.snapshot.has_sum = std::isfinite(sample.value);
      return;
    case PromRole::kCount:
      h.snapshot.count = sample.value;
      h.snapshot.has_count = std::isfinite(sample.value) && sample.value >= 0;
      return;
    default:
      return;
  }
}

void PromConverter::EmitHistograms(int64_t time_ms, StringId instance, StringId publisher,
                                   std::vector<Event>& out,
                                   std::vector<HistogramDelta>& histograms) {
  PromConvertStats& stats = *stats_;
  emitted_.clear();
  for (CurrentHistogram& h : cur_hists_) {
    if (h.error == PromHistogramError::kNone && h.snapshot.buckets == 0) continue;  // _sum only
    auto prev = prev_hists_.find(h.key);
    if (h.error != PromHistogramError::kNone) {
      ++stats.histogram_errors[static_cast<size_t>(h.error)];
      if (prev != prev_hists_.end()) prev_hists_.erase(prev);
      continue;
    }
    if (prev == prev_hists_.end()) {
      if (prev_hists_.size() >= options_.max_series) {
        ++stats.series_limit;
        continue;
      }
      PreviousHistogram& p = prev_hists_[h.key];
      p.generation = generation_;
      p.snapshot = h.snapshot;
      continue;
    }
    bool reset = false;
    const PromHistogramError error =
        PromHistogramDeltaOf(prev->second.snapshot, h.snapshot, h.scale, &delta_, &reset);
    prev->second.snapshot = h.snapshot;
    prev->second.generation = generation_;
    if (error != PromHistogramError::kNone) {
      ++stats.histogram_errors[static_cast<size_t>(error)];
      continue;
    }
    if (reset) ++stats.histogram_resets;
    if (!(delta_.total > 0) || interval_s_ <= 0) continue;
    bool merged = false;
    for (const EmittedHistogram& e : emitted_) {
      if (e.metric != h.metric || e.model != h.model) continue;
      merged = true;
      if (e.family != h.family) break;  // a second family of one metric: the first is carried
      HistogramDelta& into = histograms[e.index];
      bool same = into.buckets == delta_.buckets;
      for (uint32_t i = 0; same && i < delta_.buckets; ++i) same = into.upper[i] == delta_.upper[i];
      if (!same) {
        ++stats.histogram_errors[static_cast<size_t>(PromHistogramError::kLayoutChanged)];
        break;
      }
      for (uint32_t i = 0; i < delta_.buckets; ++i) into.count[i] += delta_.count[i];
      into.sum += delta_.sum;
      into.total += delta_.total;
      out[e.event].value = into.total;
      break;
    }
    if (merged) continue;
    StringId& metric = hist_metric_ids_[h.metric];
    if (metric == 0 || interner_.Name(metric).empty()) {
      metric = interner_.Intern(kHistogramMetrics[h.metric]);
      if (metric == 0) {
        ++stats.intern_refused;
        continue;
      }
      interner_.Pin(metric);
    }
    const size_t index = histograms.size();
    histograms.push_back(delta_);
    Event& e = out.emplace_back();
    e.time_ms = time_ms;
    e.instance = instance;
    e.model = h.model;
    e.publisher = publisher;
    e.kind = EventKind::kHistogram;
    e.metric = metric;
    e.histogram = static_cast<uint32_t>(index);
    e.value = delta_.total;
    emitted_.push_back({h.metric, h.model, h.family, index, out.size() - 1});
    ++stats.histogram_events;
    ++stats.events;
  }
  std::erase_if(prev_hists_,
                [this](const auto& entry) { return entry.second.generation != generation_; });
}

PromConverter::FamilyLookups& PromConverter::LookupsOf(std::string_view family) {
  if (!family_.valid || family != family_.family) {
    family_.family.assign(family);
    family_.valid = true;
    family_.histogram_done = false;
    family_.roles_done = 0;
    family_.family_known = -1;
  }
  return family_;
}

const PromMapping* PromConverter::MappingOf(FamilyLookups& f, PromRole role) {
  const auto r = static_cast<size_t>(role);
  if (r >= std::size(f.mapping)) return FindPromMapping(options_.engine, f.family, role);
  if ((f.roles_done & (1u << r)) == 0) {
    f.mapping[r] = FindPromMapping(options_.engine, f.family, role);
    f.roles_done = static_cast<uint16_t>(f.roles_done | (1u << r));
  }
  return f.mapping[r];
}

void PromConverter::OnSample(const PromSample& sample) {
  PromConvertStats& stats = *stats_;
  FamilyLookups& family = LookupsOf(sample.family);
  if (want_histograms_ && sample.type == PromType::kHistogram &&
      (sample.role == PromRole::kBucket || sample.role == PromRole::kSum ||
       sample.role == PromRole::kCount)) {
    if (!family.histogram_done) {
      family.histogram_scale = 1;
      family.histogram_metric =
          PromHistogramMetric(options_.engine, family.family, &family.histogram_scale);
      family.histogram_done = true;
    }
    if (!family.histogram_metric.empty()) {
      OnHistogramSample(sample, family.histogram_metric, family.histogram_scale);
      if (sample.role == PromRole::kBucket) {
        ++stats.mapped;
        return;
      }
    }
  }
  const PromMapping* m = MappingOf(family, sample.role);
  if (m == nullptr) {
    if (family.family_known < 0) {
      family.family_known = 0;
      for (PromRole r : {PromRole::kValue, PromRole::kTotal, PromRole::kSum, PromRole::kCount}) {
        if (MappingOf(family, r) != nullptr) {
          family.family_known = 1;
          break;
        }
      }
    }
    // Known when another role of the family is mapped (this role is not: m is null).
    ++(family.family_known > 0 ? stats.not_carried : stats.unmapped);
    return;
  }
  if (std::isnan(sample.value) || (m->drop_negative && sample.value < 0)) {
    ++stats.invalid_value;
    return;
  }
  const StringId model = ModelOf(sample);
  if (model == 0) {
    ++stats.intern_refused;
    return;
  }
  const auto slot = static_cast<uint16_t>(PromMetricSlot(m));
  if (m->conversion == PromConversion::kGauge) {
    Acc* acc = Accumulator(slot, model, *m);
    acc->num += sample.value * m->scale;
    ++acc->n;
    ++stats.mapped;
    return;
  }
  // A counter (or a histogram's _sum/_count): the increase since the previous scrape.
  const uint64_t key = HashSeries(sample.series);
  auto it = series_.find(key);
  if (it == series_.end()) {
    if (series_.size() >= options_.max_series) {
      ++stats.series_limit;
      return;
    }
    series_.emplace(key, SeriesState{sample.value, generation_});
    ++stats.mapped;  // recognised; its first increase comes with the next scrape
    return;
  }
  const double prev = it->second.value;
  it->second.value = sample.value;
  it->second.generation = generation_;
  ++stats.mapped;
  if (interval_s_ <= 0) return;
  double delta = sample.value - prev;
  if (sample.value < prev) {  // a reset: the counter restarted from 0
    delta = sample.value;
    ++stats.resets;
  }
  if (!std::isfinite(delta)) return;
  Acc* acc = Accumulator(slot, model, *m);
  switch (m->conversion) {
    case PromConversion::kRate:
      acc->num += delta * m->scale / interval_s_;
      break;
    case PromConversion::kDelta:
    case PromConversion::kRatioNumerator:
      acc->num += delta * m->scale;
      break;
    case PromConversion::kRatioDenominator:
      acc->den += delta * m->scale;
      break;
    case PromConversion::kGauge:
      break;
  }
  ++acc->n;
}

PromConvertStats PromConverter::Convert(std::string_view page, int64_t time_ms, StringId publisher,
                                        std::vector<Event>& out) {
  return Convert(page, time_ms, publisher, out, nullptr);
}

PromConvertStats PromConverter::Convert(std::string_view page, int64_t time_ms, StringId publisher,
                                        std::vector<Event>& out,
                                        std::vector<HistogramDelta>* histograms) {
  PromConvertStats stats;
  want_histograms_ = histograms != nullptr;
  cur_hists_.clear();
  cur_index_.clear();
  stats_ = &stats;
  ++generation_;
  interval_s_ = last_time_ms_ > 0 && time_ms > last_time_ms_
                    ? static_cast<double>(time_ms - last_time_ms_) / 1000.0
                    : 0;
  accs_.clear();
  last_model_ = 0;  // names are interned afresh each scrape (the interner reclaims idle names)
  PromConvertSink sink(*this);
  stats.parse = parser_.Parse(page, sink);
  // Series absent from this page are gone (a restart brings them back as new series).
  std::erase_if(series_,
                [this](const auto& entry) { return entry.second.generation != generation_; });
  last_time_ms_ = time_ms;

  const StringId instance = interner_.Intern(options_.instance);
  if (instance == 0) {
    stats.intern_refused += accs_.size() + cur_hists_.size();
    stats_ = nullptr;
    return stats;
  }
  if (histograms != nullptr) EmitHistograms(time_ms, instance, publisher, out, *histograms);
  stats_ = nullptr;
  const std::span<const std::string_view> names = PromMetricNames();
  for (const Acc& acc : accs_) {
    double value = acc.num;
    if (IsRatio(acc.conversion)) {
      if (!(acc.den > 0)) continue;
      value = acc.num / acc.den;
    } else if (acc.conversion == PromConversion::kGauge && acc.combine == PromCombine::kMean) {
      value = acc.num / acc.n;
    }
    if (!std::isfinite(value)) {
      ++stats.invalid_value;
      continue;
    }
    StringId& metric = metric_ids_[acc.slot];
    if (metric == 0 || interner_.Name(metric).empty()) {
      metric = interner_.Intern(names[acc.slot]);
      if (metric == 0) {
        ++stats.intern_refused;
        continue;
      }
      interner_.Pin(metric);  // a fixed, small set of names
    }
    Event& e = out.emplace_back();
    e.time_ms = time_ms;
    e.instance = instance;
    e.model = acc.model;
    e.publisher = publisher;
    e.kind = EventKind::kGauge;
    e.metric = metric;
    e.value = value;
    ++stats.events;
  }
  return stats;
}

}  // namespace inferscope
