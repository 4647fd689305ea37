#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "pipeline/bounded_queue.h"
#include "pipeline/operator.h"
#include "pipeline/sink.h"
#include "pipeline/source.h"
#include "pipeline/stage.h"
#include "pipeline/topology.h"

namespace inferscope {

// Executor runs a wired set of stages: one thread per source, one operator thread that runs every
// operator (chained, as Flink chains operators), and one thread per sink. An operator whose inputs
// name another operator receives that operator's results (ProcessResults) on the same thread,
// before any sink does.
//
//   source threads ──► [bounded batch queue] ──► operator thread ──► [bounded queue per sink] ──►
//   sink threads
//
// Event batches come from a fixed pool and go back to it after the operators ran, so ingest memory
// is bounded by the pool and the steady state allocates nothing per event. A full queue blocks its
// producer (back-pressure reaches the ZeroMQ socket and, through its high-water mark, the
// publisher); sources configured to shed use TryEmit and count what they drop.
//
// Lifecycle: Add* → Start (opens every stage, then starts threads; on failure nothing is left
// running) → Stop (sources stop, the operator thread drains the queue, operators Close and their
// final output reaches the sinks, sinks drain, Flush and Close). Stop is idempotent.
// Concurrency: Add*/Start/Stop from one control thread; metrics and endpoints from any thread.
class Executor {
 public:
  Executor(EngineSettings settings, StageContext base);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  void AddSource(std::string name, std::unique_ptr<Source> source);
  // `inputs` are names of sources and operators added before.
  void AddOperator(std::string name, std::unique_ptr<Operator> op,
                   const std::vector<std::string>& inputs);
  // `inputs` are names of operators added before.
  void AddSink(std::string name, std::unique_ptr<Sink> sink,
               const std::vector<std::string>& inputs);

  // Replaces the context stages are opened with (the engine adds the state store once it is open).
  void SetStageContext(StageContext base) { base_ = std::move(base); }

  Status Start();
  void Stop();
  // Stops without the graceful end: no last checkpoint of the open state and the operators' Close
  // output (flushed open windows) is dropped, not routed; what is already queued for the sinks is
  // still written. For an engine that lost the right to run (a cluster slot whose lease was taken:
  // cli/node.h), whose results must not diverge from the new owner's. Idempotent with Stop.
  void Abandon() {
    abandon_.store(true);
    Stop();
  }
  // Called with every checkpoint once it is durable (from the thread of the sink that wrote it,
  // before the next checkpoint can be taken, so the calls are in checkpoint order and the store
  // holds exactly that checkpoint while it runs). Set before Start; empty: none. The cluster
  // changelog (cli/changelog.h) uploads checkpoints through it.
  void SetCheckpointObserver(std::function<void(const PendingCheckpoint&)> observer) {
    checkpoint_observer_ = std::move(observer);
  }
  // Makes the operator thread look at its operators' timers now (any thread): for a change made
  // outside the stream (the API changed a workflow, say) that an operator's NextTimerMs now asks a
  // timer for, while the thread sleeps until input or a later timer.
  void Wake() { operator_queue_.Wake(); }

  // Resolved endpoint of a source or sink by name (empty if none).
  std::string Endpoint(const std::string& stage) const;
  // Stage names with their resolved endpoints, sources and sinks that bind something.
  std::vector<std::pair<std::string, std::string>> Endpoints() const;
  bool running() const { return running_.load(); }
  // Non-OK stage failures so far (a source's Run returning an error, say), for /v1/health.
  uint64_t stage_failures() const { return stage_failures_.load(); }

 private:
  struct SourceSlot;
  struct OperatorSlot;
  struct SinkSlot;
  class Output;

