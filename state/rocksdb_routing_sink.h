#pragma once

#include <memory>
#include <string_view>

#include "pipeline/config.h"
#include "pipeline/metrics.h"
#include "pipeline/sink.h"
#include "pipeline/status.h"

namespace inferscope {

class StateStore;

// RocksDbRoutingSink stores the routing weights it receives (kind::RoutingWeights from
// routing_learn) in the engine's StateStore: the latest per (model, strategy) (table
// `routing_weights`, state/routing_store.h), one atomic write per batch. The query node serves
// them at GET /v1/routing/weights.
//
// Options: none. Lifecycle: Open fails when the topology has no state directory.
// Concurrency: Write from the sink thread only.
class RocksDbRoutingSink final : public Sink {
 public:
  static constexpr std::string_view kName = "rocksdb_routing";
  static constexpr std::string_view kDescription =
      "Stores the latest routing weights per (model, strategy) in the RocksDB state store";

  static Result<std::unique_ptr<RocksDbRoutingSink>> Create(const ConfigNode& options);

  Status Open(const StageContext& ctx) override;
  KindSet Accepts() const override;
  Status Write(const OutputBatch& batch) override;

 private:
  StateStore* state_ = nullptr;
  Counter* written_ = nullptr;
  Counter* write_errors_ = nullptr;
};

}  // namespace inferscope
