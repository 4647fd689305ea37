#include "sources/prom_convert.h"

#include <cmath>
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

bool IsRatio(PromConversion c) {
  return c == PromConversion::kRatioNumerator || c == PromConversion::kRatioDenominator;
}

}  // namespace

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

void PromConverter::OnSample(const PromSample& sample) {
  PromConvertStats& stats = *stats_;
  const PromMapping* m = FindPromMapping(options_.engine, sample.family, sample.role);
  if (m == nullptr) {
    bool family_known = false;
    for (PromRole r : {PromRole::kValue, PromRole::kTotal, PromRole::kSum, PromRole::kCount}) {
      if (r != sample.role && FindPromMapping(options_.engine, sample.family, r) != nullptr) {
        family_known = true;
        break;
      }
    }
    ++(family_known ? stats.not_carried : stats.unmapped);
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
  PromConvertStats stats;
  stats_ = &stats;
  ++generation_;
  interval_s_ = last_time_ms_ > 0 && time_ms > last_time_ms_
                    ? static_cast<double>(time_ms - last_time_ms_) / 1000.0
                    : 0;
  accs_.clear();
  last_model_ = 0;  // names are interned afresh each scrape (the interner reclaims idle names)
  PromConvertSink sink(*this);
  stats.parse = parser_.Parse(page, sink);
  stats_ = nullptr;
  // Series absent from this page are gone (a restart brings them back as new series).
  std::erase_if(series_,
                [this](const auto& entry) { return entry.second.generation != generation_; });
  last_time_ms_ = time_ms;

  const StringId instance = interner_.Intern(options_.instance);
  if (instance == 0) {
    stats.intern_refused += accs_.size();
    return stats;
  }
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
