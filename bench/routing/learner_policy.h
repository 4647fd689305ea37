#pragma once

// The `inferscope` policy of the routing evaluation: a sim::Router over the engine's routing
// learner (routing/learner.h), fed what a gateway in front of the fleet would feed it — every
// outcome as it happens, gauges and quality feedback late (the harness's delays) — and following
// its decisions (NoteSent). It never reads the fleet's live state (InstanceView's running and
// waiting counts) nor anything the catalogue does not say.

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bench/routing/policies.h"
#include "routing/learner.h"
#include "sim/fleet.h"

namespace inferscope::bench::routing {

// The learner's strategy for the harness's (lowest-latency by default).
inferscope::routing::Strategy LearnerStrategy(Strategy strategy);

// The learner's catalogue for a fleet: one ModelSpec per model, its backends in fleet order with
// the vision capability, list prices and slot limit (max_concurrency) of each.
std::vector<inferscope::routing::ModelSpec> LearnerCatalogue(
    std::span<const sim::InstanceOptions> instances);

// Lifecycle: built once per run from the PolicyContext; one thread (the simulator's).
class LearnerRouter final : public sim::Router {
 public:
  // `options` are the learner's knobs; its catalogue is replaced by the context's.
  LearnerRouter(const PolicyContext& context, inferscope::routing::RoutingOptions options);
  std::string_view Name() const override { return "inferscope"; }
  size_t Pick(const sim::Request& request, std::span<const sim::InstanceView> candidates) override;
  void OnOutcome(const sim::RequestOutcome& outcome) override;
  void OnGauge(const sim::GaugeSample& sample) override;
  void OnQuality(const sim::QualityFeedback& feedback) override;
  double Confidence() const override { return confidence_; }

  const inferscope::routing::RoutingLearner& learner() const { return *learner_; }

 private:
  // Where a fleet instance is in the learner.
  struct Slot {
    inferscope::routing::RoutingLearner::ModelId model =
        inferscope::routing::RoutingLearner::kNoModel;
    uint32_t backend = 0;
    std::string model_name;
    std::string_view backend_name;  // the learner's copy
  };

  std::unique_ptr<inferscope::routing::RoutingLearner> learner_;
  inferscope::routing::Strategy strategy_;
  std::vector<Slot> slots_;  // per fleet instance
  inferscope::routing::Decision decision_;
  double confidence_ = -1;
};

// The registry's factory: the learner with its default options.
std::unique_ptr<sim::Router> MakeLearnerPolicy(const PolicyContext& context);

}  // namespace inferscope::bench::routing
