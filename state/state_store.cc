#include "state/state_store.h"

#include <rocksdb/cache.h>
#include <rocksdb/compaction_filter.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/file_system.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <limits>
#include <set>
#include <shared_mutex>
#include <tuple>
#include <utility>

#include "pipeline/int_math.h"
#include "pipeline/names.h"
#include "state/checkpoint_store.h"

namespace inferscope {
namespace {

constexpr size_t kPanes = 1;
constexpr size_t kSeries = 2;
constexpr size_t kMeta = 3;
constexpr size_t kFirstTable = 4;  // handles_ index of record table 0 (state/record_table.h)
constexpr std::string_view kWatermarkKey = "watermark";
constexpr std::string_view kRolledThroughKeyPrefix = "rollup_through/";
// The primary's tier list, so that a secondary (the query node) reads the tiers the data has:
// per tier be64(resolution ms) be64(retention ms), finest first.
constexpr std::string_view kTiersKey = "tiers";
// be64, a number the primary writes with every WriteBatch that changes what the windowed reads
// answer (panes, the series index, a tier's rolled-through cursor): a secondary that sees it change
// after a catch-up knows its view changed (StateStore::ViewVersion). Increasing: a writer takes its
// number and commits its batch under one lock (StateStore::versioned_commits_).
constexpr std::string_view kDataVersionKey = "data_version";
// The last StateStore::kViewLogEntries data versions handed out, oldest first, each be64(data
// version) be64(earliest pane or bucket start it changed; INT64_MIN: anything), written with
// "data_version" in the same batch: a secondary whose catch-up moved the data version from a to b
// learns from it what the changes a+1..b touched (StateStore::EarliestChangeSince).
constexpr std::string_view kViewLogKey = "view_log";
// Rollup buckets per WriteBatch: bounds memory when a long backlog is rolled up at once (a rerun
// after a crash between batches rewrites the same buckets with the same values).
constexpr int64_t kRollupBatchBuckets = 1000;
const char* const kOwnFamilies[] = {"panes", "series", "meta"};

uint64_t DecodeBigEndian64(std::string_view in) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(in[i]);
  return v;
}

// Reads str(x) from the front of `*in`; false when the bytes are too short.
bool ReadStr(std::string_view* in, std::string_view* out) {
  if (in->empty()) return false;
  size_t n = static_cast<unsigned char>((*in)[0]);
  if (in->size() < 1 + n) return false;
  *out = in->substr(1, n);
  in->remove_prefix(1 + n);
  return true;
}

Status CheckName(std::string_view what, std::string_view name) {
  if (name.size() > kMaxNameBytes) {
    return Status::InvalidArgument(std::string(what) + " name is " + std::to_string(name.size()) +
                                   " bytes; at most " + std::to_string(kMaxNameBytes) +
                                   " are allowed");
  }
  return Status::Ok();
}

// The smallest key greater than every key that starts with `prefix` ("" when there is none: the
// prefix is all 0xff).
std::string PrefixSuccessor(std::string prefix) {
  while (!prefix.empty() && static_cast<unsigned char>(prefix.back()) == 0xff) prefix.pop_back();
  if (!prefix.empty())
    prefix.back() = static_cast<char>(static_cast<unsigned char>(prefix.back()) + 1);
  return prefix;
}

std::string SeriesPrefix(std::string_view instance, std::string_view model,
                         std::string_view metric) {
  std::string key;
  key.reserve(3 + instance.size() + model.size() + metric.size() + 8);
  AppendStr(&key, instance);
  AppendStr(&key, model);
  AppendStr(&key, metric);
  return key;
}

Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return Status::Ok();
  std::string msg = std::string(what) + ": " + s.ToString();
  if (s.IsCorruption()) return Status::Corruption(std::move(msg));
  if (s.IsInvalidArgument()) return Status::InvalidArgument(std::move(msg));
  if (s.IsNotFound()) return Status::NotFound(std::move(msg));
  if (s.IsBusy() || s.IsTryAgain() || s.IsShutdownInProgress()) {
    return Status::Unavailable(std::move(msg));
  }
  return Status::IOError(std::move(msg));
}

std::string EncodeRange(int64_t first, int64_t last) {
  std::string v;
  v.reserve(16);
  AppendBigEndian64(&v, static_cast<uint64_t>(first));
  AppendBigEndian64(&v, static_cast<uint64_t>(last));
  return v;
}

// Start of the first bucket of `tier` that is not expired when every bucket ending at or before
// `expired_through` is: bucket [s, s + r) survives iff s + r > expired_through.
int64_t FirstLiveStart(const TierSpec& tier, int64_t expired_through) {
  if (expired_through == std::numeric_limits<int64_t>::min() || tier.resolution_ms == 0) {
    return std::numeric_limits<int64_t>::min();
  }
  return FloorDiv(expired_through, tier.resolution_ms) * tier.resolution_ms;
}

// Drops buckets whose end (the first 8 bytes of the value) plus the tier's retention has passed on
// the injected clock. Values it cannot read are kept (reads report them as corruption).
class ExpiryFilter final : public rocksdb::CompactionFilter {
 public:
  ExpiryFilter(const Clock* clock, int64_t retention_ms, Counter* expired)
      : clock_(clock), retention_ms_(retention_ms), expired_(expired) {}

  bool Filter(int /*level*/, const rocksdb::Slice& /*key*/, const rocksdb::Slice& value,
              std::string* /*new_value*/, bool* /*value_changed*/) const override {
    if (value.size() < 8) return false;
    uint64_t end = 0;
    for (size_t i = 0; i < 8; ++i) end = (end << 8) | static_cast<unsigned char>(value[i]);
    if (static_cast<int64_t>(end) > clock_->NowMs() - retention_ms_) return false;
    expired_->Inc();
    return true;
  }
  const char* Name() const override { return "inferscope.ExpiryFilter"; }

 private:
  const Clock* clock_;
  int64_t retention_ms_;
  Counter* expired_;
};

std::string EncodeTiers(const std::vector<TierSpec>& tiers) {
  std::string v;
  for (const TierSpec& tier : tiers) {
    AppendBigEndian64(&v, static_cast<uint64_t>(tier.resolution_ms));
    AppendBigEndian64(&v, static_cast<uint64_t>(tier.retention_ms));
  }
  return v;
}

Result<std::vector<TierSpec>> DecodeTiers(std::string_view value) {
  if (value.empty() || value.size() % 16 != 0 || value.size() / 16 > kMaxTiers) {
    return Status::Corruption("state store: the stored tier list has " +
                              std::to_string(value.size()) + " bytes");
  }
  std::vector<TierSpec> tiers;
  for (size_t at = 0; at < value.size(); at += 16) {
    std::string_view v = value.substr(at, 16);
    tiers.push_back({static_cast<int64_t>(DecodeBigEndian64(v)),
                     static_cast<int64_t>(DecodeBigEndian64(v.substr(8)))});
  }
  return tiers;
}

std::string Printable(std::string_view bytes) {
  std::string out;
  for (char c : bytes) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f) {
      out += c;
    } else {
      out += '.';
    }
  }
  return out;
}

// The fleet rollup (StateStore::ReadFleet), one time-keyed record family:
//   key be64(pane start)                  the pane's total across every instance, value: a
//                                         FleetRow plus the names of the active instances
//   key be64(pane start) str(instance)    one instance's share (merged over its models)
// WritePanes keeps both in the batch that writes the panes. An instance's share is added to when
// its panes arrive for the first time and recomputed from the stored panes when one is already
// stored (replaced, or fired again after a restart: not always marked `update`) or appears twice in
// the batch; the total is added to in the first
// case and re-merged from the instance rows in the second, so replaced panes are never counted
// twice. Expires with tier 0 (Open sets the table's retention from it).
const RecordTable kFleetTable("fleet_panes", RecordExpiry{});
constexpr std::string_view kFleetFromKey = "fleet_from";

struct FleetRow {
  int64_t end_ms = 0;
  Aggregate latency;
  double cached = 0;
  double prompt = 0;
  bool has_latency = false;  // in a total: `active` lists instances with latency events
};

bool IsFleetMetric(std::string_view metric) {
  return metric == kFleetLatencyMetric || metric == kFleetCachedMetric ||
         metric == kFleetPromptMetric;
}

void AddToFleetRow(std::string_view metric, int64_t end_ms, const Aggregate& agg, FleetRow* row) {
  row->end_ms = std::max(row->end_ms, end_ms);
  if (metric == kFleetLatencyMetric) {
    row->latency.Merge(agg);
  } else if (metric == kFleetCachedMetric) {
    row->cached += agg.sum;
  } else if (metric == kFleetPromptMetric) {
    row->prompt += agg.sum;
  }
}

void MergeFleetRow(const FleetRow& from, FleetRow* into) {
  into->end_ms = std::max(into->end_ms, from.end_ms);
  into->latency.Merge(from.latency);
  into->cached += from.cached;
  into->prompt += from.prompt;
}

std::string FleetKey(int64_t start_ms, std::string_view instance, bool total) {
  std::string key;
  AppendBigEndian64(&key, static_cast<uint64_t>(start_ms));
  if (!total) AppendStr(&key, instance);
  return key;
}

// be64(end) double(cached) double(prompt) varint(n) Aggregate[n], then for a total:
// varint(count) str(instance)...
void EncodeFleetRow(const FleetRow& row, const std::vector<std::string_view>* active,
                    std::string* out) {
  out->clear();
  AppendBigEndian64(out, static_cast<uint64_t>(row.end_ms));
  PutDouble(out, row.cached);
  PutDouble(out, row.prompt);
  std::string agg;
  row.latency.EncodeTo(&agg);
  PutVarint(out, agg.size());
  out->append(agg);
  if (active != nullptr) {
    PutVarint(out, active->size());
    for (std::string_view name : *active) AppendStr(out, name);
  }
}

// Decodes a row; a total's instance names go to `*active` (views into `in`) when it is given.
Status DecodeFleetRow(std::string_view in, FleetRow* row, std::vector<std::string_view>* active) {
  auto corrupt = [](std::string_view what) {
    return Status::Corruption("state store: fleet row: " + std::string(what));
  };
  if (in.size() < 8) return corrupt("shorter than 8 bytes");
  row->end_ms = static_cast<int64_t>(DecodeBigEndian64(in));
  in.remove_prefix(8);
  uint64_t n = 0;
  if (!GetDouble(&in, &row->cached) || !GetDouble(&in, &row->prompt) || !GetVarint(&in, &n) ||
      n > in.size()) {
    return corrupt("truncated");
  }
  INFERSCOPE_RETURN_IF_ERROR(Aggregate::DecodeFrom(in.substr(0, n), &row->latency));
  in.remove_prefix(n);
  if (active == nullptr) return Status::Ok();
  uint64_t count = 0;
  if (!GetVarint(&in, &count) || count > in.size()) return corrupt("truncated instance list");
  for (uint64_t i = 0; i < count; ++i) {
    std::string_view name;
    if (!ReadStr(&in, &name)) return corrupt("truncated instance name");
    active->push_back(name);
  }
  return Status::Ok();
}

}  // namespace

