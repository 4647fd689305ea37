#pragma once

#include <memory>
#include <string_view>

#include "pipeline/config.h"
#include "pipeline/status.h"
#include "state/state_result_sink.h"

namespace inferscope {

// RocksDbRoutingSink stores the routing weights it receives (kind::RoutingWeights from
// routing_learn) in the engine's StateStore: the latest per (model, strategy) (table
// `routing_weights`, state/routing_store.h), one atomic write per batch. The query node serves
// them at GET /v1/routing/weights. Failed writes are held and checkpoints wait for the stored
// weights (state/state_result_sink.h).
//
// Options: `retry_backoff`, `retry_max_backoff` (state/held_writer.h).
class RocksDbRoutingSink final : public StateResultSink {
 public:
  static constexpr std::string_view kName = "rocksdb_routing";
  static constexpr std::string_view kDescription =
      "Stores the latest routing weights per (model, strategy) in the RocksDB state store";

  static Result<std::unique_ptr<RocksDbRoutingSink>> Create(const ConfigNode& options) {
    return CreateWith<RocksDbRoutingSink>(options);
  }
  explicit RocksDbRoutingSink(HeldWriter::Options options);

  KindSet Accepts() const override;

 private:
  size_t Count(const OutputBatch& batch) const override;
  Status Store(StateStore& state, const OutputBatch& batch) const override;
};

}  // namespace inferscope
