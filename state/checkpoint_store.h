#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "pipeline/checkpoint.h"
#include "pipeline/status.h"
#include "state/record_table.h"

namespace inferscope {

class StateStore;

// Checkpoint storage over the StateStore: the records of pipeline/checkpoint.h live in the
// `checkpoint` table (kCheckpointTable) under their full keys, `str(kind) str(stage) key`.
extern const RecordTable kCheckpointTable;  // "checkpoint"

// Writes `records` in one atomic WriteBatch; `sync` fsyncs the WAL before returning. What the
// state sink does with a PendingCheckpoint (state/rocksdb_state_sink.h).
Status WriteCheckpointRecords(StateStore& store, std::span<const CheckpointRecord> records,
                              bool sync = false);

// Reads one stage's records of the last durable checkpoint from the store.
class StateCheckpointReader final : public CheckpointReader {
 public:
  // `store` may be null (no state: nothing to restore); otherwise it must outlive the reader.
  StateCheckpointReader(std::string_view kind, std::string_view stage, const StateStore* store);
  Status ForEach(
      const std::function<Status(std::string_view, std::string_view)>& fn) const override;

 private:
  std::string prefix_;
  const StateStore* store_;
};

// The CheckpointStorage the Engine hands the executor (StageContext::checkpoints).
// Concurrency: thread-safe (readers only read the store).
class StateCheckpointStorage final : public CheckpointStorage {
 public:
  // `store` must outlive this object.
  explicit StateCheckpointStorage(const StateStore* store) : store_(store) {}
  std::unique_ptr<CheckpointReader> Reader(std::string_view kind,
                                           std::string_view stage) const override;

 private:
  const StateStore* store_;
};

}  // namespace inferscope