// What DB::Open needs, kept for Resume (reopening after a write error).
struct StateStore::OpenSpec {
  rocksdb::DBOptions db_options;
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;  // primary
  rocksdb::ColumnFamilyOptions cf_options;                   // every family of a secondary
};

Status StateStoreOptions::Validate() const {
  if (path.empty()) return Status::InvalidArgument("state store: path is required");
  if (!secondary_path.empty() && secondary_path == path) {
    return Status::InvalidArgument(
        "state store: secondary_path must differ from path (the primary's directory)");
  }
  if (block_cache_mb == 0)
    return Status::InvalidArgument("state store: block_cache_mb must be > 0");
  if (!tiers.empty()) {
    Status s = ValidateTiers(tiers, rollup_delay_ms, /*maintenance_interval_ms=*/0);
    if (!s.ok()) return s.WithContext("state store");
  } else if (rollup_delay_ms < 0) {
    return Status::InvalidArgument("state store: rollup_delay_ms must not be negative");
  }
  for (const auto& [name, retention] : record_retention_ms) {
    Status s = CheckRecordRetention(name, retention);
    if (!s.ok()) return s.WithContext("state store");
  }
  return Status::Ok();
}

Status CheckRecordRetention(std::string_view name, int64_t retention_ms) {
  std::string keyed;
  const RecordTable* found = nullptr;
  for (const RecordTable* table : RecordTable::All()) {
    if (!table->time_keyed()) continue;
    if (table->name() == name) found = table;
    keyed += (keyed.empty() ? "" : ", ") + std::string(table->name());
  }
  if (found == nullptr) {
    return Status::InvalidArgument("'" + std::string(name) +
                                   "' is not a time-keyed record table (those are: " + keyed + ")");
  }
  if (retention_ms < 0) {
    return Status::InvalidArgument("record retention of '" + std::string(name) +
                                   "' must be >= 0 (0 keeps records forever)");
  }
  return Status::Ok();
}

std::string TierFamilyName(size_t index, const TierSpec& tier) {
  return index == 0 ? std::string("panes") : "rollup_" + tier.Name();
}

std::string PaneKey(std::string_view instance, std::string_view model, std::string_view metric,
                    int64_t start_ms) {
  std::string key = SeriesPrefix(instance, model, metric);
  AppendBigEndian64(&key, static_cast<uint64_t>(start_ms));
  return key;
}

Result<std::unique_ptr<StateStore>> StateStore::Open(const StateStoreOptions& options,
                                                     MetricsRegistry* metrics) {
  INFERSCOPE_RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<StateStore> store(new StateStore());
  store->path_ = options.path;
  store->secondary_path_ = options.secondary_path;
  store->sync_writes_ = options.sync_writes;
  if (metrics == nullptr) {
    store->own_metrics_ = std::make_unique<MetricsRegistry>();
    metrics = store->own_metrics_.get();
  }
  store->write_latency_ = metrics->GetHistogram("inferscope_state_write_seconds",
                                                "Latency of RocksDB pane WriteBatch commits");
  store->write_errors_ = metrics->GetCounter("inferscope_state_write_errors_total",
                                             "RocksDB writes that failed (each attempt)");
  store->write_retries_ =
      metrics->GetCounter("inferscope_state_write_retries_total",
                          "Retries of held failed writes that failed again (HoldWriteError)");
  store->reopens_ = metrics->GetCounter("inferscope_state_reopens_total",
                                        "RocksDB reopened to clear an error after a failed write");
  store->background_error_ = metrics->GetGauge(
      "inferscope_state_background_error",
      "1 while a failed state write is held and retried (health is degraded), else 0");
  store->panes_written_ = metrics->GetCounter("inferscope_state_panes_written_total",
                                              "Panes written to the state store");
  store->panes_after_rollup_ = metrics->GetCounter(
      "inferscope_state_panes_after_rollup_total",
      "Panes written after their coarse bucket had rolled up (not reflected in rollups)");
  store->rollups_written_ = metrics->GetCounter("inferscope_state_rollups_written_total",
                                                "Rollup buckets written by maintenance");
  store->series_dropped_ =
      metrics->GetCounter("inferscope_state_series_expired_total",
                          "Series index entries dropped because all their data expired");
  store->maintenance_seconds_ = metrics->GetHistogram("inferscope_state_maintenance_seconds",
                                                      "Duration of state maintenance runs");
  store->maintenance_errors_ = metrics->GetCounter("inferscope_state_maintenance_errors_total",
                                                   "State maintenance runs that failed");
  for (const RecordTable* table : RecordTable::All()) {
    auto it = options.record_retention_ms.find(table->name());
    store->record_retention_ms_.push_back(!table->time_keyed() ? 0
                                          : it != options.record_retention_ms.end()
                                              ? it->second
                                              : table->expiry().default_retention_ms);
    store->records_expired_.push_back(
        table->time_keyed()
            ? metrics->GetCounter("inferscope_state_records_expired_total",
                                  "Records of time-keyed tables deleted after their retention",
                                  {{"table", std::string(table->name())}})
            : nullptr);
  }
  store->metrics_ = metrics;
  store->clock_ = options.clock != nullptr ? options.clock : &SystemClock::Instance();
  store->tiers_ = options.tiers.empty() ? std::vector<TierSpec>{TierSpec{}} : options.tiers;
  store->rollup_delay_ms_ = options.rollup_delay_ms;
  // The fleet rollup expires with the panes it summarises, unless the topology says otherwise.
  if (!options.record_retention_ms.contains(kFleetTable.name())) {
    const TierSpec& panes = store->tiers_.front();
    store->record_retention_ms_[kFleetTable.index()] =
        panes.retention_ms > 0 ? panes.retention_ms + panes.resolution_ms : 0;
  }

  rocksdb::DBOptions db_options;
  db_options.create_if_missing = options.create_if_missing;
  db_options.create_missing_column_families = true;
  if (options.file_system != nullptr) {
    store->env_ = rocksdb::NewCompositeEnv(options.file_system);
    db_options.env = store->env_.get();
  }

  rocksdb::BlockBasedTableOptions table_options;
  table_options.block_cache = rocksdb::NewLRUCache(options.block_cache_mb << 20);
  rocksdb::ColumnFamilyOptions cf_options;
  cf_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table_options));

  if (store->read_only()) {
    // A secondary keeps every table file it has opened open: the primary deletes files after
    // compactions, and a file still open stays readable (RocksDB requires max_open_files = -1
    // of a secondary for exactly this).
    db_options.max_open_files = -1;
    db_options.create_if_missing = false;
    db_options.create_missing_column_families = false;
    store->open_spec_ = std::make_unique<OpenSpec>(OpenSpec{db_options, {}, cf_options});
    INFERSCOPE_RETURN_IF_ERROR(
        store->OpenSecondaryDb(&store->db_, &store->handles_, &store->manifest_));
  }
  store->rolled_through_ = std::make_unique<std::atomic<int64_t>[]>(store->tiers_.size());
  store->rolled_through_[0].store(std::numeric_limits<int64_t>::max());
  for (size_t i = 1; i < store->tiers_.size(); ++i) store->rolled_through_[i].store(0);
  if (!store->read_only()) {
    INFERSCOPE_RETURN_IF_ERROR(store->OpenPrimary(options, metrics, db_options, cf_options));
  } else {
    std::shared_lock<std::shared_mutex> lock(store->db_mu_);
    INFERSCOPE_RETURN_IF_ERROR(store->LoadMeta());
  }

  for (size_t i = 0; i < store->tiers_.size(); ++i) {
    const std::string tier = store->tiers_[i].Name();
    store->rolled_through_gauges_.push_back(metrics->GetGauge(
        "inferscope_state_rolled_through_timestamp_seconds",
        "End of the last final bucket rolled up into the tier (Unix time, seconds)",
        {{"tier", tier}}));
    StateStore* self = store.get();
    metrics->AddCallbackGauge(
        "inferscope_state_tier_keys", "Estimated keys in the tier's column family (RocksDB)",
        {{"tier", tier}},
        [self, i] {
          uint64_t keys = 0;
          std::shared_lock<std::shared_mutex> lock(self->db_mu_);
          if (self->db_ != nullptr)
            self->db_->GetIntProperty(self->TierHandle(i), "rocksdb.estimate-num-keys", &keys);
          return static_cast<double>(keys);
        },
        self);
  }
  return store;
}

Status StateStore::OpenPrimary(const StateStoreOptions& options, MetricsRegistry* metrics,
                               const rocksdb::DBOptions& db_options,
                               const rocksdb::ColumnFamilyOptions& cf_options) {
  // Every column family in the directory must be opened; ours come first, in a fixed order.
  std::vector<std::string> existing;
  rocksdb::Status s = rocksdb::DB::ListColumnFamilies(db_options, options.path, &existing);
  if (!s.ok() && !(s.IsIOError() || s.IsPathNotFound())) {
    return FromRocks(s, "state store: listing column families of " + options.path);
  }
  // A tier with a retention gets a compaction filter that drops its expired buckets, and periodic
  // compaction so that files nothing writes to any more are still filtered.
  auto tier_options = [&](size_t i) {
    rocksdb::ColumnFamilyOptions tier_cf = cf_options;
    const TierSpec& tier = tiers_[i];
    if (tier.retention_ms == 0) return tier_cf;
    Counter* expired = metrics->GetCounter("inferscope_state_buckets_expired_total",
                                           "Buckets dropped by the retention compaction filter",
                                           {{"tier", tier.Name()}});
    expiry_filters_.push_back(std::make_unique<ExpiryFilter>(clock_, tier.retention_ms, expired));
    tier_cf.compaction_filter = expiry_filters_.back().get();
    tier_cf.periodic_compaction_seconds =
        static_cast<uint64_t>(std::clamp<int64_t>(tier.retention_ms / 4 / 1000, 3'600, 86'400));
    return tier_cf;
  };
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  descriptors.emplace_back(rocksdb::kDefaultColumnFamilyName, cf_options);
  for (const char* name : kOwnFamilies) {
    descriptors.emplace_back(name,
                             name == std::string_view("panes") ? tier_options(0) : cf_options);
  }
  std::set<std::string> own = {rocksdb::kDefaultColumnFamilyName};
  for (const char* name : kOwnFamilies) own.insert(name);
  // Every record table declared by now (by the components linked into this binary).
  for (const RecordTable* table : RecordTable::All()) {
    descriptors.emplace_back(std::string(table->name()), cf_options);
    own.insert(std::string(table->name()));
  }
  num_tables_ = RecordTable::All().size();
  first_tier_handle_ = descriptors.size();
  for (size_t i = 1; i < tiers_.size(); ++i) {
    std::string name = TierFamilyName(i, tiers_[i]);
    descriptors.emplace_back(name, tier_options(i));
    own.insert(name);
  }
  for (const std::string& name : existing) {
    if (own.count(name) == 0) descriptors.emplace_back(name, cf_options);
  }

  open_spec_ = std::make_unique<OpenSpec>(OpenSpec{db_options, std::move(descriptors), cf_options});
  INFERSCOPE_RETURN_IF_ERROR(OpenDb());
  // The tier list, for secondaries (a query node) to plan their reads with.
  rocksdb::WriteOptions write_options;
  write_options.sync = true;
  INFERSCOPE_RETURN_IF_ERROR(FromRocks(
      db_->Put(write_options, handles_[kMeta], rocksdb::Slice(kTiersKey), EncodeTiers(tiers_)),
      "state store: storing the tier list"));
  INFERSCOPE_RETURN_IF_ERROR(LoadIndex());
  INFERSCOPE_RETURN_IF_ERROR(LoadMeta());
  // The fleet rollup covers the panes that start at or after the watermark when it was first
  // enabled on this store: every pane written before starts below that watermark.
  watermark_at_open_ = watermark_.load();
  if (fleet_from_.load() == std::numeric_limits<int64_t>::min()) {
    std::string value;
    AppendBigEndian64(&value, static_cast<uint64_t>(watermark_at_open_));
    INFERSCOPE_RETURN_IF_ERROR(
        FromRocks(db_->Put(write_options, handles_[kMeta], rocksdb::Slice(kFleetFromKey), value),
                  "state store: storing fleet_from"));
    fleet_from_.store(watermark_at_open_);
  }
  return Status::Ok();
}

