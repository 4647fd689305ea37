// canary_eval: the canary verdict's error rates over seeded simulated changes with real trace
// arrivals (issue 11). Each change is one simulation of four Llama-3.1-8B vLLM instances
// (sim/, virtual time) replaying a slice of the Azure LLM inference trace (conv or code, a
// different offset per change); vllm-0 gets the change:
//
//   helpful  a fault on vllm-0 that ends at the change time (the change fixed it): slow_gpu,
//            kv_cache_small or prefix_cache_off before, nothing after;
//   harmful  the same faults starting at the change time (the change caused it);
//   neutral  nothing changes.
//
// The fleet's request outcomes and gauges go through the real window_aggregate operator (10 s
// panes) and its panes through the real workflow_canary operator, with a WorkflowRegistry holding
// one workflow (target ttft_ms p50 decrease, guards e2e_ms p95 and error_ratio: the API's
// defaults; baseline and canary 10 min), created at the start and applied at the change time —
// the engine's code path in virtual time. In the same run the bench keeps the raw samples and
// decides each change at the same looks with the same method on the raw values
// (JudgeCanaryRaw: the rank test of the raw values, exact quantiles), so the table shows what
// deciding from sketches costs.
//
//   canary_eval [--changes N] [--seed N] [--traces DIR] [--alpha A] [--min-effect E]
//               [--verbose] [--check]
//
// Defaults: 300 changes (100 per class), seed 1, the traces in
// /work/shared/traces/azure-llm-inference-2023. --check exits 1 when a target is missed
// (false-rollback or false-completion rate above 5 % for the engine's verdict).

#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "operators/window_aggregate.h"
#include "operators/workflow_canary.h"
#include "pipeline/clock.h"
#include "pipeline/config.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "sim/events.h"
#include "sim/faults.h"
#include "sim/fleet.h"
#include "sim/trace.h"
#include "values/rank_test.h"
#include "workflows/canary.h"
#include "workflows/workflow.h"

namespace {

using namespace inferscope;
using nlohmann::json;

constexpr int64_t kT0 = 1'700'000'000'000;  // event time of simulated time 0 (aligned to 10 s)
constexpr double kWarmupS = 120;            // simulated, not fed to the operators
constexpr double kBaselineS = 600;
constexpr double kCanaryS = 600;
constexpr double kAppliedS = kWarmupS + kBaselineS;  // the change time (simulated)
// Run past the canary's end: the last panes close, and the code trace has gaps of up to 217 s
// without an arrival (the verdict waits for the instance's next pane; the operator's
// no_data_timeout, 5 min, would fail it).
constexpr double kMarginS = 360;
constexpr char kModel[] = "llama-3.1-8b-instruct";
constexpr int kInstances = 4;

enum class Class { kHelpful = 0, kHarmful, kNeutral };
constexpr const char* kClassNames[] = {"helpful", "harmful", "neutral"};

struct Change {
  int index = 0;
  Class cls = Class::kNeutral;
  sim::FaultKind kind = sim::FaultKind::kSlowGpu;  // helpful / harmful only
  double factor = 1;
  int trace = 0;  // 0 conv, 1 code
  double offset_s = 0;
  uint64_t seed = 0;
};

// A final decision (or none) and when it was taken.
struct Decision {
  WorkflowState state = WorkflowState::kApplied;  // kApplied: none by the end of the run
  std::string verdict;
  double seconds = NAN;  // event time from the change to the end of the deciding look's pane
};

std::string Name(const Decision& d) {
  if (d.state == WorkflowState::kApplied) return "none";
  std::string s(WorkflowStateName(d.state));
  if (!d.verdict.empty()) s += "/" + d.verdict;
  return s;
}

// Raw samples of one instance, in completion order (event time ms).
struct RawSeries {
  std::vector<std::pair<int64_t, double>> ttft, e2e;
  std::vector<std::pair<int64_t, bool>> requests;  // error?
};

ConfigNode Parse(const std::string& yaml) {
  return ConfigNode("canary_eval", YAML::Load(yaml), "options");
}

// One change: the fleet, the two operators, the registry and the raw reference.
class Run final : public sim::OutcomeSink {
 public:
  Run(const Change& change, const CanaryOptions& canary)
      : change_(change), canary_(canary), registry_(nullptr, &clock_) {
    ctx_.name = "canary";
    ctx_.interner = &interner_;
    ctx_.metrics = &metrics_;
    ctx_.clock = &clock_;
    ctx_.services.Provide(&registry_);
    publisher_ = interner_.Intern("sim");
    for (size_t g = 0; g < static_cast<size_t>(sim::Gauge::kCount); ++g) {
      gauge_ids_.push_back(interner_.Intern(sim::GaugeName(static_cast<sim::Gauge>(g))));
    }
    model_ = interner_.Intern(kModel);
    for (int i = 0; i < kInstances; ++i) {
      names_.push_back(interner_.Intern("vllm-" + std::to_string(i)));
    }
    target_metric_ = interner_.Intern("ttft_ms");
    raw_.resize(kInstances);
  }

