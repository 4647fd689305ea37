#include "pipeline/state_store.h"

#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <chrono>
#include <set>
#include <tuple>
#include <utility>

namespace inferscope {
namespace {

constexpr size_t kMaxNameBytes = 255;
constexpr size_t kPanes = 1;
constexpr size_t kSeries = 2;
constexpr size_t kMeta = 3;
constexpr size_t kFirstTable = 4;  // handles_ index of StateTable 0
constexpr std::string_view kWatermarkKey = "watermark";
const char* const kOwnFamilies[] = {"panes",         "series",   "meta",        "alerts",
                                    "alert_history", "silences", "dead_letter", "checkpoint"};

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
                                   " bytes; at most 255 are allowed");
  }
  return Status::Ok();
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

}  // namespace

Status StateStoreOptions::Validate() const {
  if (path.empty()) return Status::InvalidArgument("state store: path is required");
  if (block_cache_mb == 0)
    return Status::InvalidArgument("state store: block_cache_mb must be > 0");
  return Status::Ok();
}

void AppendStr(std::string* out, std::string_view s) {
  // Callers check the length first; truncation here only guards the encoding.
  size_t n = std::min(s.size(), kMaxNameBytes);
  out->push_back(static_cast<char>(n));
  out->append(s.data(), n);
}

void AppendBigEndian64(std::string* out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8)
    out->push_back(static_cast<char>((v >> shift) & 0xff));
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
  store->sync_writes_ = options.sync_writes;
  if (metrics == nullptr) {
    store->own_metrics_ = std::make_unique<MetricsRegistry>();
    metrics = store->own_metrics_.get();
  }
  store->write_latency_ = metrics->GetHistogram("inferscope_state_write_seconds",
                                                "Latency of RocksDB pane WriteBatch commits");
  store->write_errors_ =
      metrics->GetCounter("inferscope_state_write_errors_total", "RocksDB pane writes that failed");
  store->panes_written_ = metrics->GetCounter("inferscope_state_panes_written_total",
                                              "Panes written to the state store");

  rocksdb::DBOptions db_options;
  db_options.create_if_missing = options.create_if_missing;
  db_options.create_missing_column_families = true;

  rocksdb::BlockBasedTableOptions table_options;
  table_options.block_cache = rocksdb::NewLRUCache(options.block_cache_mb << 20);
  rocksdb::ColumnFamilyOptions cf_options;
  cf_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table_options));

  // Every column family in the directory must be opened; ours come first, in a fixed order.
  std::vector<std::string> existing;
  rocksdb::Status s = rocksdb::DB::ListColumnFamilies(db_options, options.path, &existing);
  if (!s.ok() && !(s.IsIOError() || s.IsPathNotFound())) {
    return FromRocks(s, "state store: listing column families of " + options.path);
  }
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  descriptors.emplace_back(rocksdb::kDefaultColumnFamilyName, cf_options);
  for (const char* name : kOwnFamilies) descriptors.emplace_back(name, cf_options);
  std::set<std::string> own = {rocksdb::kDefaultColumnFamilyName};
  for (const char* name : kOwnFamilies) own.insert(name);
  for (const std::string& name : existing) {
    if (own.count(name) == 0) descriptors.emplace_back(name, cf_options);
  }

  rocksdb::DB* raw = nullptr;
  s = rocksdb::DB::Open(db_options, options.path, descriptors, &store->handles_, &raw);
  if (!s.ok()) return FromRocks(s, "state store: opening " + options.path);
  store->db_.reset(raw);
  INFERSCOPE_RETURN_IF_ERROR(store->LoadIndex());
  return store;
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
  INFERSCOPE_RETURN_IF_ERROR(FromRocks(it->status(), "state store: reading the series index"));

  std::string value;
  rocksdb::Status s =
      db_->Get(rocksdb::ReadOptions(), handles_[kMeta], rocksdb::Slice(kWatermarkKey), &value);
  if (s.IsNotFound()) return Status::Ok();
  INFERSCOPE_RETURN_IF_ERROR(FromRocks(s, "state store: reading the watermark"));
  if (value.size() != 8) return Status::Corruption("state store: stored watermark is not 8 bytes");
  watermark_.store(static_cast<int64_t>(DecodeBigEndian64(value)), std::memory_order_release);
  return Status::Ok();
}

StateStore::~StateStore() {
  if (db_ == nullptr) return;
  for (rocksdb::ColumnFamilyHandle* handle : handles_) {
    // Destroying a handle only fails for a null handle; nothing to report at destruction.
    (void)db_->DestroyColumnFamilyHandle(handle);
  }
  handles_.clear();
  (void)db_->Close();
  db_.reset();
}

