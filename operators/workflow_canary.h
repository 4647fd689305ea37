#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "pipeline/config.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "pipeline/operator.h"
#include "pipeline/status.h"
#include "values/sketch.h"
#include "workflows/canary.h"
#include "workflows/workflow.h"

namespace inferscope {

// WorkflowCanaryOperator verifies optimization workflows from the live stream: for every workflow
// of the engine's WorkflowRegistry (StageContext::services) that is not finished, it reads the
// pane summaries of a window_aggregate operator (topology `inputs: [windows]`) and keeps, per
// judged metric (the target and the guards), the sketches of the workflow's instance and of its
// peers (the other instances of the same model), merged:
//
//   - before the change is applied: a ring of recent panes (at most `baseline` of event time, at
//     most `max_baseline_panes`), so the baseline is what preceded the change;
//   - once applied at event time A: panes wholly before A (and within `baseline` of it) are the
//     baseline, panes starting at or after A the canary ("after") period; a pane spanning A is
//     left out.
//
// Each time a new after-pane of the instance's target metric arrives, one look: JudgeCanary
// (workflows/canary.h; error_ratio: JudgeProportion) per metric at fraction = (newest after-pane
// end − A) / canary, peer-adjusted when the peers' baseline holds `min_samples`. Then:
//   target or any guard `regressed`          → ROLLED_BACK (verdict "regressed", evidence);
//   target `improved`, no guard `regressed`  → COMPLETED (verdict "improved");
//   fraction reached 1 with no verdict       → COMPLETED (verdict "no_effect": the change does no
//                                              harm and is kept, as Flagger/Kayenta do), or
//                                              FAILED when the target had < min_samples values;
//   no pane of the instance's target metric for `no_data_timeout` of event time → FAILED.
// Otherwise the look's progress and evidence are recorded (RecordProgress).
//
// Every state change of a workflow (the API's and its own) is emitted as a kind::WorkflowChange,
// in the step after it was made (OnTimer: within ~100 ms), for the zmq_workflows stream sink.
//
// Lifecycle: Create → Open (finds the registry) → Restore → ProcessResults / OnTimer → Close.
// Concurrency: none; the operator thread makes every call. The registry is thread-safe; the
// operator re-reads its active workflows when its version() moved.
// Checkpoints: one record per tracked workflow (its ring or its before/after sketches), written
// when it changed, so a restart mid-canary continues where it was.
// Limitations: at most `max_workflows` workflows are tracked at once (more are counted in
// inferscope_workflow_canary_untracked_total and wait). Pane updates (late events) are not
// re-applied (counted). Judging needs event time to progress: a fleet that stops publishing
// leaves the canary where it is.
class WorkflowCanaryOperator final : public Operator {
 public:
  static constexpr std::string_view kName = "workflow_canary";
  static constexpr std::string_view kDescription =
      "Verifies optimization workflows: compares an instance's panes after a change with its own "
      "baseline and its peers (rank test from sketches, sequential) and records the verdict";

  struct Options {
    CanaryOptions canary;  // alpha, min_effect, quantile (unused: per metric), min_samples
    // Workflows tracked at once. Default 100; 1..10,000.
    int64_t max_workflows = 100;
    // Panes kept per workflow before the change is applied. Default 720; 1..100,000.
    int64_t max_baseline_panes = 720;
    // Event time without a pane of the instance's target metric after which an applied workflow
    // FAILS. Default 5m; >= 1s.
    int64_t no_data_timeout_ms = 300'000;
    // The request series whose events/errors give error_ratio. Default "e2e_ms".
    std::string error_series = "e2e_ms";
    // Compare against peers of the same model when they have data. Default true.
    bool peers = true;
    Status Validate() const;
  };

  // Reads `alpha`, `min_effect`, `min_samples`, `max_workflows`, `max_baseline_panes`,
  // `no_data_timeout`, `error_series`, `peers`; unknown fields are errors naming file, line, field.
  static Result<std::unique_ptr<WorkflowCanaryOperator>> Create(const ConfigNode& options);
  static Result<Options> ParseOptions(const ConfigNode& options);

