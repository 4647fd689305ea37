#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/checkpoint.h"
#include "pipeline/clock.h"
#include "pipeline/coding.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "pipeline/status.h"
#include "pipeline/summary.h"
#include "pipeline/tiers.h"
#include "state/record_table.h"
#include "values/aggregate.h"

namespace rocksdb {
class DB;
struct DBOptions;
struct ColumnFamilyOptions;
class ColumnFamilyHandle;
class CompactionFilter;
class WriteBatch;
struct WriteOptions;
class Status;
class Env;
class FileSystem;
}  // namespace rocksdb

namespace inferscope {

// The file system RocksDB writes through (StateStoreOptions::file_system), named here so that code
// outside state/ (the Engine, tests) can pass one on without naming RocksDB.
using StateFileSystem = rocksdb::FileSystem;

struct StateStoreOptions {
  std::string path;  // RocksDB directory; required
  bool create_if_missing = true;
  bool sync_writes = false;  // fsync every WriteBatch (default: rely on the WAL without fsync)
  size_t block_cache_mb = 64;
  // Storage tiers, finest first (see pipeline/tiers.h and docs/RETENTION.md). Tier 0 is the
  // `panes` column family and its resolution must be the window operator's pane length; tier i > 0
  // is the column family `rollup_<name>` ("rollup_1m"). Empty (the default): panes only, of any
  // length, kept forever, never rolled up.
  std::vector<TierSpec> tiers;
  // A bucket of tier i > 0 is rolled up once the stored watermark is at least its end plus this
  // (default 1 min; must be >= the window operator's allowed lateness). >= 0.
  int64_t rollup_delay_ms = 60'000;
  // Processing time for retention (reads, compaction filter, maintenance). nullptr: SystemClock.
  // Must outlive the store.
  const Clock* clock = nullptr;
  // The file system RocksDB writes through; nullptr (the default): the local one. Tests pass a
  // wrapper that fails writes on demand (tests/fault_fs.h).
  std::shared_ptr<rocksdb::FileSystem> file_system;
  // Retention of time-keyed record tables (state/record_table.h), by table name, overriding the
  // table's declared default; 0 keeps its records forever. Only time-keyed tables may be named.
  std::map<std::string, int64_t, std::less<>> record_retention_ms;
  // Non-empty: open `path` read-only, as a RocksDB secondary instance of the engine's store (the
  // engine is the primary; it may run, stop, crash and restart meanwhile), keeping this
  // instance's own files (its info log) in this directory, which must differ from `path` and from
  // every other secondary's. The store then sees what the primary had committed when it opened
  // and, after each CatchUp, what it has committed since; every write answers FailedPrecondition.
  // `tiers` is then only a fallback: the tier list the primary stored (meta "tiers") is used, and
  // `tiers` only when the primary stored none (a store written before it did). `create_if_missing`
  // and `sync_writes` do not apply.
  std::string secondary_path;

