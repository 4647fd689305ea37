#include "bench/routing/harness.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "bench/routing/registry.h"
#include "routing/options.h"

namespace inferscope::bench::routing {
namespace {

// A backend failing at least the health gate's failure_percentage (Envoy's 85 %) of the
// requests it can serve is unhealthy for the unhealthy-send metric (README, "Definitions").
const double kUnhealthyErrorRate =
    ::inferscope::routing::HealthGateOptions{}.failure_percentage / 100;

constexpr std::string_view kModel = "llama-3.1-8b-instruct";

// A backend of the model: `slowness` x the catalogue's step and prefill times.
sim::InstanceOptions Backend(std::string name, double slowness, double input_price,
                             double output_price, std::array<double, sim::kCategories> quality,
                             bool vision, uint64_t seed) {
  sim::InstanceOptions o;
  o.name = std::move(name);
  o.model = std::string(kModel);
  o.params = sim::FindModel(kModel)->params;
  o.params.step_base_ms *= slowness;
  o.params.step_per_seq_ms *= slowness;
  o.params.step_per_kv_token_ms *= slowness;
  o.params.prefill_per_token_ms *= slowness;
  o.params.error_probability = 0.002;
  o.input_price_per_1k = input_price;
  o.output_price_per_1k = output_price;
  o.quality = quality;
  o.vision = vision;
  o.seed = seed;
  return o;
}

// Four providers of one model: faster is dearer; quality differs by category; a and b see
// images.
std::vector<sim::InstanceOptions> StandardBackends() {
  return {
      Backend("a-fast", 0.7, 0.0006, 0.0018, {0.86, 0.80, 0.82}, true, 11),
      Backend("b-mid", 1.0, 0.0004, 0.0012, {0.80, 0.86, 0.76}, true, 12),
      Backend("c-mid", 1.2, 0.0003, 0.0009, {0.78, 0.76, 0.5}, false, 13),
      Backend("d-slow", 1.6, 0.0002, 0.0006, {0.72, 0.70, 0.5}, false, 14),
  };
}

sim::Fault MakeFault(sim::FaultKind kind, std::string instance, double start_s, double end_s,
                     double factor) {
  sim::Fault f;
  f.kind = kind;
  f.instance = std::move(instance);
  f.start_ms = start_s * 1000;
  f.end_ms = end_s * 1000;
  f.factor = factor;
  return f;
}

// Scores every decision against the utility before handing it to the scorer; forwards the
// feedback to the policy.
class EvalRouter final : public sim::Router {
 public:
  EvalRouter(std::unique_ptr<sim::Router> policy, const Utility* utility, Scorer* scorer,
             const std::vector<sim::Fault>* faults)
      : policy_(std::move(policy)), utility_(utility), scorer_(scorer), faults_(faults) {}
  void Bind(const sim::Fleet* fleet) { fleet_ = fleet; }
  // Appends each decision with a confidence to `dump` (not owned; nullptr: off), each line
  // starting with `label` (scenario,arrivals,policy,seed).
  void DumpDecisions(std::FILE* dump, std::string label) {
    dump_ = dump;
    label_ = std::move(label);
  }
  std::string_view Name() const override { return policy_->Name(); }
  size_t Pick(const sim::Request& request, std::span<const sim::InstanceView> candidates) override {
    const size_t best = utility_->Score(request, candidates, &scores_);
    size_t pick = policy_->Pick(request, candidates);
    pick = std::min(pick, candidates.size() - 1);
    const double confidence = policy_->Confidence();
    indices_.clear();
    unhealthy_.clear();
    failing_.clear();
    for (size_t i = 0; i < candidates.size(); ++i) {
      const sim::ServingInstance& inst = fleet_->instance(candidates[i].index);
      const bool failing = inst.FailingAt(request.arrival_ms);
      // Unhealthy: hard down, or failing at least the health gate's failure_percentage of its
      // requests by the injected error faults (not a predicted timeout: that is load).
      bool unhealthy = inst.DownAt(request.arrival_ms);
      if (!unhealthy && failing) {
        double ok = 1;
        for (const sim::Fault& f : *faults_) {
          if ((f.kind == sim::FaultKind::kBrownout || f.kind == sim::FaultKind::kErrorBurst) &&
              f.ActiveAt(request.arrival_ms) && f.Matches(inst.options().name)) {
            ok *= 1 - f.factor;
          }
        }
        unhealthy = 1 - ok >= kUnhealthyErrorRate;
      }
      indices_.push_back(candidates[i].index);
      unhealthy_.push_back(unhealthy ? 1 : 0);
      failing_.push_back(failing ? 1 : 0);
    }
    const double regret = std::max(0.0, scores_[best] - scores_[pick]);
    const bool correct = scores_[pick] >= scores_[best] - 1e-12;
    scorer_->OnDecision(request.arrival_ms, indices_, unhealthy_, failing_, pick, regret, correct,
                        confidence);
    if (dump_ != nullptr && confidence >= 0) {
      const std::string_view chosen = candidates[pick].name, top = candidates[best].name;
      std::fprintf(dump_, "%s,%.0f,%.6f,%.*s,%.*s,%d\n", label_.c_str(),
                   static_cast<double>(request.arrival_ms), confidence,
                   static_cast<int>(chosen.size()), chosen.data(), static_cast<int>(top.size()),
                   top.data(), correct ? 1 : 0);
    }
    return pick;
  }
  void OnOutcome(const sim::RequestOutcome& outcome) override { policy_->OnOutcome(outcome); }
  void OnGauge(const sim::GaugeSample& sample) override { policy_->OnGauge(sample); }
  void OnQuality(const sim::QualityFeedback& feedback) override { policy_->OnQuality(feedback); }

