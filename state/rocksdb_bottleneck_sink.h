#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "pipeline/clock.h"
#include "pipeline/config.h"
#include "pipeline/metrics.h"
#include "pipeline/sink.h"
#include "pipeline/status.h"

namespace inferscope {

class StateStore;

// RocksDbBottleneckSink stores every bottleneck change it receives (kind::Bottleneck) in the
// engine's StateStore: the latest change per (instance, model, type) (table `bottlenecks`) and the
// change itself (table `bottleneck_history`), in one atomic write per batch (state/
// bottleneck_store.h). The query node serves them at GET /v1/bottlenecks. At most once a minute
// (wall clock) it prunes history older than `retention` and resolved records resolved before it.
//
// Options: `retention` (default 24h; >= 1m). Lifecycle: Open fails when the topology has no
// state directory. Concurrency: Write from the sink thread only.
class RocksDbBottleneckSink final : public Sink {
 public:
  static constexpr std::string_view kName = "rocksdb_bottlenecks";
  static constexpr std::string_view kDescription =
      "Stores bottleneck changes (latest per instance, model and type, and recent history) in the "
      "RocksDB state store";

  static Result<std::unique_ptr<RocksDbBottleneckSink>> Create(const ConfigNode& options);
  explicit RocksDbBottleneckSink(int64_t retention_ms) : retention_ms_(retention_ms) {}

  Status Open(const StageContext& ctx) override;
  KindSet Accepts() const override;
  Status Write(const OutputBatch& batch) override;

 private:
  int64_t retention_ms_;
  StateStore* state_ = nullptr;
  const Clock* clock_ = nullptr;
  int64_t next_prune_ms_ = 0;
  Counter* written_ = nullptr;
  Counter* pruned_ = nullptr;
  Counter* write_errors_ = nullptr;
};

}  // namespace inferscope