  Status Validate() const;
};

// What one StateStore::CatchUp did.
struct CatchUpReport {
  int64_t started_ms = 0;      // the clock when it started: the view holds every write
                               // the primary had committed (synced to its log) by then
  int64_t duration_ns = 0;     // TryCatchUpWithPrimary and re-reading the meta records
  int64_t watermark_ms = 0;    // the stored watermark after it
  bool tiers_changed = false;  // the primary stores another tier list than this store opened
                               // with (a new topology): reopen to read the new tiers
  bool reopened = false;       // the catch-up failed and the secondary was reopened instead
};

// Checks a retention override for record table `name`: OK for a declared time-keyed table and a
// retention >= 0; otherwise an InvalidArgument naming the tables that can be given.
Status CheckRecordRetention(std::string_view name, int64_t retention_ms);

// What one StateStore::RunMaintenance did.
struct MaintenanceReport {
  int64_t now_ms = 0;        // the clock when it ran
  int64_t watermark_ms = 0;  // the stored watermark it rolled up against
  // Per tier (index 0 always 0): buckets written, and the end of the last final bucket rolled up.
  std::vector<int64_t> rollups_written;
  std::vector<int64_t> rolled_through_ms;
  int64_t series_dropped = 0;   // series index entries whose every bucket had expired
  int64_t records_expired = 0;  // records of time-keyed tables deleted (their retention passed)
};

// One write to a record table (state/record_table.h): a Put, or a Delete when `value` is empty.
struct RecordWrite {
  const RecordTable* table = nullptr;
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

// The series of one instance that a windowed read covers (StateStore::FindSeries).
struct SeriesMatch {
  bool instance_known = false;  // the instance has a series
  // The instance has a series of the model asked for (with no model asked for: instance_known).
  bool model_known = false;
  std::vector<std::string> models;  // the models with a series of the metric, sorted
};

// A read of consecutive windows of one length over one instance (StateStore::ReadWindows).
struct WindowsRequest {
  std::string_view instance;
  std::span<const std::string> models;  // merged into the same windows
  std::string_view metric;
  // The windows are [from_ms + i × window_ms, from_ms + (i + 1) × window_ms) for i < num_windows;
  // from_ms is a multiple of window_ms (> 0).
  int64_t from_ms = 0;
  int64_t window_ms = 0;
  int64_t num_windows = 0;
  // Only tiers of at most this resolution answer.
  int64_t max_resolution_ms = INT64_MAX;
};

// What StateStore::ReadWindows found.
struct WindowsRead {
  // Which tier answered which part of the range (PlanTierRead, pipeline/tiers.h).
  std::vector<TierSegment> plan;
  // From here on no bucket of the range has expired (at the clock's time of the read).
  int64_t complete_from_ms = 0;
  // The clock time from which the same read of the same view (StateStore::ViewVersion) may answer
  // otherwise, because another bucket of the range expires (INT64_MAX: never). Before it, the
  // answer depends on the view only.
  int64_t stable_until_ms = INT64_MAX;
  // windows[i]: the merge of every stored bucket of the models in window i.
  std::vector<Aggregate> windows;
  // Set when a stored bucket's length does not divide window_ms (the read stopped with
  // InvalidArgument): that length.
  std::optional<int64_t> mismatched_bucket_ms;
};

// The fleet rollup (StateStore::ReadFleet): per pane start, across every series, what
// GET /v1/performance/metrics needs, so that endpoint reads O(panes x active instances) rather than
// one windowed read per series. These are the metrics it covers.
inline constexpr std::string_view kFleetLatencyMetric = "e2e_ms";
inline constexpr std::string_view kFleetCachedMetric = "cached_tokens";
inline constexpr std::string_view kFleetPromptMetric = "prompt_tokens";

// What StateStore::ReadFleet found over a range of pane starts.
struct FleetRead {
  Aggregate latency;            // the merge of every kFleetLatencyMetric pane
  double cached_tokens = 0;     // the sum of the kFleetCachedMetric panes' sums
  double prompt_tokens = 0;     // the same for kFleetPromptMetric
  size_t active_instances = 0;  // instances with a latency pane of >= 1 event in the range
  int64_t panes = 0;            // pane starts that had a fleet row
};

// StateStore is the engine's durable state: RocksDB with one column family per kind of record.
//
// clang-format off
//   panes      key: str(instance) str(model) str(metric) be64(pane start ms)    value: be64(end ms) + Aggregate
//   rollup_<r> key: str(instance) str(model) str(metric) be64(bucket start ms)  value: be64(end ms) + Aggregate
//   series     key: str(instance) str(model) str(metric)                        value: first/last seen
//   meta       key: name                                                         value: engine facts (watermark,
//                                                                                "rollup_through/<r>": be64 ms,
//                                                                                "data_version": be64, see ViewVersion)
// clang-format on
//
// Tiers and retention (docs/RETENTION.md has the exact contract): `panes` is tier 0; each further
// tier holds buckets of its resolution, each the Aggregate::Merge of the buckets of the tier before
// it that it covers. RunMaintenance writes a bucket once it is final (watermark >= end +
// rollup_delay) and never again. A bucket [s, e) of a tier with retention R is expired once the
// clock reaches e + R: reads skip it from then on, and a compaction filter asking the same clock
// drops it from disk at the next compaction of its column family.
//
// str(x) is a 1-byte length followed by the bytes (names are at most kMaxNameBytes = 255 bytes,
// pipeline/names.h, enforced at decode), so a key prefix selects one series and big-endian times
// keep its panes in time order. Strings, not interned ids, are stored: ids are per process, the
// store outlives it.
//
// Write failures (LevelDB's `bg_error_` discipline, docs/ARCHITECTURE.md "Storage failures"): the
// store itself returns every failure to its caller. A writer that must not skip a failed write (the
// `rocksdb_state` sink, state maintenance) holds it: it reports the error with HoldWriteError,
// keeps retrying the same write, and calls ReleaseWriteError once that write succeeded. While any
// writer holds one, BackgroundError() is not OK (the engine's /v1/health says `degraded` with its
// message) and the gauge inferscope_state_background_error is 1. The first write after a failed
// one reopens the database (Resume), which clears RocksDB's own error (it refuses every write after
// a failed one, or worse: see Resume); no write reaches RocksDB before that.
//
// Concurrency: thread-safe (RocksDB is). Writers are the sink threads; readers the query handlers;
// RunMaintenance runs on one maintenance thread (calls are serialised) and writes only the rollup
// tiers, their cursors and the series index, so it never contends with WritePanes for a key.
// Limitations: a pane upserted after its coarse bucket rolled up (later than rollup_delay) is not
// re-rolled: the coarse tier keeps the earlier value; such writes are counted in
// inferscope_state_panes_after_rollup_total.
class StateStore {
 public:
  static constexpr int64_t kMaxRecordsExpiredPerRun = 10'000;

