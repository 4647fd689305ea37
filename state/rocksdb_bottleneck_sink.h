#pragma once

#include <memory>
#include <string_view>

#include "pipeline/config.h"
#include "pipeline/metrics.h"
#include "pipeline/sink.h"
#include "pipeline/status.h"

namespace inferscope {

class StateStore;

// RocksDbBottleneckSink stores every bottleneck change it receives (kind::Bottleneck) in the
// engine's StateStore: the latest change per (instance, model, type) (table `bottlenecks`) and the
// change itself (table `bottleneck_history`, time-keyed: it expires after
// `state.record_retention.bottleneck_history`, default 7 d), in one atomic write per batch (key
// and value encodings in state/bottleneck_store.h). The query node serves them at
// GET /v1/bottlenecks.
//
// Options: none. Lifecycle: Open fails when the topology has no state directory.
// Concurrency: Write from the sink thread only.
class RocksDbBottleneckSink final : public Sink {
 public:
  static constexpr std::string_view kName = "rocksdb_bottlenecks";
  static constexpr std::string_view kDescription =
      "Stores bottleneck changes (latest per instance, model and type, and their history) in the "
      "RocksDB state store";

  static Result<std::unique_ptr<RocksDbBottleneckSink>> Create(const ConfigNode& options);

  Status Open(const StageContext& ctx) override;
  KindSet Accepts() const override;
  Status Write(const OutputBatch& batch) override;

 private:
  StateStore* state_ = nullptr;
  Counter* written_ = nullptr;
  Counter* write_errors_ = nullptr;
};

}  // namespace inferscope
