#pragma once

#include <memory>
#include <string_view>

#include "pipeline/config.h"
#include "pipeline/status.h"
#include "state/state_result_sink.h"

namespace inferscope {

// RocksDbBottleneckSink stores every bottleneck change it receives (kind::Bottleneck) in the
// engine's StateStore: the latest change per (instance, model, type) (table `bottlenecks`) and the
// change itself (table `bottleneck_history`, time-keyed: it expires after
// `state.record_retention.bottleneck_history`, default 7 d), in one atomic write per batch (key
// and value encodings in state/bottleneck_store.h). The query node serves them at
// GET /v1/bottlenecks. Failed writes are held and checkpoints wait for the stored changes
// (state/state_result_sink.h).
//
// Options: `retry_backoff`, `retry_max_backoff` (state/held_writer.h).
class RocksDbBottleneckSink final : public StateResultSink {
 public:
  static constexpr std::string_view kName = "rocksdb_bottlenecks";
  static constexpr std::string_view kDescription =
      "Stores bottleneck changes (latest per instance, model and type, and their history) in the "
      "RocksDB state store";

  static Result<std::unique_ptr<RocksDbBottleneckSink>> Create(const ConfigNode& options) {
    return CreateWith<RocksDbBottleneckSink>(options);
  }
  explicit RocksDbBottleneckSink(HeldWriter::Options options);

  KindSet Accepts() const override;

 private:
  size_t Count(const OutputBatch& batch) const override;
  Status Store(StateStore& state, const OutputBatch& batch) const override;
};

}  // namespace inferscope
