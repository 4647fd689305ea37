#include "sources/prom_mapping.h"

#include <array>
#include <functional>
#include <vector>

namespace inferscope {
namespace {

using E = PromEngine;
using R = PromRole;
using C = PromConversion;
constexpr PromCombine kSum = PromCombine::kSum;
constexpr PromCombine kMean = PromCombine::kMean;
constexpr double kMs = 1000.0;      // seconds → milliseconds
constexpr double kPct = 0.01;       // percent → fraction
constexpr double kMiB = 1048576.0;  // MiB → bytes

// The tables. Names come from each project's metrics documentation: vLLM docs/design/metrics.md
// and vllm/engine/metrics.py (v0), vllm/v1/metrics/loggers.py (v1); SGLang
// docs/references/production_metrics.md; TGI docs/source/reference/metrics.md; NVIDIA
// dcgm-exporter's default counters (etc/default-counters.csv). Histograms are carried as the mean
// over the scrape interval (Δ_sum / Δ_count) in this version; their buckets are not (see
// docs/SOURCES.md).
constexpr PromMapping kMappings[] = {
    // vLLM (v0 and v1 engines).
    {E::kVllm, "vllm:num_requests_running", R::kValue, "num_requests_running", C::kGauge, 1, kSum,
     "v0, v1"},
    {E::kVllm, "vllm:num_requests_waiting", R::kValue, "num_requests_waiting", C::kGauge, 1, kSum,
     "v0, v1"},
    {E::kVllm, "vllm:num_requests_swapped", R::kValue, "num_requests_swapped", C::kGauge, 1, kSum,
     "v0"},
    {E::kVllm, "vllm:gpu_cache_usage_perc", R::kValue, "kv_cache_usage", C::kGauge, 1, kMean,
     "v0, early v1; a fraction despite the name"},
    {E::kVllm, "vllm:kv_cache_usage_perc", R::kValue, "kv_cache_usage", C::kGauge, 1, kMean,
     "v1; a fraction despite the name"},
    {E::kVllm, "vllm:cpu_cache_usage_perc", R::kValue, "cpu_kv_cache_usage", C::kGauge, 1, kMean,
     "v0"},
    {E::kVllm, "vllm:gpu_prefix_cache_hit_rate", R::kValue, "prefix_cache_hit_rate", C::kGauge, 1,
     kMean, "v0; -1 (caching off) is not carried", true},
    {E::kVllm, "vllm:num_preemptions_total", R::kTotal, "num_preemptions", C::kDelta, 1, kSum,
     "preemptions during the scrape interval"},
    {E::kVllm, "vllm:prompt_tokens_total", R::kTotal, "prompt_tokens_per_s", C::kRate, 1, kSum, ""},
    {E::kVllm, "vllm:generation_tokens_total", R::kTotal, "generation_tokens_per_s", C::kRate, 1,
     kSum, ""},
    {E::kVllm, "vllm:request_success_total", R::kTotal, "requests_per_s", C::kRate, 1, kSum,
     "finished requests, every finished_reason"},
    {E::kVllm, "vllm:prefix_cache_hits_total", R::kTotal, "prefix_cache_hit_rate",
     C::kRatioNumerator, 1, kSum, "v1: Δhits / Δqueries"},
    {E::kVllm, "vllm:prefix_cache_queries_total", R::kTotal, "prefix_cache_hit_rate",
     C::kRatioDenominator, 1, kSum, "v1"},
    {E::kVllm, "vllm:gpu_prefix_cache_hits_total", R::kTotal, "prefix_cache_hit_rate",
     C::kRatioNumerator, 1, kSum, "early v1: Δhits / Δqueries"},
    {E::kVllm, "vllm:gpu_prefix_cache_queries_total", R::kTotal, "prefix_cache_hit_rate",
     C::kRatioDenominator, 1, kSum, "early v1"},
    {E::kVllm, "vllm:time_to_first_token_seconds", R::kSum, "ttft_mean_ms", C::kRatioNumerator, kMs,
     kSum, "histogram mean: Δ_sum / Δ_count, s → ms"},
    {E::kVllm, "vllm:time_to_first_token_seconds", R::kCount, "ttft_mean_ms", C::kRatioDenominator,
     1, kSum, ""},
    {E::kVllm, "vllm:time_per_output_token_seconds", R::kSum, "tpot_mean_ms", C::kRatioNumerator,
     kMs, kSum, "histogram mean"},
    {E::kVllm, "vllm:time_per_output_token_seconds", R::kCount, "tpot_mean_ms",
     C::kRatioDenominator, 1, kSum, ""},
    {E::kVllm, "vllm:inter_token_latency_seconds", R::kSum, "tpot_mean_ms", C::kRatioNumerator, kMs,
     kSum, "v1 name of the same histogram"},
    {E::kVllm, "vllm:inter_token_latency_seconds", R::kCount, "tpot_mean_ms", C::kRatioDenominator,
     1, kSum, ""},
    {E::kVllm, "vllm:e2e_request_latency_seconds", R::kSum, "e2e_mean_ms", C::kRatioNumerator, kMs,
     kSum, "histogram mean"},
    {E::kVllm, "vllm:e2e_request_latency_seconds", R::kCount, "e2e_mean_ms", C::kRatioDenominator,
     1, kSum, ""},
    {E::kVllm, "vllm:request_queue_time_seconds", R::kSum, "queue_time_mean_ms", C::kRatioNumerator,
     kMs, kSum, "histogram mean"},
    {E::kVllm, "vllm:request_queue_time_seconds", R::kCount, "queue_time_mean_ms",
     C::kRatioDenominator, 1, kSum, ""},

    // SGLang.
    {E::kSglang, "sglang:num_running_reqs", R::kValue, "num_requests_running", C::kGauge, 1, kSum,
     ""},
    {E::kSglang, "sglang:num_queue_reqs", R::kValue, "num_requests_waiting", C::kGauge, 1, kSum,
     ""},
    {E::kSglang, "sglang:token_usage", R::kValue, "kv_cache_usage", C::kGauge, 1, kMean,
     "KV-cache token usage, a fraction"},
    {E::kSglang, "sglang:num_used_tokens", R::kValue, "kv_cache_used_tokens", C::kGauge, 1, kSum,
     ""},
    {E::kSglang, "sglang:cache_hit_rate", R::kValue, "prefix_cache_hit_rate", C::kGauge, 1, kMean,
     "a fraction"},
    {E::kSglang, "sglang:prompt_tokens_total", R::kTotal, "prompt_tokens_per_s", C::kRate, 1, kSum,
     ""},
    {E::kSglang, "sglang:generation_tokens_total", R::kTotal, "generation_tokens_per_s", C::kRate,
     1, kSum, "(the gen_throughput gauge is not carried: this rate replaces it)"},
    {E::kSglang, "sglang:num_requests_total", R::kTotal, "requests_per_s", C::kRate, 1, kSum, ""},
    {E::kSglang, "sglang:time_to_first_token_seconds", R::kSum, "ttft_mean_ms", C::kRatioNumerator,
     kMs, kSum, "histogram mean"},
    {E::kSglang, "sglang:time_to_first_token_seconds", R::kCount, "ttft_mean_ms",
     C::kRatioDenominator, 1, kSum, ""},
    {E::kSglang, "sglang:time_per_output_token_seconds", R::kSum, "tpot_mean_ms",
     C::kRatioNumerator, kMs, kSum, "histogram mean (older name)"},
    {E::kSglang, "sglang:time_per_output_token_seconds", R::kCount, "tpot_mean_ms",
     C::kRatioDenominator, 1, kSum, ""},
    {E::kSglang, "sglang:inter_token_latency_seconds", R::kSum, "tpot_mean_ms", C::kRatioNumerator,
     kMs, kSum, "histogram mean (current name)"},
    {E::kSglang, "sglang:inter_token_latency_seconds", R::kCount, "tpot_mean_ms",
     C::kRatioDenominator, 1, kSum, ""},
    {E::kSglang, "sglang:e2e_request_latency_seconds", R::kSum, "e2e_mean_ms", C::kRatioNumerator,
     kMs, kSum, "histogram mean"},
    {E::kSglang, "sglang:e2e_request_latency_seconds", R::kCount, "e2e_mean_ms",
     C::kRatioDenominator, 1, kSum, ""},
    {E::kSglang, "sglang:queue_time_seconds", R::kSum, "queue_time_mean_ms", C::kRatioNumerator,
     kMs, kSum, "histogram mean"},
    {E::kSglang, "sglang:queue_time_seconds", R::kCount, "queue_time_mean_ms", C::kRatioDenominator,
     1, kSum, ""},

    // Text Generation Inference.
    {E::kTgi, "tgi_batch_current_size", R::kValue, "num_requests_running", C::kGauge, 1, kSum, ""},
    {E::kTgi, "tgi_queue_size", R::kValue, "num_requests_waiting", C::kGauge, 1, kSum, ""},
    {E::kTgi, "tgi_request_count", R::kTotal, "requests_per_s", C::kRate, 1, kSum, ""},
    {E::kTgi, "tgi_request_failure", R::kTotal, "request_failures_per_s", C::kRate, 1, kSum,
     "every err label"},
    {E::kTgi, "tgi_request_generated_tokens", R::kSum, "generation_tokens_per_s", C::kRate, 1, kSum,
     "rate of the histogram's _sum"},
    {E::kTgi, "tgi_request_input_length", R::kSum, "prompt_tokens_per_s", C::kRate, 1, kSum,
     "rate of the histogram's _sum"},
    {E::kTgi, "tgi_request_duration", R::kSum, "e2e_mean_ms", C::kRatioNumerator, kMs, kSum,
     "histogram mean"},
    {E::kTgi, "tgi_request_duration", R::kCount, "e2e_mean_ms", C::kRatioDenominator, 1, kSum, ""},
    {E::kTgi, "tgi_request_mean_time_per_token_duration", R::kSum, "tpot_mean_ms",
     C::kRatioNumerator, kMs, kSum, "histogram mean"},
    {E::kTgi, "tgi_request_mean_time_per_token_duration", R::kCount, "tpot_mean_ms",
     C::kRatioDenominator, 1, kSum, ""},
    {E::kTgi, "tgi_request_queue_duration", R::kSum, "queue_time_mean_ms", C::kRatioNumerator, kMs,
     kSum, "histogram mean"},
    {E::kTgi, "tgi_request_queue_duration", R::kCount, "queue_time_mean_ms", C::kRatioDenominator,
     1, kSum, ""},

    // NVIDIA DCGM exporter (one series per GPU: combined per target).
    {E::kDcgm, "DCGM_FI_DEV_GPU_UTIL", R::kValue, "gpu_utilization", C::kGauge, kPct, kMean,
     "percent → fraction, mean over GPUs"},
    {E::kDcgm, "DCGM_FI_DEV_MEM_COPY_UTIL", R::kValue, "gpu_memory_bandwidth_utilization",
     C::kGauge, kPct, kMean, "percent → fraction, mean over GPUs"},
    {E::kDcgm, "DCGM_FI_DEV_FB_USED", R::kValue, "gpu_memory_used_bytes", C::kGauge, kMiB, kSum,
     "MiB → bytes, sum over GPUs"},
    {E::kDcgm, "DCGM_FI_DEV_FB_FREE", R::kValue, "gpu_memory_free_bytes", C::kGauge, kMiB, kSum,
     "MiB → bytes, sum over GPUs"},
    {E::kDcgm, "DCGM_FI_DEV_POWER_USAGE", R::kValue, "gpu_power_watts", C::kGauge, 1, kSum,
     "W, sum over GPUs"},
    {E::kDcgm, "DCGM_FI_DEV_GPU_TEMP", R::kValue, "gpu_temperature_celsius", C::kGauge, 1, kMean,
     "°C, mean over GPUs"},
    {E::kDcgm, "DCGM_FI_DEV_SM_CLOCK", R::kValue, "gpu_sm_clock_hz", C::kGauge, 1e6, kMean,
     "MHz → Hz, mean over GPUs"},
    {E::kDcgm, "DCGM_FI_PROF_GR_ENGINE_ACTIVE", R::kValue, "gpu_engine_active", C::kGauge, 1, kMean,
     "a fraction, mean over GPUs"},
};

constexpr size_t kNumMappings = sizeof(kMappings) / sizeof(kMappings[0]);

// Open addressing over (family, role); built once. 256 slots for < 128 rows.
constexpr size_t kSlots = 256;
static_assert(kNumMappings < kSlots / 2);

// A counter's family is named with `_total` in 0.0.4 pages and without it in OpenMetrics pages
// (`# TYPE vllm:num_preemptions counter`, sample `vllm:num_preemptions_total`): counter rows are
// keyed without the suffix, so both spellings find them.
std::string_view Key(std::string_view family, PromRole role) {
  constexpr std::string_view kTotal = "_total";
  if (role == PromRole::kTotal && family.size() > kTotal.size() &&
      family.substr(family.size() - kTotal.size()) == kTotal) {
    family.remove_suffix(kTotal.size());
  }
  return family;
}

size_t Hash(std::string_view family, PromRole role) {
  // FNV-1a.
  uint64_t h = 1469598103934665603ull;
  for (char c : family) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  h ^= static_cast<uint64_t>(role) + 1;
  h *= 1099511628211ull;
  return static_cast<size_t>(h) & (kSlots - 1);
}

struct Index {
  std::array<int16_t, kSlots> slots;
  std::array<uint16_t, kNumMappings> metric_slot;
  std::vector<std::string_view> metrics;
  Index() {
    for (size_t i = 0; i < kNumMappings; ++i) {
      size_t m = 0;
      while (m < metrics.size() && metrics[m] != kMappings[i].metric) ++m;
      if (m == metrics.size()) metrics.push_back(kMappings[i].metric);
      metric_slot[i] = static_cast<uint16_t>(m);
    }
    slots.fill(-1);
    for (size_t i = 0; i < kNumMappings; ++i) {
      size_t s = Hash(Key(kMappings[i].family, kMappings[i].role), kMappings[i].role);
      while (slots[s] >= 0) s = (s + 1) & (kSlots - 1);
      slots[s] = static_cast<int16_t>(i);
    }
  }
};

const Index& GetIndex() {
  static const Index index;
  return index;
}

}  // namespace

std::string_view PromEngineName(PromEngine engine) {
  switch (engine) {
    case PromEngine::kAuto:
      return "auto";
    case PromEngine::kVllm:
      return "vllm";
    case PromEngine::kSglang:
      return "sglang";
    case PromEngine::kTgi:
      return "tgi";
    case PromEngine::kDcgm:
      return "dcgm";
  }
  return "auto";
}

bool ParsePromEngine(std::string_view name, PromEngine* engine) {
  for (PromEngine e : {PromEngine::kAuto, PromEngine::kVllm, PromEngine::kSglang, PromEngine::kTgi,
                       PromEngine::kDcgm}) {
    if (name == PromEngineName(e)) {
      *engine = e;
      return true;
    }
  }
  return false;
}

std::string_view PromConversionName(PromConversion conversion) {
  switch (conversion) {
    case PromConversion::kGauge:
      return "gauge";
    case PromConversion::kRate:
      return "rate";
    case PromConversion::kDelta:
      return "delta";
    case PromConversion::kRatioNumerator:
      return "ratio_numerator";
    case PromConversion::kRatioDenominator:
      return "ratio_denominator";
  }
  return "gauge";
}

std::span<const PromMapping> PromMappings() { return {kMappings, kNumMappings}; }

const PromMapping* FindPromMapping(PromEngine engine, std::string_view family, PromRole role) {
  const Index& index = GetIndex();
  const std::string_view key = Key(family, role);
  size_t s = Hash(key, role);
  while (index.slots[s] >= 0) {
    const PromMapping& m = kMappings[index.slots[s]];
    if (m.role == role && Key(m.family, m.role) == key) {
      return engine == PromEngine::kAuto || engine == m.engine ? &m : nullptr;
    }
    s = (s + 1) & (kSlots - 1);
  }
  return nullptr;
}

size_t PromMappingIndex(const PromMapping* mapping) {
  return static_cast<size_t>(mapping - kMappings);
}

std::span<const std::string_view> PromMetricNames() { return GetIndex().metrics; }

size_t PromMetricSlot(const PromMapping* mapping) {
  return GetIndex().metric_slot[PromMappingIndex(mapping)];
}

}  // namespace inferscope
