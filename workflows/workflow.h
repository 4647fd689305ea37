#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "pipeline/clock.h"
#include "pipeline/result_kind.h"
#include "pipeline/status.h"

namespace inferscope {

// The states of an optimization workflow (docs/WORKFLOWS.md):
//
//   PENDING_APPROVAL ─approve─► APPROVED ─applied─► APPLIED ─verdict─► COMPLETED | ROLLED_BACK
//          │                       │                   └──error──────► FAILED
//          └─reject─► REJECTED ◄─reject┘ (also FAILED from APPROVED when the canary cannot run)
//
// A workflow created with auto_approve starts APPROVED. COMPLETED, ROLLED_BACK, FAILED and
// REJECTED are terminal.
enum class WorkflowState : uint8_t {
  kPendingApproval = 0,
  kApproved,
  kApplied,
  kCompleted,
  kRolledBack,
  kFailed,
  kRejected,
};
inline constexpr size_t kNumWorkflowStates = 7;
// "PENDING_APPROVAL", "APPROVED", "APPLIED", "COMPLETED", "ROLLED_BACK", "FAILED", "REJECTED".
std::string_view WorkflowStateName(WorkflowState state);
std::optional<WorkflowState> ParseWorkflowState(std::string_view name);
bool IsTerminal(WorkflowState state);
// Whether `from` → `to` is a transition of the state machine above.
bool IsLegalTransition(WorkflowState from, WorkflowState to);

// A metric a workflow judges: a request series of window_aggregate (`ttft_ms`, `tpot_ms`,
// `e2e_ms`, ... — judged by a rank test of its sketches) or `error_ratio` (errors per request,
// judged by a test of two proportions on the error series' events and errors).
struct WorkflowMetric {
  std::string metric;
  double quantile = 0.5;        // the quantile whose relative change is the effect size
  bool lower_is_better = true;  // "direction": "decrease" (true) or "increase"
};
inline constexpr std::string_view kErrorRatioMetric = "error_ratio";

// One entry of a workflow's history: it entered `state` at `at_ms` (wall clock), by whom or why.
struct WorkflowTransition {
  WorkflowState state = WorkflowState::kPendingApproval;
  int64_t at_ms = 0;
  std::string by;  // "api:<actor>" or "canary"
  std::string note;
};

// One optimization workflow: a configuration change to one instance, and the canary that verifies
// it from the live stream.
struct Workflow {
  std::string id;  // 16 hex digits, assigned by WorkflowRegistry::Create
  std::string instance;
  std::string model;
  std::string engine;                                       // informational (vllm, sglang, tgi)
  std::vector<std::pair<std::string, std::string>> change;  // option → value, e.g. --max-num-seqs
  std::string description;
  WorkflowMetric target;               // must improve
  std::vector<WorkflowMetric> guards;  // must not regress
  int64_t baseline_ms = 0;             // longest baseline before the change (event time)
  int64_t canary_ms = 0;               // planned canary period after the change (event time)
  bool auto_approve = false;
  std::string created_by;

  WorkflowState state = WorkflowState::kPendingApproval;
  int64_t created_at_ms = 0;  // wall clock
  int64_t updated_at_ms = 0;
  // Event time (ms since the epoch) at which the change took effect; set by "applied".
  std::optional<int64_t> applied_at_ms;
  double progress = 0;  // fraction of the canary period judged, 0..1
  std::string reason;   // why it was rejected, rolled back or failed
  std::string verdict;  // the canary verdict ("improved", "regressed", "no_effect") once judged
  nlohmann::json evidence = nlohmann::json::object();  // the last look (docs/WORKFLOWS.md)
  std::vector<WorkflowTransition> history;             // oldest first, one per state entered
};

// One state change of a workflow, as the registry records it and the workflow_canary operator
// emits it (kind::WorkflowChange) for the stream sink `zmq_workflows`.
struct WorkflowChange {
  uint64_t seq = 0;  // registry-wide, increasing (per process)
  std::string id;
  std::string instance;
  std::string model;
  WorkflowState state = WorkflowState::kPendingApproval;
  int64_t at_ms = 0;  // wall clock
  std::string by;
  std::string note;
  std::string verdict;  // set with COMPLETED / ROLLED_BACK
  double progress = 0;
};

namespace kind {
struct WorkflowChange {
  using Value = ::inferscope::WorkflowChange;
  static constexpr std::string_view kName = "workflow_change";
  static constexpr std::string_view kDescription =
      "A state change of an optimization workflow (workflows/workflow.h)";
};
}  // namespace kind

// Limits of a workflow request.
inline constexpr size_t kMaxWorkflowGuards = 8;
inline constexpr size_t kMaxWorkflowChanges = 32;
inline constexpr size_t kMaxWorkflowTextBytes = 4096;
inline constexpr int64_t kMaxWorkflowPeriodMs = 7LL * 24 * 3600 * 1000;

// The API shape: every field above, "state" as its name, "stage" (approval | baseline | canary |
// done), times as epoch ms, "applied_at" null until applied.
nlohmann::json WorkflowToJson(const Workflow& w);
// Parses a workflow as POST /v1/workflows receives it (docs/WORKFLOWS.md): "instance", "model"
// (required), "engine", "change" ({option: value}), "description", "target" ({"metric",
// "quantile", "direction"}; default ttft_ms p50 decrease), "guards" ([...]; default e2e_ms p95
// and error_ratio, both decrease), "baseline" and "canary" (durations "10m" or ms; defaults 10m,
// 10m), "auto_approve", "created_by". Unknown fields are refused. InvalidArgument naming the field
// on any problem. The state fields are not read.
Result<Workflow> WorkflowFromRequest(const nlohmann::json& body);
// Parses a stored workflow (WorkflowToJson's output) back.
Result<Workflow> WorkflowFromStored(const nlohmann::json& stored);

// Where WorkflowRegistry keeps its workflows across restarts: one JSON text per workflow id.
// Implemented over the StateStore (its `workflows` table) in state/workflow_store.h.
// Concurrency: WorkflowRegistry serialises its calls.
class WorkflowStore {
 public:
  virtual ~WorkflowStore() = default;
  // Calls `fn(id, json_text)` for every stored workflow, in id order, until it returns false.
  virtual Status Scan(const std::function<bool(std::string_view, std::string_view)>& fn) const = 0;
  virtual Status Put(std::string_view id, std::string json_text) = 0;
  virtual Status Delete(std::string_view id) = 0;
};

// WorkflowRegistry holds the engine's optimization workflows: the query API creates, approves,
// rejects them and records that the change was applied; the workflow_canary operator reads the
// active ones and records progress and the verdict.
//
// Lifecycle: construct → Load (reads the stored workflows) → use. With a store every change is
// written through before it is made visible, so a restarted engine finds every workflow in the
// state it reached.
// Concurrency: thread-safe (a shared mutex); version() is lock-free, so the operator thread can
// tell cheaply whether anything changed since it last looked.
// Retention: a terminal workflow is kept kTerminalRetentionMs after its last change, then deleted
// (at Load and Create); at most kMaxWorkflows are held: Create refuses more with Unavailable
// (terminal ones past retention are deleted first), so nothing grows with uptime.
class WorkflowRegistry {
 public:
  static constexpr size_t kMaxWorkflows = 10'000;
  static constexpr int64_t kTerminalRetentionMs = 30LL * 24 * 3600 * 1000;