  static Result<std::unique_ptr<StateStore>> Open(const StateStoreOptions& options,
                                                  MetricsRegistry* metrics);
  ~StateStore();
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  // Writes the panes, their series index entries and the watermark in one atomic WriteBatch. A pane
  // already stored under the same key is replaced (upsert). The stored watermark never moves back.
  // InvalidArgument (and nothing written) when a name is longer than kMaxNameBytes or a pane starts
  // before the epoch; IOError when RocksDB fails.
  Status WritePanes(const std::vector<WindowSummary>& panes, const Interner& names,
                    int64_t watermark_ms) {
    return WritePanes(std::span<const WindowSummary>(panes), names, watermark_ms);
  }
  // The same for a slice of a batch (sinks split very large batches without copying).
  Status WritePanes(std::span<const WindowSummary> panes, const Interner& names,
                    int64_t watermark_ms) {
    return WritePanes(panes, names, watermark_ms, {});
  }
  // The same, with `records` (record table writes) in the same atomic WriteBatch: a query node
  // materialising the results stream stores its consumer position with the rows it applied.
  Status WritePanes(std::span<const WindowSummary> panes, const Interner& names,
                    int64_t watermark_ms, std::span<const RecordWrite> records);
  // Calls `fn` for every stored pane of the series whose start is in [from_ms, to_ms), in time
  // order, skipping expired panes. Stops early and returns the first non-OK Status `fn` returns.
  Status ScanPanes(std::string_view instance, std::string_view model, std::string_view metric,
                   int64_t from_ms, int64_t to_ms,
                   const std::function<Status(const StoredPane&)>& fn) const {
    return ScanTier(0, instance, model, metric, from_ms, to_ms, fn);
  }
  // The same for the buckets of tier `tier` (< tiers().size()). A bucket expired at the clock's
  // current time is never passed to `fn`, whether or not compaction has removed it yet.
  Status ScanTier(size_t tier, std::string_view instance, std::string_view model,
                  std::string_view metric, int64_t from_ms, int64_t to_ms,
                  const std::function<Status(const StoredPane&)>& fn) const;