Status StateStore::LoadIndex() {
  std::unique_ptr<rocksdb::Iterator> it(
      db_->NewIterator(rocksdb::ReadOptions(), handles_[kSeries]));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    rocksdb::Slice v = it->value();
    if (v.size() != 16) {
      return Status::Corruption("state store: series entry '" +
                                Printable(it->key().ToStringView()) + "' has a value of " +
                                std::to_string(v.size()) + " bytes");
    }
    std::string_view view = v.ToStringView();
    index_[it->key().ToString()] = {static_cast<int64_t>(DecodeBigEndian64(view)),
                                    static_cast<int64_t>(DecodeBigEndian64(view.substr(8)))};
  }
  return FromRocks(it->status(), "state store: reading the series index");
}

Status StateStore::LoadMeta() {
  std::string value;
  rocksdb::Status s =
      db_->Get(rocksdb::ReadOptions(), handles_[kMeta], rocksdb::Slice(kWatermarkKey), &value);
  if (!s.IsNotFound()) {
    INFERSCOPE_RETURN_IF_ERROR(FromRocks(s, "state store: reading the watermark"));
    if (value.size() != 8)
      return Status::Corruption("state store: stored watermark is not 8 bytes");
    watermark_.store(static_cast<int64_t>(DecodeBigEndian64(value)), std::memory_order_release);
  }
  s = db_->Get(rocksdb::ReadOptions(), handles_[kMeta], rocksdb::Slice(kFleetFromKey), &value);
  if (!s.IsNotFound()) {
    INFERSCOPE_RETURN_IF_ERROR(FromRocks(s, "state store: reading fleet_from"));
    if (value.size() != 8) return Status::Corruption("state store: fleet_from is not 8 bytes");
    fleet_from_.store(static_cast<int64_t>(DecodeBigEndian64(value)), std::memory_order_release);
  }
  s = db_->Get(rocksdb::ReadOptions(), handles_[kMeta], rocksdb::Slice(kDataVersionKey), &value);
  stored_data_version_.reset();
  if (!s.IsNotFound()) {
    INFERSCOPE_RETURN_IF_ERROR(FromRocks(s, "state store: reading data_version"));
    if (value.size() != 8) return Status::Corruption("state store: data_version is not 8 bytes");
    stored_data_version_ = DecodeBigEndian64(value);
    // A primary continues from the stored number (a secondary never writes).
    next_data_version_.store(*stored_data_version_, std::memory_order_relaxed);
  }
  s = db_->Get(rocksdb::ReadOptions(), handles_[kMeta], rocksdb::Slice(kViewLogKey), &value);
  stored_view_log_.clear();
  if (!s.IsNotFound()) {
    INFERSCOPE_RETURN_IF_ERROR(FromRocks(s, "state store: reading view_log"));
    if (value.size() % 16 != 0) {
      return Status::Corruption("state store: view_log is not a list of 16-byte entries");
    }
    for (size_t at = 0; at < value.size(); at += 16) {
      stored_view_log_.emplace_back(
          DecodeBigEndian64(std::string_view(value).substr(at, 8)),
          static_cast<int64_t>(DecodeBigEndian64(std::string_view(value).substr(at + 8, 8))));
    }
  }
  for (size_t i = 1; i < tiers_.size(); ++i) {
    std::string key = std::string(kRolledThroughKeyPrefix) + tiers_[i].Name();
    s = db_->Get(rocksdb::ReadOptions(), handles_[kMeta], key, &value);
    if (s.IsNotFound()) continue;
    INFERSCOPE_RETURN_IF_ERROR(FromRocks(s, "state store: reading " + key));
    if (value.size() != 8) return Status::Corruption("state store: " + key + " is not 8 bytes");
    rolled_through_[i].store(static_cast<int64_t>(DecodeBigEndian64(value)));
  }
  return Status::Ok();
}

Result<std::optional<std::vector<TierSpec>>> StateStore::ReadStoredTiers() const {
  std::string value;
  rocksdb::Status s =
      db_->Get(rocksdb::ReadOptions(), handles_[kMeta], rocksdb::Slice(kTiersKey), &value);
  if (s.IsNotFound()) return std::optional<std::vector<TierSpec>>();
  INFERSCOPE_RETURN_IF_ERROR(FromRocks(s, "state store: reading the tier list"));
  Result<std::vector<TierSpec>> tiers = DecodeTiers(value);
  if (!tiers.ok()) return tiers.status();
  return std::optional<std::vector<TierSpec>>(std::move(tiers).value());
}

// The MANIFEST the directory's CURRENT file names ("" when it cannot be read): a primary writes a
// new one each time it opens.
std::string CurrentManifest(const std::string& dir) {
  std::ifstream in(dir + "/CURRENT");
  std::string name;
  std::getline(in, name);
  return name;
}

Status StateStore::OpenSecondaryDb(std::unique_ptr<rocksdb::DB>* db_out,
                                   std::vector<rocksdb::ColumnFamilyHandle*>* handles_out,
                                   std::string* manifest) {
  const rocksdb::DBOptions& db_options = open_spec_->db_options;
  *manifest = CurrentManifest(path_);
  std::vector<std::string> existing;
  rocksdb::Status s = rocksdb::DB::ListColumnFamilies(db_options, path_, &existing);
  if (!s.ok()) {
    return FromRocks(
        s, "state store: no state store to read at " + path_ + " (start the engine on it first)");
  }
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  // Not the checkpoint table: nothing reads a checkpoint but the engine's recovery, and the
  // checkpoints (every open pane's sketch, every second) are the bulk of the engine's log; the
  // catch-up skips log records of families it has not opened instead of replaying them.
  std::erase(existing, std::string(kCheckpointTable.name()));
  for (const std::string& name : existing) descriptors.emplace_back(name, open_spec_->cf_options);
  std::vector<rocksdb::ColumnFamilyHandle*> opened;
  rocksdb::DB* raw = nullptr;
  s = rocksdb::DB::OpenAsSecondary(db_options, path_, secondary_path_, descriptors, &opened, &raw);
  if (!s.ok()) {
    return FromRocks(s, "state store: opening " + path_ + " as a secondary instance (in " +
                            secondary_path_ + ")");
  }
  std::unique_ptr<rocksdb::DB> db(raw);
  std::map<std::string, rocksdb::ColumnFamilyHandle*, std::less<>> by_name;
  for (size_t i = 0; i < opened.size(); ++i) by_name[existing[i]] = opened[i];
  auto fail = [&](Status error) {
    for (rocksdb::ColumnFamilyHandle* handle : opened) (void)db->DestroyColumnFamilyHandle(handle);
    (void)db->Close();
    return error;
  };
  // Arranged as a primary arranges handles_: default, panes, series, meta, tables, tiers, the rest.
  std::vector<rocksdb::ColumnFamilyHandle*> arranged;
  auto take = [&](std::string_view name) -> rocksdb::ColumnFamilyHandle* {
    auto it = by_name.find(name);
    if (it == by_name.end()) return nullptr;
    rocksdb::ColumnFamilyHandle* handle = it->second;
    by_name.erase(it);
    return handle;
  };
  arranged.push_back(take(rocksdb::kDefaultColumnFamilyName));
  for (const char* name : kOwnFamilies) {
    arranged.push_back(take(name));
    if (arranged.back() == nullptr) {
      return fail(Status::Corruption("state store: " + path_ +
                                     " is not an inferscope state store (no column family '" +
                                     name + "')"));
    }
  }
  // The tier list the primary stored; at the first open it replaces the fallback from the options.
  std::string value;
  s = db->Get(rocksdb::ReadOptions(), arranged[kMeta], rocksdb::Slice(kTiersKey), &value);
  std::optional<std::vector<TierSpec>> stored;
  if (!s.IsNotFound()) {
    if (!s.ok()) return fail(FromRocks(s, "state store: reading the tier list"));
    Result<std::vector<TierSpec>> decoded = DecodeTiers(value);
    if (!decoded.ok()) return fail(decoded.status());
    stored = std::move(decoded).value();
  }
  if (rolled_through_ == nullptr) {
    if (stored.has_value()) tiers_ = *stored;
  } else if (stored.has_value() && *stored != tiers_) {
    tiers_changed_.store(true);
  }
  for (const RecordTable* table : RecordTable::All()) {
    arranged.push_back(take(table->name()));  // null: the primary has not created it (yet)
  }
  num_tables_ = RecordTable::All().size();
  first_tier_handle_ = arranged.size();
  for (size_t i = 1; i < tiers_.size(); ++i) {
    std::string name = TierFamilyName(i, tiers_[i]);
    arranged.push_back(take(name));
    if (arranged.back() == nullptr) {
      return fail(Status::Corruption(
          "state store: " + path_ + " has no column family '" + name + "' for tier " +
          std::to_string(i) +
          (stored.has_value() ? std::string()
                              : " (no tier list is stored: the tiers came from the topology, "
                                "which may not be the engine's)")));
    }
  }
  for (auto& [name, handle] : by_name) arranged.push_back(handle);
  *db_out = std::move(db);
  *handles_out = std::move(arranged);
  return Status::Ok();
}

