#include "bench/routing/registry.h"

#include <string>

#include "bench/routing/learner_policy.h"

namespace inferscope::bench::routing {
namespace {

// Peak-EWMA's decay (Linkerd's default, the figure) and the latency router's window.
constexpr double kPeakEwmaDecayMs = 10'000;
constexpr size_t kLatencyWindow = 10;
constexpr double kLatencyFailureMs = 120'000;

const PolicyInfo kPolicies[] = {
    {"round_robin", "each candidate in turn (per model)",
     [](const PolicyContext&) -> std::unique_ptr<sim::Router> {
       return std::make_unique<sim::RoundRobinRouter>();
     }},
    {"random", "uniformly at random",
     [](const PolicyContext& c) -> std::unique_ptr<sim::Router> {
       return std::make_unique<sim::RandomRouter>(c.seed);
     }},
    {"static_weights", "smooth weighted round robin by nominal capacity",
     [](const PolicyContext& c) -> std::unique_ptr<sim::Router> {
       return std::make_unique<StaticWeightsRouter>(c.capacity);
     }},
    {"least_busy", "fewest requests in flight",
     [](const PolicyContext& c) -> std::unique_ptr<sim::Router> {
       return std::make_unique<LeastBusyRouter>(c.seed);
     }},
    {"p2c_least_request", "power of two choices, fewer in flight (Envoy LEAST_REQUEST)",
     [](const PolicyContext& c) -> std::unique_ptr<sim::Router> {
       return std::make_unique<P2cLeastRequestRouter>(c.seed);
     }},
    {"peak_ewma", "Finagle/Linkerd peak-EWMA of ttft x (pending + 1), P2C, decay 10 s",
     [](const PolicyContext& c) -> std::unique_ptr<sim::Router> {
       return std::make_unique<PeakEwmaRouter>(c.seed, kPeakEwmaDecayMs, false);
     }},
    {"peak_ewma_e2e", "the same with the whole request as rtt (Finagle's service lifetime)",
     [](const PolicyContext& c) -> std::unique_ptr<sim::Router> {
       return std::make_unique<PeakEwmaRouter>(c.seed, kPeakEwmaDecayMs, true);
     }},
    {"latency_avg10", "lowest mean ttft of the last 10 requests (LiteLLM latency-based)",
     [](const PolicyContext& c) -> std::unique_ptr<sim::Router> {
       return std::make_unique<LatencyAverageRouter>(c.seed, kLatencyWindow, kLatencyFailureMs);
     }},
    {"inferscope", "the routing learner (routing/), the scenario's strategy, default options",
     MakeLearnerPolicy},
    {"oracle", "the best candidate by true utility now (regret 0 by definition)",
     [](const PolicyContext& c) -> std::unique_ptr<sim::Router> {
       return std::make_unique<OracleRouter>(c.utility);
     },
     true},
    {"oracle_late_quality",
     "the oracle, but quality as the feedback shows it (quality_delay late); confidence 1",
     [](const PolicyContext& c) -> std::unique_ptr<sim::Router> {
       return std::make_unique<OracleRouter>(c.utility, c.quality_delay_ms);
     },
     true},
};

}  // namespace

std::span<const PolicyInfo> Policies() { return kPolicies; }

bool IsOracle(std::string_view name) {
  for (const PolicyInfo& p : kPolicies) {
    if (p.name == name) return p.oracle;
  }
  return false;
}

Result<std::unique_ptr<sim::Router>> MakePolicy(std::string_view name,
                                                const PolicyContext& context) {
  std::string known;
  for (const PolicyInfo& p : kPolicies) {
    if (p.name == name) {
      if (p.oracle && context.utility == nullptr) {
        return Status::InvalidArgument("policy " + std::string(name) +
                                       " needs the utility (PolicyContext)");
      }
      return p.make(context);
    }
    known += (known.empty() ? "" : ", ") + std::string(p.name);
  }
  return Status::InvalidArgument("unknown policy '" + std::string(name) + "' (known: " + known +
                                 ")");
}

}  // namespace inferscope::bench::routing