Status StateStore::WritePanes(std::span<const WindowSummary> panes, const Interner& names,
                              int64_t watermark_ms) {
  std::lock_guard<std::mutex> lock(write_mu_);
  rocksdb::WriteBatch batch;
  // Index entries changed by this batch; applied to index_ only once the write succeeded.
  std::map<std::string, SeriesRange, std::less<>> updates;
  std::string key;
  std::string value;
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
    key = SeriesPrefix(instance, model, metric);
    int64_t last_seen = std::max(pane.max_event_time_ms, pane.start_ms);
    auto upd = updates.find(key);
    if (upd == updates.end()) {
      auto stored = index_.find(key);
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
  int64_t new_watermark = std::max(watermark_.load(std::memory_order_relaxed), watermark_ms);
  value.clear();
  AppendBigEndian64(&value, static_cast<uint64_t>(new_watermark));
  INFERSCOPE_RETURN_IF_ERROR(
      FromRocks(batch.Put(handles_[kMeta], rocksdb::Slice(kWatermarkKey), value), "state store"));

  rocksdb::WriteOptions write_options;
  write_options.sync = sync_writes_;
  auto started = std::chrono::steady_clock::now();
  rocksdb::Status s = db_->Write(write_options, &batch);
  write_latency_->Observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  if (!s.ok()) {
    write_errors_->Inc();
    return FromRocks(s, "state store: writing " + std::to_string(panes.size()) + " panes");
  }
  for (auto& [series_key, range] : updates) index_[series_key] = range;
  watermark_.store(new_watermark, std::memory_order_release);
  panes_written_->Inc(panes.size());
  return Status::Ok();
}

Status StateStore::ScanPanes(std::string_view instance, std::string_view model,
                             std::string_view metric, int64_t from_ms, int64_t to_ms,
                             const std::function<Status(const StoredPane&)>& fn) const {
  INFERSCOPE_RETURN_IF_ERROR(CheckName("instance", instance));
  INFERSCOPE_RETURN_IF_ERROR(CheckName("model", model));
  INFERSCOPE_RETURN_IF_ERROR(CheckName("metric", metric));
  from_ms = std::max<int64_t>(from_ms, 0);
  if (to_ms <= from_ms) return Status::Ok();

  const std::string prefix = SeriesPrefix(instance, model, metric);
  const std::string lower = PaneKey(instance, model, metric, from_ms);
  const std::string upper = PaneKey(instance, model, metric, to_ms);
  rocksdb::Slice upper_slice(upper);
  rocksdb::ReadOptions read_options;
  read_options.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read_options, handles_[kPanes]));
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
  std::sort(all.begin(), all.end(), [](const SeriesInfo& a, const SeriesInfo& b) {
    return std::tie(a.instance, a.model, a.metric) < std::tie(b.instance, b.model, b.metric);
  });
  for (const SeriesInfo& info : all) fn(info);
  return Status::Ok();
}

std::string_view StateTableName(StateTable table) {
  auto i = static_cast<size_t>(table);
  return i < static_cast<size_t>(kNumStateTables) ? kOwnFamilies[kFirstTable - 1 + i] : "unknown";
}

Status StateStore::WriteRecords(std::span<const RecordWrite> writes, bool sync) {
  rocksdb::WriteBatch batch;
  for (const RecordWrite& w : writes) {
    rocksdb::ColumnFamilyHandle* cf = handles_[kFirstTable + static_cast<size_t>(w.table)];
    rocksdb::Status s = w.value ? batch.Put(cf, w.key, *w.value) : batch.Delete(cf, w.key);
    INFERSCOPE_RETURN_IF_ERROR(FromRocks(s, "state store"));
  }
  rocksdb::WriteOptions write_options;
  write_options.sync = sync_writes_ || sync;
  rocksdb::Status s = db_->Write(write_options, &batch);
  if (!s.ok()) write_errors_->Inc();
  return FromRocks(s, "state store: writing " + std::to_string(writes.size()) + " records");
}

Result<std::optional<std::string>> StateStore::GetRecord(StateTable table,
                                                         std::string_view key) const {
  std::string value;
  rocksdb::Status s =
      db_->Get(rocksdb::ReadOptions(), handles_[kFirstTable + static_cast<size_t>(table)],
               rocksdb::Slice(key.data(), key.size()), &value);
  if (s.IsNotFound()) return std::optional<std::string>();
  INFERSCOPE_RETURN_IF_ERROR(
      FromRocks(s, "state store: reading " + std::string(StateTableName(table))));
  return std::optional<std::string>(std::move(value));
}

Status StateStore::ScanRecords(
    StateTable table, std::string_view from, std::string_view to,
    const std::function<bool(std::string_view, std::string_view)>& fn) const {
  rocksdb::ReadOptions read_options;
  rocksdb::Slice upper(to.data(), to.size());
  if (!to.empty()) read_options.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(
      db_->NewIterator(read_options, handles_[kFirstTable + static_cast<size_t>(table)]));
  for (it->Seek(rocksdb::Slice(from.data(), from.size())); it->Valid(); it->Next()) {
    if (!fn(it->key().ToStringView(), it->value().ToStringView())) break;
  }
  return FromRocks(it->status(), "state store: scanning " + std::string(StateTableName(table)));
}

int64_t StateStore::Watermark() const { return watermark_.load(std::memory_order_acquire); }

}  // namespace inferscope