Status StateStore::CheckWritable() const {
  if (!read_only()) return Status::Ok();
  return Status::FailedPrecondition("state store: read-only (a secondary instance of " + path_ +
                                    "); the engine that owns it writes");
}

Result<CatchUpReport> StateStore::CatchUp() {
  if (!read_only()) {
    return Status::FailedPrecondition("state store: CatchUp is for secondary instances");
  }
  CatchUpReport report;
  report.started_ms = clock_->NowMs();
  const int64_t started_ns = clock_->MonotonicNs();
  // A primary that reopened the store (the engine restarted) wrote a new MANIFEST and recovered
  // its old logs into tables; tailing across that is where secondaries miss writes (RocksDB
  // issue 14444), so a new MANIFEST means a fresh secondary instead.
  Status caught_up = CurrentManifest(path_) == manifest_
                         ? Status::Ok()
                         : Status::Unavailable("the engine reopened the store");
  if (caught_up.ok()) {
    std::shared_lock<std::shared_mutex> lock(db_mu_);
    caught_up = CheckOpen();
    if (caught_up.ok()) {
      caught_up = FromRocks(db_->TryCatchUpWithPrimary(), "state store: catching up with " + path_);
    }
  }
  if (!caught_up.ok()) {
    // Open the fresh instance first and swap it in, so readers keep the old view if it fails.
    std::unique_ptr<rocksdb::DB> db;
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    std::string manifest;
    INFERSCOPE_RETURN_IF_ERROR(
        OpenSecondaryDb(&db, &handles, &manifest).WithContext(caught_up.message()));
    std::unique_lock<std::shared_mutex> lock(db_mu_);
    CloseDb();
    db_ = std::move(db);
    handles_ = std::move(handles);
    manifest_ = std::move(manifest);
    report.reopened = true;
  }
  {
    std::shared_lock<std::shared_mutex> lock(db_mu_);
    const std::optional<uint64_t> seen = stored_data_version_;
    Status loaded = LoadMeta();
    if (loaded.ok()) {
      Result<std::optional<std::vector<TierSpec>>> stored = ReadStoredTiers();
      loaded = stored.status();
      if (stored.ok() && stored->has_value() && **stored != tiers_) tiers_changed_.store(true);
    }
    // The view is unchanged only when the primary stores a data version and it is the one seen at
    // the last look, on the same instance (a reopened one may hold anything); after an error the
    // log may have been applied all the same.
    if (!loaded.ok() || report.reopened || !seen.has_value() || seen != stored_data_version_) {
      // What the changes since the last look touched, when the primary's log lists every data
      // version after the one seen up to the one stored (numbers commit in order, so those are
      // the batches applied since; a failed write's number is listed but changed nothing).
      int64_t earliest = kWholeViewChanged;
      if (loaded.ok() && !report.reopened && seen.has_value() && stored_data_version_ &&
          *stored_data_version_ > *seen && *stored_data_version_ - *seen <= kViewLogEntries) {
        uint64_t next = *seen + 1;
        int64_t min_start = std::numeric_limits<int64_t>::max();
        for (const auto& [version, start] : stored_view_log_) {
          if (version < next) continue;
          if (version != next) break;  // a gap
          min_start = std::min(min_start, start);
          ++next;
        }
        if (next == *stored_data_version_ + 1) earliest = min_start;
      }
      BumpView(earliest);
    }
    INFERSCOPE_RETURN_IF_ERROR(loaded);
  }
  report.duration_ns = clock_->MonotonicNs() - started_ns;
  report.watermark_ms = Watermark();
  report.tiers_changed = tiers_changed_.load();
  return report;
}

rocksdb::ColumnFamilyHandle* StateStore::TierHandle(size_t tier) const {
  return tier == 0 ? handles_[kPanes] : handles_[first_tier_handle_ + tier - 1];
}

int64_t StateStore::RolledThroughMs(size_t tier) const {
  return tier < tiers_.size() ? rolled_through_[tier].load(std::memory_order_acquire) : 0;
}

StateStore::StateStore() = default;

StateStore::~StateStore() {
  if (metrics_ != nullptr) metrics_->RemoveCallbacks(this);
  CloseDb();
}

Status StateStore::OpenDb() {
  rocksdb::DB* raw = nullptr;
  handles_.clear();
  rocksdb::Status s =
      rocksdb::DB::Open(open_spec_->db_options, path_, open_spec_->descriptors, &handles_, &raw);
  if (!s.ok()) {
    handles_.clear();
    return FromRocks(s, "state store: opening " + path_);
  }
  db_.reset(raw);
  return Status::Ok();
}

void StateStore::CloseDb() {
  if (db_ == nullptr) return;
  for (rocksdb::ColumnFamilyHandle* handle : handles_) {
    // Null: a table a secondary found no family for. Destroying a handle only fails for a null
    // handle; nothing to report at destruction.
    if (handle != nullptr) (void)db_->DestroyColumnFamilyHandle(handle);
  }
  handles_.clear();
  // After a write error Close reports it again ("seen error"); the reopen is what matters.
  (void)db_->Close();
  db_.reset();
}

Status StateStore::Resume() {
  INFERSCOPE_RETURN_IF_ERROR(CheckWritable());
  std::unique_lock<std::shared_mutex> lock(db_mu_);
  CloseDb();
  Status s = OpenDb();
  reopens_->Inc();
  if (s.ok()) {
    std::lock_guard<std::mutex> commit(commit_mu_);
    write_failed_ = false;
  }
  return s.WithContext("state store: reopening after a write error");
}

Status StateStore::ReopenIfWriteFailed() {
  {
    std::lock_guard<std::mutex> commit(commit_mu_);
    if (!write_failed_) return Status::Ok();
  }
  return Resume();
}

rocksdb::Status StateStore::Commit(const rocksdb::WriteOptions& options,
                                   rocksdb::WriteBatch* batch) {
  std::lock_guard<std::mutex> commit(commit_mu_);
  if (write_failed_) {
    return rocksdb::Status::IOError(
        "an earlier write failed; the store is reopened before the next write");
  }
  rocksdb::Status s = db_->Write(options, batch);
  if (!s.ok()) {
    write_failed_ = true;
    write_errors_->Inc();
  }
  return s;
}

Status StateStore::CheckOpen() const {
  if (db_ != nullptr) return Status::Ok();
  return Status::Unavailable("state store: closed after a write error; not reopened yet");
}

Status StateStore::WritePanes(std::span<const WindowSummary> panes, const Interner& names,
                              int64_t watermark_ms, std::span<const RecordWrite> records) {
  INFERSCOPE_RETURN_IF_ERROR(CheckWritable());
  INFERSCOPE_RETURN_IF_ERROR(ReopenIfWriteFailed());
  std::lock_guard<std::mutex> lock(write_mu_);
  // Record writes are serialised with record expiry (WriteRecords); taken only when there are some.
  std::unique_lock<std::mutex> records_lock(records_mu_, std::defer_lock);
  if (!records.empty()) records_lock.lock();
  std::shared_lock<std::shared_mutex> db_lock(db_mu_);
  INFERSCOPE_RETURN_IF_ERROR(CheckOpen());
  rocksdb::WriteBatch batch;
  // Index entries changed by this batch; applied to index_ only once the write succeeded.
  std::map<std::string, SeriesRange, std::less<>> updates;
  std::string key;
  std::string value;
  const int64_t rolled_through = tiers_.size() > 1 ? RolledThroughMs(1) : INT64_MIN;
  uint64_t after_rollup = 0;
  // The earliest pane start written (EarliestChangeSince).
  int64_t earliest = std::numeric_limits<int64_t>::max();
  for (const WindowSummary& pane : panes) {
    std::string_view instance = names.Name(pane.series.instance);
    std::string_view model = names.Name(pane.series.model);
    std::string_view metric = names.Name(pane.series.metric);
    INFERSCOPE_RETURN_IF_ERROR(CheckName("instance", instance));
    INFERSCOPE_RETURN_IF_ERROR(CheckName("model", model));
    INFERSCOPE_RETURN_IF_ERROR(CheckName("metric", metric));
    if (pane.start_ms < 0 || pane.end_ms < pane.start_ms) {
      return Status::InvalidArgument("state store: pane [" + std::to_string(pane.start_ms) + ", " +
                                     std::to_string(pane.end_ms) + ") is not a valid interval");
    }
    if (pane.start_ms < rolled_through) ++after_rollup;
    key = SeriesPrefix(instance, model, metric);
    int64_t last_seen = std::max(pane.max_event_time_ms, pane.start_ms);
    auto upd = updates.find(key);
    earliest = std::min(earliest, pane.start_ms);
    if (upd == updates.end()) {
      auto stored = index_.find(key);
      if (stored == index_.end()) earliest = kWholeViewChanged;  // a new series
      SeriesRange range =
          stored != index_.end() ? stored->second : SeriesRange{pane.start_ms, last_seen};
      upd = updates.emplace(key, range).first;
    }
    upd->second.first_seen_ms = std::min(upd->second.first_seen_ms, pane.start_ms);
    upd->second.last_seen_ms = std::max(upd->second.last_seen_ms, last_seen);

    AppendBigEndian64(&key, static_cast<uint64_t>(pane.start_ms));
    value.clear();
    AppendBigEndian64(&value, static_cast<uint64_t>(pane.end_ms));
    pane.agg.EncodeTo(&value);
    INFERSCOPE_RETURN_IF_ERROR(FromRocks(batch.Put(handles_[kPanes], key, value), "state store"));
  }
  for (const auto& [series_key, range] : updates) {
    INFERSCOPE_RETURN_IF_ERROR(
        FromRocks(batch.Put(handles_[kSeries], series_key,
                            EncodeRange(range.first_seen_ms, range.last_seen_ms)),
                  "state store"));
  }
  INFERSCOPE_RETURN_IF_ERROR(AddFleetRows(panes, names, &batch));
  for (const RecordWrite& w : records) {
    rocksdb::ColumnFamilyHandle* cf = w.table != nullptr ? TableHandle(*w.table) : nullptr;
    if (cf == nullptr) return Status::InvalidArgument("state store: a record write names no table");
    INFERSCOPE_RETURN_IF_ERROR(FromRocks(
        w.value ? batch.Put(cf, w.key, *w.value) : batch.Delete(cf, w.key), "state store"));
  }
  int64_t new_watermark = std::max(watermark_.load(std::memory_order_relaxed), watermark_ms);
  value.clear();
  AppendBigEndian64(&value, static_cast<uint64_t>(new_watermark));
  INFERSCOPE_RETURN_IF_ERROR(
      FromRocks(batch.Put(handles_[kMeta], rocksdb::Slice(kWatermarkKey), value), "state store"));
  // A batch that only moves the watermark leaves the view's data as it was.
  std::unique_lock<std::mutex> commit_lock(versioned_commits_, std::defer_lock);
  if (!panes.empty()) {
    commit_lock.lock();
    INFERSCOPE_RETURN_IF_ERROR(AddDataVersion(earliest, &batch));
  }

  rocksdb::WriteOptions write_options;
  write_options.sync = sync_writes_;
  auto started = std::chrono::steady_clock::now();
  rocksdb::Status s = Commit(write_options, &batch);
  if (commit_lock.owns_lock()) commit_lock.unlock();
  write_latency_->Observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  if (!s.ok()) {
    return FromRocks(s, "state store: writing " + std::to_string(panes.size()) + " panes");
  }
  for (auto& [series_key, range] : updates) index_[series_key] = range;
  watermark_.store(new_watermark, std::memory_order_release);
  if (!panes.empty()) BumpView(earliest);
  panes_written_->Inc(panes.size());
  if (after_rollup > 0) panes_after_rollup_->Inc(after_rollup);
  return Status::Ok();
}

