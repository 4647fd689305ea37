#pragma once

// The routing evaluation harness: scenarios (a fleet of backends of one model, faults, a
// strategy), arrivals (synthetic heavy-tailed or the replayed Azure trace), and a run of one
// policy over one scenario that scores every decision against the oracle
// (bench/routing/README.md).

#include <array>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "bench/routing/metrics.h"
#include "bench/routing/utility.h"
#include "pipeline/status.h"
#include "sim/fleet.h"
#include "sim/trace.h"

namespace inferscope::bench::routing {

struct Scenario {
  std::string name;
  std::string description;
  std::vector<sim::InstanceOptions> backends;  // one model
  std::vector<sim::Fault> faults;
  Strategy strategy = Strategy::kLowestLatency;
  double rate_per_s = 10;   // mean arrivals per second (both arrival kinds)
  double duration_s = 900;  // simulated
  std::array<double, sim::kCategories> category_weights = {1, 0, 0};
};

// The eight scenarios of the issue, in table order.
std::vector<Scenario> Scenarios();

enum class ArrivalKind { kSynthetic, kTrace };
std::string_view ArrivalKindName(ArrivalKind kind);

// Synthetic heavy-tailed arrivals: inter-arrival times lognormal with log-space sigma
// `gap_sigma` and mean 1 / rate (bursty: coefficient of variation ~2 at sigma 1.2); prompt and
// output tokens lognormal with the medians of the Azure conversation trace.
struct BurstyOptions {
  double rate_per_s = 18;
  double gap_sigma = 1.2;
  double prompt_median = 1020, prompt_sigma = 0.9;
  uint32_t prompt_max = 8192;
  double output_median = 130, output_sigma = 0.9;
  uint32_t output_max = 1024;
  uint64_t seed = 1;
};
class BurstyArrivals final : public sim::ArrivalSource {
 public:
  explicit BurstyArrivals(BurstyOptions options) : options_(options), rng_(options.seed) {}
  bool Next(sim::Arrival* out) override;

 private:
  BurstyOptions options_;
  std::mt19937_64 rng_;
  double t_ms_ = 0;
};

struct RunOptions {
  ArrivalKind arrivals = ArrivalKind::kSynthetic;
  // The trace for kTrace: replayed from its start with time_scale = rate / the trace's mean rate.
  const std::vector<sim::TraceRecord>* trace = nullptr;
  uint64_t seed = 1;                  // arrivals, fleet and policy seeds derive from it
  double gauge_delay_ms = 2000;       // gauges reach the policy this late
  double quality_fraction = 0.05;     // of successful requests get quality feedback
  double quality_delay_ms = 120'000;  // that long after completion
  double duration_scale = 1;          // x the scenario's duration (tests run shorter)
  double rate_scale = 1;              // x the scenario's arrival rate
  Scorer::Options scorer;
  // Diagnostic dump (empty: off, nothing is done per decision): every decision of a policy that
  // reports a confidence is appended to this file as a CSV line
  // `scenario,arrivals,policy,seed,time_ms,confidence,chosen,best,correct` (a header first when
  // the file is empty; best = the utility's best candidate, correct = the chosen one scores as
  // well as it: the ECE's label). routing_eval sets it from INFERSCOPE_ROUTING_DECISIONS.
  std::string decisions_path;
};

// Runs `policy` (a registered name, registry.h) over the scenario and scores it.
Result<PolicyMetrics> RunPolicy(const Scenario& scenario, std::string_view policy,
                                const RunOptions& options);
// The same with a router built by the caller (tests). `utility` must be the one the router was
// built with if it uses one, or nullptr (a fresh one for the scenario's strategy is used).
Result<PolicyMetrics> RunRouter(const Scenario& scenario, std::unique_ptr<sim::Router> router,
                                Utility* utility, const RunOptions& options);

// The static weight of an instance: output tokens per second at a full batch, nominally.
double NominalCapacity(const sim::ServingParams& params);

}  // namespace inferscope::bench::routing