  explicit WorkflowCanaryOperator(Options options);
  ~WorkflowCanaryOperator() override;

  Status Open(const StageContext& ctx) override;
  Status Process(const EventBatch& batch, OutputBatch& out) override;
  KindSet Reads() const override { return KindSet::Of<kind::PaneSummary>(); }
  KindSet Emits() const override { return KindSet::Of<kind::WorkflowChange>(); }
  Status ProcessResults(const OutputBatch& in, OutputBatch& out) override;
  Status OnTimer(int64_t now_ms, OutputBatch& out) override;
  // At the next tick when the registry changed since the last look (workflows added, removed or
  // changed by the API); otherwise none: whoever shares the registry with the executor wakes it
  // on a change (WorkflowRegistry::SetOnChange → Executor::Wake, as the engine does).
  int64_t NextTimerMs(int64_t now_ms) const override;
  Status Checkpoint(CheckpointWriter& writer) override;
  Status Restore(const CheckpointReader& reader) override;

  size_t tracked() const { return tracked_.size(); }
  uint64_t looks() const { return looks_; }

 private:
  struct Acc {
    DDSketch sketch;
    ProportionCounts counts;
  };
  // One period of every judged metric: per metric, the instance and its peers.
  struct Period {
    std::vector<Acc> inst, peers;
  };
  struct PaneEntry {
    int64_t start_ms = 0, end_ms = 0;
    bool has_target = false;  // the instance's target metric contributed
    Period period;
  };
  struct Tracked {
    Workflow workflow;
    StringId instance = 0, model = 0;
    std::vector<StringId> metric_ids;  // per metric (target first): the series read
    std::vector<bool> proportion;      // per metric: error_ratio (counts, not sketches)
    std::deque<PaneEntry> ring;        // before the change is applied
    bool applied = false;
    int64_t applied_ms = 0;
    Period before, after;
    // Per metric: the overdispersion estimated on the baseline's panes when the change was
    // applied (DispersionOf; 1 for proportions and without enough panes).
    std::vector<double> dispersion;
    int64_t last_target_end_ms = INT64_MIN;  // newest pane end of the instance's target
    int64_t after_end_ms = INT64_MIN;        // newest after-pane end of the instance's target
    int64_t looked_end_ms = INT64_MIN;       // after_end_ms of the last look
    bool dirty = true;                       // changed since the last checkpoint
  };

  void Sync();
  void EmitChanges(OutputBatch& out);
  Status Track(const Workflow& w);
  void Untrack(const std::string& id);
  void ApplyChange(Tracked& t, int64_t applied_ms);
  void Ingest(const WindowSummary& s);
  void AddTo(Tracked& t, Period& p, size_t metric, bool inst, const WindowSummary& s);
  void Look(Tracked& t, int64_t event_time_ms);
  void Finish(Tracked& t, WorkflowState to, std::string_view verdict, nlohmann::json evidence,
              const std::string& reason);
  void ResetPeriod(const Tracked& t, Period* p) const;
  std::string Encode(const Tracked& t) const;
  Status Decode(std::string_view in, Tracked* t) const;

  Options options_;
  Interner* interner_ = nullptr;
  WorkflowRegistry* registry_ = nullptr;
  std::string stage_;
  uint64_t seen_version_ = UINT64_MAX;
  uint64_t change_seq_ = 0;            // the registry's change log read up to here
  int64_t event_time_ms_ = INT64_MIN;  // newest pane end or upstream watermark seen
  std::unordered_map<std::string, Tracked> tracked_;
  std::unordered_map<std::string, std::string> restored_;  // id → checkpoint record
  std::vector<std::string> deleted_records_;
  std::vector<std::string> finished_;  // ids finished during a step (untracked after it)
  uint64_t looks_ = 0;

  Gauge* tracked_gauge_ = nullptr;
  Counter* looks_counter_ = nullptr;
  Counter* untracked_counter_ = nullptr;
  Counter* updates_ignored_ = nullptr;
  Counter* write_errors_ = nullptr;
  Counter* changes_dropped_ = nullptr;
  Counter* verdicts_[kNumWorkflowStates] = {};
};

}  // namespace inferscope
