#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

#include "pipeline/config.h"
#include "pipeline/metrics.h"
#include "pipeline/status.h"

namespace inferscope {

class StateStore;

// HeldWriter runs a sink's writes to the StateStore so that storage failures are held, not
// skipped (LevelDB's `bg_error_` discipline; docs/ARCHITECTURE.md, "Storage failures"): a write
// RocksDB fails is kept and retried, the same write again, with a backoff doubling from
// `retry_backoff` (default 100 ms) up to `retry_max_backoff` (default 5 s), until it succeeds
// (the store reopens itself before a write that follows a failed one: StateStore::Resume).
// Meanwhile the sink's thread is in Write, so it writes nothing after it and back-pressure reaches
// the sources; the store's BackgroundError() names the writer (health `degraded`) until the write
// succeeds. A write the store refuses as invalid (InvalidArgument: its content, not the storage, is
// wrong) is not retried: it is counted and returned. When the engine stops (Interrupt) while a
// write is held, the write is given up (given_up() from then on): the sink must then write nothing
// more (rocksdb_state: so that no later checkpoint claims what was not written).
//
// Concurrency: Write from the sink thread only; Interrupt from any thread.
class HeldWriter {
 public:
  struct Options {
    // First wait before retrying a failed write (>= 1 ms); doubles per failed retry.
    int64_t retry_backoff_ms = 100;
    // Longest wait between retries (>= retry_backoff_ms).
    int64_t retry_max_backoff_ms = 5'000;
    // `type` names the sink type in the error.
    Status Validate(std::string_view type) const;
  };
  // Reads a sink's `retry_backoff` and `retry_max_backoff` into `*out` (absent: its values). The
  // caller checks the sink's known fields.
  static Status ParseOptions(const ConfigNode& node, std::string_view type, Options* out);

  explicit HeldWriter(Options options) : options_(options) {}
  HeldWriter(const HeldWriter&) = delete;
  HeldWriter& operator=(const HeldWriter&) = delete;

  // `writer` names the holder in the store's background error ("sink 'alert_store'"), `type` the
  // sink type in log lines; every failed attempt counts in `write_errors`.
  void Open(StateStore* state, std::string writer, std::string_view type, Counter* write_errors);
  // Runs `write` until it succeeds (see the class comment); returns its error when the content is
  // invalid, or when interrupted while failing (then given_up() is true).
  Status Write(std::string_view what, const std::function<Status()>& write);
  void Interrupt();
  bool given_up() const { return given_up_; }

 private:
  const Options options_;
  StateStore* state_ = nullptr;
  std::string writer_;
  std::string type_;
  Counter* write_errors_ = nullptr;
  bool given_up_ = false;  // sink thread
  std::mutex interrupt_mu_;
  std::condition_variable interrupt_cv_;
  bool interrupted_ = false;  // guarded by interrupt_mu_
};

}  // namespace inferscope