 private:
  std::unique_ptr<sim::Router> policy_;
  const Utility* utility_;
  Scorer* scorer_;
  const std::vector<sim::Fault>* faults_;
  const sim::Fleet* fleet_ = nullptr;
  std::vector<double> scores_;
  std::vector<uint32_t> indices_;
  std::vector<uint8_t> unhealthy_, failing_;
  std::FILE* dump_ = nullptr;
  std::string label_;
};

class ScoringSink final : public sim::OutcomeSink {
 public:
  explicit ScoringSink(Scorer* scorer) : scorer_(scorer) {}
  void OnRequest(const sim::RequestOutcome& outcome) override { scorer_->OnOutcome(outcome); }
  void OnGauge(const sim::GaugeSample&) override {}

 private:
  Scorer* scorer_;
};

}  // namespace

double NominalCapacity(const sim::ServingParams& p) {
  return p.max_num_seqs * 1000.0 / (p.step_base_ms + p.step_per_seq_ms * p.max_num_seqs);
}

std::string_view ArrivalKindName(ArrivalKind kind) {
  return kind == ArrivalKind::kSynthetic ? "synthetic" : "trace";
}

bool BurstyArrivals::Next(sim::Arrival* out) {
  const double mean_gap_ms = 1000.0 / options_.rate_per_s;
  const double s = options_.gap_sigma;
  std::normal_distribution<double> normal(0, 1);
  // Lognormal with mean mean_gap_ms: mu = ln(mean) - s^2 / 2.
  t_ms_ += std::exp(std::log(mean_gap_ms) - s * s / 2 + s * normal(rng_));
  auto draw = [&](double median, double sigma, uint32_t max) {
    const double v = std::round(median * std::exp(sigma * normal(rng_)));
    return static_cast<uint32_t>(std::clamp(v, 1.0, static_cast<double>(max)));
  };
  out->time_ms = t_ms_;
  out->prompt_tokens = draw(options_.prompt_median, options_.prompt_sigma, options_.prompt_max);
  out->output_tokens = draw(options_.output_median, options_.output_sigma, options_.output_max);
  return true;
}

std::vector<Scenario> Scenarios() {
  using K = sim::FaultKind;
  std::vector<Scenario> out;
  auto add = [&](std::string name, std::string description) -> Scenario& {
    Scenario& s = out.emplace_back();
    s.name = std::move(name);
    s.description = std::move(description);
    s.backends = StandardBackends();
    return s;
  };
  add("failure", "a-fast (the best) is down from 5 to 10 min, then recovers")
      .faults.push_back(MakeFault(K::kDown, "a-fast", 300, 600, 1));
  add("drift", "a-fast slows down gradually from 3 min to x4 at 15 min")
      .faults.push_back(MakeFault(K::kLatencyDrift, "a-fast", 180, 900, 4));
  add("brownout", "a-fast: 10 % errors and x2 slower from 5 to 10 min")
      .faults.push_back(MakeFault(K::kBrownout, "a-fast", 300, 600, 0.1));
  {
    Scenario& s = add("price_change", "cost-effective: d-slow (the cheapest) x5 dearer from 5 min");
    s.strategy = Strategy::kCostEffective;
    s.faults.push_back(MakeFault(K::kPriceChange, "d-slow", 300, 900, 5));
  }
  {
    Scenario& s =
        add("quality_regression",
            "highest-quality: a-fast's quality x0.6 from 5 min; 5 % feedback, 2 min late");
    s.strategy = Strategy::kHighestQuality;
    s.faults.push_back(MakeFault(K::kQualityDrop, "a-fast", 300, 900, 0.6));
  }
  add("flapping", "a-fast down 15 s / up 15 s from 3 to 12 min")
      .faults.push_back(MakeFault(K::kFlapping, "a-fast", 180, 720, 30));
  {
    Scenario& s =
        add("herding", "no fault; unequal capacity (one x2 node, three slow) at ~90 % load");
    s.backends = {
        Backend("a-big", 0.5, 0.0004, 0.0012, {0.8, 0.8, 0.8}, true, 21),
        Backend("b-small", 1.4, 0.0004, 0.0012, {0.8, 0.8, 0.8}, true, 22),
        Backend("c-small", 1.4, 0.0004, 0.0012, {0.8, 0.8, 0.8}, true, 23),
        Backend("d-small", 1.4, 0.0004, 0.0012, {0.8, 0.8, 0.8}, true, 24),
    };
    s.rate_per_s = 24;  // the fleet saturates at ~27 req/s under the best baselines
  }
  {
    Scenario& s = add(
        "vision", "20 % vision requests, only a-fast and b-mid see images; a-fast down 5-10 min");
    s.category_weights = {0.6, 0.2, 0.2};
    s.faults.push_back(MakeFault(K::kDown, "a-fast", 300, 600, 1));
  }
  return out;
}

Result<PolicyMetrics> RunRouter(const Scenario& scenario, std::unique_ptr<sim::Router> router,
                                Utility* utility, const RunOptions& options) {
  if (router == nullptr) return Status::InvalidArgument("no router");
  Utility own(scenario.strategy);
  Utility* u = utility != nullptr ? utility : &own;
  const double duration_ms = scenario.duration_s * 1000 * options.duration_scale;
  std::unique_ptr<sim::ArrivalSource> arrivals;
  if (options.arrivals == ArrivalKind::kSynthetic) {
    BurstyOptions b;
    b.rate_per_s = scenario.rate_per_s * options.rate_scale;
    b.seed = options.seed * 7919 + 1;
    arrivals = std::make_unique<BurstyArrivals>(b);
  } else {
    if (options.trace == nullptr || options.trace->size() < 2) {
      return Status::InvalidArgument("trace arrivals need a trace of at least 2 records");
    }
    const std::vector<sim::TraceRecord>& t = *options.trace;
    const double span_s = static_cast<double>(t.back().time_us - t.front().time_us) / 1e6;
    sim::TraceArrivalOptions o;
    o.time_scale =
        scenario.rate_per_s * options.rate_scale / (static_cast<double>(t.size() - 1) / span_s);
    arrivals = std::make_unique<sim::TraceArrivals>(t, o);
  }
  Scorer scorer(options.scorer);
  ScoringSink sink(&scorer);
  auto eval = std::make_unique<EvalRouter>(std::move(router), u, &scorer, &scenario.faults);
  EvalRouter* eval_ptr = eval.get();
  sim::FleetOptions fo;
  fo.duration_ms = duration_ms;
  fo.seed = options.seed;
  fo.gauge_delay_ms = options.gauge_delay_ms;
  fo.quality_feedback_fraction = options.quality_fraction;
  fo.quality_feedback_delay_ms = options.quality_delay_ms;
  fo.category_weights = scenario.category_weights;
  Result<std::unique_ptr<sim::Fleet>> fleet = sim::Fleet::Create(
      fo, scenario.backends, scenario.faults, std::move(arrivals), std::move(eval), &sink);
  if (!fleet.ok()) return fleet.status().WithContext("scenario " + scenario.name);
  u->Bind(fleet->get());
  eval_ptr->Bind(fleet->get());
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> dump(nullptr, &std::fclose);
  if (!options.decisions_path.empty()) {
    dump.reset(std::fopen(options.decisions_path.c_str(), "a"));
    if (dump == nullptr) {
      return Status::InvalidArgument("cannot open the decisions file " + options.decisions_path +
                                     ": " + std::strerror(errno));
    }
    if (std::ftell(dump.get()) == 0) {
      std::fputs("scenario,arrivals,policy,seed,time_ms,confidence,chosen,best,correct\n",
                 dump.get());
    }
    eval_ptr->DumpDecisions(
        dump.get(), scenario.name + "," + std::string(ArrivalKindName(options.arrivals)) + "," +
                        std::string(eval_ptr->Name()) + "," + std::to_string(options.seed));
  }
  (*fleet)->Run();
  if (dump != nullptr && std::fflush(dump.get()) != 0) {
    return Status::Internal("cannot write the decisions file " + options.decisions_path);
  }
  return scorer.Finish();
}

Result<PolicyMetrics> RunPolicy(const Scenario& scenario, std::string_view policy,
                                const RunOptions& options) {
  auto utility = std::make_unique<Utility>(scenario.strategy);
  PolicyContext context;
  context.seed = options.seed * 31 + 17;
  context.utility = utility.get();
  context.quality_delay_ms = options.quality_delay_ms;
  context.strategy = scenario.strategy;
  context.catalogue = scenario.backends;
  for (const sim::InstanceOptions& b : scenario.backends) {
    context.capacity.push_back(NominalCapacity(b.params));
  }
  Result<std::unique_ptr<sim::Router>> router = MakePolicy(policy, context);
  if (!router.ok()) return router.status();
  return RunRouter(scenario, std::move(*router), utility.get(), options);
}

}  // namespace inferscope::bench::routing