  Status Open() {
    Result<std::unique_ptr<WindowAggregateOperator>> window =
        WindowAggregateOperator::Create(Parse("{idle_timeout: 0s}"));
    if (!window.ok()) return window.status();
    window_ = std::move(window).value();
    INFERSCOPE_RETURN_IF_ERROR(window_->Open(ctx_));
    char yaml[160];
    std::snprintf(yaml, sizeof yaml, "{alpha: %.17g, min_effect: %.17g, min_samples: %llu}",
                  canary_.alpha, canary_.min_effect,
                  static_cast<unsigned long long>(canary_.min_samples));
    Result<std::unique_ptr<WorkflowCanaryOperator>> op =
        WorkflowCanaryOperator::Create(Parse(yaml));
    if (!op.ok()) return op.status();
    canary_op_ = std::move(op).value();
    INFERSCOPE_RETURN_IF_ERROR(canary_op_->Open(ctx_));
    // The API's defaults: target ttft_ms p50 decrease; guards e2e_ms p95, error_ratio.
    Result<Workflow> w = WorkflowFromRequest({{"instance", "vllm-0"},
                                              {"model", kModel},
                                              {"change", {{"sim", "canary_eval"}}},
                                              {"baseline", "10m"},
                                              {"canary", "10m"},
                                              {"auto_approve", true}});
    if (!w.ok()) return w.status();
    Result<Workflow> created = registry_.Create(*w);
    if (!created.ok()) return created.status();
    id_ = created->id;
    metrics_list_ = {created->target};
    for (const WorkflowMetric& g : created->guards) metrics_list_.push_back(g);
    return Status::Ok();
  }

  void OnRequest(const sim::RequestOutcome& o) override {
    if (o.time_ms < kWarmupS * 1000) return;
    const Event e = sim::RequestEvent(o, kT0, {names_[o.instance], model_, publisher_});
    batch_.events.push_back(e);
    RawSeries& r = raw_[o.instance];
    if (o.ttft_ms >= 0) r.ttft.emplace_back(e.time_ms, o.ttft_ms);
    r.e2e.emplace_back(e.time_ms, o.e2e_ms);
    r.requests.emplace_back(e.time_ms, !o.ok());
  }

  void OnGauge(const sim::GaugeSample& g) override {
    if (g.time_ms < kWarmupS * 1000) return;
    batch_.events.push_back(sim::GaugeEvent(g, kT0, {names_[g.instance], model_, publisher_},
                                            gauge_ids_[static_cast<size_t>(g.gauge)]));
  }

  // Applies the change (the API's `applied` call) at event time kT0 + kAppliedS.
  Status Apply() {
    Result<Workflow> w =
        registry_.MarkApplied(id_, kT0 + static_cast<int64_t>(kAppliedS * 1000), "bench");
    return w.ok() ? Status::Ok() : w.status();
  }

