#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "sources/prom_text.h"

namespace inferscope {

// The serving engine or exporter a scrape target runs; selects its mapping table.
enum class PromEngine : uint8_t {
  kAuto = 0,  // every table (names do not collide: each engine has its own prefix)
  kVllm,      // vLLM, v0 and v1 engine names
  kSglang,
  kTgi,
  kDcgm,  // NVIDIA DCGM exporter
};
std::string_view PromEngineName(PromEngine engine);
// "auto", "vllm", "sglang", "tgi", "dcgm"; false for anything else.
bool ParsePromEngine(std::string_view name, PromEngine* engine);

// How a mapped Prometheus sample becomes an inferscope gauge value at each scrape.
enum class PromConversion : uint8_t {
  // The sample's value × scale (gauges). Several series of one mapped name (per GPU, per engine
  // index) combine by `combine`.
  kGauge = 0,
  // A counter's increase per second over the scrape interval × scale; reset-aware as Prometheus'
  // rate (a decrease is a reset: the increase is the new value). Several series add up.
  kRate,
  // A counter's increase over the scrape interval × scale (a count per interval, the contract of
  // `num_preemptions`). Several series add up.
  kDelta,
  // Part of a ratio of two counters' increases over the interval: the numerator
  // (Δnumerator / Δdenominator × scale; not emitted when Δdenominator is 0). Histogram means are
  // such ratios (Δ_sum / Δ_count).
  kRatioNumerator,
  kRatioDenominator,
};
std::string_view PromConversionName(PromConversion conversion);

enum class PromCombine : uint8_t { kSum = 0, kMean };

// One row of a mapping table: samples of `family` with role `role` become the inferscope gauge
// `metric`.
struct PromMapping {
  PromEngine engine;
  std::string_view family;  // the Prometheus family name (a `# TYPE` name)
  PromRole role;            // which samples of the family (kTotal for counters, kValue gauges...)
  std::string_view metric;  // inferscope gauge name (the metric contract: sim/README.md)
  PromConversion conversion;
  double scale = 1;  // unit conversion (seconds → ms: 1000; percent → fraction: 0.01; MiB → B)
  PromCombine combine = PromCombine::kSum;
  std::string_view note;       // for the documentation table
  bool drop_negative = false;  // negative values mean "not available" (not carried)
};

// Every mapping row, in documentation order.
std::span<const PromMapping> PromMappings();

// The row for (family, role) within `engine`'s table (every table for kAuto), or null when the
// sample is not carried over. Counter families match with or without `_total` (0.0.4 and
// OpenMetrics spellings). A linear-probe hash table built once; no allocation per lookup.
const PromMapping* FindPromMapping(PromEngine engine, std::string_view family, PromRole role);

// The index of `mapping` in PromMappings().
size_t PromMappingIndex(const PromMapping* mapping);

// The distinct inferscope metric names of the tables, and the slot (index in that list) of a row's
// metric: rows of one metric share a slot (a ratio's numerator and denominator, v0 and v1 names).
std::span<const std::string_view> PromMetricNames();
size_t PromMetricSlot(const PromMapping* mapping);

}  // namespace inferscope
