#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "bottlenecks/bottleneck.h"
#include "bottlenecks/classify.h"
#include "pipeline/config.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "pipeline/operator.h"
#include "pipeline/status.h"
#include "values/aggregate.h"

namespace inferscope {

// BottleneckClassifyOperator says, per (instance, model), what limits it: it reads the pane
// summaries of a window_aggregate operator (topology `inputs: [windows]`), merges the last
// `evidence` of panes per metric (gauges and request outcomes together; merged sketches give real
// percentiles), judges them with the classification core (bottlenecks/classify.h: absolute rules,
// peers of the same model judged at the same pane end, causal order), and emits bottleneck
// *changes* (kind::Bottleneck): raised, severity changed, primary/root changed, resolved.
//
// Judging: an instance is judged once per pane end, when the upstream watermark
// (OutputBatch::watermark_ms) has passed it; the instances of one model judged at the same pane
// end are each other's peers. A pane update (late data, `update = true`) replaces that pane's
// contribution for later judgements; a pane already judged is not judged again.
//
// Timing (event time, pane ends): a condition must hold for `for` before it is raised, and be
// clear (beyond the exit level) for `clear_for` before it resolves; between the exit and enter
// levels it holds its state. A new severity is published once it has held for `for` (higher) or
// `clear_for` (lower). So a value that hovers at a threshold does not flap.
//
// Early evaluation (`early: true`, default false; docs/BOTTLENECKS.md "Early evaluation"): the
// open pane (kind::EarlySummary of a window_aggregate with `early_slice`) is judged as it fills,
// with the closed panes before it, once it holds `min_requests` requests and the pane before it
// has closed; absolute rules only (no peers early). A type that is not raised and would be raised
// now (`for` already held by closed panes, or `for: 0s`) is published raised with `early = true`
// (never taking the primary from a type that holds it); the closed pane then confirms it (change
// `confirmed`, no second `raised`) or retracts it (state and change `retracted`). Early evidence
// never moves the state machine (since_ms, clear_since_ms, candidates): only the early flag and
// what it published.
// Lifecycle: Create → Open → Restore → ProcessResults / OnTimer → Close.
// Concurrency: none; the operator thread makes every call.
// Host gauges: a saturation gauge of model "_" (the host source's cpu_utilization, a node
// exporter's gauges: they have no model) counts for every model of the same instance, pane by
// pane, where that model has no value of its own for the gauge; the (instance, "_") pair is also
// judged on its own.
// Limitations: at most `max_instances` (instance, model) pairs are tracked; panes of further ones
// are dropped and counted (inferscope_bottleneck_instances_dropped_total). A pair without a pane
// for `idle_expiry` of watermark progress is forgotten (its raised bottlenecks resolve "no data";
// counted in inferscope_bottleneck_instances_expired_total). The bottleneck states are
// checkpointed (one record per pair, written when it changed); the pane ring is not, so after a
// restart the evidence window refills from the panes that follow.
class BottleneckClassifyOperator final : public Operator {
 public:
  static constexpr std::string_view kName = "bottleneck_classify";
  static constexpr std::string_view kDescription =
      "Classifies what limits each instance (memory pressure, latency, throughput, queueing, "
      "cache, errors, saturation) from its pane summaries, with peer-relative judgement and "
      "causal order; emits bottleneck changes";

  struct Options {
    BottleneckOptions rules;
    // Panes merged into one evidence window. Default 30 s; at least one pane (rounded up to a
    // whole number of panes), at most 1 h.
    int64_t evidence_ms = 30'000;
    // How long a condition must hold before it is raised. Default 20 s; >= 0.
    int64_t for_ms = 20'000;
    // How long a raised bottleneck must be clear before it resolves. Default: `for`; >= 0.
    int64_t clear_for_ms = 20'000;
    // Tracked (instance, model) pairs. Default 10,000; 1..10,000,000.
    int64_t max_instances = 10'000;
    // Watermark progress without a pane after which a pair is forgotten. Default 5 m; 0 never.
    int64_t idle_expiry_ms = 300'000;
    // Instance glob → engine name, first match wins; default: the instance name up to its first
    // '-' ("vllm-3" → "vllm").
    std::vector<std::pair<std::string, std::string>> engines;
    // Also judge the open pane (early summaries) and raise early; the closed pane confirms or
    // retracts. Default false.
    bool early = false;
    Status Validate() const;
  };

