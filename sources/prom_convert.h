#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "pipeline/event.h"
#include "pipeline/interner.h"
#include "sources/prom_mapping.h"
#include "sources/prom_text.h"

namespace inferscope {

// What one page of one target became.
struct PromConvertStats {
  PromParseStats parse;
  uint64_t mapped = 0;          // samples that fed an inferscope gauge
  uint64_t unmapped = 0;        // samples of families no mapping row names
  uint64_t not_carried = 0;     // samples of mapped families in roles not carried (buckets...)
  uint64_t invalid_value = 0;   // NaN, or a negative value where none is valid
  uint64_t series_limit = 0;    // counter series beyond max_series (no rate for them)
  uint64_t resets = 0;          // counter resets seen (a decrease)
  uint64_t intern_refused = 0;  // model or metric names the interner refused (events dropped)
  uint64_t events = 0;          // events appended
};

// PromConverter turns successive scrapes of one target into inferscope gauge events through the
// mapping tables (sources/prom_mapping.h): gauges are carried as they are (unit-converted),
// counters become per-second rates or per-interval increases over the time between two scrapes,
// and ratios of counter increases (histogram means, prefix-cache hit rates) are formed per
// interval. Prometheus' `rate` semantics: a counter that decreased was reset, and its increase is
// its new value. A series seen for the first time gives no rate yet. Series of one mapped name and
// one model are combined (sum, or mean per the row) into one event per scrape.
//
// State: the last value of each counter series (keyed by a hash of its name and labels as on the
// page), at most `max_series`; series absent from a scrape are forgotten. Steady state allocates
// nothing per sample (the tables keep their capacity).
// Concurrency: one thread at a time.
class PromConverter {
 public:
  struct Options {
    PromEngine engine = PromEngine::kAuto;
    std::string instance;       // required: every event's instance
    std::string default_model;  // when no model label is present; "" → "_"
    std::vector<std::string> model_labels = {"model_name", "model"};
    size_t max_series = 10'000;  // counter series remembered (>= 1)
    PromParserOptions parser;
  };

  PromConverter(Options options, Interner& interner);

  // Parses `page` scraped at `time_ms` and appends its events (event time `time_ms`, publisher
  // `publisher`) to `out`.
  PromConvertStats Convert(std::string_view page, int64_t time_ms, StringId publisher,
                           std::vector<Event>& out);

  size_t series() const { return series_.size(); }
  const Options& options() const { return options_; }

 private:
  friend class PromConvertSink;
  struct SeriesState {
    double value = 0;
    uint64_t generation = 0;
  };
  struct Acc {
    uint16_t slot = 0;
    StringId model = 0;
    // How the values combine: a metric may be a gauge for one engine version and a ratio of
    // counters for another (prefix_cache_hit_rate), so the kind is part of the key.
    PromConversion conversion = PromConversion::kGauge;
    PromCombine combine = PromCombine::kSum;
    double num = 0;
    double den = 0;
    uint32_t n = 0;
  };
  StringId ModelOf(const PromSample& sample);
  Acc* Accumulator(uint16_t slot, StringId model, const PromMapping& row);
  void OnSample(const PromSample& sample);

  const Options options_;
  Interner& interner_;
  PromTextParser parser_;
  std::unordered_map<uint64_t, SeriesState> series_;
  std::vector<Acc> accs_;
  uint64_t generation_ = 0;
  int64_t last_time_ms_ = 0;  // time of the previous scrape (0: none)
  double interval_s_ = 0;     // seconds since the previous scrape (0: first scrape)
  // Caches: the last model label value seen and its id; the interned metric names.
  std::string last_model_raw_;
  StringId last_model_ = 0;
  std::string unescaped_;
  std::vector<StringId> metric_ids_;
  PromConvertStats* stats_ = nullptr;  // during Convert
};

}  // namespace inferscope