  // The tiers in use (at least one: tier 0, the panes).
  const std::vector<TierSpec>& tiers() const { return tiers_; }
  // Tier `tier` holds every final bucket that ends at or before this (INT64_MAX for tier 0: panes
  // are written directly). Buckets from here on must be answered from a finer tier.
  int64_t RolledThroughMs(size_t tier) const;
  // One maintenance step at the clock's current time: rolls every tier up to the buckets that are
  // final under the stored watermark, drops the series index entries whose data has all expired,
  // deletes the records of time-keyed tables older than their retention (at most
  // kMaxRecordsExpiredPerRun per table and run: a backlog goes over several runs) and updates the
  // tier metrics. Idempotent; safe concurrently with writers and readers.
  Result<MaintenanceReport> RunMaintenance();
  // Flushes and compacts every tier's column family, so that the compaction filter drops every
  // bucket expired at the clock's current time from disk now rather than at the next compaction.
  Status CompactTiers();
  // The models of `instance` (just `model`, when given) that have a series of `metric`. One
  // prefix scan of the series index over the instance's series (the instance and model's, when a
  // model is given), so the cost follows that instance, not the size of the index.
  Result<SeriesMatch> FindSeries(std::string_view instance, const std::string* model,
                                 std::string_view metric) const;
  // Windows of one length over one instance's models, each merged from the stored buckets of the
  // coarsest tier that answers it exactly: the plan is made once (PlanTierRead, with the tiers'
  // rolled-through cursors as they are now) so every model is read alike, then each model's
  // series is read with a prefix scan per planned segment. Expired buckets are skipped
  // (complete_from_ms says from where the answer is whole). InvalidArgument, with
  // `out->mismatched_bucket_ms` set, when a stored bucket's length does not divide the window.
  Status ReadWindows(const WindowsRequest& request, WindowsRead* out) const;
  // Calls `fn` for every series in the index, ordered by (instance, model, metric).
  Status ListSeries(const std::function<void(const SeriesInfo&)>& fn) const;
  // Streams the series index in key order without buffering it, until `fn` returns false. Key order
  // keeps the series of one instance together; instances come ordered by (name length, name bytes),
  // and within an instance by (model length, model, metric length, metric). Starts at the first
  // series of `start_instance` (empty: the first series), or just after its last series when
  // `after` is true — so a scan can resume where an earlier one stopped (query pagination).
  Status ScanSeries(std::string_view start_instance, bool after,
                    const std::function<bool(const SeriesInfo&)>& fn) const;
  // Applies the writes in one atomic WriteBatch; `sync` fsyncs the WAL before returning (which
  // makes every earlier write durable too). Record writes are serialised with the expiry of
  // time-keyed tables (RunMaintenance), so an expiry hook's read-then-delete sees no write between.
  Status WriteRecords(std::span<const RecordWrite> writes, bool sync = false);
  // The same for records of one table (a checkpoint's records: state/checkpoint_store.h).
  Status WriteRecords(const RecordTable& table, std::span<const CheckpointRecord> records,
                      bool sync = false);
  // The value stored under `key`, or nullopt.
  Result<std::optional<std::string>> GetRecord(const RecordTable& table,
                                               std::string_view key) const;
  // Calls `fn(key, value)` for every record with `from <= key < to` (empty `to`: no upper bound),
  // in key order, until `fn` returns false.
  Status ScanRecords(const RecordTable& table, std::string_view from, std::string_view to,
                     const std::function<bool(std::string_view, std::string_view)>& fn) const;

  // The fleet rollup over the panes whose start is in [from_ms, to_ms), skipping expired panes as
  // ScanPanes does: the same panes a ScanSeries + ScanPanes pass over every series would merge,
  // read from one row per pane start. False (and *out untouched) when the store cannot answer it
  // so: the rollup starts at FleetFromMs() (written from then on by WritePanes), and a store an
  // older engine wrote has none; the caller then reads per series.
  Result<bool> ReadFleet(int64_t from_ms, int64_t to_ms, FleetRead* out) const;
  // The first pane start the fleet rollup covers (nullopt: no rollup stored).
  std::optional<int64_t> FleetFromMs() const;

  // The latest watermark written with WritePanes (0 when none).
  int64_t Watermark() const;
  // A number that changes whenever the answers of FindSeries, ScanSeries, ListSeries, ScanPanes,
  // ReadWindows and RolledThroughMs may have changed for any reason but the clock (expiry): after
  // a WritePanes that wrote a pane (not one that only moved the watermark), a rollup that moved a
  // tier's cursor and a drop of expired series; on a secondary after a CatchUp that applied such a
  // write of the primary (every CatchUp when the primary stores no data version, an older engine's
  // store), that reopened, or that failed. It moves after the write is visible: a read that starts
  // after ViewVersion() returned v sees at least the data of view v. Read-through caches key on it
  // (query/response_cache.h).
  uint64_t ViewVersion() const;
  // What a read must cover to be affected by the changes of the view after version `after` up to
  // `through` (after <= through <= ViewVersion()): the earliest pane or bucket start any of them
  // wrote. A read of panes and buckets that all start before that, of the same series index and
  // tier plan, answers in view `through` what it answered in view `after`. INT64_MAX when
  // after == through; kWholeViewChanged when a change may have altered any read (the series index
  // changed, a drop of expired series, a secondary's reopen or failed catch-up, a catch-up whose
  // changes the primary's log no longer lists) or `after` is older than the history kept
  // (kViewHistory changes). A pane batch's entry is its earliest pane start; a rollup's is the
  // tier's previous rolled-through cursor (its buckets start there or later, and the tier plan of a
  // range ending before it is unchanged: PlanTierRead). A secondary learns the entries of the
  // primary's changes from meta "view_log", written in the same batch as "data_version".
  int64_t EarliestChangeSince(uint64_t after, uint64_t through) const;
  static constexpr int64_t kWholeViewChanged = std::numeric_limits<int64_t>::min();
  // Changes remembered by EarliestChangeSince (and, on the primary, listed in meta "view_log").
  static constexpr size_t kViewHistory = 4096;
  static constexpr size_t kViewLogEntries = 64;

