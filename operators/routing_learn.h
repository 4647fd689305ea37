#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/config.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "pipeline/operator.h"
#include "pipeline/status.h"
#include "routing/event_clock.h"
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
// every model on the executor's timer every `check_interval` (1 s): a table rebuild per batch
// would cost the event rate, and publish.min_interval (1 s) bounds how often they change anyway.
//
// Time: event time drives the learner; "now" is the newest event time seen (routing/event_clock.h),
// except that one event more than `max_future_skew` (10 s) ahead of now does not move it: it is
// fed at now + max_future_skew and counted (inferscope_routing_events_future_total); a second
// such event confirms a real jump of the stream (after a quiet gap), and now moves to the smaller
// of the two. So one far-future timestamp cannot age every model's evidence at once or delay the
// failover of the events after it. An out-of-order event is fed with its own time and weighs
// 2^(-age / half_life) (the learner decays it); one older than `max_event_age` behind now is
// dropped and counted (inferscope_routing_events_dropped_total{reason="too_old"}). Events of models
// and backends not in the catalogue are learned (with `learned_capabilities`) up to `limits`;
// beyond, the learner refuses and counts them (inferscope_routing_refused_total{reason}). A learned
// backend silent for limits.backend_ttl of event time is removed (checked after every batch and on
// the timer), a model left without backends too: its weights are published once more without
// backends and its checkpoint record deleted (inferscope_routing_removed_total{what,reason}).
//
// Sharing: the learner lives in a LiveRouter registered with the engine's RoutingRegistry
// (StageContext::services), through which the query API selects backends; the operator takes its
// lock once per batch.
//
// Lifecycle: Create → Open → Process / OnTimer → Close.
// Concurrency: the operator thread makes every call; the API reaches the learner only through the
// LiveRouter's lock.
// Checkpoint: every model's learned state (RoutingLearner::SnapshotModel: decayed evidence,
// last gauges, health gate with its ejection multiplier, flapping history) as one versioned record
// per model (key "m/<model>"), and the clock's now (key "now"); restored after Open, so after a
// restart the weights continue from the evidence instead of starting cold (evidence older than
// the restart decays by the event time that passes, as it would have). Every checkpoint rewrites
// the records of the models that had events or lost backends since the previous one, and deletes
// those of the models removed, so a restart does not bring back what expired.
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
    // An event this far ahead of "now" does not move now on its own (see Time above). Default
    // 10 s; >= 0.
    int64_t max_future_skew_ms = 10'000;
    // How often (processing time) the timer checks every model's weights for a change that is
    // not a gate change (those are checked in the batch that caused them). Each check may redraw
    // a model's posteriors (~0.2 ms for 8 backends), so with many busy models this bounds the
    // learner's share of the operator thread. Default 1 s, as publish.min_interval: checking
    // more often only shortens the wait of a change that missed a check (at 250 ms the checks
    // were 54 % of the engine's instructions at 8 small messages/s per model: bench/README.md,
    // "Small messages"); >= 0 (0: every timer tick).
    int64_t check_interval_ms = 1'000;
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
  // Every check_interval once an event has arrived; never before.
  int64_t NextTimerMs(int64_t now_ms) const override;
  Status Checkpoint(CheckpointWriter& writer) override;
  Status Restore(const CheckpointReader& reader) override;

  // The shared learner (after Open).
  const std::shared_ptr<routing::LiveRouter>& router() const { return router_; }

 private:
  void PublishModel(routing::RoutingLearner& learner, routing::RoutingLearner::ModelId model,
                    int64_t now_ms, std::vector<routing::RoutingWeights>& out);
  // The models whose backends the learner removed (or that it removed) since the last call: their
  // weights are published (a removed model's without backends) and their records rewritten or
  // deleted at the next checkpoint.
  void PublishForgotten(routing::RoutingLearner& learner, int64_t now_ms, OutputBatch& out);

  Options options_;
  Interner* interner_ = nullptr;
  std::shared_ptr<routing::LiveRouter> router_;
  std::vector<StringId> touched_;  // models with events in the current batch (scratch)
  // Models with events, or backends removed, since the last checkpoint (names: a restored or
  // removed model's name need not be interned).
  std::set<std::string, std::less<>> changed_;
  routing::RoutingWeights scratch_;
  routing::EventClock clock_;
  uint64_t gate_events_seen_ = 0;
  int64_t checkpointed_now_ms_ = INT64_MIN;  // the "now" record of the last checkpoint
  int64_t next_check_ms_ = INT64_MIN;        // processing time of the next timer check  // learner
                                             // ejections + refusals + recoveries already handled

  Counter* outcomes_ = nullptr;
  Counter* gauges_ = nullptr;
  Counter* publications_ = nullptr;
  Counter* dropped_old_ = nullptr;
  Counter* dropped_unnamed_ = nullptr;
  Counter* future_ = nullptr;
  Gauge* models_ = nullptr;
};

}  // namespace inferscope
