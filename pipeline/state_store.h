#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/aggregate.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "pipeline/status.h"
#include "pipeline/summary.h"

namespace rocksdb {
class DB;
class ColumnFamilyHandle;
}  // namespace rocksdb

namespace inferscope {

struct StateStoreOptions {
  std::string path;  // RocksDB directory; required
  bool create_if_missing = true;
  bool sync_writes = false;  // fsync every WriteBatch (default: rely on the WAL without fsync)
  size_t block_cache_mb = 64;

  Status Validate() const;
};

// Column families for records other than panes, each with its own key scheme (documented by the
// component that owns it). They exist in every store.
enum class StateTable : uint8_t {
  kAlerts = 0,    // latest state of each alert, by fingerprint
  kAlertHistory,  // alert state changes, by time
  kSilences,      // silences, by id
  kDeadLetter,    // events rejected after the fact (too late), by time
  kCheckpoint,    // operator and source state of the last checkpoint
};
inline constexpr int kNumStateTables = 5;
// "alerts", "alert_history", "silences", "dead_letter", "checkpoint".
std::string_view StateTableName(StateTable table);

// One write to a StateTable: a Put, or a Delete when `value` is empty.
struct RecordWrite {
  StateTable table = StateTable::kAlerts;
  std::string key;
  std::optional<std::string> value;
};

// A stored pane as read back.
struct StoredPane {
  int64_t start_ms = 0;
  int64_t end_ms = 0;
  Aggregate agg;
};

// What the series index knows of one series.
struct SeriesInfo {
  std::string instance;
  std::string model;
  std::string metric;
  int64_t first_seen_ms = 0;  // earliest pane start written
  int64_t last_seen_ms = 0;   // latest event time written
};

// StateStore is the engine's durable state: RocksDB with one column family per kind of record.
//
// clang-format off
//   panes   key: str(instance) str(model) str(metric) be64(pane start ms)  value: end ms + Aggregate
//   series  key: str(instance) str(model) str(metric)                      value: first/last seen
//   meta    key: name                                                       value: engine facts (watermark)
// clang-format on
//
// str(x) is a 1-byte length followed by the bytes (names are at most 255 bytes, enforced at
// decode), so a key prefix selects one series and big-endian times keep its panes in time order.
// Strings, not interned ids, are stored: ids are per process, the store outlives it.
//
// Concurrency: thread-safe (RocksDB is). Writers are the sink threads; readers the query handlers.
class StateStore {
 public:
  static Result<std::unique_ptr<StateStore>> Open(const StateStoreOptions& options,
                                                  MetricsRegistry* metrics);
  ~StateStore();
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  // Writes the panes, their series index entries and the watermark in one atomic WriteBatch. A pane
  // already stored under the same key is replaced (upsert). The stored watermark never moves back.
  // InvalidArgument (and nothing written) when a name is longer than 255 bytes or a pane starts
  // before the epoch; IOError when RocksDB fails.
  Status WritePanes(const std::vector<WindowSummary>& panes, const Interner& names,
                    int64_t watermark_ms) {
    return WritePanes(std::span<const WindowSummary>(panes), names, watermark_ms);
  }
  // The same for a slice of a batch (sinks split very large batches without copying).
  Status WritePanes(std::span<const WindowSummary> panes, const Interner& names,
                    int64_t watermark_ms);
  // Calls `fn` for every stored pane of the series whose start is in [from_ms, to_ms), in time
  // order. Stops early and returns the first non-OK Status `fn` returns.
  Status ScanPanes(std::string_view instance, std::string_view model, std::string_view metric,
                   int64_t from_ms, int64_t to_ms,
                   const std::function<Status(const StoredPane&)>& fn) const;
  // Calls `fn` for every series in the index, ordered by (instance, model, metric).
  Status ListSeries(const std::function<void(const SeriesInfo&)>& fn) const;
  // Applies the writes in one atomic WriteBatch; `sync` fsyncs the WAL before returning (which
  // makes every earlier write durable too).
  Status WriteRecords(std::span<const RecordWrite> writes, bool sync = false);
  // The value stored under `key`, or nullopt.
  Result<std::optional<std::string>> GetRecord(StateTable table, std::string_view key) const;
  // Calls `fn(key, value)` for every record with `from <= key < to` (empty `to`: no upper bound),
  // in key order, until `fn` returns false.
  Status ScanRecords(StateTable table, std::string_view from, std::string_view to,
                     const std::function<bool(std::string_view, std::string_view)>& fn) const;

  // The latest watermark written with WritePanes (0 when none).
  int64_t Watermark() const;

  const std::string& path() const { return path_; }

 private:
  // first/last seen of one series, as stored in the `series` column family.
  struct SeriesRange {
    int64_t first_seen_ms = 0;
    int64_t last_seen_ms = 0;
  };

  StateStore() = default;
  Status LoadIndex();

  std::string path_;
  bool sync_writes_ = false;
  std::unique_ptr<rocksdb::DB> db_;
  // default, panes, series, meta, then any other column family found in the directory.
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  std::unique_ptr<MetricsRegistry> own_metrics_;  // when Open was given no registry

  // Serialises writers; guards index_ and watermark updates.
  std::mutex write_mu_;
  // The series index as stored, keyed like the `series` column family, so that WritePanes merges
  // first/last seen without a Get per pane.
  std::map<std::string, SeriesRange, std::less<>> index_;
  std::atomic<int64_t> watermark_{0};
  Histogram* write_latency_ = nullptr;
  Counter* write_errors_ = nullptr;
  Counter* panes_written_ = nullptr;
};

// Key encoding, exposed for tests and tools.
void AppendStr(std::string* out, std::string_view s);
void AppendBigEndian64(std::string* out, uint64_t v);
std::string PaneKey(std::string_view instance, std::string_view model, std::string_view metric,
                    int64_t start_ms);

}  // namespace inferscope