  // A secondary instance (StateStoreOptions::secondary_path): read-only, refreshed by CatchUp.
  bool read_only() const { return !secondary_path_.empty(); }
  // Secondary only: applies what the primary committed since the last call
  // (rocksdb::DB::TryCatchUpWithPrimary: the new MANIFEST edits, then the tail of the primary's
  // write-ahead logs into this instance's memtables), then re-reads the watermark and the tiers'
  // rolled-through cursors. Readers keep reading meanwhile and see either view, never a part of a
  // WriteBatch. When the catch-up fails (the primary deleted a log or table file between the
  // listing and the read) or the primary has reopened the store since (its CURRENT file names a
  // new MANIFEST: the engine restarted), a fresh secondary instance is opened on the primary's
  // current files and swapped in (readers wait only for the swap; when the open fails, the old
  // view stays and the error is returned); the report says so. FailedPrecondition on a primary.
  Result<CatchUpReport> CatchUp();

  // Sticky write errors (see the class comment). `writer` names the holder ("sink 'state'");
  // HoldWriteError sets or updates its error (counting a retry when it already held one),
  // ReleaseWriteError clears it. Thread-safe.
  void HoldWriteError(std::string_view writer, const Status& error);
  void ReleaseWriteError(std::string_view writer);
  // OK when no writer holds a failed write; otherwise the oldest held one, as
  // "<writer>: <error> (failing for <n> s, <k> retries)".
  Status BackgroundError() const;
  // Clears RocksDB's own background error after a failed write by closing and reopening the
  // database (readers and writers wait meanwhile; what was written before stays). RocksDB stops
  // accepting writes after a failed WAL write, and its automatic recovery in 7.8 can resume on the
  // log file that failed, which aborts the process (a failed assertion in WritableFileWriter) at
  // the next write. So no write reaches RocksDB after a failed one until a reopen succeeded: every
  // write (WritePanes, WriteRecords, RunMaintenance) first calls it when the last write failed,
  // and a write racing past that is refused (IOError) rather than sent. Until a reopen succeeds
  // every call answers Unavailable. Counted in inferscope_state_reopens_total.
  Status Resume();

  const std::string& path() const { return path_; }

 private:
  // first/last seen of one series, as stored in the `series` column family.
  struct SeriesRange {
    int64_t first_seen_ms = 0;
    int64_t last_seen_ms = 0;
  };

  struct OpenSpec;  // what DB::Open needs, for Resume

