#pragma once

#include <memory>
#include <string_view>

#include "pipeline/config.h"
#include "pipeline/status.h"
#include "state/state_result_sink.h"

namespace inferscope {

// RocksDbAlertSink stores every alert state change it receives in the engine's StateStore: the
// latest state per fingerprint (table `alerts`) and the change itself (table `alert_history`), in
// one atomic write per batch (key and value encodings in state/alert_store.h). Silenced alerts
// are stored too, marked `silenced`. The query node serves them at /v1/alerts. Failed writes are
// held and checkpoints wait for the stored alerts (state/state_result_sink.h).
//
// Options: `retry_backoff`, `retry_max_backoff` (state/held_writer.h).
class RocksDbAlertSink final : public StateResultSink {
 public:
  static constexpr std::string_view kName = "rocksdb_alerts";
  static constexpr std::string_view kDescription =
      "Stores alert state changes (latest per fingerprint, and history) in the RocksDB state store";

  static Result<std::unique_ptr<RocksDbAlertSink>> Create(const ConfigNode& options) {
    return CreateWith<RocksDbAlertSink>(options);
  }
  explicit RocksDbAlertSink(HeldWriter::Options options);

  KindSet Accepts() const override;

 private:
  size_t Count(const OutputBatch& batch) const override;
  Status Store(StateStore& state, const OutputBatch& batch) const override;
};

}  // namespace inferscope
