#pragma once

#include <atomic>
#include <string>
#include <string_view>

#include <vector>

#include "pipeline/checkpoint.h"
#include "pipeline/event.h"
#include "pipeline/stage.h"
#include "pipeline/status.h"

namespace inferscope {

// SourceOutput is a source's connection to the rest of the engine: a pool of reusable batches and
// the bounded queue in front of the operators.
//
// Concurrency: called from the source's own thread only.
class SourceOutput {
 public:
  virtual ~SourceOutput() = default;
  // A cleared batch from the pool. Blocks while every batch is in flight (back-pressure); returns
  // null once the engine is stopping.
  virtual EventBatchPtr Acquire() = 0;
  // Hands a filled batch downstream, blocking while the queue is full (back-pressure). Returns
  // false (the batch is then recycled) once the engine is stopping.
  virtual bool Emit(EventBatchPtr batch) = 0;
  // Like Emit but never blocks: returns false when the queue is full, leaving `batch` with the
  // caller, who sheds it and counts what it shed.
  virtual bool TryEmit(EventBatchPtr& batch) = 0;
  // Returns an unused batch to the pool.
  virtual void Release(EventBatchPtr batch) = 0;
};

// Source produces event batches on a thread of its own.
//
// Lifecycle: Open (engine thread; bind or connect here so that Endpoint() is known when the engine
// reports it is ready) → Run (source thread, until `stop` is set; it must notice within ~100 ms, or
// at once when Interrupt is called if it blocks longer) → Close (engine thread, after Run
// returned).
class Source {
 public:
  virtual ~Source() = default;
  virtual Status Open(const StageContext& ctx) = 0;
  virtual Status Run(SourceOutput& out, const std::atomic<bool>& stop) = 0;
  virtual void Close() {}
  // Called (from another thread) after `stop` is set: wakes Run from a blocking wait so that it
  // returns promptly. A source whose Run waits indefinitely for input (an idle engine should not
  // wake up to poll) implements it; one that polls `stop` at least every ~100 ms need not.
  virtual void Interrupt() {}
  // The endpoint actually bound, with a wildcard port resolved ("tcp://127.0.0.1:40123"); empty
  // when the source binds nothing.
  virtual std::string Endpoint() const { return {}; }
  // Restores the sequence numbers applied before the last durable checkpoint; called after Open.
  virtual Status Restore(const CheckpointReader& reader) {
    (void)reader;
    return Status::Ok();
  }
  // A checkpoint holding the effect of these messages (the last applied per publisher) is
  // durable. Called from another thread than Run; implementations hand it over safely.
  virtual void OnCheckpointDurable(const std::vector<AppliedSequence>& applied) { (void)applied; }
};

}  // namespace inferscope