Status StateStore::AddFleetRows(std::span<const WindowSummary> panes, const Interner& names,
                                rocksdb::WriteBatch* batch) {
  const int64_t fleet_from = fleet_from_.load();
  rocksdb::ColumnFamilyHandle* cf = TableHandle(kFleetTable);
  if (cf == nullptr || fleet_from == std::numeric_limits<int64_t>::min()) return Status::Ok();
  // The batch's fleet panes by (pane start, instance); recompute: a pane of the group may already
  // be stored (replaced, or written before this process opened the store).
  struct Group {
    std::vector<const WindowSummary*> panes;
    bool recompute = false;
  };
  std::map<std::pair<int64_t, std::string_view>, Group> groups;
  std::string key, value, pane_key;
  auto get = [&](rocksdb::ColumnFamilyHandle* family, const std::string& k,
                 std::string* out) -> Result<bool> {
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), family, k, out);
    if (s.IsNotFound()) return false;
    INFERSCOPE_RETURN_IF_ERROR(FromRocks(s, "state store: reading the fleet rollup"));
    return true;
  };
  for (const WindowSummary& pane : panes) {
    const std::string_view metric = names.Name(pane.series.metric);
    if (pane.start_ms < fleet_from || !IsFleetMetric(metric)) continue;
    const std::string_view instance = names.Name(pane.series.instance);
    Group& g = groups[{pane.start_ms, instance}];
    // The same pane twice in one batch: the later one is what the batch stores.
    auto same = std::find_if(g.panes.begin(), g.panes.end(), [&](const WindowSummary* p) {
      return p->series.model == pane.series.model && p->series.metric == pane.series.metric;
    });
    if (same != g.panes.end()) {
      *same = &pane;
      g.recompute = true;
      continue;
    }
    g.panes.push_back(&pane);
    if (g.recompute) continue;
    // Whether the pane is stored already, whatever its `update` flag says: a partial pane flushed
    // at shutdown fires again, complete and not marked as an update, after the restart.
    bool stored = pane.update || pane.end_ms <= watermark_at_open_;
    if (!stored) {
      pane_key = SeriesPrefix(instance, names.Name(pane.series.model), metric);
      AppendBigEndian64(&pane_key, static_cast<uint64_t>(pane.start_ms));
      Result<bool> found = get(handles_[kPanes], pane_key, &value);
      if (!found.ok()) return found.status();
      stored = *found;
    }
    g.recompute = stored;
  }
  auto it = groups.begin();
  while (it != groups.end()) {
    const int64_t start = it->first.first;
    // The new rows of this pane start's instances, and whether the total must be re-merged.
    std::map<std::string_view, FleetRow> rows;
    bool remerge = false;
    FleetRow added;  // what the groups added to (no recompute) bring to the total
    std::vector<std::string_view> newly_active;
    for (; it != groups.end() && it->first.first == start; ++it) {
      const std::string_view instance = it->first.second;
      const Group& group = it->second;
      FleetRow& row = rows[instance];
      key = FleetKey(start, instance, /*total=*/false);
      if (!group.recompute) {
        Result<bool> found = get(cf, key, &value);
        if (!found.ok()) return found.status();
        if (*found) INFERSCOPE_RETURN_IF_ERROR(DecodeFleetRow(value, &row, nullptr));
        const bool was_active = row.latency.events > 0;
        for (const WindowSummary* pane : group.panes) {
          const std::string_view metric = names.Name(pane->series.metric);
          AddToFleetRow(metric, pane->end_ms, pane->agg, &row);
          AddToFleetRow(metric, pane->end_ms, pane->agg, &added);
        }
        if (!was_active && row.latency.events > 0) newly_active.push_back(instance);
      } else {
        remerge = true;
        // From scratch: this batch's panes, and the stored pane at `start` of every other fleet
        // series of the instance (its series are contiguous in the index).
        std::set<std::string> in_batch;
        for (const WindowSummary* pane : group.panes) {
          const std::string_view metric = names.Name(pane->series.metric);
          in_batch.insert(SeriesPrefix(instance, names.Name(pane->series.model), metric));
          AddToFleetRow(metric, pane->end_ms, pane->agg, &row);
        }
        std::string prefix;
        AppendStr(&prefix, instance);
        for (auto s = index_.lower_bound(prefix);
             s != index_.end() && s->first.compare(0, prefix.size(), prefix) == 0; ++s) {
          std::string_view rest = s->first, inst, model, metric;
          if (!ReadStr(&rest, &inst) || !ReadStr(&rest, &model) || !ReadStr(&rest, &metric) ||
              !IsFleetMetric(metric) || in_batch.contains(s->first)) {
            continue;
          }
          pane_key = s->first;
          AppendBigEndian64(&pane_key, static_cast<uint64_t>(start));
          Result<bool> found = get(handles_[kPanes], pane_key, &value);
          if (!found.ok()) return found.status();
          if (!*found) continue;
          Aggregate agg;
          if (value.size() < 8 ||
              !Aggregate::DecodeFrom(std::string_view(value).substr(8), &agg).ok()) {
            return Status::Corruption("state store: pane '" + Printable(pane_key) + "'");
          }
          AddToFleetRow(metric, static_cast<int64_t>(DecodeBigEndian64(value)), agg, &row);
        }
      }
      EncodeFleetRow(row, nullptr, &value);
      INFERSCOPE_RETURN_IF_ERROR(FromRocks(batch->Put(cf, key, value), "state store"));
    }

    FleetRow total;
    std::set<std::string, std::less<>> active;
    key = FleetKey(start, {}, /*total=*/true);
    if (!remerge) {
      Result<bool> found = get(cf, key, &value);
      if (!found.ok()) return found.status();
      std::vector<std::string_view> names_stored;
      if (*found) INFERSCOPE_RETURN_IF_ERROR(DecodeFleetRow(value, &total, &names_stored));
      for (std::string_view name : names_stored) active.emplace(name);
      MergeFleetRow(added, &total);
      for (std::string_view name : newly_active) active.emplace(name);
    } else {
      // Every stored instance row of the pane, with this batch's rows in place of theirs.
      rocksdb::ReadOptions read_options;
      const std::string upper = FleetKey(start + 1, {}, true);
      rocksdb::Slice upper_slice(upper);
      read_options.iterate_upper_bound = &upper_slice;
      std::unique_ptr<rocksdb::Iterator> iter(db_->NewIterator(read_options, cf));
      for (iter->Seek(key); iter->Valid(); iter->Next()) {
        std::string_view k = iter->key().ToStringView();
        if (k.size() <= 8) continue;  // the total itself
        std::string_view rest = k.substr(8), instance;
        if (!ReadStr(&rest, &instance)) {
          return Status::Corruption("state store: fleet key '" + Printable(k) + "'");
        }
        if (rows.contains(instance)) continue;
        FleetRow row;
        INFERSCOPE_RETURN_IF_ERROR(DecodeFleetRow(iter->value().ToStringView(), &row, nullptr));
        MergeFleetRow(row, &total);
        if (row.latency.events > 0) active.emplace(instance);
      }
      INFERSCOPE_RETURN_IF_ERROR(
          FromRocks(iter->status(), "state store: reading the fleet rollup"));
      for (const auto& [instance, row] : rows) {
        MergeFleetRow(row, &total);
        if (row.latency.events > 0) active.emplace(instance);
      }
    }
    std::vector<std::string_view> list(active.begin(), active.end());
    EncodeFleetRow(total, &list, &value);
    INFERSCOPE_RETURN_IF_ERROR(FromRocks(batch->Put(cf, key, value), "state store"));
  }
  return Status::Ok();
}

std::optional<int64_t> StateStore::FleetFromMs() const {
  const int64_t from = fleet_from_.load(std::memory_order_acquire);
  if (from == std::numeric_limits<int64_t>::min()) return std::nullopt;
  return from;
}

Result<bool> StateStore::ReadFleet(int64_t from_ms, int64_t to_ms, FleetRead* out) const {
  const std::optional<int64_t> fleet_from = FleetFromMs();
  if (!fleet_from || from_ms < *fleet_from) return false;
  std::shared_lock<std::shared_mutex> db_lock(db_mu_);
  INFERSCOPE_RETURN_IF_ERROR(CheckOpen());
  rocksdb::ColumnFamilyHandle* cf = TableHandle(kFleetTable);
  if (cf == nullptr) return false;
  FleetRead read;
  const int64_t expired_through = tiers_[0].ExpiredThroughMs(clock_->NowMs());
  from_ms = std::max<int64_t>({from_ms, 0, FirstLiveStart(tiers_[0], expired_through)});
  if (to_ms > from_ms) {
    const std::string upper = FleetKey(to_ms, {}, true);
    rocksdb::Slice upper_slice(upper);
    rocksdb::ReadOptions read_options;
    read_options.iterate_upper_bound = &upper_slice;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read_options, cf));
    std::set<std::string, std::less<>> active;
    std::vector<std::string_view> names;
    // One Seek per pane start: the total row, then past the pane's instance rows.
    for (it->Seek(FleetKey(from_ms, {}, true)); it->Valid();) {
      std::string_view k = it->key().ToStringView();
      const int64_t start = static_cast<int64_t>(DecodeBigEndian64(k));
      if (k.size() == 8) {
        FleetRow row;
        names.clear();
        INFERSCOPE_RETURN_IF_ERROR(DecodeFleetRow(it->value().ToStringView(), &row, &names));
        if (row.end_ms > expired_through) {
          read.latency.Merge(row.latency);
          read.cached_tokens += row.cached;
          read.prompt_tokens += row.prompt;
          for (std::string_view name : names) active.emplace(name);
          ++read.panes;
        }
      }
      if (start == std::numeric_limits<int64_t>::max()) break;
      it->Seek(FleetKey(start + 1, {}, true));
    }
    INFERSCOPE_RETURN_IF_ERROR(FromRocks(it->status(), "state store: reading the fleet rollup"));
    read.active_instances = active.size();
  }
  *out = std::move(read);
  return true;
}