  // Reads `evidence`, `for`, `clear_for`, `max_instances`, `idle_expiry`, `engines` and the rule
  // sections (ParseBottleneckOptions); unknown fields are errors naming file, line and field.
  static Result<std::unique_ptr<BottleneckClassifyOperator>> Create(const ConfigNode& options);
  static Result<Options> ParseOptions(const ConfigNode& options);

  explicit BottleneckClassifyOperator(Options options);
  ~BottleneckClassifyOperator() override;

  Status Open(const StageContext& ctx) override;
  Status Process(const EventBatch& batch, OutputBatch& out) override;
  KindSet Reads() const override {
    return options_.early ? KindSet::Of<kind::PaneSummary, kind::EarlySummary>()
                          : KindSet::Of<kind::PaneSummary>();
  }
  KindSet Emits() const override { return KindSet::Of<kind::Bottleneck>(); }
  Status ProcessResults(const OutputBatch& in, OutputBatch& out) override;
  Status OnTimer(int64_t now_ms, OutputBatch& out) override;
  // Its timer work (sweeping what the watermark made stale) depends on the watermark alone: due
  // once the watermark moved since the last timer, never otherwise.
  int64_t NextTimerMs(int64_t now_ms) const override {
    return watermark_ms_ != timer_watermark_ms_ ? now_ms : kNoTimer;
  }
  Status Checkpoint(CheckpointWriter& writer) override;
  Status Restore(const CheckpointReader& reader) override;

  size_t tracked() const { return instances_.size(); }
  uint64_t dropped() const { return dropped_; }
  uint64_t expired() const { return expired_; }
  // Early judgements skipped because the pane before the open one had not closed yet.
  uint64_t early_skipped() const { return early_skipped_; }
  // The (type → severity) of the raised bottlenecks of one pair (tests, and a later API); early
  // raised ones (not yet confirmed) with their early severity.
  std::vector<std::pair<BottleneckType, BottleneckSeverity>> Active(std::string_view instance,
                                                                    std::string_view model) const;

  // The engine of `instance` by the `engines` option (or its name prefix).
  std::string EngineOf(std::string_view instance) const;

 private:
  static constexpr size_t kNumLatency = 3;  // ttft, tpot, e2e keep their sketches

  // One metric of one pane, without the sketch.
  struct PaneStat {
    uint64_t count = 0, events = 0, errors = 0;
    double sum = 0, max = 0, last = 0;
    int64_t last_time_ms = INT64_MIN;
  };
  struct PaneSlot {
    int64_t end_ms = INT64_MIN;  // the pane held; INT64_MIN: none
    std::array<PaneStat, kNumWindowMetrics> metrics{};
    std::array<PaneStat, kMaxSaturationGauges> saturation{};
    std::array<Aggregate, kNumLatency> latency;
  };
  enum class Phase : uint8_t { kIdle = 0, kPending, kRaised };
  struct TypeState {
    Phase phase = Phase::kIdle;
    BottleneckSeverity severity = BottleneckSeverity::kNone;  // published (raised) severity
    int64_t since_ms = 0;                                     // condition active since
    int64_t clear_since_ms = INT64_MIN;
    BottleneckSeverity candidate = BottleneckSeverity::kNone;  // another severity, held since
    int64_t candidate_since_ms = 0;
    bool primary = false;
    CausalPath path;
    Bottleneck last;  // the last published change (for "no data" resolutions, checkpoints)
    // Raised early (published with early = true) and not yet confirmed or retracted by a closed
    // pane: the open pane that carried it, the severity and active_since it was published with.
    bool early = false;
    BottleneckSeverity early_severity = BottleneckSeverity::kNone;
    int64_t early_end_ms = 0;
    int64_t early_since_ms = 0;
  };
  struct InstanceState {
    StringId instance = 0;
    StringId model = 0;
    std::string instance_name, model_name, engine;
    std::vector<PaneSlot> ring;
    int64_t newest_end_ms = INT64_MIN;  // newest pane end received
    int64_t judged_end_ms = INT64_MIN;  // newest pane end judged
    std::array<TypeState, kNumBottleneckTypes> types;
    bool due = false;           // in due_ (a pane arrived since the last judgement)
    bool changed = false;       // state changed since the last checkpoint
    bool checkpointed = false;  // a checkpoint record exists
    // `early` only: the open pane as observed so far (allocated on its first early summary), and
    // the event time it was observed up to.
    std::unique_ptr<PaneSlot> open;
    int64_t open_observed_ms = INT64_MIN;
    bool early_due = false;  // in early_due_ (an early summary arrived since the last judgement)
  };