  void SourceLoop(SourceSlot& slot);
  void OperatorLoop();
  void SinkLoop(SinkSlot& slot);
  void RunOperators(const EventBatch& batch);
  // Takes a checkpoint and sends it to the checkpoint sink (operator thread). Skipped while the
  // previous one is not durable yet. What a checkpoint that was never durable held (an operator
  // failed while it was taken, or the sink gave it up) is carried into this one: operators clear
  // their "changed" marks when asked, so dropping it would lose those changes from every later
  // checkpoint.
  void TakeCheckpoint();
  void CheckpointDurable(const PendingCheckpoint& checkpoint);
  // The sink gave `checkpoint` up: keep its content for the next one (sink thread).
  void CheckpointFailed(const PendingCheckpoint& checkpoint);
  // Keeps the content of a checkpoint that was never durable for the next one; `older` content
  // is overridden by what carried_ already holds when `older` is true, else it overrides it.
  void Carry(std::vector<CheckpointRecord> records,
             std::vector<std::vector<AppliedSequence>> applied, bool older);
  // The kinds along every edge (the rule of ValidateTopology, for stages wired in code too).
  Status CheckEdges() const;
  Status RestoreStages();
  // Runs OnTimer of the operators whose NextTimerMs has come; false when none had.
  bool RunTimers(int64_t now_ms);
  // When the operator thread must next wake up without input (INT64_MAX: only for input), in
  // MonotonicNs: the earliest operator timer (not before `next_timer_ns`), the checkpoint when a
  // step ran since the last one (`changed`), the string sweep.
  int64_t NextWakeNs(int64_t now_ns, int64_t next_timer_ns, int64_t next_checkpoint_ns,
                     int64_t next_sweep_ns, bool changed) const;
  // Lets the Interner reclaim unused names (operator thread, between steps); false when a sink has
  // not yet written the results routed before the previous sweep (try again later).
  bool SweepStrings();
  void Route(OperatorSlot& op, OutputBatch& out);
  StageContext ContextFor(const std::string& name) const;
  void StopThreads();

  EngineSettings settings_;
  StageContext base_;
  std::vector<std::unique_ptr<SourceSlot>> sources_;
  std::vector<std::unique_ptr<OperatorSlot>> operators_;
  std::vector<std::unique_ptr<SinkSlot>> sinks_;

  BoundedQueue<EventBatchPtr> free_batches_;
  BoundedQueue<EventBatchPtr> operator_queue_;
  std::atomic<bool> stop_sources_{false};
  bool manual_clock_ = false;  // base_.clock is a ManualClock (set at Start)
  std::atomic<bool> running_{false};
  std::atomic<uint64_t> stage_failures_{0};
  std::vector<std::thread> source_threads_;
  std::thread operator_thread_;
  std::vector<std::thread> sink_threads_;

  // Checkpoints: the sink that writes them (null: none), whether one is in flight, and per source
  // the last applied sequence number per publisher (operator thread only).
  SinkSlot* checkpoint_sink_ = nullptr;
  // Sinks that must deliver their results before a checkpoint is written
  // (Sink::NeedsCheckpointBarrier).
  std::vector<SinkSlot*> barrier_sinks_;
  std::atomic<bool> checkpoint_in_flight_{false};
  std::atomic<bool> abandon_{false};  // Abandon: no final checkpoint, Close output dropped
  std::function<void(const PendingCheckpoint&)> checkpoint_observer_;
  uint64_t next_checkpoint_id_ = 1;
  std::vector<std::unordered_map<StringId, AppliedSequence>> applied_;
  std::vector<std::unordered_map<StringId, AppliedSequence>> checkpointed_;
  // Content of checkpoints that were never durable, merged into the next one (newer records of a
  // key replace older ones). Written by the operator thread and, through CheckpointFailed, by the
  // checkpoint sink's thread.
  std::mutex carried_mu_;
  std::vector<CheckpointRecord> carried_records_;
  std::vector<std::vector<AppliedSequence>> carried_applied_;
  std::atomic<bool> carried_pending_{false};  // carried_* hold something (read without the lock)
  Counter* checkpoints_failed_ = nullptr;
  Counter* checkpoints_ = nullptr;
  Counter* checkpoint_skipped_ = nullptr;
  Counter* checkpoints_unchanged_ = nullptr;
  Histogram* checkpoint_seconds_ = nullptr;
  Histogram* checkpoint_build_seconds_ = nullptr;
  Gauge* checkpoint_records_ = nullptr;
  Gauge* checkpoint_last_durable_ = nullptr;  // wall-clock seconds of the last durable one
  Gauge* checkpoint_bytes_ = nullptr;
  Counter* checkpoint_bytes_total_ = nullptr;
  Counter* batches_in_ = nullptr;
  Counter* events_in_ = nullptr;
  Histogram* operator_step_seconds_ = nullptr;
};

}  // namespace inferscope