Status StateStore::ScanTier(size_t tier, std::string_view instance, std::string_view model,
                            std::string_view metric, int64_t from_ms, int64_t to_ms,
                            const std::function<Status(const StoredPane&)>& fn) const {
  std::shared_lock<std::shared_mutex> db_lock(db_mu_);
  INFERSCOPE_RETURN_IF_ERROR(CheckOpen());
  return ScanTierLocked(tier, instance, model, metric, from_ms, to_ms, fn);
}

Status StateStore::ScanTierLocked(size_t tier, std::string_view instance, std::string_view model,
                                  std::string_view metric, int64_t from_ms, int64_t to_ms,
                                  const std::function<Status(const StoredPane&)>& fn) const {
  if (tier >= tiers_.size()) {
    return Status::InvalidArgument("state store: no tier " + std::to_string(tier) + " (" +
                                   std::to_string(tiers_.size()) + " configured)");
  }
  INFERSCOPE_RETURN_IF_ERROR(CheckName("instance", instance));
  INFERSCOPE_RETURN_IF_ERROR(CheckName("model", model));
  INFERSCOPE_RETURN_IF_ERROR(CheckName("metric", metric));
  // Expired buckets are skipped by their stored end; when the resolution is known, the scan also
  // starts past them (they may still be on disk until compaction).
  const int64_t expired_through = tiers_[tier].ExpiredThroughMs(clock_->NowMs());
  from_ms = std::max<int64_t>({from_ms, 0, FirstLiveStart(tiers_[tier], expired_through)});
  if (to_ms <= from_ms) return Status::Ok();

  const std::string prefix = SeriesPrefix(instance, model, metric);
  const std::string lower = PaneKey(instance, model, metric, from_ms);
  const std::string upper = PaneKey(instance, model, metric, to_ms);
  rocksdb::Slice upper_slice(upper);
  rocksdb::ReadOptions read_options;
  read_options.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read_options, TierHandle(tier)));
  for (it->Seek(lower); it->Valid(); it->Next()) {
    std::string_view key = it->key().ToStringView();
    std::string_view value = it->value().ToStringView();
    if (key.size() != prefix.size() + 8 || key.substr(0, prefix.size()) != prefix) {
      return Status::Corruption("state store: unexpected pane key '" + Printable(key) + "'");
    }
    StoredPane pane;
    pane.start_ms = static_cast<int64_t>(DecodeBigEndian64(key.substr(prefix.size())));
    if (value.size() < 8) {
      return Status::Corruption("state store: pane value of " + std::to_string(value.size()) +
                                " bytes for '" + Printable(key) + "'");
    }
    pane.end_ms = static_cast<int64_t>(DecodeBigEndian64(value));
    if (pane.end_ms <= expired_through) continue;
    Status decoded = Aggregate::DecodeFrom(value.substr(8), &pane.agg);
    if (!decoded.ok()) {
      return Status::Corruption("state store: pane '" + Printable(key) + "' at " +
                                std::to_string(pane.start_ms) + ": " + decoded.message());
    }
    INFERSCOPE_RETURN_IF_ERROR(fn(pane));
  }
  return FromRocks(it->status(), "state store: scanning panes");
}

Status StateStore::ListSeries(const std::function<void(const SeriesInfo&)>& fn) const {
  // Keys are length-prefixed, so their byte order is not the (instance, model, metric) order the
  // contract promises: read them all, then sort.
  std::vector<SeriesInfo> all;
  std::shared_lock<std::shared_mutex> db_lock(db_mu_);
  INFERSCOPE_RETURN_IF_ERROR(CheckOpen());
  std::unique_ptr<rocksdb::Iterator> it(
      db_->NewIterator(rocksdb::ReadOptions(), handles_[kSeries]));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    std::string_view key = it->key().ToStringView();
    std::string_view value = it->value().ToStringView();
    std::string_view instance, model, metric;
    std::string_view rest = key;
    if (!ReadStr(&rest, &instance) || !ReadStr(&rest, &model) || !ReadStr(&rest, &metric) ||
        !rest.empty() || value.size() != 16) {
      return Status::Corruption("state store: malformed series entry '" + Printable(key) + "'");
    }
    SeriesInfo& info = all.emplace_back();
    info.instance.assign(instance);
    info.model.assign(model);
    info.metric.assign(metric);
    info.first_seen_ms = static_cast<int64_t>(DecodeBigEndian64(value));
    info.last_seen_ms = static_cast<int64_t>(DecodeBigEndian64(value.substr(8)));
  }
  INFERSCOPE_RETURN_IF_ERROR(FromRocks(it->status(), "state store: listing series"));
  it.reset();
  db_lock.unlock();
  std::sort(all.begin(), all.end(), [](const SeriesInfo& a, const SeriesInfo& b) {
    return std::tie(a.instance, a.model, a.metric) < std::tie(b.instance, b.model, b.metric);
  });
  for (const SeriesInfo& info : all) fn(info);
  return Status::Ok();
}

Status StateStore::ScanSeries(std::string_view start_instance, bool after,
                              const std::function<bool(const SeriesInfo&)>& fn) const {
  std::string prefix;
  if (!start_instance.empty()) {
    if (start_instance.size() > kMaxNameBytes) {
      return Status::InvalidArgument("state store: instance longer than " +
                                     std::to_string(kMaxNameBytes) + " bytes");
    }
    AppendStr(&prefix, start_instance);
  }
  std::shared_lock<std::shared_mutex> db_lock(db_mu_);
  INFERSCOPE_RETURN_IF_ERROR(CheckOpen());
  std::unique_ptr<rocksdb::Iterator> it(
      db_->NewIterator(rocksdb::ReadOptions(), handles_[kSeries]));
  it->Seek(prefix);
  if (after && !prefix.empty()) {
    while (it->Valid() && it->key().starts_with(prefix)) it->Next();
  }
  SeriesInfo info;
  for (; it->Valid(); it->Next()) {
    std::string_view key = it->key().ToStringView();
    std::string_view value = it->value().ToStringView();
    std::string_view instance, model, metric;
    std::string_view rest = key;
    if (!ReadStr(&rest, &instance) || !ReadStr(&rest, &model) || !ReadStr(&rest, &metric) ||
        !rest.empty() || value.size() != 16) {
      return Status::Corruption("state store: malformed series entry '" + Printable(key) + "'");
    }
    info.instance.assign(instance);
    info.model.assign(model);
    info.metric.assign(metric);
    info.first_seen_ms = static_cast<int64_t>(DecodeBigEndian64(value));
    info.last_seen_ms = static_cast<int64_t>(DecodeBigEndian64(value.substr(8)));
    if (!fn(info)) return Status::Ok();
  }
  return FromRocks(it->status(), "state store: scanning series");
}

Result<SeriesMatch> StateStore::FindSeries(std::string_view instance, const std::string* model,
                                           std::string_view metric) const {
  INFERSCOPE_RETURN_IF_ERROR(CheckName("instance", instance));
  if (model != nullptr) INFERSCOPE_RETURN_IF_ERROR(CheckName("model", *model));
  INFERSCOPE_RETURN_IF_ERROR(CheckName("metric", metric));
  std::string instance_prefix;
  AppendStr(&instance_prefix, instance);
  std::string prefix = instance_prefix;
  if (model != nullptr) AppendStr(&prefix, *model);

  SeriesMatch match;
  std::shared_lock<std::shared_mutex> db_lock(db_mu_);
  INFERSCOPE_RETURN_IF_ERROR(CheckOpen());
  // Scans the series whose key starts with `p` (bounded above by its successor); `fn` sees each
  // key past the prefix and may stop the scan by returning false.
  auto scan_prefix = [&](const std::string& p,
                         const std::function<bool(std::string_view)>& fn) -> Status {
    const std::string upper = PrefixSuccessor(p);
    rocksdb::Slice upper_slice(upper);
    rocksdb::ReadOptions read_options;
    if (!upper.empty()) read_options.iterate_upper_bound = &upper_slice;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read_options, handles_[kSeries]));
    for (it->Seek(p); it->Valid() && it->key().starts_with(p); it->Next()) {
      if (!fn(it->key().ToStringView().substr(p.size()))) break;
    }
    return FromRocks(it->status(), "state store: scanning series");
  };
  Status status = Status::Ok();
  INFERSCOPE_RETURN_IF_ERROR(scan_prefix(prefix, [&](std::string_view rest) {
    std::string_view series_model, series_metric;
    if (model != nullptr) {
      series_model = *model;
    } else if (!ReadStr(&rest, &series_model)) {
      status = Status::Corruption("state store: malformed series entry under '" +
                                  Printable(prefix) + "'");
      return false;
    }
    if (!ReadStr(&rest, &series_metric) || !rest.empty()) {
      status = Status::Corruption("state store: malformed series entry under '" +
                                  Printable(prefix) + "'");
      return false;
    }
    match.instance_known = true;
    match.model_known = true;
    if (series_metric == metric) match.models.emplace_back(series_model);
    return true;
  }));
  INFERSCOPE_RETURN_IF_ERROR(status);
  if (!match.instance_known && model != nullptr) {
    // Is it the model or the whole instance that is unknown? One seek says.
    INFERSCOPE_RETURN_IF_ERROR(scan_prefix(instance_prefix, [&](std::string_view) {
      match.instance_known = true;
      return false;
    }));
  }
  db_lock.unlock();
  std::sort(match.models.begin(), match.models.end());
  return match;
}

