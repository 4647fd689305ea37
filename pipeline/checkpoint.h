#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/event.h"
#include "pipeline/status.h"

namespace inferscope {

// Checkpoints: every `engine.checkpoint_interval` the operator thread asks each operator (and the
// executor records each source's applied sequence numbers) for the state that changed since the
// previous checkpoint, as CheckpointRecords. The records travel to the state sink behind every
// result emitted before them and are written there in one atomic, synced write (state/: the
// `checkpoint` table of the StateStore); only then is the checkpoint durable (and acknowledged to
// publishers). A checkpoint the sink gives up (on_failed) is merged into the next one, so the
// "changed since the previous checkpoint" marks operators clear when asked lose nothing. On start,
// stages restore from the records found (CheckpointStorage).
//
// Record keys are `str(kind) str(stage) key`, kind "op" or "src", so one stage's records are one
// key range. This header is all stages see of checkpoints: it does not depend on the store.

// One record of a checkpoint: a Put, or a Delete when `value` is empty. `key` is the full key,
// CheckpointPrefix(kind, stage) followed by the stage's own key.
struct CheckpointRecord {
  std::string key;
  std::optional<std::string> value;
};

// One checkpoint on its way from the operator thread to the sink that writes it.
struct PendingCheckpoint {
  uint64_t id = 0;
  int64_t started_ns = 0;  // monotonic time it was taken
  std::vector<CheckpointRecord> records;
  // Per source index: the last sequence number applied per publisher when it was taken.
  std::vector<std::vector<AppliedSequence>> applied;
  // Called by the sink once `records` are durable (from the sink's thread).
  std::function<void(const PendingCheckpoint&)> on_durable;
  // Called by the sink instead when it gives the checkpoint up without writing it (from the sink's
  // thread): it was not durable and nothing it covers may be acknowledged. The executor carries its
  // records and sequence numbers over into the next checkpoint.
  std::function<void(const PendingCheckpoint&)> on_failed;
};

// What stands before a checkpoint in the queue of every sink that needs a barrier
// (Sink::NeedsCheckpointBarrier): the executor writes the checkpoint only once each of those sinks
// has handled every batch routed to it before the barrier, so that a restart from the checkpoint
// never skips results such a sink had not delivered yet.
struct CheckpointBarrier {
  std::atomic<int> remaining{0};    // sinks that have not passed it yet
  std::atomic<bool> failed{false};  // a sink has failed a write (ever)
  // Called once, by the thread of the last sink to pass, with whether every sink delivered.
  std::function<void(bool delivered)> on_passed;

  // Called by each barrier sink's thread when it reaches the barrier.
  void Pass(bool delivered) {
    if (!delivered) failed.store(true);
    if (remaining.fetch_sub(1) == 1) on_passed(!failed.load());
  }
};

// Receives one stage's record writes for a checkpoint (Operator::Checkpoint).
class CheckpointWriter {
 public:
  virtual ~CheckpointWriter() = default;
  // Stores `value` under the stage's `key`, replacing what an earlier checkpoint stored.
  virtual void Put(std::string_view key, std::string value) = 0;
  // Removes the stage's `key` (no effect when absent).
  virtual void Delete(std::string_view key) = 0;
};

// Reads one stage's records of the last durable checkpoint (Operator::Restore, Source::Restore).
class CheckpointReader {
 public:
  virtual ~CheckpointReader() = default;
  // Calls `fn(key, value)` for every record of the stage, in key order; stops at the first error.
  virtual Status ForEach(
      const std::function<Status(std::string_view, std::string_view)>& fn) const = 0;
};

// Where the last durable checkpoint is read back from on start. Implemented over the StateStore
// in state/checkpoint_store.h; the Engine (cli/) hands it to the executor in
// StageContext::checkpoints.
class CheckpointStorage {
 public:
  virtual ~CheckpointStorage() = default;
  // A reader of the records of stage `stage` of kind `kind` ("op" or "src").
  virtual std::unique_ptr<CheckpointReader> Reader(std::string_view kind,
                                                   std::string_view stage) const = 0;
};

// The CheckpointWriter the executor hands each stage: appends the stage's writes, with their full
// keys, to `*out` (the pending checkpoint's records).
class CheckpointCollector final : public CheckpointWriter {
 public:
  CheckpointCollector(std::string_view kind, std::string_view stage,
                      std::vector<CheckpointRecord>* out);
  void Put(std::string_view key, std::string value) override;
  void Delete(std::string_view key) override;

 private:
  std::string prefix_;
  std::vector<CheckpointRecord>* out_;
};

// The checkpoint record value of a source's last applied sequence number (the key is the
// publisher id). Version 1: byte 0x01, incarnation and seq as big-endian uint64, then, when there
// is a previous incarnation, its incarnation and last seq (17 or 33 bytes). DecodeAppliedSequence
// also reads the 8-byte records of earlier versions (seq only: incarnation 0). `publisher` is not
// part of the value and is left 0.
std::string EncodeAppliedSequence(const AppliedSequence& applied);
Result<AppliedSequence> DecodeAppliedSequence(std::string_view value);

// The key prefix of one stage's checkpoint records.
std::string CheckpointPrefix(std::string_view kind, std::string_view stage);

}  // namespace inferscope
