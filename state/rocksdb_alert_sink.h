#pragma once

#include <memory>
#include <string_view>

#include "pipeline/config.h"
#include "pipeline/metrics.h"
#include "pipeline/sink.h"
#include "pipeline/status.h"

namespace inferscope {

class StateStore;

// RocksDbAlertSink stores every alert state change it receives in the engine's StateStore: the
// latest state per fingerprint (table `alerts`) and the change itself (table `alert_history`), in
// one atomic write per batch (key and value encodings in state/alert_store.h). Silenced alerts
// are stored too, marked `silenced`. The query node serves them at /v1/alerts.
//
// Options: none. Lifecycle: Open fails when the topology has no state directory.
// Concurrency: Write from the sink thread only.
class RocksDbAlertSink final : public Sink {
 public:
  static constexpr std::string_view kName = "rocksdb_alerts";
  static constexpr std::string_view kDescription =
      "Stores alert state changes (latest per fingerprint, and history) in the RocksDB state store";

  static Result<std::unique_ptr<RocksDbAlertSink>> Create(const ConfigNode& options);

  Status Open(const StageContext& ctx) override;
  KindSet Accepts() const override { return KindSet::Of<kind::Alert>(); }
  Status Write(const OutputBatch& batch) override;

 private:
  StateStore* state_ = nullptr;
  Counter* written_ = nullptr;
  Counter* write_errors_ = nullptr;
};

}  // namespace inferscope
