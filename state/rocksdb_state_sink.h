#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "pipeline/clock.h"
#include "pipeline/config.h"
#include "pipeline/dead_letter_json.h"  // DeadLetterJson, as stored
#include "pipeline/metrics.h"
#include "pipeline/sink.h"
#include "pipeline/status.h"
#include "state/held_writer.h"
#include "state/record_table.h"

namespace inferscope {

class Interner;
class StateStore;

// RocksDbStateSink persists every window summary it receives as a pane of the engine's StateStore
// (ctx.state), together with the batch's watermark, so that the query node can answer from it.
//
// Options: `max_batch_panes` (default 10000, 1..10000000): a batch larger than this is written in
// several atomic WriteBatches; only the last one advances the stored watermark, so the watermark
// never claims panes that are not yet written.
// It also writes the batch's dead letters (kDeadLetterTable: key be64(wall-clock ms)
// be64(sequence), value one JSON object with the event's fields, its publisher, the reason and the
// watermark) and is the engine's checkpoint writer: a batch carrying a checkpoint has its records
// written in one atomic, synced WriteBatch, after which the checkpoint is reported durable.
//
// Storage failures are held, not skipped (state/held_writer.h): a write RocksDB fails is retried,
// the same write again, until it succeeds (options `retry_backoff`, default 100 ms, doubling up to
// `retry_max_backoff`, default 5 s); meanwhile the sink writes nothing after it, so back-pressure
// reaches the sources and a checkpoint queued behind the failed write is neither written nor
// acknowledged before it. When the engine stops (Interrupt) while a write is held, the sink gives
// it up and then writes nothing more: every later checkpoint is reported failed (on_failed), so the
// restart resumes from the last durable checkpoint and acknowledged publishers resend the rest.
//
// Lifecycle: Open fails with InvalidArgument when the topology has no state directory (ctx.state is
// null). Concurrency: Write is called from the sink thread only; Interrupt from any thread.
// Dead letters: key be64(wall-clock ms) be64(sequence), value JSON (see above).
// Dead letters are time-keyed (state/record_table.h): kept 7 days by default
// (`state.record_retention.dead_letter`).
extern const RecordTable kDeadLetterTable;  // "dead_letter"
inline constexpr int64_t kDefaultDeadLetterRetentionMs = 7LL * 24 * 3600 * 1000;

class RocksDbStateSink final : public Sink {
 public:
  static constexpr std::string_view kName = "rocksdb_state";
  static constexpr std::string_view kDescription =
      "Writes window summaries (panes) and the watermark to the engine's RocksDB state store";

  struct Options {
    int64_t max_batch_panes = 10'000;  // panes per WriteBatch; >= 1
    HeldWriter::Options retry;         // `retry_backoff`, `retry_max_backoff`
    Status Validate() const;
  };

  static Result<std::unique_ptr<RocksDbStateSink>> Create(const ConfigNode& options);
  explicit RocksDbStateSink(Options options) : options_(options), writer_(options.retry) {}

  Status Open(const StageContext& ctx) override;
  // Pane summaries (the panes table, series index and watermark) and dead letters. Not window
  // summaries: the panes table keys a summary by series and start only.
  KindSet Accepts() const override { return KindSet::Of<kind::PaneSummary, kind::DeadLetter>(); }
  Status Write(const OutputBatch& batch) override;
  bool WritesCheckpoints() const override { return true; }
  void Interrupt() override;

 private:
  Status WriteDeadLetters(const OutputBatch& batch);

  Options options_;
  StateStore* state_ = nullptr;
  const Interner* interner_ = nullptr;
  const Clock* clock_ = nullptr;
  int64_t last_watermark_ = 0;  // the watermark last handed to the store
  uint64_t dead_letter_seq_ = 0;
  HeldWriter writer_;
  Counter* dead_letters_written_ = nullptr;
  Counter* panes_written_ = nullptr;
};

}  // namespace inferscope