  // The events collected so far through window_aggregate, its panes through workflow_canary, and
  // the raw look at the same moments.
  Status Flush() {
    batch_.publisher = publisher_;
    OutputBatch panes;
    INFERSCOPE_RETURN_IF_ERROR(window_->Process(batch_, panes));
    batch_.Clear();
    const int64_t applied = kT0 + static_cast<int64_t>(kAppliedS * 1000);
    int64_t target_end = INT64_MIN;
    for (const WindowSummary& s : panes.Get<kind::PaneSummary>()) {
      fired_end_ = std::max(fired_end_, s.end_ms);
      if (s.series.instance == names_[0] && s.series.metric == target_metric_ &&
          s.start_ms >= applied && !s.update) {
        target_end = std::max(target_end, s.end_ms);
      }
    }
    OutputBatch out;
    INFERSCOPE_RETURN_IF_ERROR(canary_op_->ProcessResults(panes, out));
    if (engine_.state == WorkflowState::kApplied) {
      const std::optional<Workflow> w = registry_.Get(id_);
      if (w && IsTerminal(w->state)) {
        engine_.state = w->state;
        engine_.verdict = w->verdict;
        if (w->evidence.contains("after_until") && w->evidence["after_until"].is_number()) {
          engine_.seconds =
              static_cast<double>(w->evidence["after_until"].get<int64_t>() - applied) / 1000.0;
        }
      }
    }
    if (target_end != INT64_MIN && target_end > raw_looked_end_ &&
        raw_decision_.state == WorkflowState::kApplied) {
      raw_looked_end_ = target_end;
      INFERSCOPE_RETURN_IF_ERROR(RawLook(applied, target_end));
    }
    return Status::Ok();
  }

  bool done() const {
    return engine_.state != WorkflowState::kApplied &&
           raw_decision_.state != WorkflowState::kApplied;
  }
  const Decision& engine() const { return engine_; }
  const Decision& raw() const { return raw_decision_; }

  // The true effect on vllm-0's ttft p50 over the whole periods (raw): after/before, divided by
  // the peers' after/before.
  double TrueTtftRatio() const {
    const int64_t applied = kT0 + static_cast<int64_t>(kAppliedS * 1000);
    auto median = [&](bool inst, int64_t from, int64_t to) -> double {
      std::vector<double> v;
      for (int i = 0; i < kInstances; ++i) {
        if ((i == 0) != inst) continue;
        for (const auto& [t, x] : raw_[i].ttft) {
          if (t >= from && t < to) v.push_back(x);
        }
      }
      if (v.empty()) return NAN;
      std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
      return v[v.size() / 2];
    };
    const int64_t b = applied - static_cast<int64_t>(kBaselineS * 1000);
    const int64_t e = applied + static_cast<int64_t>(kCanaryS * 1000);
    return (median(true, applied, e) / median(true, b, applied)) /
           (median(false, applied, e) / median(false, b, applied));
  }

 private:
  // The operator's dispersion estimate on the raw values: per baseline pane, the instance's
  // values against the peers' of the same pane (both with at least 2 values).
  Status BaselineDispersion(bool ttft, int64_t applied, double* out) {
    constexpr int64_t kPaneMs = 10'000;
    const int64_t from = applied - static_cast<int64_t>(kBaselineS * 1000);
    std::vector<double> z;
    std::vector<double> inst, peers;
    for (int64_t p = from; p < applied; p += kPaneMs) {
      inst.clear();
      peers.clear();
      for (int i = 0; i < kInstances; ++i) {
        for (const auto& [t, x] : ttft ? raw_[i].ttft : raw_[i].e2e) {
          if (t >= p && t < p + kPaneMs) (i == 0 ? inst : peers).push_back(x);
        }
      }
      if (inst.size() < 2 || peers.size() < 2) continue;
      std::sort(inst.begin(), inst.end());
      std::sort(peers.begin(), peers.end());
      Result<RankComparison> r = CompareSortedSamples(inst, peers);
      if (!r.ok()) return r.status();
      z.push_back(r->z);
    }
    *out = DispersionOf(z);
    return Status::Ok();
  }

