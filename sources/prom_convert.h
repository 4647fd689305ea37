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

// ---- Histograms (callable with parsed samples of any source: scrape, remote write) ----

// The cumulative buckets of one histogram series at one point in time, as exposed (`le` bounds in
// the exposition's unit, increasing; the last may be +Inf), with its _sum and _count.
struct PromHistogramSnapshot {
  uint32_t buckets = 0;
  double le[HistogramDelta::kMaxBuckets];
  double cumulative[HistogramDelta::kMaxBuckets];
  double sum = 0;
  double count = 0;
  bool has_sum = false;
  bool has_count = false;
};

// Why a histogram series gave no bucket event (counted per reason).
enum class PromHistogramError : uint8_t {
  kNone = 0,
  kTooManyBuckets,  // more than HistogramDelta::kMaxBuckets buckets
  kBadBound,        // an `le` that is missing, NaN, -Inf or repeated
  kBadCount,        // a bucket count that is NaN, negative, infinite or not cumulative
  kLayoutChanged,   // bounds differ from the previous scrape's (the series restarts from here)
  kCount_,
};
inline constexpr size_t kNumPromHistogramErrors = static_cast<size_t>(PromHistogramError::kCount_);
// "too_many_buckets", "bad_bound", "bad_count", "layout_changed" ("" for kNone).
std::string_view PromHistogramErrorName(PromHistogramError error);

// Adds the bucket `le` (already parsed; "+Inf" is infinity) with cumulative count `cumulative` to
// `snapshot`, keeping the bounds sorted.
PromHistogramError PromHistogramAddBucket(PromHistogramSnapshot& snapshot, double le,
                                          double cumulative);

// The bucket deltas from `prev` to `cur` (two scrapes of one series), with bounds and the sum
// multiplied by `scale` (seconds → ms: 1000; +Inf stays +Inf), as non-cumulative per-bucket counts.
// Reset-aware as Prometheus' rate: when the count or any cumulative bucket decreased, the series
// restarted and the increase is `cur` itself (never a negative delta). The bounds must be equal
// (kLayoutChanged otherwise) and `cur` valid (cumulative, finite, non-negative). `*reset` (may be
// null) tells whether a reset was seen. The result may hold zero observations (an idle interval).
PromHistogramError PromHistogramDeltaOf(const PromHistogramSnapshot& prev,
                                        const PromHistogramSnapshot& cur, double scale,
                                        HistogramDelta* out, bool* reset = nullptr);

// The inferscope histogram metric ("ttft_ms", "tpot_ms", "e2e_ms", "queue_time_ms") of a
// Prometheus histogram family in `engine`'s table — the family whose _sum/_count give the mean
// gauge "<x>_mean_ms" — or "" when the family's buckets are not carried. The unit scale of the
// bounds is the row's scale (`*scale`, may be null).
std::string_view PromHistogramMetric(PromEngine engine, std::string_view family,
                                     double* scale = nullptr);

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
  // Histograms (only when Convert is given a histogram buffer; otherwise buckets are not_carried).
  uint64_t histogram_events = 0;  // kHistogram events appended
  uint64_t histogram_resets = 0;  // histogram series that restarted (no negative deltas)
  uint64_t histogram_errors[kNumPromHistogramErrors] = {};  // series refused, by reason
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
  // As above; the latency histograms (ttft, tpot, e2e, queue time) also become kHistogram events
  // whose bucket deltas are appended to `histograms` (Event::histogram is their index there: pass
  // the EventBatch's `events` and `histograms`). Series of one family, metric and model add up
  // bucket by bucket; when two families map to one metric (vLLM's time_per_output_token and
  // inter_token_latency) the first one on the page is carried. A series seen for the first time
  // gives no event yet (its counts since process start are not an interval).
  PromConvertStats Convert(std::string_view page, int64_t time_ms, StringId publisher,
                           std::vector<Event>& out, std::vector<HistogramDelta>* histograms);

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
  void OnHistogramSample(const PromSample& sample, std::string_view metric, double scale);
  void EmitHistograms(int64_t time_ms, StringId instance, StringId publisher,
                      std::vector<Event>& out, std::vector<HistogramDelta>& histograms);

  // Histogram series of the current page, and the previous page's snapshot per series.
  struct CurrentHistogram {
    uint64_t key = 0;     // family + labels other than `le`
    uint64_t family = 0;  // hash of the family name
    uint8_t metric = 0;   // index in the histogram metric names
    StringId model = 0;
    double scale = 1;
    PromHistogramError error = PromHistogramError::kNone;
    PromHistogramSnapshot snapshot;
  };
  struct PreviousHistogram {
    uint64_t generation = 0;
    PromHistogramSnapshot snapshot;
  };
  std::vector<CurrentHistogram> cur_hists_;
  std::unordered_map<uint64_t, uint32_t> cur_index_;  // key → index in cur_hists_
  std::unordered_map<uint64_t, PreviousHistogram> prev_hists_;
  struct EmittedHistogram {
    uint8_t metric;
    StringId model;
    uint64_t family;
    size_t index;  // in the histogram buffer
    size_t event;  // in the event vector
  };
  std::vector<EmittedHistogram> emitted_;
  HistogramDelta delta_;
  StringId hist_metric_ids_[4] = {};
  bool want_histograms_ = false;

  const Options options_;
  Interner& interner_;
  PromTextParser parser_;
  std::unordered_map<uint64_t, SeriesState> series_;
  std::vector<Acc> accs_;
  uint64_t generation_ = 0;
  int64_t last_time_ms_ = 0;  // time of the previous scrape (0: none)
  double interval_s_ = 0;     // seconds since the previous scrape (0: first scrape)
  // The mapping-table lookups of the last family seen (consecutive samples share a family: a
  // histogram's buckets, _sum and _count, a gauge's series per GPU), per role, made on first need.
  struct FamilyLookups {
    std::string family;  // keeps its capacity
    bool valid = false;
    bool histogram_done = false;
    std::string_view histogram_metric;  // PromHistogramMetric of the family ("" when none)
    double histogram_scale = 1;
    uint16_t roles_done = 0;  // bit per PromRole: mapping[role] looked up
    const PromMapping* mapping[16] = {};
    int8_t family_known = -1;  // some role of the family is mapped (-1: not looked up yet)
  };
  FamilyLookups& LookupsOf(std::string_view family);
  const PromMapping* MappingOf(FamilyLookups& f, PromRole role);
  FamilyLookups family_;
  // Caches: the last model label value seen and its id; the interned metric names.
  std::string last_model_raw_;
  StringId last_model_ = 0;
  std::string unescaped_;
  std::vector<StringId> metric_ids_;
  PromConvertStats* stats_ = nullptr;  // during Convert
};

}  // namespace inferscope