Status StateStore::ReadWindows(const WindowsRequest& request, WindowsRead* out) const {
  const int64_t w = request.window_ms;
  if (w <= 0 || request.num_windows < 0 || FloorDiv(request.from_ms, w) * w != request.from_ms) {
    return Status::InvalidArgument("state store: windows must start at a multiple of their length");
  }
  const int64_t end_ms = request.from_ms + request.num_windows * w;
  out->windows.assign(static_cast<size_t>(request.num_windows), Aggregate());
  out->mismatched_bucket_ms.reset();

  std::vector<int64_t> rolled;
  for (size_t i = 0; i < tiers_.size(); ++i) rolled.push_back(RolledThroughMs(i));
  out->plan = PlanTierRead(tiers_, rolled, request.from_ms, end_ms, w, request.max_resolution_ms);
  const int64_t now = clock_->NowMs();
  out->complete_from_ms = request.from_ms;
  out->stable_until_ms = INT64_MAX;
  for (const TierSegment& seg : out->plan) {
    const TierSpec& tier = tiers_[seg.tier];
    const int64_t expired = tier.ExpiredThroughMs(now);
    if (expired == INT64_MIN) continue;  // kept forever
    const int64_t res = tier.resolution_ms;
    if (res <= 0) {  // bucket ends unknown: any time may change the answer
      out->stable_until_ms = now;
      continue;
    }
    // Buckets ending at or before `expired` are gone: the answer is complete from the first live
    // bucket on.
    const int64_t live = FloorDiv(expired, res) * res;
    if (live > seg.from_ms) {
      out->complete_from_ms = std::max(out->complete_from_ms, std::min(live, seg.to_ms));
    }
    // The next bucket end (a multiple of res) past both `live` and the segment's start: when the
    // clock reaches it + retention, that bucket expires and complete_from moves. Nothing changes
    // once every bucket of the segment has expired.
    const int64_t next_end = std::max(live, FloorDiv(seg.from_ms, res) * res) + res;
    if (next_end - res < seg.to_ms) {
      out->stable_until_ms = std::min(out->stable_until_ms, next_end + tier.retention_ms);
    }
  }

  std::shared_lock<std::shared_mutex> db_lock(db_mu_);
  INFERSCOPE_RETURN_IF_ERROR(CheckOpen());
  for (const std::string& model : request.models) {
    for (const TierSegment& seg : out->plan) {
      INFERSCOPE_RETURN_IF_ERROR(ScanTierLocked(
          seg.tier, request.instance, model, request.metric, seg.from_ms, seg.to_ms,
          [&](const StoredPane& bucket) -> Status {
            const int64_t length = bucket.end_ms - bucket.start_ms;
            if (length <= 0) {
              // Not a length any window could be a multiple of: a corrupt bucket, not a
              // parameter the caller could change.
              return Status::Corruption("state store: a stored bucket [" +
                                        std::to_string(bucket.start_ms) + ", " +
                                        std::to_string(bucket.end_ms) + ") has no length");
            }
            if (w % length != 0) {
              out->mismatched_bucket_ms = length;
              return Status::InvalidArgument("state store: a window of " + std::to_string(w) +
                                             " ms is not a multiple of the stored bucket length (" +
                                             std::to_string(length) + " ms)");
            }
            out->windows[static_cast<size_t>((bucket.start_ms - request.from_ms) / w)].Merge(
                bucket.agg);
            return Status::Ok();
          }));
    }
  }
  return Status::Ok();
}

rocksdb::ColumnFamilyHandle* StateStore::TableHandle(const RecordTable& table) const {
  return table.index() < num_tables_ ? handles_[kFirstTable + table.index()] : nullptr;
}

namespace {
Status TableNotOpen(const RecordTable& table) {
  return Status::Internal("state store: record table '" + std::string(table.name()) +
                          "' was declared after the store opened");
}
}  // namespace

Status StateStore::WriteRecords(std::span<const RecordWrite> writes, bool sync) {
  return WriteRecordBatch(
      writes, [](const RecordWrite& w) -> const RecordTable& { return *w.table; }, sync);
}

Status StateStore::WriteRecords(const RecordTable& table, std::span<const CheckpointRecord> records,
                                bool sync) {
  return WriteRecordBatch(
      records, [&table](const CheckpointRecord&) -> const RecordTable& { return table; }, sync);
}

template <typename Write, typename TableOf>
Status StateStore::WriteRecordBatch(std::span<const Write> writes, TableOf table_of, bool sync) {
  INFERSCOPE_RETURN_IF_ERROR(CheckWritable());
  INFERSCOPE_RETURN_IF_ERROR(ReopenIfWriteFailed());
  std::lock_guard<std::mutex> records_lock(records_mu_);
  std::shared_lock<std::shared_mutex> db_lock(db_mu_);
  INFERSCOPE_RETURN_IF_ERROR(CheckOpen());
  rocksdb::WriteBatch batch;
  for (const Write& w : writes) {
    const RecordTable& table = table_of(w);
    rocksdb::ColumnFamilyHandle* cf = TableHandle(table);
    if (cf == nullptr) return TableNotOpen(table);
    rocksdb::Status s = w.value ? batch.Put(cf, w.key, *w.value) : batch.Delete(cf, w.key);
    INFERSCOPE_RETURN_IF_ERROR(FromRocks(s, "state store"));
  }
  rocksdb::WriteOptions write_options;
  write_options.sync = sync_writes_ || sync;
  rocksdb::Status s = Commit(write_options, &batch);
  return FromRocks(s, "state store: writing " + std::to_string(writes.size()) + " records");
}

Result<std::optional<std::string>> StateStore::GetRecord(const RecordTable& table,
                                                         std::string_view key) const {
  std::string value;
  std::shared_lock<std::shared_mutex> db_lock(db_mu_);
  INFERSCOPE_RETURN_IF_ERROR(CheckOpen());
  rocksdb::ColumnFamilyHandle* cf = TableHandle(table);
  // A secondary whose primary has not created the table yet: nothing is stored in it.
  if (cf == nullptr) {
    if (read_only()) return std::optional<std::string>();
    return TableNotOpen(table);
  }
  rocksdb::Status s =
      db_->Get(rocksdb::ReadOptions(), cf, rocksdb::Slice(key.data(), key.size()), &value);
  if (s.IsNotFound()) return std::optional<std::string>();
  INFERSCOPE_RETURN_IF_ERROR(FromRocks(s, "state store: reading " + std::string(table.name())));
  return std::optional<std::string>(std::move(value));
}

Status StateStore::ScanRecords(
    const RecordTable& table, std::string_view from, std::string_view to,
    const std::function<bool(std::string_view, std::string_view)>& fn) const {
  rocksdb::ReadOptions read_options;
  rocksdb::Slice upper(to.data(), to.size());
  if (!to.empty()) read_options.iterate_upper_bound = &upper;
  std::shared_lock<std::shared_mutex> db_lock(db_mu_);
  INFERSCOPE_RETURN_IF_ERROR(CheckOpen());
  rocksdb::ColumnFamilyHandle* cf = TableHandle(table);
  if (cf == nullptr) return read_only() ? Status::Ok() : TableNotOpen(table);
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read_options, cf));
  for (it->Seek(rocksdb::Slice(from.data(), from.size())); it->Valid(); it->Next()) {
    if (!fn(it->key().ToStringView(), it->value().ToStringView())) break;
  }
  return FromRocks(it->status(), "state store: scanning " + std::string(table.name()));
}

int64_t StateStore::Watermark() const { return watermark_.load(std::memory_order_acquire); }

uint64_t StateStore::ViewVersion() const { return view_version_.load(std::memory_order_acquire); }

int64_t StateStore::EarliestChangeSince(uint64_t after, uint64_t through) const {
  if (after >= through) return std::numeric_limits<int64_t>::max();
  std::lock_guard<std::mutex> lock(view_mu_);
  if (view_history_.empty() || after + 1 < view_history_.front().first ||
      through > view_history_.back().first) {
    return kWholeViewChanged;
  }
  int64_t earliest = std::numeric_limits<int64_t>::max();
  for (size_t i = static_cast<size_t>(after + 1 - view_history_.front().first);
       i < view_history_.size() && view_history_[i].first <= through; ++i) {
    earliest = std::min(earliest, view_history_[i].second);
  }
  return earliest;
}

void StateStore::BumpView(int64_t earliest) {
  std::lock_guard<std::mutex> lock(view_mu_);
  const uint64_t version = view_version_.load(std::memory_order_relaxed) + 1;
  view_history_.emplace_back(version, earliest);
  if (view_history_.size() > kViewHistory) view_history_.pop_front();
  view_version_.store(version, std::memory_order_release);
}

Status StateStore::AddDataVersion(int64_t earliest, rocksdb::WriteBatch* batch) {
  std::string version;
  std::string log;
  {
    // The caller holds versioned_commits_ until the batch is written: numbers commit in order, and
    // the log of a batch lists every number before its own.
    std::lock_guard<std::mutex> lock(view_mu_);
    const uint64_t number = next_data_version_.fetch_add(1, std::memory_order_relaxed) + 1;
    AppendBigEndian64(&version, number);
    view_log_.emplace_back(number, earliest);
    if (view_log_.size() > kViewLogEntries) view_log_.pop_front();
    log.reserve(view_log_.size() * 16);
    for (const auto& [n, start] : view_log_) {
      AppendBigEndian64(&log, n);
      AppendBigEndian64(&log, static_cast<uint64_t>(start));
    }
  }
  INFERSCOPE_RETURN_IF_ERROR(
      FromRocks(batch->Put(handles_[kMeta], rocksdb::Slice(kDataVersionKey), version),
                "state store: data version"));
  return FromRocks(batch->Put(handles_[kMeta], rocksdb::Slice(kViewLogKey), log),
                   "state store: view log");
}

void StateStore::HoldWriteError(std::string_view writer, const Status& error) {
  std::lock_guard<std::mutex> lock(held_mu_);
  for (HeldError& h : held_) {
    if (h.writer == writer) {
      h.error = error;
      ++h.retries;
      write_retries_->Inc();
      return;
    }
  }
  held_.push_back({std::string(writer), error, clock_->NowMs(), 0});
  background_error_->Set(1);
}

void StateStore::ReleaseWriteError(std::string_view writer) {
  std::lock_guard<std::mutex> lock(held_mu_);
  std::erase_if(held_, [&](const HeldError& h) { return h.writer == writer; });
  if (held_.empty()) background_error_->Set(0);
}

Status StateStore::BackgroundError() const {
  std::lock_guard<std::mutex> lock(held_mu_);
  if (held_.empty()) return Status::Ok();
  const HeldError& h = held_.front();
  const int64_t seconds = std::max<int64_t>(0, (clock_->NowMs() - h.since_ms) / 1000);
  return Status::IOError(h.writer + ": " + h.error.ToString() + " (failing for " +
                         std::to_string(seconds) + " s, " + std::to_string(h.retries) +
                         " retries)");
}

Result<MaintenanceReport> StateStore::RunMaintenance() {
  INFERSCOPE_RETURN_IF_ERROR(CheckWritable());
  INFERSCOPE_RETURN_IF_ERROR(ReopenIfWriteFailed());
  std::lock_guard<std::mutex> lock(maintenance_mu_);
  const int64_t started_ns = clock_->MonotonicNs();
  MaintenanceReport report;
  report.now_ms = clock_->NowMs();
  report.watermark_ms = Watermark();
  report.rollups_written.assign(tiers_.size(), 0);
  Status status = Status::Ok();
  // Finest first: tier i reads tier i - 1, which this same run has just brought up to date.
  for (size_t i = 1; i < tiers_.size() && status.ok(); ++i) {
    const int64_t res = tiers_[i].resolution_ms;
    int64_t target = FloorDiv(report.watermark_ms - rollup_delay_ms_, res) * res;
    if (i > 1) target = std::min(target, RolledThroughMs(i - 1));
    if (target <= RolledThroughMs(i)) continue;
    status = RollUp(i, target, report.now_ms, &report.rollups_written[i]);
  }
  if (status.ok()) status = DropExpiredSeries(report.now_ms, &report.series_dropped);
  for (const RecordTable* table : RecordTable::All()) {
    if (!status.ok() || table->index() >= num_tables_) break;
    status = ExpireRecords(*table, report.now_ms, &report.records_expired);
  }
  for (size_t i = 0; i < tiers_.size(); ++i) {
    report.rolled_through_ms.push_back(RolledThroughMs(i));
    if (i > 0) rolled_through_gauges_[i]->Set(static_cast<double>(RolledThroughMs(i)) / 1000.0);
  }
  maintenance_seconds_->Observe(static_cast<double>(clock_->MonotonicNs() - started_ns) / 1e9);
  if (!status.ok()) {
    maintenance_errors_->Inc();
    return status.WithContext("state maintenance");
  }
  return report;
}