  // One look at the raw samples: what Look in operators/workflow_canary.cc decides, with
  // JudgeCanaryRaw instead of JudgeCanary (error_ratio: the same counts, JudgeProportion).
  Status RawLook(int64_t applied, int64_t target_end) {
    const int64_t before_from = applied - static_cast<int64_t>(kBaselineS * 1000);
    const double fraction = std::min(
        1.0, static_cast<double>(target_end - applied) / static_cast<double>(kCanaryS * 1000));
    bool any_regressed = false;
    CanaryVerdict target_verdict = CanaryVerdict::kContinue;
    uint64_t target_before = 0, target_after = 0;
    for (size_t m = 0; m < metrics_list_.size(); ++m) {
      const WorkflowMetric& metric = metrics_list_[m];
      CanaryOptions o = canary_;
      o.quantile = metric.quantile;
      Result<CanaryEvidence> e = Status::Internal("unset");
      if (metric.metric == kErrorRatioMetric) {
        ProportionCounts c[2][2] = {};  // [peer][after]
        for (int i = 0; i < kInstances; ++i) {
          for (const auto& [t, error] : raw_[i].requests) {
            if (t < before_from || t >= fired_end_) continue;
            ProportionCounts& p = c[i != 0][t >= applied];
            ++p.events;
            p.errors += error ? 1 : 0;
          }
        }
        ProportionSamples ps;
        ps.before = c[0][0];
        ps.after = c[0][1];
        if (c[1][0].events >= o.min_samples) {
          ps.peers_before = &c[1][0];
          ps.peers_after = &c[1][1];
        }
        e = JudgeProportion(ps, fraction, metric.lower_is_better, o);
      } else {
        const bool ttft = metric.metric == "ttft_ms";
        std::vector<double>* v = scratch_;  // [peer * 2 + after]
        for (int k = 0; k < 4; ++k) v[k].clear();
        for (int i = 0; i < kInstances; ++i) {
          for (const auto& [t, x] : ttft ? raw_[i].ttft : raw_[i].e2e) {
            if (t < before_from || t >= fired_end_) continue;
            v[(i != 0) * 2 + (t >= applied)].push_back(x);
          }
        }
        for (int k = 0; k < 4; ++k) std::sort(v[k].begin(), v[k].end());
        if (v[0].empty() || v[1].empty()) {
          CanaryEvidence none;
          none.n_before = v[0].size();
          none.n_after = v[1].size();
          none.verdict = fraction >= 1 ? CanaryVerdict::kNoEffect : CanaryVerdict::kContinue;
          e = none;
        } else {
          RawCanarySamples rs;
          rs.before = v[0];
          rs.after = v[1];
          if (v[2].size() >= o.min_samples && !v[3].empty()) {
            rs.with_peers = true;
            rs.peers_before = v[2];
            rs.peers_after = v[3];
          }
          if (!std::isfinite(dispersion_[m])) {
            INFERSCOPE_RETURN_IF_ERROR(BaselineDispersion(ttft, applied, &dispersion_[m]));
          }
          rs.dispersion = dispersion_[m];
          e = JudgeCanaryRaw(rs, fraction, metric.lower_is_better, o);
        }
      }
      if (!e.ok()) return e.status();
      if (e->verdict == CanaryVerdict::kRegressed) any_regressed = true;
      if (m == 0) {
        target_verdict = e->verdict;
        target_before = e->n_before;
        target_after = e->n_after;
      }
    }
    const double seconds = static_cast<double>(target_end - applied) / 1000.0;
    auto decide = [&](WorkflowState s, const char* verdict) {
      raw_decision_ = {s, verdict, seconds};
    };
    if (any_regressed) {
      decide(WorkflowState::kRolledBack, "regressed");
    } else if (target_verdict == CanaryVerdict::kImproved) {
      decide(WorkflowState::kCompleted, "improved");
    } else if (fraction >= 1) {
      if (target_before < canary_.min_samples || target_after < canary_.min_samples) {
        decide(WorkflowState::kFailed, "");
      } else {
        decide(WorkflowState::kCompleted, "no_effect");
      }
    }
    return Status::Ok();
  }

