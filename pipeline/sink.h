#pragma once

#include <string>

#include "pipeline/result_kind.h"
#include "pipeline/stage.h"
#include "pipeline/status.h"
#include "pipeline/summary.h"

namespace inferscope {

// Sink consumes operator results on a thread of its own, behind a bounded queue.
//
// Lifecycle: Open (engine thread) → Write* (sink thread) → Flush → Close (engine thread).
// A Write failure is counted and logged by the engine; the sink decides whether to retry.
class Sink {
 public:
  virtual ~Sink() = default;
  virtual Status Open(const StageContext& ctx) = 0;
  // The result kinds this sink consumes (pipeline/result_kind.h); topology validation refuses an
  // input operator that emits none of them. Write sees whole batches and reads these kinds only.
  virtual KindSet Accepts() const = 0;
  virtual Status Write(const OutputBatch& batch) = 0;
  virtual Status Flush() { return Status::Ok(); }
  // Whether the sink writes checkpoints: batches with `checkpoint` set reach it, and it calls
  // `checkpoint->on_durable` once their records are durable. At most one sink of a topology does.
  virtual bool WritesCheckpoints() const { return false; }
  // Whether results routed to this sink must have been delivered (Write returned OK) before a
  // later checkpoint may be written: for a sink whose output is the only copy of the results
  // outside the engine (jetstream_results), since a restart from a checkpoint does not emit again
  // what was emitted before it. The executor then sends the sink a barrier batch (`barrier` set,
  // no results; Write is not called for it) ahead of each checkpoint and writes the checkpoint once
  // every such sink has reached its barrier. A Write that fails means its results are not
  // delivered and will not be: from then on no checkpoint is written (each is reported failed), so
  // a restart replays from before them.
  virtual bool NeedsCheckpointBarrier() const { return false; }
  // Called from the engine's control thread when the engine starts to stop, before the sink's queue
  // drains: a sink blocked retrying a failed write gives it up (and then writes nothing more, so no
  // later checkpoint claims what was not written) instead of holding the shutdown forever.
  virtual void Interrupt() {}
  virtual void Close() {}
  // The endpoint actually bound ("tcp://127.0.0.1:40124"); empty when the sink binds nothing.
  virtual std::string Endpoint() const { return {}; }
};

}  // namespace inferscope
