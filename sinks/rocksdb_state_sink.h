#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "pipeline/config.h"
#include "pipeline/metrics.h"
#include "pipeline/sink.h"
#include "pipeline/status.h"

namespace inferscope {

class Interner;
class StateStore;

// RocksDbStateSink persists every window summary it receives as a pane of the engine's StateStore
// (ctx.state), together with the batch's watermark, so that the query node can answer from it.
//
// Options: `max_batch_panes` (default 10000, 1..10000000): a batch larger than this is written in
// several atomic WriteBatches; only the last one advances the stored watermark, so the watermark
// never claims panes that are not yet written.
// Lifecycle: Open fails with InvalidArgument when the topology has no state directory (ctx.state is
// null). Concurrency: Write is called from the sink thread only.
class RocksDbStateSink final : public Sink {
 public:
  static constexpr std::string_view kName = "rocksdb_state";
  static constexpr std::string_view kDescription =
      "Writes window summaries (panes) and the watermark to the engine's RocksDB state store";

  struct Options {
    int64_t max_batch_panes = 10'000;  // panes per WriteBatch; >= 1
    Status Validate() const;
  };

  static Result<std::unique_ptr<RocksDbStateSink>> Create(const ConfigNode& options);
  explicit RocksDbStateSink(Options options) : options_(options) {}

  Status Open(const StageContext& ctx) override;
  Status Write(const OutputBatch& batch) override;

 private:
  Options options_;
  StateStore* state_ = nullptr;
  const Interner* interner_ = nullptr;
  int64_t last_watermark_ = 0;  // the watermark last handed to the store
  Counter* panes_written_ = nullptr;
  Counter* write_errors_ = nullptr;
};

}  // namespace inferscope