  Change change_;
  CanaryOptions canary_;
  ManualClock clock_{kT0};
  WorkflowRegistry registry_;
  Interner interner_;
  MetricsRegistry metrics_;
  StageContext ctx_;
  std::unique_ptr<WindowAggregateOperator> window_;
  std::unique_ptr<WorkflowCanaryOperator> canary_op_;
  StringId publisher_ = 0, model_ = 0, target_metric_ = 0;
  std::vector<StringId> gauge_ids_, names_;
  EventBatch batch_;
  std::string id_;
  std::vector<WorkflowMetric> metrics_list_;
  std::vector<RawSeries> raw_;
  std::vector<double> scratch_[4];
  double dispersion_[3] = {NAN, NAN, NAN};  // per metric, once the first look needs it
  int64_t fired_end_ = INT64_MIN;
  int64_t raw_looked_end_ = INT64_MIN;
  Decision engine_;
  Decision raw_decision_;
};

std::vector<sim::InstanceOptions> Instances(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> spread(0.95, 1.05);
  std::vector<sim::InstanceOptions> v;
  for (int i = 0; i < kInstances; ++i) {
    sim::InstanceOptions o;
    o.name = "vllm-" + std::to_string(i);
    o.model = kModel;
    o.engine = "vllm";
    o.seed = seed * 16 + static_cast<uint64_t>(i);
    const double s = spread(rng);
    o.params.step_base_ms *= s;
    o.params.prefill_per_token_ms *= s;
    v.push_back(std::move(o));
  }
  return v;
}

struct Result1 {
  Change change;
  Decision engine, raw;
  double true_ratio = NAN;
};

Result1 RunChange(const Change& c, const std::vector<sim::TraceRecord>& trace,
                  const CanaryOptions& canary) {
  Result1 r;
  r.change = c;
  // The trace slice from the offset (replayed from its first record).
  const int64_t from_us = trace.front().time_us + static_cast<int64_t>(c.offset_s * 1e6);
  const int64_t to_us = from_us + static_cast<int64_t>((kAppliedS + kCanaryS + kMarginS) * 1e6) + 1;
  std::vector<sim::TraceRecord> slice;
  for (const sim::TraceRecord& rec : trace) {
    if (rec.time_us >= from_us && rec.time_us < to_us) slice.push_back(rec);
  }
  std::vector<sim::Fault> faults;
  if (c.cls != Class::kNeutral) {
    sim::Fault f;
    f.kind = c.kind;
    f.instance = "vllm-0";
    f.factor = c.factor;
    const double end_ms = (kAppliedS + kCanaryS + kMarginS) * 1000 + 1;
    f.start_ms = c.cls == Class::kHelpful ? 0 : kAppliedS * 1000;
    f.end_ms = c.cls == Class::kHelpful ? kAppliedS * 1000 : end_ms;
    faults.push_back(f);
  }
  Run run(c, canary);
  if (Status st = run.Open(); !st.ok()) {
    std::fprintf(stderr, "change %d: %s\n", c.index, st.ToString().c_str());
    std::exit(1);
  }
  sim::FleetOptions fo;
  fo.duration_ms = (kAppliedS + kCanaryS + kMarginS) * 1000;
  fo.seed = c.seed;
  auto fleet = sim::Fleet::Create(fo, Instances(c.seed), std::move(faults),
                                  std::make_unique<sim::TraceArrivals>(std::move(slice)),
                                  std::make_unique<sim::RoundRobinRouter>(), &run);
  if (!fleet.ok()) {
    std::fprintf(stderr, "change %d: %s\n", c.index, fleet.status().ToString().c_str());
    std::exit(1);
  }
  bool applied = false;
  for (double t = 1000; (*fleet)->RunUntil(t) && !run.done(); t += 1000) {
    if (!applied && t >= kAppliedS * 1000) {
      if (Status st = run.Apply(); !st.ok()) {
        std::fprintf(stderr, "change %d: %s\n", c.index, st.ToString().c_str());
        std::exit(1);
      }
      applied = true;
    }
    if (Status st = run.Flush(); !st.ok()) {
      std::fprintf(stderr, "change %d: %s\n", c.index, st.ToString().c_str());
      std::exit(1);
    }
  }
  r.engine = run.engine();
  r.raw = run.raw();
  r.true_ratio = run.TrueTtftRatio();
  return r;
}

double Quantile(std::vector<double> v, double q) {
  v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return !std::isfinite(x); }), v.end());
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5)];
}

