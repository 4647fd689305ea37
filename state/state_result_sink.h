#pragma once

#include <cstddef>
#include <memory>
#include <string_view>

#include "pipeline/metrics.h"
#include "pipeline/sink.h"
#include "pipeline/status.h"
#include "state/held_writer.h"

namespace inferscope {

class StateStore;

// StateResultSink is the base of the sinks that store one kind of operator result in the engine's
// StateStore (rocksdb_alerts, rocksdb_bottlenecks, rocksdb_routing): one atomic write per batch.
//
// What is stored there is the only copy of those results: an operator restored from a checkpoint
// does not emit again what it emitted before it. So
// - a failed write is held and retried until it succeeds (state/held_writer.h; options
//   `retry_backoff`, `retry_max_backoff`), never skipped;
// - the executor writes a checkpoint only once the sink stored every result routed before it
//   (NeedsCheckpointBarrier). The checkpoint's synced write then makes them durable too (one
//   store, one write-ahead log), so a crash after it cannot lose them, and a message is never
//   acknowledged before the results it caused are stored. A write given up at shutdown fails every
//   later checkpoint: the restart replays from before it.
// A batch the store refuses as invalid (InvalidArgument: its content, not the storage, is wrong)
// is counted (inferscope_sink_write_errors_total), logged and skipped.
//
// Lifecycle: Open fails when the topology has no state directory. Concurrency: Write from the sink
// thread only; Interrupt from any thread.
class StateResultSink : public Sink {
 public:
  Status Open(const StageContext& ctx) final;
  Status Write(const OutputBatch& batch) final;
  bool NeedsCheckpointBarrier() const final { return true; }
  void Interrupt() final { writer_.Interrupt(); }

 protected:
  struct Traits {
    std::string_view type;            // "rocksdb_alerts"
    std::string_view what;            // "alert state changes", in logs and errors
    std::string_view written_metric;  // counter of the results stored
    std::string_view written_help;
  };
  StateResultSink(const Traits& traits, HeldWriter::Options options)
      : traits_(traits), writer_(options) {}
  // Reads the options every such sink takes (`retry_backoff`, `retry_max_backoff`), refusing any
  // other, and makes a `T` (constructed from HeldWriter::Options) with them.
  template <typename T>
  static Result<std::unique_ptr<T>> CreateWith(const ConfigNode& node) {
    Result<HeldWriter::Options> options = ParseOptions(node, T::kName);
    if (!options.ok()) return options.status();
    return std::make_unique<T>(*options);
  }
  static Result<HeldWriter::Options> ParseOptions(const ConfigNode& node, std::string_view type);

  // How many results of `batch` this sink stores (0: nothing to write).
  virtual size_t Count(const OutputBatch& batch) const = 0;
  // Stores them in one atomic write.
  virtual Status Store(StateStore& state, const OutputBatch& batch) const = 0;

 private:
  const Traits traits_;
  HeldWriter writer_;
  StateStore* state_ = nullptr;
  Counter* written_ = nullptr;
};

}  // namespace inferscope