  StateStore();
  // Opens / closes db_ and handles_ (the caller holds db_mu_ exclusively, or is Open / the
  // destructor).
  Status OpenDb();
  // The rest of Open for a primary: the column families (ours in a fixed order, then any other
  // found), the tier list stored for secondaries, the series index and the meta records.
  Status OpenPrimary(const StateStoreOptions& options, MetricsRegistry* metrics,
                     const rocksdb::DBOptions& db_options,
                     const rocksdb::ColumnFamilyOptions& cf_options);
  // Opens a secondary instance on every column family in the directory, its handles arranged as a
  // primary arranges handles_ (tables the primary has not created are null); at the first open
  // (rolled_through_ not yet allocated) tiers_ becomes the stored tier list, later a different
  // one sets tiers_changed_. `manifest` receives the MANIFEST that CURRENT named before opening.
  Status OpenSecondaryDb(std::unique_ptr<rocksdb::DB>* db,
                         std::vector<rocksdb::ColumnFamilyHandle*>* handles, std::string* manifest);
  void CloseDb();
  // FailedPrecondition naming the primary when this is a secondary (writes refuse).
  Status CheckWritable() const;
  // Reads the watermark and the rolled-through cursors from `meta` (Open; CatchUp).
  Status LoadMeta();
  // The tier list stored by the primary in meta "tiers" (nullopt when none is stored). Caller
  // holds db_mu_ (or is Open).
  Result<std::optional<std::vector<TierSpec>>> ReadStoredTiers() const;
  // Unavailable while db_ is closed (a Resume failed to reopen it). Caller holds db_mu_.
  Status CheckOpen() const;
  // ScanTier with db_mu_ held (shared) by the caller.
  Status ScanTierLocked(size_t tier, std::string_view instance, std::string_view model,
                        std::string_view metric, int64_t from_ms, int64_t to_ms,
                        const std::function<Status(const StoredPane&)>& fn) const;
  Status LoadIndex();
  // The fleet rows of this batch's kFleet*Metric panes, added to `batch` (WritePanes, write_mu_
  // and db_mu_ held).
  Status AddFleetRows(std::span<const WindowSummary> panes, const Interner& names,
                      rocksdb::WriteBatch* batch);
  // WriteRecords for any record type with `key` and optional `value`; `table_of(w)` names the
  // table of write `w`.
  template <typename Write, typename TableOf>
  Status WriteRecordBatch(std::span<const Write> writes, TableOf table_of, bool sync);
  rocksdb::ColumnFamilyHandle* TierHandle(size_t tier) const;
  // Rolls tier `tier` (>= 1) up through `target_ms`; adds the buckets written to `*written`.
  Status RollUp(size_t tier, int64_t target_ms, int64_t now_ms, int64_t* written);
  Status DropExpiredSeries(int64_t now_ms, int64_t* dropped);
  // Adds meta "data_version" (a fresh number) to a batch that changes what reads answer, so that a
  // secondary sees the change (ViewVersion). The writer bumps view_version_ once it committed.
  // `earliest`: the change's EarliestChangeSince entry, listed in meta "view_log" (the last
  // kViewLogEntries (data version, earliest) pairs) in the same batch.
  Status AddDataVersion(int64_t earliest, rocksdb::WriteBatch* batch);
  // Moves view_version_ by one, remembering `earliest` for EarliestChangeSince.
  void BumpView(int64_t earliest);
  // Deletes the records of time-keyed `table` older than now_ms - retention (RunMaintenance).
  Status ExpireRecords(const RecordTable& table, int64_t now_ms, int64_t* expired);

  // A write error a writer holds (HoldWriteError).
  struct HeldError {
    std::string writer;
    Status error;
    int64_t since_ms = 0;
    uint64_t retries = 0;
  };

  std::string path_;
  std::string secondary_path_;              // non-empty: a secondary instance
  std::atomic<bool> tiers_changed_{false};  // the stored tier list differs from tiers_
  std::string manifest_;  // secondary: the primary's MANIFEST it opened on (db_mu_)
  bool sync_writes_ = false;
  // The Env over options.file_system (null without one); must outlive db_.
  std::unique_ptr<rocksdb::Env> env_;
  std::unique_ptr<OpenSpec> open_spec_;
  // Guards db_ and handles_: shared by every use, exclusive for Resume. Taken after write_mu_ and
  // maintenance_mu_, never the other way round.
  mutable std::shared_mutex db_mu_;
  std::unique_ptr<rocksdb::DB> db_;
  // default, panes, series, meta, then any other column family found in the directory.
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  std::unique_ptr<MetricsRegistry> own_metrics_;  // when Open was given no registry
  MetricsRegistry* metrics_ = nullptr;
  const Clock* clock_ = nullptr;
  std::vector<TierSpec> tiers_;
  int64_t rollup_delay_ms_ = 0;
  size_t first_tier_handle_ = 0;  // handles_ index of tier 1
  size_t num_tables_ = 0;         // record tables opened (RecordTable::All() at Open)
  // The family of `table`, or null when the table was declared after the store opened.
  rocksdb::ColumnFamilyHandle* TableHandle(const RecordTable& table) const;
  // One per tier with a retention; referenced by the column family options, so they must outlive
  // db_ (the destructor closes db_ first).
  std::vector<std::unique_ptr<rocksdb::CompactionFilter>> expiry_filters_;
  // rolled_through_[i]: RolledThroughMs(i); written by RunMaintenance only.
  std::unique_ptr<std::atomic<int64_t>[]> rolled_through_;
  std::mutex maintenance_mu_;  // serialises RunMaintenance and CompactTiers

