#pragma once

#include <cstdint>

#include "pipeline/checkpoint.h"
#include "pipeline/event.h"
#include "pipeline/result_kind.h"
#include "pipeline/stage.h"
#include "pipeline/status.h"
#include "pipeline/summary.h"

namespace inferscope {

// Operator turns event batches (or other operators' results) into results of declared kinds.
// Mutable per-series state lives in the operator's own tables, sized by the series it has seen.
//
// Lifecycle: Open → Process / OnTimer (interleaved) → Close.
// Concurrency: every call comes from the engine's operator thread; no locking needed.
class Operator {
 public:
  virtual ~Operator() = default;
  virtual Status Open(const StageContext& ctx) = 0;
  // Consumes one batch; appends whatever it completes to `out`.
  virtual Status Process(const EventBatch& batch, OutputBatch& out) = 0;
  // The kinds this operator reads (pipeline/result_kind.h): kind::Event for the event batches of
  // the sources its topology inputs name (Process), and result kinds of the operators its inputs
  // name (ProcessResults). Topology validation refuses an input that emits none of them.
  virtual KindSet Reads() const { return KindSet::Of<kind::Event>(); }
  // The result kinds this operator may put into an OutputBatch (it emits no other). May depend on
  // the operator's options; fixed once it is created.
  virtual KindSet Emits() const = 0;
  // Whether the operator reads other operators' results (any kind besides events).
  bool ReadsResults() const { return !Reads().Without(KindSet::Of<kind::Event>()).empty(); }
  // Consumes the results an upstream operator emitted in one step (chained on the same thread,
  // before they reach any sink); appends whatever it completes to `out`.
  virtual Status ProcessResults(const OutputBatch& in, OutputBatch& out) {
    (void)in;
    (void)out;
    return Status::Internal("this operator does not read results");
  }
  // Processing-time timer: called on the operator thread once the time NextTimerMs asked for has
  // come (at most every engine.timer_interval, 100 ms by default), for work that time alone
  // drives (idle watermarks, expiry, publishing held-back changes).
  virtual Status OnTimer(int64_t now_ms, OutputBatch& out) {
    (void)now_ms;
    (void)out;
    return Status::Ok();
  }
  // NextTimerMs's answer when no timer is needed until new input arrives.
  static constexpr int64_t kNoTimer = INT64_MAX;
  // When OnTimer should next run, in processing time (Clock::NowMs), asked after every step of the
  // operator thread (a batch, a chained result batch or a timer): a time <= `now_ms` means at the
  // next tick, kNoTimer means not until input arrives. An idle engine sleeps until the earliest
  // answer, so an operator with nothing that time can change should say kNoTimer. The default
  // asks for every tick (OnTimer about every engine.timer_interval).
  virtual int64_t NextTimerMs(int64_t now_ms) const { return now_ms; }
  // Writes the state changed since the previous checkpoint (see pipeline/checkpoint.h). Called on
  // the operator thread between batches. Stateless operators write nothing.
  virtual Status Checkpoint(CheckpointWriter& writer) {
    (void)writer;
    return Status::Ok();
  }
  // Restores the state of the last durable checkpoint; called after Open, before any input.
  virtual Status Restore(const CheckpointReader& reader) {
    (void)reader;
    return Status::Ok();
  }
  // Shutdown: emits what the operator is configured to flush.
  virtual Status Close(OutputBatch& out) {
    (void)out;
    return Status::Ok();
  }
};

}  // namespace inferscope