  // The metric slot of a series' metric: [0, kNumWindowMetrics) the contract metrics,
  // kNumWindowMetrics + i saturation gauge i, -1 not read.
  int SlotOf(StringId metric) const;
  InstanceState* FindOrAdd(StringId instance, StringId model);
  void Ingest(const WindowSummary& summary, int slot);
  // The evidence window ending at `end_ms`; the pane ending at `open->end_ms` comes from `open`
  // (the open pane; nullptr: closed panes only).
  void BuildWindow(const InstanceState& s, int64_t end_ms, const PaneSlot* open, InstanceWindow* w);
  void IngestEarly(const WindowSummary& summary, int slot);
  // True when an early verdict could change something for `s` (a type neither raised nor early,
  // and `for` already held or zero).
  bool EarlyCanRaise(const InstanceState& s, int64_t at_ms) const;
  void JudgeEarly(std::vector<Bottleneck>& out);
  void ApplyEarly(InstanceState& s, const InstanceWindow& w, const RuleVerdicts& verdicts,
                  std::vector<Bottleneck>& out);
  void Judge(int64_t watermark_ms, std::vector<Bottleneck>& out);
  void Apply(InstanceState& s, const InstanceWindow& w, const RuleVerdicts& verdicts,
             std::vector<Bottleneck>& out);
  void Publish(InstanceState& s, BottleneckType type, const RuleVerdict* verdict,
               const InstanceWindow* w, BottleneckChange change, BottleneckState state,
               std::vector<Bottleneck>& out);
  void Expire(int64_t watermark_ms, std::vector<Bottleneck>& out);
  void UpdateGauges();
  static std::string RecordKey(const InstanceState& s);

  Options options_;
  Interner* interner_ = nullptr;
  // The model "_" (events without a model: the host source's gauges). Its saturation gauges count
  // for every model of the same instance that has none of its own in a pane.
  StringId any_model_ = 0;
  const Clock* clock_ = nullptr;
  std::vector<std::pair<StringId, int>> gauge_slots_;  // gauge name id → slot
  int64_t pane_ms_ = 0;                                // learned from the first summary
  size_t ring_size_ = 0;
  int64_t watermark_ms_ = INT64_MIN;
  int64_t timer_watermark_ms_ = INT64_MIN;                 // watermark_ms_ at the last OnTimer
  std::unordered_map<uint64_t, InstanceState> instances_;  // (instance << 32 | model)
  std::vector<uint64_t> due_;
  std::vector<uint64_t> early_due_;
  std::vector<std::string> deleted_records_;  // checkpoint records to delete
  uint64_t dropped_ = 0;
  uint64_t expired_ = 0;
  uint64_t early_skipped_ = 0;

  // Scratch, reused across steps (no allocation in steady state).
  std::vector<InstanceWindow> windows_;
  std::vector<std::pair<uint64_t, size_t>> order_;  // (model, index) for peer grouping
  std::vector<PeerSample> samples_;
  std::vector<PeerView> views_;
  std::vector<std::pair<double, uint32_t>> peer_scratch_;
  std::array<Aggregate, kNumLatency> merged_;

  std::array<Gauge*, kNumBottleneckTypes> active_gauges_{};
  std::array<Counter*, kNumBottleneckChanges> transitions_{};
  Gauge* instances_gauge_ = nullptr;
  Counter* dropped_counter_ = nullptr;
  Counter* expired_counter_ = nullptr;
  Counter* evaluations_ = nullptr;
};

}  // namespace inferscope