  // Serialises writers; guards index_ and watermark updates.
  std::mutex write_mu_;
  // The series index as stored, keyed like the `series` column family, so that WritePanes merges
  // first/last seen without a Get per pane.
  std::map<std::string, SeriesRange, std::less<>> index_;
  std::atomic<int64_t> watermark_{0};
  // ViewVersion. Primary: bumped after each committed write that changes what reads answer;
  // secondary: after each CatchUp that saw meta "data_version" change (or could not tell).
  std::atomic<uint64_t> view_version_{1};
  // Primary: the last number handed out for meta "data_version".
  std::atomic<uint64_t> next_data_version_{0};
  // Every write goes through Commit: it refuses writes after a failed one (write_failed_) until
  // Resume reopened the store. commit_mu_ is a leaf lock (taken inside db_mu_, write_mu_ and
  // versioned_commits_); it guards write_failed_.
  rocksdb::Status Commit(const rocksdb::WriteOptions& options, rocksdb::WriteBatch* batch);
  // Resume when the last write failed (before any lock of a write is taken).
  Status ReopenIfWriteFailed();
  std::mutex commit_mu_;
  bool write_failed_ = false;  // guarded by commit_mu_

  // Held from AddDataVersion until its batch is written, so that data versions commit in order (a
  // secondary relies on it: CatchUp). A leaf lock: taken after write_mu_ and db_mu_, nothing but
  // view_mu_ inside.
  std::mutex versioned_commits_;
  // meta "data_version" as LoadMeta last read it (nullopt: none stored). Open and CatchUp only.
  std::optional<uint64_t> stored_data_version_;
  // meta "view_log" as LoadMeta last read it: (data version, earliest), oldest first.
  std::vector<std::pair<uint64_t, int64_t>> stored_view_log_;
  // Guards view_history_, view_log_ and the bumps of view_version_ (so that every version up to
  // ViewVersion() has its entry).
  mutable std::mutex view_mu_;
  // (view version, earliest) of the last kViewHistory changes, consecutive versions, oldest first.
  std::deque<std::pair<uint64_t, int64_t>> view_history_;
  // Primary: (data version, earliest) of the last kViewLogEntries data versions handed out.
  std::deque<std::pair<uint64_t, int64_t>> view_log_;
  // The fleet rollup's first pane start (INT64_MIN: none stored); meta "fleet_from".
  std::atomic<int64_t> fleet_from_{std::numeric_limits<int64_t>::min()};
  // Primary: the stored watermark when this process opened the store. A pane ending at or before
  // it may have been written (and rolled into its fleet row) by an earlier process, so its
  // instance's fleet row is recomputed rather than added to.
  int64_t watermark_at_open_ = 0;
  Histogram* write_latency_ = nullptr;
  Counter* write_errors_ = nullptr;
  Counter* panes_written_ = nullptr;
  Counter* panes_after_rollup_ = nullptr;
  Counter* rollups_written_ = nullptr;
  Counter* series_dropped_ = nullptr;
  // Per record table (by index): its retention (0: forever) and its expired-records counter.
  std::vector<int64_t> record_retention_ms_;
  std::vector<Counter*> records_expired_;
  // Serialises record writes with record expiry (see WriteRecords). Taken before db_mu_.
  std::mutex records_mu_;
  Histogram* maintenance_seconds_ = nullptr;
  Counter* maintenance_errors_ = nullptr;
  std::vector<Gauge*> rolled_through_gauges_;  // per tier

  mutable std::mutex held_mu_;
  std::vector<HeldError> held_;  // guarded by held_mu_; oldest first
  Counter* write_retries_ = nullptr;
  Counter* reopens_ = nullptr;
  Gauge* background_error_ = nullptr;
};

// Key encoding, exposed for tests and tools (AppendStr and AppendBigEndian64: pipeline/coding.h).
std::string PaneKey(std::string_view instance, std::string_view model, std::string_view metric,
                    int64_t start_ms);
// The column family of tier `index`: "panes" for tier 0, "rollup_<name>" after.
std::string TierFamilyName(size_t index, const TierSpec& tier);

}  // namespace inferscope