  // `store` may be null (memory only); `clock` must outlive the registry.
  WorkflowRegistry(WorkflowStore* store, const Clock* clock) : store_(store), clock_(clock) {}

  Status Load();
  // Validates, assigns the id and creation time, starts it PENDING_APPROVAL (APPROVED with
  // auto_approve), stores and adds it. Unavailable when kMaxWorkflows are held.
  Result<Workflow> Create(Workflow workflow);
  // The API transitions. NotFound for an unknown id; FailedPrecondition when the workflow is not
  // in a state the transition leaves from (the message names both).
  Result<Workflow> Approve(std::string_view id, std::string_view by);
  Result<Workflow> Reject(std::string_view id, std::string_view by, std::string_view reason);
  // The change took effect at event time `applied_at_ms` (APPROVED → APPLIED).
  Result<Workflow> MarkApplied(std::string_view id, int64_t applied_at_ms, std::string_view by);
  // The canary's verdict: APPLIED (or APPROVED, for FAILED) → `to` (COMPLETED, ROLLED_BACK or
  // FAILED) with the verdict name, the evidence and the reason.
  Result<Workflow> Finish(std::string_view id, WorkflowState to, std::string_view verdict,
                          nlohmann::json evidence, std::string_view reason);
  // The canary's progress after a look (APPLIED only; FailedPrecondition otherwise).
  Status RecordProgress(std::string_view id, double progress, nlohmann::json evidence);

  std::optional<Workflow> Get(std::string_view id) const;
  // Every workflow, by id.
  std::vector<Workflow> List() const;
  // The workflows not in a terminal state, by id.
  std::vector<Workflow> Active() const;
  // The state changes recorded after `*seq` (oldest first), at most kMaxPendingChanges are kept:
  // a reader further behind loses the oldest (returned in *dropped). Sets *seq to the newest.
  static constexpr size_t kMaxPendingChanges = 4096;
  std::vector<WorkflowChange> ChangesSince(uint64_t* seq, uint64_t* dropped) const;
  // The seq of the newest change (0: none yet).
  uint64_t last_change_seq() const;
  // Incremented by every change of state (not by progress): the operator re-reads Active() when
  // it moved.
  uint64_t version() const { return version_.load(std::memory_order_acquire); }
  size_t size() const;
  // Called after every recorded change (with the registry's lock held: it must be quick and must
  // not call back into the registry), so that the engine can wake the operator thread, which
  // otherwise sleeps until input. Set before the registry is shared; null: none.
  void SetOnChange(std::function<void()> on_change) { on_change_ = std::move(on_change); }

 private:
  // Moves `id` to `to` (mu_ held): checks the transition, applies `edit`, writes through.
  Result<Workflow> Transition(std::string_view id, WorkflowState to, std::string_view by,
                              std::string_view note, const std::function<void(Workflow&)>& edit);
  Status Persist(const Workflow& w);
  void RecordChange(const Workflow& w);  // mu_ held
  Status DropExpired(int64_t now_ms);

  WorkflowStore* store_;
  const Clock* clock_;
  mutable std::shared_mutex mu_;
  std::map<std::string, Workflow, std::less<>> workflows_;
  std::atomic<uint64_t> version_{0};
  uint64_t next_id_salt_ = 0;
  int64_t last_drop_ms_ = INT64_MIN;    // when DropExpired last scanned
  std::deque<WorkflowChange> changes_;  // the latest kMaxPendingChanges
  uint64_t last_seq_ = 0;
  std::function<void()> on_change_;
};

}  // namespace inferscope
