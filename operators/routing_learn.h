#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "pipeline/config.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "pipeline/operator.h"
#include "pipeline/status.h"
#include "routing/learner.h"
#include "routing/live_router.h"
#include "routing/published.h"

namespace inferscope {

// RoutingLearnOperator runs the routing learner (routing/learner.h) in the engine: it reads the
// sources' raw events directly (topology `inputs: [ingest, ingest_acked]`; request outcomes and
// gauges as they arrive, not closed panes, so a failover does not wait for a pane), feeds one
// learner over all models, and emits the weights of each (model, strategy) when
// RoutingLearner::PublishIfChanged says they changed meaningfully (kind::RoutingWeights; rate
// limited by `publish.min_interval`, at once when a backend is gated or ungated). Weights are
// checked after a batch in which a backend was ejected or recovered (failover at once), and for
// every model on the executor's timer every `check_interval` (250 ms): a table rebuild per batch
// would cost the event rate, and publish.min_interval (1 s) bounds how often they change anyway.
//
// Time: event time drives the learner; "now" is the newest event time seen. An out-of-order
// event is fed with its own time and weighs 2^(-age / half_life) (the learner decays it); one
// older than `max_event_age` behind the newest is dropped and counted
// (inferscope_routing_events_dropped_total{reason="too_old"}). Events of models and backends not
// in the catalogue are learned (with `learned_capabilities`) up to `limits`; beyond, the learner
// refuses and counts them (inferscope_routing_refused_total{reason}).
//
// Sharing: the learner lives in a LiveRouter registered with the engine's RoutingRegistry
// (StageContext::services), through which the query API selects backends; the operator takes its
// lock once per batch.
//
// Lifecycle: Create → Open → Process / OnTimer → Close.
// Concurrency: the operator thread makes every call; the API reaches the learner only through the
// LiveRouter's lock.
// Checkpoint: none, on purpose (docs/ROUTING.md, "Restarts"): the evidence has a 30 s half-life,
// so after a restart the estimates refill within seconds of traffic, and a backend that was
// ejected and still fails is ejected again after `health.consecutive_errors` failures; the last
// published weights stay in the store (rocksdb_routing) and are served meanwhile. A restart does
// forget an ejection's back-off multiplier (the next ejection starts at base_ejection_time).
class RoutingLearnOperator final : public Operator {
 public:
  static constexpr std::string_view kName = "routing_learn";
  static constexpr std::string_view kDescription =
      "Learns routing weights per model over its backends from raw request outcomes and gauges "
      "(decayed posteriors, health gate, strategies); emits weights per (model, strategy) when "
      "they change";

  struct Options {
    routing::RoutingOptions routing;
    // Strategies whose weights are published. Default: all five.
    std::vector<routing::Strategy> strategies = {
        routing::Strategy::kLowestLatency, routing::Strategy::kHighestQuality,
        routing::Strategy::kCostEffective, routing::Strategy::kBalanced,
        routing::Strategy::kAdaptive};
    // Events further than this behind the newest event time are dropped (they would weigh less
    // than 2^-10 at the default half-life). Default 5 m; >= 1 ms.
    int64_t max_event_age_ms = 300'000;
    // How often (processing time) the timer checks every model's weights for a change that is
    // not a gate change (those are checked in the batch that caused them). Each check may redraw
    // a model's posteriors (~0.2 ms for 8 backends), so with many busy models this bounds the
    // learner's share of the operator thread. Default 250 ms; >= 0 (0: every timer tick).
    int64_t check_interval_ms = 250;
    Status Validate() const;
  };

  // Reads the ParseRoutingOptions fields plus `strategies` and `max_event_age`; unknown fields
  // are errors naming file, line and field.
  static Result<std::unique_ptr<RoutingLearnOperator>> Create(const ConfigNode& options);
  static Result<Options> ParseOptions(const ConfigNode& options);

  explicit RoutingLearnOperator(Options options);
  ~RoutingLearnOperator() override;

  Status Open(const StageContext& ctx) override;
  Status Process(const EventBatch& batch, OutputBatch& out) override;
  KindSet Emits() const override { return KindSet::Of<kind::RoutingWeights>(); }
  Status OnTimer(int64_t now_ms, OutputBatch& out) override;

  // The shared learner (after Open).
  const std::shared_ptr<routing::LiveRouter>& router() const { return router_; }

 private:
  void PublishModel(routing::RoutingLearner& learner, routing::RoutingLearner::ModelId model,
                    int64_t now_ms, std::vector<routing::RoutingWeights>& out);

  Options options_;
  Interner* interner_ = nullptr;
  std::shared_ptr<routing::LiveRouter> router_;
  std::vector<StringId> touched_;  // models with events in the current batch (scratch)
  routing::RoutingWeights scratch_;
  uint64_t gate_events_seen_ = 0;
  int64_t next_check_ms_ = INT64_MIN;  // processing time of the next timer check  // learner
                                       // ejections + refusals + recoveries already handled

  Counter* outcomes_ = nullptr;
  Counter* gauges_ = nullptr;
  Counter* publications_ = nullptr;
  Counter* dropped_old_ = nullptr;
  Counter* dropped_unnamed_ = nullptr;
  Gauge* models_ = nullptr;
};

}  // namespace inferscope