Status StateStore::RollUp(size_t tier, int64_t target_ms, int64_t now_ms, int64_t* written) {
  const int64_t res = tiers_[tier].resolution_ms;
  const int64_t done = RolledThroughMs(tier);
  // Buckets that would be expired on arrival are not written.
  const int64_t first_live = FirstLiveStart(tiers_[tier], tiers_[tier].ExpiredThroughMs(now_ms));
  std::vector<std::pair<std::string, SeriesRange>> series;
  {
    std::lock_guard<std::mutex> lock(write_mu_);
    series.assign(index_.begin(), index_.end());
  }

  std::shared_lock<std::shared_mutex> db_lock(db_mu_);
  INFERSCOPE_RETURN_IF_ERROR(CheckOpen());
  rocksdb::WriteOptions write_options;
  write_options.sync = sync_writes_;
  rocksdb::WriteBatch batch;
  int64_t in_batch = 0;
  auto commit = [&]() -> Status {
    if (in_batch == 0) return Status::Ok();
    rocksdb::Status s = Commit(write_options, &batch);
    INFERSCOPE_RETURN_IF_ERROR(FromRocks(s, "state store: writing rollups"));
    *written += in_batch;
    rollups_written_->Inc(static_cast<uint64_t>(in_batch));
    batch.Clear();
    in_batch = 0;
    return Status::Ok();
  };

  std::string key;
  std::string value;
  for (const auto& [series_prefix, range] : series) {
    const auto& prefix = series_prefix;  // clang 14 cannot capture a structured binding
    int64_t lo = std::max({done, FloorDiv(range.first_seen_ms, res) * res, first_live});
    int64_t hi = std::min(target_ms, FloorDiv(range.last_seen_ms, res) * res + res);
    if (lo >= hi) continue;
    std::string_view rest = prefix;
    std::string_view instance, model, metric;
    if (!ReadStr(&rest, &instance) || !ReadStr(&rest, &model) || !ReadStr(&rest, &metric)) {
      return Status::Corruption("state store: malformed series entry '" + Printable(prefix) + "'");
    }
    int64_t bucket = std::numeric_limits<int64_t>::min();
    Aggregate merged;
    auto flush = [&]() -> Status {
      if (bucket == std::numeric_limits<int64_t>::min()) return Status::Ok();
      key = prefix;
      AppendBigEndian64(&key, static_cast<uint64_t>(bucket));
      value.clear();
      AppendBigEndian64(&value, static_cast<uint64_t>(bucket + res));
      merged.EncodeTo(&value);
      INFERSCOPE_RETURN_IF_ERROR(
          FromRocks(batch.Put(TierHandle(tier), key, value), "state store: rollup"));
      merged.Clear();
      if (++in_batch >= kRollupBatchBuckets) return commit();
      return Status::Ok();
    };
    INFERSCOPE_RETURN_IF_ERROR(ScanTierLocked(tier - 1, instance, model, metric, lo, hi,
                                              [&](const StoredPane& fine) -> Status {
                                                int64_t b = FloorDiv(fine.start_ms, res) * res;
                                                if (b != bucket) {
                                                  INFERSCOPE_RETURN_IF_ERROR(flush());
                                                  bucket = b;
                                                }
                                                merged.Merge(fine.agg);
                                                return Status::Ok();
                                              }));
    INFERSCOPE_RETURN_IF_ERROR(flush());
  }
  // The cursor moves in the last batch, after every bucket before it is durable.
  value.clear();
  AppendBigEndian64(&value, static_cast<uint64_t>(target_ms));
  INFERSCOPE_RETURN_IF_ERROR(FromRocks(
      batch.Put(handles_[kMeta], std::string(kRolledThroughKeyPrefix) + tiers_[tier].Name(), value),
      "state store: rollup"));
  // Reads of ranges ending at or before the old cursor keep their plan and buckets.
  std::unique_lock<std::mutex> commit_lock(versioned_commits_);
  INFERSCOPE_RETURN_IF_ERROR(AddDataVersion(done, &batch));
  rocksdb::Status s = Commit(write_options, &batch);
  commit_lock.unlock();
  INFERSCOPE_RETURN_IF_ERROR(FromRocks(s, "state store: writing rollups"));
  *written += in_batch;
  rollups_written_->Inc(static_cast<uint64_t>(in_batch));
  rolled_through_[tier].store(target_ms, std::memory_order_release);
  BumpView(done);
  return Status::Ok();
}

Status StateStore::DropExpiredSeries(int64_t now_ms, int64_t* dropped) {
  // A series is gone once the bucket of the coarsest tier holding its last value has expired: every
  // finer bucket ends no later and is kept no longer.
  const TierSpec& coarsest = tiers_.back();
  if (coarsest.retention_ms == 0 || coarsest.resolution_ms == 0) return Status::Ok();
  const int64_t expired_through = coarsest.ExpiredThroughMs(now_ms);
  const int64_t res = coarsest.resolution_ms;
  std::lock_guard<std::mutex> lock(write_mu_);
  std::shared_lock<std::shared_mutex> db_lock(db_mu_);
  INFERSCOPE_RETURN_IF_ERROR(CheckOpen());
  rocksdb::WriteBatch batch;
  std::vector<std::string> gone;
  for (const auto& [key, range] : index_) {
    if (FloorDiv(range.last_seen_ms, res) * res + res <= expired_through) {
      INFERSCOPE_RETURN_IF_ERROR(
          FromRocks(batch.Delete(handles_[kSeries], key), "state store: dropping series"));
      gone.push_back(key);
    }
  }
  if (gone.empty()) return Status::Ok();
  std::unique_lock<std::mutex> commit_lock(versioned_commits_);
  INFERSCOPE_RETURN_IF_ERROR(AddDataVersion(kWholeViewChanged, &batch));
  rocksdb::WriteOptions write_options;
  write_options.sync = sync_writes_;
  rocksdb::Status s = Commit(write_options, &batch);
  commit_lock.unlock();
  INFERSCOPE_RETURN_IF_ERROR(FromRocks(s, "state store: dropping expired series"));
  for (const std::string& key : gone) index_.erase(key);
  BumpView(kWholeViewChanged);
  *dropped += static_cast<int64_t>(gone.size());
  series_dropped_->Inc(gone.size());
  return Status::Ok();
}

Status StateStore::ExpireRecords(const RecordTable& table, int64_t now_ms, int64_t* expired) {
  const int64_t retention = record_retention_ms_[table.index()];
  if (retention <= 0 || now_ms - retention <= 0) return Status::Ok();
  const int64_t cutoff_ms = now_ms - retention;
  std::string cutoff_key;
  AppendBigEndian64(&cutoff_key, static_cast<uint64_t>(cutoff_ms));
  const RecordExpiry::Hook hook = table.expiry().on_expire;

  std::lock_guard<std::mutex> records_lock(records_mu_);
  // The expired records (values only for the hook), read first: the hook reads the store, which
  // must not happen while this thread holds the scan's lock.
  std::vector<RecordWrite> writes;
  std::vector<std::string> values;
  INFERSCOPE_RETURN_IF_ERROR(
      ScanRecords(table, "", cutoff_key, [&](std::string_view key, std::string_view value) {
        writes.push_back({&table, std::string(key), std::nullopt});
        if (hook != nullptr) values.emplace_back(value);
        return writes.size() < static_cast<size_t>(kMaxRecordsExpiredPerRun);
      }));
  if (writes.empty()) return Status::Ok();
  const size_t count = writes.size();
  if (hook != nullptr) {
    std::vector<RecordWrite> dependent;
    for (size_t i = 0; i < count; ++i) {
      INFERSCOPE_RETURN_IF_ERROR(
          hook(*this, writes[i].key, values[i], cutoff_ms, &dependent)
              .WithContext("state store: expiring " + std::string(table.name())));
    }
    for (RecordWrite& w : dependent) writes.push_back(std::move(w));
  }

  std::shared_lock<std::shared_mutex> db_lock(db_mu_);
  INFERSCOPE_RETURN_IF_ERROR(CheckOpen());
  rocksdb::WriteBatch batch;
  for (const RecordWrite& w : writes) {
    rocksdb::ColumnFamilyHandle* cf = TableHandle(*w.table);
    if (cf == nullptr) return TableNotOpen(*w.table);
    rocksdb::Status s = w.value ? batch.Put(cf, w.key, *w.value) : batch.Delete(cf, w.key);
    INFERSCOPE_RETURN_IF_ERROR(FromRocks(s, "state store: expiring records"));
  }
  rocksdb::WriteOptions write_options;
  write_options.sync = sync_writes_;
  rocksdb::Status s = Commit(write_options, &batch);
  INFERSCOPE_RETURN_IF_ERROR(
      FromRocks(s, "state store: expiring records of " + std::string(table.name())));
  *expired += static_cast<int64_t>(count);
  records_expired_[table.index()]->Inc(count);
  return Status::Ok();
}

Status StateStore::CompactTiers() {
  INFERSCOPE_RETURN_IF_ERROR(CheckWritable());
  std::lock_guard<std::mutex> lock(maintenance_mu_);
  std::shared_lock<std::shared_mutex> db_lock(db_mu_);
  INFERSCOPE_RETURN_IF_ERROR(CheckOpen());
  for (size_t i = 0; i < tiers_.size(); ++i) {
    INFERSCOPE_RETURN_IF_ERROR(FromRocks(db_->Flush(rocksdb::FlushOptions(), TierHandle(i)),
                                         "state store: flushing tier " + tiers_[i].Name()));
    rocksdb::CompactRangeOptions options;
    // Rewrite even the bottommost files, so the filter sees every key.
    options.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
    INFERSCOPE_RETURN_IF_ERROR(
        FromRocks(db_->CompactRange(options, TierHandle(i), nullptr, nullptr),
                  "state store: compacting tier " + tiers_[i].Name()));
  }
  return Status::Ok();
}

}  // namespace inferscope
