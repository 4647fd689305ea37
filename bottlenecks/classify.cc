#include "bottlenecks/classify.h"

#include <algorithm>
#include <cstdio>

#include "pipeline/names.h"

namespace inferscope {
namespace {

constexpr std::array<std::string_view, kNumWindowMetrics> kMetricNames = {
    "ttft_ms",
    "tpot_ms",
    "e2e_ms",
    "prompt_tokens",
    "cached_tokens",
    "num_requests_running",
    "num_requests_waiting",
    "kv_cache_usage",
    "num_preemptions",
    "prefix_cache_hit_rate",
    "generation_tokens_per_s",
    "prompt_tokens_per_s",
    "max_num_seqs",
    "kv_cache_capacity_tokens"};

constexpr size_t Index(BottleneckType t) { return static_cast<size_t>(t); }

RuleVerdict Judge(const RuleLevels& levels, double value) {
  RuleVerdict v;
  v.value = value;
  v.severity = levels.SeverityOf(value);
  if (v.severity != BottleneckSeverity::kNone) {
    v.judgement = Judgement::kActive;
  } else {
    v.judgement = levels.Clears(value) ? Judgement::kClear : Judgement::kHold;
  }
  return v;
}

// Folds candidate `c` into `v`: active if any candidate is active (the most severe wins, the
// earlier on ties), hold if any holds, clear only when every judged candidate is clear.
void Consider(RuleVerdict* v, const RuleVerdict& c) {
  switch (c.judgement) {
    case Judgement::kActive:
      if (v->judgement != Judgement::kActive || c.severity > v->severity) *v = c;
      break;
    case Judgement::kHold:
      if (v->judgement == Judgement::kNotJudged || v->judgement == Judgement::kClear) *v = c;
      break;
    case Judgement::kClear:
      if (v->judgement == Judgement::kNotJudged) *v = c;
      break;
    case Judgement::kNotJudged:
      break;
  }
}

uint64_t Requests(const InstanceWindow& w) {
  return std::max(w.Get(WindowMetric::kE2e).events, w.Get(WindowMetric::kTtft).events);
}

double HitRate(const InstanceWindow& w) {
  const MetricWindow& gauge = w.Get(WindowMetric::kPrefixHitRate);
  if (gauge.present()) return gauge.mean;
  const MetricWindow& prompt = w.Get(WindowMetric::kPromptTokens);
  const MetricWindow& cached = w.Get(WindowMetric::kCachedTokens);
  if (prompt.present() && prompt.sum > 0 && cached.present()) {
    return std::clamp(cached.sum / prompt.sum, 0.0, 1.0);
  }
  return NAN;
}

// `hit` + z standard errors, the standard error bounded by the largest variance a [0, 1]-valued
// per-request hit rate with mean `hit` can have (BottleneckOptions::confidence_z).
double HitRateUpperBound(double hit, uint64_t requests, double z) {
  if (z <= 0 || requests == 0) return hit;
  const double n = static_cast<double>(requests);
  const double variance = std::max(hit * (1 - hit), (1 - 1 / n) / n);
  return hit + z * std::sqrt(variance / n);
}

double DecodeRate(const InstanceWindow& w, const BottleneckOptions& o) {
  const MetricWindow& running = w.Get(WindowMetric::kRunning);
  const MetricWindow& gen = w.Get(WindowMetric::kGenTokensPerS);
  if (!running.present() || !gen.present() || running.mean < o.min_running || running.mean <= 0) {
    return NAN;
  }
  return gen.mean / running.mean;
}

std::string Format(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.4g", v);
  return buf;
}

std::string Seconds(int64_t ms) {
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

// Reads `low`, `medium`, `high`, `critical`, `exit` of the child `field` of `node` into `*levels`
// (absent fields keep their values) and validates them.
Status ParseLevels(const ConfigNode& node, std::string_view field, RuleLevels* levels) {
  if (!node.Has(field)) return Status::Ok();
  Result<ConfigNode> child = node.Child(field);
  if (!child.ok()) return child.status();
  INFERSCOPE_RETURN_IF_ERROR(
      child->CheckKnownFields({"low", "medium", "high", "critical", "exit"}));
  RuleLevels l = *levels;
  for (auto [name, target] : {std::pair<std::string_view, double*>{"low", &l.low},
                              {"medium", &l.medium},
                              {"high", &l.high},
                              {"critical", &l.critical},
                              {"exit", &l.exit}}) {
    Result<double> v = child->GetDouble(name, *target);
    if (!v.ok()) return v.status();
    *target = *v;
  }
  if (Status st = l.Validate(""); !st.ok()) return node.Error(field, st.message());
  *levels = l;
  return Status::Ok();
}

}  // namespace

std::string_view WindowMetricName(WindowMetric metric) {
  const auto i = static_cast<size_t>(metric);
  return i < kMetricNames.size() ? kMetricNames[i] : "unknown";
}

BottleneckSeverity RuleLevels::SeverityOf(double v) const {
  if (std::isnan(v)) return BottleneckSeverity::kNone;
  auto beyond = [this](double value, double level) {
    return higher_is_worse ? value >= level : value <= level;
  };
  if (beyond(v, critical)) return BottleneckSeverity::kCritical;
  if (beyond(v, high)) return BottleneckSeverity::kHigh;
  if (beyond(v, medium)) return BottleneckSeverity::kMedium;
  if (beyond(v, low)) return BottleneckSeverity::kLow;
  return BottleneckSeverity::kNone;
}

double RuleLevels::LevelOf(BottleneckSeverity severity) const {
  switch (severity) {
    case BottleneckSeverity::kMedium:
      return medium;
    case BottleneckSeverity::kHigh:
      return high;
    case BottleneckSeverity::kCritical:
      return critical;
    default:
      return low;
  }
}

Status RuleLevels::Validate(std::string_view name) const {
  const std::string prefix = name.empty() ? "" : std::string(name) + ": ";
  for (double v : {low, medium, high, critical, exit}) {
    if (!std::isfinite(v)) return Status::InvalidArgument(prefix + "levels must be finite");
  }
  if (higher_is_worse) {
    if (!(low <= medium && medium <= high && high <= critical)) {
      return Status::InvalidArgument(prefix +
                                     "levels must not decrease (low <= medium <= high <= "
                                     "critical)");
    }
    if (!(exit < low)) return Status::InvalidArgument(prefix + "exit must be below low");
  } else {
    if (!(low >= medium && medium >= high && high >= critical)) {
      return Status::InvalidArgument(prefix +
                                     "levels must not increase (lower is worse: low >= "
                                     "medium >= high >= critical)");
    }
    if (!(exit > low)) return Status::InvalidArgument(prefix + "exit must be above low");
  }
  return Status::Ok();
}

std::vector<SaturationGauge> BottleneckOptions::DefaultSaturationGauges() {
  return {{"gpu_utilization", false, {0.95, 0.98, 0.99, 1.0, 0.85, true}},
          {"gpu_memory_used_fraction", false, {0.97, 0.98, 0.99, 1.0, 0.90, true}}};
}

Status BottleneckOptions::Validate() const {
  if (min_requests < 1) return Status::InvalidArgument("min_requests must be >= 1");
  if (!(kv_enter > 0 && kv_enter <= 1) || !(kv_exit >= 0 && kv_exit < kv_enter)) {
    return Status::InvalidArgument("memory_pressure: need 0 <= kv_exit < kv_enter <= 1");
  }
  INFERSCOPE_RETURN_IF_ERROR(preemption_rate.Validate("memory_pressure.preemption_rate"));
  if (preemption_rate.exit < 0) {
    return Status::InvalidArgument("memory_pressure.preemption_rate: exit must be >= 0");
  }
  for (double slo : {ttft_p95_slo_ms, tpot_p95_slo_ms, e2e_p95_slo_ms}) {
    if (!(slo >= 0) || !std::isfinite(slo)) {
      return Status::InvalidArgument("high_latency: SLOs must be >= 0 (0 disables one)");
    }
  }
  INFERSCOPE_RETURN_IF_ERROR(latency.Validate("high_latency.levels"));
  if (!(latency.exit > 0)) return Status::InvalidArgument("high_latency.levels: exit must be > 0");
  INFERSCOPE_RETURN_IF_ERROR(peer.Validate("peer.levels"));
  if (!(peer.exit >= 1)) return Status::InvalidArgument("peer.levels: exit must be >= 1");
  if (min_peers < 1) return Status::InvalidArgument("peer: min_peers must be >= 1");
  if (!(peer_min_delta_ms >= 0)) return Status::InvalidArgument("peer: min_delta_ms must be >= 0");
  if (!(peer_max_running_ratio >= 1)) {
    return Status::InvalidArgument("peer: max_running_ratio must be >= 1");
  }
  INFERSCOPE_RETURN_IF_ERROR(throughput.Validate("low_throughput.levels"));
  if (!(throughput.critical >= 0)) {
    return Status::InvalidArgument("low_throughput.levels: critical must be >= 0");
  }
  if (!(min_running > 0)) return Status::InvalidArgument("low_throughput: min_running must be > 0");
  INFERSCOPE_RETURN_IF_ERROR(queue.Validate("queue_buildup.levels"));
  if (!(min_waiting >= 0))
    return Status::InvalidArgument("queue_buildup: min_waiting must be >= 0");
  if (!(queue_growth > 0)) return Status::InvalidArgument("queue_buildup: growth must be > 0");
  if (!(expected_hit_rate >= 0 && expected_hit_rate <= 1) ||
      !(min_expected_hit_rate > 0 && min_expected_hit_rate <= 1)) {
    return Status::InvalidArgument(
        "cache_inefficiency: expected_hit_rate must be in 0..1 and min_expected_hit_rate in "
        "(0, 1]");
  }
  if (!(confidence_z >= 0 && confidence_z <= 10)) {
    return Status::InvalidArgument("cache_inefficiency: confidence_z must be in 0..10");
  }
  INFERSCOPE_RETURN_IF_ERROR(cache.Validate("cache_inefficiency.levels"));
  if (!(cache.critical >= 0 && cache.exit <= 1)) {
    return Status::InvalidArgument("cache_inefficiency.levels: ratios must be within 0..1");
  }
  INFERSCOPE_RETURN_IF_ERROR(errors.Validate("error_spike.levels"));
  if (!(errors.exit >= 0 && errors.critical <= 1)) {
    return Status::InvalidArgument("error_spike.levels: ratios must be within 0..1");
  }
  if (min_error_requests < 1) return Status::InvalidArgument("error_spike: min_requests >= 1");
  if (saturation.size() > kMaxSaturationGauges) {
    return Status::InvalidArgument("resource_saturation: at most 8 gauges");
  }
  for (const SaturationGauge& g : saturation) {
    if (g.metric.empty() || g.metric.size() > kMaxNameBytes) {
      return Status::InvalidArgument("resource_saturation: metric must be 1..255 bytes");
    }
    INFERSCOPE_RETURN_IF_ERROR(g.levels.Validate("resource_saturation." + g.metric));
    if (!g.levels.higher_is_worse) {
      return Status::InvalidArgument("resource_saturation: higher must be worse");
    }
  }
  return Status::Ok();
}

Status ParseBottleneckOptions(const ConfigNode& node, BottleneckOptions* out) {
  BottleneckOptions o = *out;
  INFERSCOPE_RETURN_IF_ERROR(ReadInt(node, "min_requests", &o.min_requests, 1));
  auto section = [&](std::string_view field, std::initializer_list<std::string_view> known)
      -> Result<std::optional<ConfigNode>> { return Section(node, field, known); };

  Result<std::optional<ConfigNode>> s =
      section("memory_pressure", {"kv_enter", "kv_exit", "preemption_rate", "quiet_clears"});
  if (!s.ok()) return s.status();
  if (*s) {
    INFERSCOPE_RETURN_IF_ERROR(ReadDouble(**s, "kv_enter", &o.kv_enter, 0, 1));
    INFERSCOPE_RETURN_IF_ERROR(ReadDouble(**s, "kv_exit", &o.kv_exit, 0, 1));
    if (!(o.kv_exit < o.kv_enter)) return (*s)->Error("kv_exit", "must be below kv_enter");
    INFERSCOPE_RETURN_IF_ERROR(ParseLevels(**s, "preemption_rate", &o.preemption_rate));
    Result<bool> quiet = (*s)->GetBool("quiet_clears", o.kv_quiet_clears);
    if (!quiet.ok()) return quiet.status();
    o.kv_quiet_clears = *quiet;
  }
  s = section("high_latency", {"ttft_p95_ms", "tpot_p95_ms", "e2e_p95_ms", "levels"});
  if (!s.ok()) return s.status();
  if (*s) {
    INFERSCOPE_RETURN_IF_ERROR(ReadDouble(**s, "ttft_p95_ms", &o.ttft_p95_slo_ms, 0));
    INFERSCOPE_RETURN_IF_ERROR(ReadDouble(**s, "tpot_p95_ms", &o.tpot_p95_slo_ms, 0));
    INFERSCOPE_RETURN_IF_ERROR(ReadDouble(**s, "e2e_p95_ms", &o.e2e_p95_slo_ms, 0));
    INFERSCOPE_RETURN_IF_ERROR(ParseLevels(**s, "levels", &o.latency));
  }
  s = section("peer", {"min_peers", "min_delta_ms", "max_running_ratio", "levels"});
  if (!s.ok()) return s.status();
  if (*s) {
    INFERSCOPE_RETURN_IF_ERROR(ReadInt(**s, "min_peers", &o.min_peers, 1, 1000));
    INFERSCOPE_RETURN_IF_ERROR(ReadDouble(**s, "min_delta_ms", &o.peer_min_delta_ms, 0));
    INFERSCOPE_RETURN_IF_ERROR(ReadDouble(**s, "max_running_ratio", &o.peer_max_running_ratio, 1));
    INFERSCOPE_RETURN_IF_ERROR(ParseLevels(**s, "levels", &o.peer));
  }
  s = section("low_throughput", {"min_running", "levels"});
  if (!s.ok()) return s.status();
  if (*s) {
    INFERSCOPE_RETURN_IF_ERROR(ReadDouble(**s, "min_running", &o.min_running, 1e-9));
    INFERSCOPE_RETURN_IF_ERROR(ParseLevels(**s, "levels", &o.throughput));
  }
  s = section("queue_buildup", {"min_waiting", "growth", "levels"});
  if (!s.ok()) return s.status();
  if (*s) {
    INFERSCOPE_RETURN_IF_ERROR(ReadDouble(**s, "min_waiting", &o.min_waiting, 0));
    INFERSCOPE_RETURN_IF_ERROR(ReadDouble(**s, "growth", &o.queue_growth, 1e-9));
    INFERSCOPE_RETURN_IF_ERROR(ParseLevels(**s, "levels", &o.queue));
  }
  s = section("cache_inefficiency",
              {"expected_hit_rate", "min_expected_hit_rate", "confidence_z", "levels"});
  if (!s.ok()) return s.status();
  if (*s) {
    INFERSCOPE_RETURN_IF_ERROR(ReadDouble(**s, "expected_hit_rate", &o.expected_hit_rate, 0, 1));
    INFERSCOPE_RETURN_IF_ERROR(
        ReadDouble(**s, "min_expected_hit_rate", &o.min_expected_hit_rate, 1e-9, 1));
    INFERSCOPE_RETURN_IF_ERROR(ReadDouble(**s, "confidence_z", &o.confidence_z, 0, 10));
    INFERSCOPE_RETURN_IF_ERROR(ParseLevels(**s, "levels", &o.cache));
  }
  s = section("error_spike", {"min_requests", "levels"});
  if (!s.ok()) return s.status();
  if (*s) {
    INFERSCOPE_RETURN_IF_ERROR(ReadInt(**s, "min_requests", &o.min_error_requests, 1));
    INFERSCOPE_RETURN_IF_ERROR(ParseLevels(**s, "levels", &o.errors));
  }
  if (node.Has("resource_saturation")) {
    const YAML::Node list = node.node()["resource_saturation"];
    if (!list.IsSequence()) {
      return node.Error("resource_saturation", "expected a list of {metric, stat, levels}");
    }
    if (list.size() > kMaxSaturationGauges) {
      return node.Error("resource_saturation", "at most 8 gauges");
    }
    o.saturation.clear();
    for (size_t i = 0; i < list.size(); ++i) {
      ConfigNode g(node.file(), list[i],
                   node.path() + ".resource_saturation[" + std::to_string(i) + "]");
      if (!list[i].IsMap()) return g.Error("", "expected a mapping");
      INFERSCOPE_RETURN_IF_ERROR(g.CheckKnownFields({"metric", "stat", "levels"}));
      SaturationGauge gauge;
      gauge.levels = {0.95, 0.98, 0.99, 1.0, 0.85, true};
      Result<std::string> metric = g.GetString("metric");
      if (!metric.ok()) return metric.status();
      if (metric->empty() || metric->size() > kMaxNameBytes) {
        return g.Error("metric", "must be 1..255 bytes");
      }
      gauge.metric = *metric;
      Result<std::string> stat = g.GetString("stat", "mean");
      if (!stat.ok()) return stat.status();
      if (*stat != "mean" && *stat != "max") {
        return g.Error("stat", "expected mean or max, got '" + *stat + "'");
      }
      gauge.use_max = *stat == "max";
      INFERSCOPE_RETURN_IF_ERROR(ParseLevels(g, "levels", &gauge.levels));
      o.saturation.push_back(std::move(gauge));
    }
  }
  if (Status st = o.Validate(); !st.ok()) return node.Error("", st.message());
  *out = std::move(o);
  return Status::Ok();
}

PeerSample PeerSampleOf(const InstanceWindow& w, const BottleneckOptions& o) {
  PeerSample s;
  const bool enough = Requests(w) >= static_cast<uint64_t>(o.min_requests);
  if (enough) {
    const MetricWindow& ttft = w.Get(WindowMetric::kTtft);
    const MetricWindow& tpot = w.Get(WindowMetric::kTpot);
    if (ttft.count >= static_cast<uint64_t>(o.min_requests)) s.ttft_p50 = ttft.p50;
    if (tpot.count >= static_cast<uint64_t>(o.min_requests)) s.tpot_p50 = tpot.p50;
    s.hit_rate = HitRate(w);
  }
  s.decode_rate = DecodeRate(w, o);
  const MetricWindow& running = w.Get(WindowMetric::kRunning);
  if (running.present()) s.running = running.mean;
  return s;
}

void ComputePeerViews(std::span<const PeerSample> samples, std::span<PeerView> out,
                      std::vector<std::pair<double, uint32_t>>& scratch) {
  auto one = [&](double PeerSample::*value, PeerValue PeerView::*target) {
    scratch.clear();
    for (uint32_t i = 0; i < samples.size(); ++i) {
      const double v = samples[i].*value;
      if (std::isfinite(v)) scratch.emplace_back(v, i);
    }
    std::sort(scratch.begin(), scratch.end());
    const size_t n = scratch.size();
    // Median of the sorted values without position `skip` (n: skip nothing).
    auto median = [&](size_t skip) -> PeerValue {
      const size_t m = skip < n ? n - 1 : n;
      if (m == 0) return {};
      auto at = [&](size_t j) { return scratch[j < skip ? j : j + 1].first; };
      const double med = m % 2 == 1 ? at(m / 2) : (at(m / 2 - 1) + at(m / 2)) / 2;
      return {med, static_cast<int>(m)};
    };
    const PeerValue all = median(n);
    for (size_t i = 0; i < samples.size(); ++i) out[i].*target = all;
    for (size_t k = 0; k < n; ++k) out[scratch[k].second].*target = median(k);
  };
  one(&PeerSample::ttft_p50, &PeerView::ttft_p50);
  one(&PeerSample::tpot_p50, &PeerView::tpot_p50);
  one(&PeerSample::decode_rate, &PeerView::decode_rate);
  one(&PeerSample::hit_rate, &PeerView::hit_rate);
  one(&PeerSample::running, &PeerView::running);
}

void ClassifyInstance(const InstanceWindow& w, const PeerView& peers, const BottleneckOptions& o,
                      RuleVerdicts* out) {
  for (RuleVerdict& v : *out) v = RuleVerdict{};
  const uint64_t requests = Requests(w);
  const bool enough_requests = requests >= static_cast<uint64_t>(o.min_requests);
  const double seconds = std::max(w.seconds(), 1e-3);

  // MEMORY_PRESSURE: a full KV cache that preempts.
  {
    const MetricWindow& kv = w.Get(WindowMetric::kKvUsage);
    if (kv.present()) {
      const MetricWindow& pre = w.Get(WindowMetric::kPreemptions);
      const double rate = pre.present() ? pre.sum / seconds : 0;
      RuleVerdict v;
      v.severity = o.preemption_rate.SeverityOf(rate);
      if (kv.mean >= o.kv_enter && v.severity != BottleneckSeverity::kNone) {
        v.judgement = Judgement::kActive;
      } else {
        v.severity = BottleneckSeverity::kNone;
        // Hysteresis on the kv level: between kv_exit and kv_enter (where a cache hovering at
        // the level spends its quiet windows) the verdict holds; a window without preemptions
        // clears only with quiet_clears.
        const bool quiet = o.kv_quiet_clears && o.preemption_rate.Clears(rate);
        v.judgement = kv.mean <= o.kv_exit || quiet ? Judgement::kClear : Judgement::kHold;
      }
      v.metric = "kv_cache_usage";
      v.stat = "mean";
      v.value = kv.mean;
      v.threshold = o.kv_enter;
      v.aux = rate;
      (*out)[Index(BottleneckType::kMemoryPressure)] = v;
    }
  }

  // HIGH_LATENCY: absolute SLOs on p95, and peers on ttft p50 / tpot p50.
  {
    RuleVerdict& result = (*out)[Index(BottleneckType::kHighLatency)];
    auto absolute = [&](WindowMetric m, double slo) {
      const MetricWindow& mw = w.Get(m);
      if (slo <= 0 || !enough_requests || mw.count < static_cast<uint64_t>(o.min_requests)) return;
      RuleVerdict v = Judge(o.latency, mw.p95 / slo);
      v.metric = WindowMetricName(m);
      v.stat = "p95";
      v.value = mw.p95;
      v.threshold = slo * o.latency.LevelOf(v.severity);
      Consider(&result, v);
    };
    absolute(WindowMetric::kTtft, o.ttft_p95_slo_ms);
    absolute(WindowMetric::kTpot, o.tpot_p95_slo_ms);
    absolute(WindowMetric::kE2e, o.e2e_p95_slo_ms);
    auto peer = [&](WindowMetric m, std::string_view stat, double value, const PeerValue& pv) {
      if (!std::isfinite(value) || pv.peers < o.min_peers || !(pv.median > 0)) return;
      RuleVerdict v = Judge(o.peer, value / pv.median);
      if (v.judgement == Judgement::kActive && value - pv.median < o.peer_min_delta_ms) {
        v.judgement = Judgement::kHold;
        v.severity = BottleneckSeverity::kNone;
      }
      v.metric = WindowMetricName(m);
      v.stat = stat;
      v.value = value;
      v.threshold = pv.median * o.peer.LevelOf(v.severity);
      v.basis = BottleneckBasis::kPeer;
      v.peer_median = pv.median;
      Consider(&result, v);
    };
    // Peers judge only what the SLOs do not flag: an SLO breach is the stronger statement.
    if (result.judgement != Judgement::kActive) {
      const PeerSample self = PeerSampleOf(w, o);
      peer(WindowMetric::kTtft, "p50", self.ttft_p50, peers.ttft_p50);
      peer(WindowMetric::kTpot, "p50", self.tpot_p50, peers.tpot_p50);
    }
  }

  // LOW_THROUGHPUT: decode tokens/s per running request, absolute and against peers.
  {
    const double rate = DecodeRate(w, o);
    if (std::isfinite(rate)) {
      RuleVerdict& result = (*out)[Index(BottleneckType::kLowThroughput)];
      RuleVerdict v = Judge(o.throughput, rate);
      v.metric = "generation_tokens_per_s";
      v.stat = "per_running_request";
      v.threshold = o.throughput.LevelOf(v.severity);
      v.aux = w.Get(WindowMetric::kRunning).mean;
      Consider(&result, v);
      const PeerValue& pv = peers.decode_rate;
      const MetricWindow& running = w.Get(WindowMetric::kRunning);
      const bool larger_batch = peers.running.peers >= o.min_peers && peers.running.median > 0 &&
                                running.mean > o.peer_max_running_ratio * peers.running.median;
      if (result.judgement != Judgement::kActive && larger_batch && pv.peers >= o.min_peers) {
        // A much larger batch than the peers': its per-request rate says nothing about the GPU.
        result.judgement = Judgement::kHold;
      } else if (result.judgement != Judgement::kActive && pv.peers >= o.min_peers &&
                 pv.median > 0) {
        RuleVerdict p = Judge(o.peer, rate > 0 ? pv.median / rate : INFINITY);
        p.metric = v.metric;
        p.stat = v.stat;
        p.value = rate;
        p.threshold = pv.median / o.peer.LevelOf(p.severity);
        p.basis = BottleneckBasis::kPeer;
        p.peer_median = pv.median;
        p.aux = v.aux;
        Consider(&result, p);
      }
    }
  }

  // QUEUE_BUILDUP: waiting relative to running, or a queue that grows.
  {
    const MetricWindow& waiting = w.Get(WindowMetric::kWaiting);
    if (waiting.present()) {
      const MetricWindow& running = w.Get(WindowMetric::kRunning);
      const double denom = std::max(running.present() ? running.mean : 0.0, 1.0);
      const double ratio = waiting.mean / denom;
      RuleVerdict v = Judge(o.queue, ratio);
      if (waiting.mean < o.min_waiting && v.judgement == Judgement::kActive) {
        v.judgement = Judgement::kHold;
        v.severity = BottleneckSeverity::kNone;
      }
      if (waiting.mean < o.min_waiting / 2) v.judgement = Judgement::kClear;
      const double growth = (waiting.last_mean - waiting.first_mean) / denom;
      if (v.judgement != Judgement::kActive && growth >= o.queue_growth &&
          waiting.last_mean >= o.min_waiting) {
        v.judgement = Judgement::kActive;
        v.severity = BottleneckSeverity::kLow;
      }
      v.metric = "num_requests_waiting";
      v.stat = "per_running_request";
      v.threshold = o.queue.LevelOf(v.severity);
      const MetricWindow& slots = w.Get(WindowMetric::kMaxNumSeqs);
      v.aux = slots.present() ? slots.last : NAN;
      (*out)[Index(BottleneckType::kQueueBuildup)] = v;
    }
  }

  // CACHE_INEFFICIENCY: hit rate far below what the peers (or the configuration) expect.
  {
    const double hit = HitRate(w);
    if (enough_requests && std::isfinite(hit)) {
      double expected = o.expected_hit_rate;
      BottleneckBasis basis = BottleneckBasis::kAbsolute;
      const PeerValue& pv = peers.hit_rate;
      if (pv.peers >= o.min_peers && pv.median > expected) {
        expected = pv.median;
        basis = BottleneckBasis::kPeer;
      }
      RuleVerdict v;
      if (expected < o.min_expected_hit_rate) {
        v.judgement = Judgement::kClear;
        v.value = hit;
      } else {
        v = Judge(o.cache, hit / expected);
        v.value = hit;
        if (v.judgement == Judgement::kActive &&
            o.cache.SeverityOf(HitRateUpperBound(hit, requests, o.confidence_z) / expected) ==
                BottleneckSeverity::kNone) {
          v.judgement = Judgement::kHold;  // below the level, but not beyond its noise
          v.severity = BottleneckSeverity::kNone;
        }
      }
      v.metric = "prefix_cache_hit_rate";
      v.stat = "mean";
      v.threshold = expected * o.cache.LevelOf(v.severity);
      v.basis = basis;
      v.peer_median = basis == BottleneckBasis::kPeer ? pv.median : NAN;
      v.aux = expected;
      (*out)[Index(BottleneckType::kCacheInefficiency)] = v;
    }
  }

  // ERROR_SPIKE.
  {
    const MetricWindow& e2e = w.Get(WindowMetric::kE2e);
    const MetricWindow& src = e2e.events > 0 ? e2e : w.Get(WindowMetric::kTtft);
    if (src.events >= static_cast<uint64_t>(o.min_error_requests)) {
      RuleVerdict v = Judge(o.errors, static_cast<double>(src.errors) / src.events);
      v.metric = "error_ratio";
      v.stat = "ratio";
      v.threshold = o.errors.LevelOf(v.severity);
      v.aux = static_cast<double>(src.events);
      (*out)[Index(BottleneckType::kErrorSpike)] = v;
    }
  }

  // RESOURCE_SATURATION: the configured gauges; the most severe wins.
  {
    RuleVerdict& result = (*out)[Index(BottleneckType::kResourceSaturation)];
    const size_t n = std::min(o.saturation.size(), kMaxSaturationGauges);
    for (size_t i = 0; i < n; ++i) {
      const MetricWindow& g = w.saturation[i];
      if (!g.present()) continue;
      const SaturationGauge& spec = o.saturation[i];
      RuleVerdict v = Judge(spec.levels, spec.use_max ? g.max : g.mean);
      v.metric = spec.metric;
      v.stat = spec.use_max ? "max" : "mean";
      v.threshold = spec.levels.LevelOf(v.severity);
      Consider(&result, v);
    }
  }
}

std::string DescribeVerdict(BottleneckType type, const RuleVerdict& v, int64_t window_ms) {
  const std::string over = " over " + Seconds(window_ms);
  const bool active = v.judgement == Judgement::kActive;
  switch (type) {
    case BottleneckType::kMemoryPressure:
      return "KV cache " + Format(v.value * 100) + "% full (mean" + over +
             ", enter >= " + Format(v.threshold * 100) + "%) with " + Format(v.aux) +
             " preemptions/s";
    case BottleneckType::kHighLatency:
      if (v.basis == BottleneckBasis::kPeer) {
        return std::string(v.metric) + " " + std::string(v.stat) + " = " + Format(v.value) + " ms" +
               over + ", " + Format(v.value / v.peer_median) + "x the peers' median " +
               Format(v.peer_median) + " ms";
      }
      return std::string(v.metric) + " " + std::string(v.stat) + " = " + Format(v.value) + " ms" +
             over + (active ? ", above " : ", limit ") + Format(v.threshold) + " ms";
    case BottleneckType::kLowThroughput:
      if (v.basis == BottleneckBasis::kPeer) {
        return "decode " + Format(v.value) + " tokens/s per running request" + over + " (" +
               Format(v.aux) + " running), peers' median " + Format(v.peer_median);
      }
      return "decode " + Format(v.value) + " tokens/s per running request" + over + " (" +
             Format(v.aux) + " running), " + (active ? "below " : "limit ") + Format(v.threshold);
    case BottleneckType::kQueueBuildup:
      return Format(v.value) + " waiting per running request" + over +
             (std::isfinite(v.aux) ? " (slot limit " + Format(v.aux) + ")" : std::string()) +
             (active ? ", at or above " : ", limit ") + Format(v.threshold);
    case BottleneckType::kCacheInefficiency:
      return "prefix-cache hit rate " + Format(v.value) + over + " where " +
             (v.basis == BottleneckBasis::kPeer ? "peers reach " : "the configuration expects ") +
             Format(v.aux);
    case BottleneckType::kErrorSpike:
      return "error ratio " + Format(v.value * 100) + "% of " + Format(v.aux) + " requests" + over +
             (active ? ", at or above " : ", limit ") + Format(v.threshold * 100) + "%";
    case BottleneckType::kResourceSaturation:
      return std::string(v.metric) + " " + std::string(v.stat) + " = " + Format(v.value) + over +
             (active ? ", at or above " : ", limit ") + Format(v.threshold);
  }
  return "";
}

bool Causes(BottleneckType cause, BottleneckType effect) {
  using T = BottleneckType;
  switch (cause) {
    case T::kMemoryPressure:
      return effect == T::kLowThroughput || effect == T::kQueueBuildup || effect == T::kHighLatency;
    case T::kResourceSaturation:
      return effect == T::kLowThroughput || effect == T::kHighLatency;
    case T::kCacheInefficiency:
      return effect == T::kQueueBuildup || effect == T::kHighLatency;
    case T::kLowThroughput:
      return effect == T::kQueueBuildup || effect == T::kHighLatency;
    case T::kQueueBuildup:
      // Waiting time is ttft; requests that wait past their deadline time out.
      return effect == T::kHighLatency || effect == T::kErrorSpike;
    case T::kErrorSpike:
    case T::kHighLatency:
      return false;
  }
  return false;
}

BottleneckType CausalOrder(uint32_t active_mask,
                           const std::array<BottleneckSeverity, kNumBottleneckTypes>& severity,
                           std::array<CausalPath, kNumBottleneckTypes>* paths) {
  // Enum order is a topological order of the graph (every edge goes to a later type).
  auto better = [&](BottleneckType a, BottleneckType b) {
    const BottleneckSeverity sa = severity[Index(a)], sb = severity[Index(b)];
    return sa != sb ? sa > sb : a < b;
  };
  bool have_primary = false;
  BottleneckType primary = BottleneckType::kHighLatency;
  for (size_t t = 0; t < kNumBottleneckTypes; ++t) {
    if (((active_mask >> t) & 1) == 0) continue;
    const auto type = static_cast<BottleneckType>(t);
    CausalPath& path = (*paths)[t];
    int best = -1;
    for (size_t u = 0; u < t; ++u) {
      if (((active_mask >> u) & 1) == 0 || !Causes(static_cast<BottleneckType>(u), type)) continue;
      if (best < 0) {
        best = static_cast<int>(u);
        continue;
      }
      const CausalPath& pu = (*paths)[u];
      const CausalPath& pb = (*paths)[static_cast<size_t>(best)];
      if (better(pu.root, pb.root) || (pu.root == pb.root && pu.length > pb.length)) {
        best = static_cast<int>(u);
      }
    }
    if (best < 0) {
      path.root = type;
      path.chain[0] = type;
      path.length = 1;
      if (!have_primary || better(type, primary)) {
        primary = type;
        have_primary = true;
      }
    } else {
      path = (*paths)[static_cast<size_t>(best)];
      path.chain[path.length++] = type;
    }
  }
  return primary;
}

}  // namespace inferscope