// Wrong for the class: helpful/neutral → ROLLED_BACK is a false rollback; harmful → COMPLETED,
// neutral → COMPLETED/improved is a false completion (neutral → COMPLETED/no_effect is right).
bool FalseRollback(Class c, const Decision& d) {
  return c != Class::kHarmful && d.state == WorkflowState::kRolledBack;
}
bool FalseCompletion(Class c, const Decision& d) {
  if (c == Class::kHarmful) return d.state == WorkflowState::kCompleted;
  if (c == Class::kNeutral) {
    return d.state == WorkflowState::kCompleted && d.verdict == "improved";
  }
  return false;
}

std::string KindLabel(const Change& c) {
  if (c.cls == Class::kNeutral) return "-";
  return std::string(sim::FaultKindName(c.kind));
}

}  // namespace

int main(int argc, char** argv) {
  int changes = 300;
  uint64_t seed = 1;
  bool verbose = false, check = false;
  std::string traces = "/work/shared/traces/azure-llm-inference-2023";
  CanaryOptions canary;  // the operator's defaults
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--changes") {
      changes = std::atoi(next());
    } else if (arg == "--seed") {
      seed = std::strtoull(next(), nullptr, 10);
    } else if (arg == "--traces") {
      traces = next();
    } else if (arg == "--alpha") {
      canary.alpha = std::atof(next());
    } else if (arg == "--min-effect") {
      canary.min_effect = std::atof(next());
    } else if (arg == "--verbose") {
      verbose = true;
    } else if (arg == "--check") {
      check = true;
    } else {
      std::fprintf(stderr,
                   "usage: canary_eval [--changes N] [--seed N] [--traces DIR] [--alpha A] "
                   "[--min-effect E] [--verbose] [--check]\n");
      return 2;
    }
  }
  if (Status st = canary.Validate(); !st.ok() || changes < 3) {
    std::fprintf(stderr, "bad options: %s\n", st.ToString().c_str());
    return 2;
  }
  spdlog::set_level(spdlog::level::warn);  // the operator logs every verdict at info
  std::vector<std::vector<sim::TraceRecord>> trace_records;
  const char* trace_names[] = {"conv", "code"};
  for (const char* name : trace_names) {
    auto records = sim::ReadAzureTrace(traces + "/" + name + ".csv");
    if (!records.ok()) {
      std::fprintf(stderr, "%s\n", records.status().ToString().c_str());
      return 1;
    }
    trace_records.push_back(std::move(records).value());
  }

  // The changes: classes in turn; faults in turn within a class; traces alternate; offsets and
  // factors drawn from the seed.
  std::mt19937_64 rng(seed);
  std::vector<Change> plan;
  const sim::FaultKind kinds[] = {sim::FaultKind::kSlowGpu, sim::FaultKind::kKvCacheSmall,
                                  sim::FaultKind::kPrefixCacheOff};
  for (int i = 0; i < changes; ++i) {
    Change c;
    c.index = i;
    c.cls = static_cast<Class>(i % 3);
    c.kind = kinds[(i / 3) % 3];
    c.trace = (i / 9) % 2;
    const auto& tr = trace_records[c.trace];
    const double span_s = static_cast<double>(tr.back().time_us - tr.front().time_us) / 1e6;
    const double need_s = kAppliedS + kCanaryS + kMarginS;
    c.offset_s = std::uniform_real_distribution<double>(0, std::max(0.0, span_s - need_s))(rng);
    c.seed = seed * 1'000'003 + static_cast<uint64_t>(i);
    switch (c.kind) {
      case sim::FaultKind::kSlowGpu:
        c.factor = std::uniform_real_distribution<double>(1.5, 3.0)(rng);
        break;
      case sim::FaultKind::kKvCacheSmall:
        c.factor = std::uniform_real_distribution<double>(0.01, 0.02)(rng);
        break;
      default:
        c.factor = 1;
        (void)rng();  // the same draws for every kind
        break;
    }
    plan.push_back(c);
  }

  const auto t0 = std::chrono::steady_clock::now();
  std::vector<Result1> results;
  for (const Change& c : plan) {
    results.push_back(RunChange(c, trace_records[c.trace], canary));
    const Result1& r = results.back();
    if (verbose) {
      std::printf(
          "%4d %-8s %-16s x%-5.3f %s@%5.0fs  true ttft ratio %.3f  engine %-20s %5.0fs  "
          "raw %-20s %5.0fs\n",
          c.index, kClassNames[static_cast<int>(c.cls)], KindLabel(c).c_str(), c.factor,
          trace_names[c.trace], c.offset_s, r.true_ratio, Name(r.engine).c_str(), r.engine.seconds,
          Name(r.raw).c_str(), r.raw.seconds);
      std::fflush(stdout);
    }
  }
  const double wall_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  std::printf(
      "\n## canary_eval: %d changes, seed %llu, alpha %.3g, min_effect %.3g, "
      "min_samples %llu; baseline %.0f s, canary %.0f s, 10 s panes; %.1f s wall\n\n",
      changes, static_cast<unsigned long long>(seed), canary.alpha, canary.min_effect,
      static_cast<unsigned long long>(canary.min_samples), kBaselineS, kCanaryS, wall_s);

  // Per class and method.
  std::printf(
      "| class | method | changes | COMPLETED improved | COMPLETED no_effect | "
      "ROLLED_BACK | FAILED | none | false rollback | false completion | median s to "
      "verdict | p90 s |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  bool missed = false;
  for (int cls = 0; cls < 3; ++cls) {
    for (int method = 0; method < 2; ++method) {
      int n = 0, improved = 0, no_effect = 0, rolled = 0, failed = 0, none = 0, fr = 0, fc = 0;
      std::vector<double> secs;
      for (const Result1& r : results) {
        if (static_cast<int>(r.change.cls) != cls) continue;
        const Decision& d = method == 0 ? r.engine : r.raw;
        ++n;
        improved += d.state == WorkflowState::kCompleted && d.verdict == "improved";
        no_effect += d.state == WorkflowState::kCompleted && d.verdict == "no_effect";
        rolled += d.state == WorkflowState::kRolledBack;
        failed += d.state == WorkflowState::kFailed;
        none += d.state == WorkflowState::kApplied;
        fr += FalseRollback(static_cast<Class>(cls), d);
        fc += FalseCompletion(static_cast<Class>(cls), d);
        secs.push_back(d.seconds);
      }
      if (n == 0) continue;
      const double fr_rate = 100.0 * fr / n, fc_rate = 100.0 * fc / n;
      const bool applies_fr = cls != static_cast<int>(Class::kHarmful);
      const bool applies_fc = cls != static_cast<int>(Class::kHelpful);
      if (method == 0 && ((applies_fr && fr_rate > 5) || (applies_fc && fc_rate > 5))) {
        missed = true;
      }
      char frs[32], fcs[32];
      std::snprintf(frs, sizeof frs, applies_fr ? "%d (%.1f %%)" : "-", fr, fr_rate);
      std::snprintf(fcs, sizeof fcs, applies_fc ? "%d (%.1f %%)" : "-", fc, fc_rate);
      std::printf("| %s | %s | %d | %d | %d | %d | %d | %d | %s | %s | %.0f | %.0f |\n",
                  kClassNames[cls], method == 0 ? "sketch (engine)" : "raw samples", n, improved,
                  no_effect, rolled, failed, none, frs, fcs, Quantile(secs, 0.5),
                  Quantile(secs, 0.9));
    }
  }

  // Per class and fault kind: the true effect and the engine's verdicts.
  std::printf(
      "\n| class | fault | trace | changes | true ttft p50 ratio (median, min..max; peer-"
      "adjusted) | engine: improved / no_effect / rolled back / failed | raw: improved / "
      "no_effect / rolled back / failed | median s (engine) |\n"
      "|---|---|---|---:|---|---|---|---:|\n");
  for (int cls = 0; cls < 3; ++cls) {
    for (int k = 0; k < 3; ++k) {
      if (cls == static_cast<int>(Class::kNeutral) && k > 0) continue;
      for (int tr = 0; tr < 2; ++tr) {
        std::vector<double> ratios, secs;
        int counts[2][4] = {};
        for (const Result1& r : results) {
          if (static_cast<int>(r.change.cls) != cls || r.change.trace != tr) continue;
          if (cls != static_cast<int>(Class::kNeutral) && r.change.kind != kinds[k]) continue;
          ratios.push_back(r.true_ratio);
          secs.push_back(r.engine.seconds);
          for (int m = 0; m < 2; ++m) {
            const Decision& d = m == 0 ? r.engine : r.raw;
            if (d.state == WorkflowState::kCompleted) ++counts[m][d.verdict == "improved" ? 0 : 1];
            if (d.state == WorkflowState::kRolledBack) ++counts[m][2];
            if (d.state == WorkflowState::kFailed) ++counts[m][3];
          }
        }
        if (ratios.empty()) continue;
        std::printf(
            "| %s | %s | %s | %zu | %.2f, %.2f..%.2f | %d / %d / %d / %d | %d / %d / %d / "
            "%d | %.0f |\n",
            kClassNames[cls],
            cls == static_cast<int>(Class::kNeutral)
                ? "-"
                : std::string(sim::FaultKindName(kinds[k])).c_str(),
            trace_names[tr], ratios.size(), Quantile(ratios, 0.5), Quantile(ratios, 0),
            Quantile(ratios, 1), counts[0][0], counts[0][1], counts[0][2], counts[0][3],
            counts[1][0], counts[1][1], counts[1][2], counts[1][3], Quantile(secs, 0.5));
      }
    }
  }

  // Agreement of the two methods.
  int same = 0, same_state = 0;
  std::vector<double> dt;
  for (const Result1& r : results) {
    same += Name(r.engine) == Name(r.raw);
    same_state += r.engine.state == r.raw.state;
    if (Name(r.engine) == Name(r.raw)) dt.push_back(r.engine.seconds - r.raw.seconds);
  }
  std::printf(
      "\nAgreement sketch vs raw: %d of %zu changes the same verdict (%.1f %%), %d the "
      "same final state; where the same, decided at the same look in %zu of %zu "
      "(sketch − raw seconds: median %.0f, min %.0f, max %.0f)\n",
      same, results.size(), 100.0 * same / static_cast<double>(results.size()), same_state,
      static_cast<size_t>(std::count(dt.begin(), dt.end(), 0.0)), dt.size(), Quantile(dt, 0.5),
      Quantile(dt, 0), Quantile(dt, 1));
  for (const Result1& r : results) {
    if (Name(r.engine) == Name(r.raw)) continue;
    std::printf("  differs: change %d (%s %s, %s): sketch %s at %.0f s, raw %s at %.0f s\n",
                r.change.index, kClassNames[static_cast<int>(r.change.cls)],
                KindLabel(r.change).c_str(), trace_names[r.change.trace], Name(r.engine).c_str(),
                r.engine.seconds, Name(r.raw).c_str(), r.raw.seconds);
  }
  if (check && missed) {
    std::printf("\nTARGET MISSED: a false-rollback or false-completion rate above 5 %%\n");
    return 1;
  }
  return 0;
}
