#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include <nlohmann/json.hpp>

#include "pipeline/clock.h"
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
// It also writes the batch's dead letters (StateTable::kDeadLetter: key be64(wall-clock ms)
// be64(sequence), value one JSON object with the event's fields, its publisher, the reason and the
// watermark) and is the engine's checkpoint writer: a batch carrying a checkpoint has its records
// written in one atomic, synced WriteBatch, after which the checkpoint is reported durable.
//
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
  bool WritesCheckpoints() const override { return true; }

 private:
  Status WriteDeadLetters(const OutputBatch& batch);

  Options options_;
  StateStore* state_ = nullptr;
  const Interner* interner_ = nullptr;
  const Clock* clock_ = nullptr;
  int64_t last_watermark_ = 0;  // the watermark last handed to the store
  uint64_t dead_letter_seq_ = 0;
  Counter* dead_letters_written_ = nullptr;
  Counter* panes_written_ = nullptr;
  Counter* write_errors_ = nullptr;
};

// The JSON form of a dead letter (the event in wire-protocol field names, plus "pub", "reason" and
// "watermark_ms"), as stored and served.
nlohmann::json DeadLetterJson(const DeadLetter& dead_letter, const Interner& names);

}  // namespace inferscope
