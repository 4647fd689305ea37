#include "state/bottleneck_store.h"

#include <algorithm>
#include <vector>

#include <nlohmann/json.hpp>

#include "bottlenecks/bottleneck_json.h"
#include "pipeline/coding.h"
#include "pipeline/json_text.h"
#include "state/state_store.h"

namespace inferscope {

namespace {
Status ExpireBottleneckChange(const StateStore& store, std::string_view key, std::string_view value,
                              int64_t cutoff_ms, std::vector<RecordWrite>* writes);
}  // namespace

const RecordTable kBottlenecksTable("bottlenecks");
const RecordTable kBottleneckHistoryTable("bottleneck_history",
                                          RecordExpiry{kDefaultBottleneckHistoryRetentionMs,
                                                       &ExpireBottleneckChange});

using nlohmann::json;

namespace {

// The expiry hook of bottleneck_history (RecordExpiry::Hook): an expiring resolution takes the
// current record of its (instance, model, type) when that record is still a resolution (or a
// retraction, stored alike) older than the cutoff (a later raise keeps it).
Status ExpireBottleneckChange(const StateStore& store, std::string_view key, std::string_view value,
                              int64_t cutoff_ms, std::vector<RecordWrite>* writes) {
  // The change is the key's last byte (with the window start: 25 bytes; stores written before
  // 2026-12-07: 17).
  const auto change_kind = key.size() == 25 || key.size() == 17
                               ? static_cast<BottleneckChange>(key.back())
                               : BottleneckChange::kRaised;
  if (change_kind != BottleneckChange::kResolved && change_kind != BottleneckChange::kRetracted) {
    return Status::Ok();
  }
  Result<Bottleneck> change = BottleneckFromJson(json::parse(value, nullptr, false));
  if (!change.ok()) return Status::Ok();  // unreadable: the history record just goes
  const std::string current_key = BottleneckKey(change->instance, change->model, change->type);
  Result<std::optional<std::string>> current = store.GetRecord(kBottlenecksTable, current_key);
  if (!current.ok()) return current.status();
  if (!current->has_value()) return Status::Ok();
  Result<Bottleneck> latest = BottleneckFromJson(json::parse(**current, nullptr, false));
  if (!latest.ok() ||
      (latest->state != BottleneckState::kActive && latest->detected_at_ms < cutoff_ms)) {
    writes->push_back({&kBottlenecksTable, current_key, std::nullopt});
  }
  return Status::Ok();
}

}  // namespace

std::string BottleneckKey(std::string_view instance, std::string_view model, BottleneckType type) {
  std::string key;
  AppendStr(&key, instance);
  AppendStr(&key, model);
  key.push_back(static_cast<char>(type));
  return key;
}

std::string BottleneckHistoryKey(const Bottleneck& b) {
  std::string key;
  AppendBigEndian64(&key, static_cast<uint64_t>(std::max<int64_t>(b.detected_at_ms, 0)));
  AppendBigEndian64(&key, BottleneckId(b.instance, b.model, b.type));
  AppendBigEndian64(&key, static_cast<uint64_t>(std::max<int64_t>(b.window_start_ms, 0)));
  key.push_back(static_cast<char>(b.change));
  return key;
}

void AppendBottleneckWrites(std::span<const Bottleneck> changes, std::vector<RecordWrite>* writes) {
  writes->reserve(writes->size() + changes.size() * 2);
  for (const Bottleneck& b : changes) {
    std::string value = ToJsonText(BottleneckToJson(b));
    writes->push_back({&kBottlenecksTable, BottleneckKey(b.instance, b.model, b.type), value});
    writes->push_back({&kBottleneckHistoryTable, BottleneckHistoryKey(b), std::move(value)});
  }
}

Status StoreBottlenecks(StateStore& store, std::span<const Bottleneck> changes) {
  if (changes.empty()) return Status::Ok();
  std::vector<RecordWrite> writes;
  AppendBottleneckWrites(changes, &writes);
  return store.WriteRecords(writes);
}

Status ScanBottlenecks(const StateStore& store, std::string_view after,
                       const std::function<bool(std::string_view, const Bottleneck&)>& fn,
                       uint64_t* skipped) {
  std::string from(after);
  if (!from.empty()) from.push_back('\0');  // the first key after `after`
  return store.ScanRecords(
      kBottlenecksTable, from, "", [&](std::string_view key, std::string_view value) {
        Result<Bottleneck> b = BottleneckFromJson(json::parse(value, nullptr, false));
        if (!b.ok()) {
          if (skipped != nullptr) ++*skipped;
          return true;
        }
        return fn(key, *b);
      });
}

Status ScanBottleneckHistory(const StateStore& store, int64_t from_ms,
                             const std::function<bool(const Bottleneck&)>& fn) {
  std::string from;
  AppendBigEndian64(&from, static_cast<uint64_t>(std::max<int64_t>(from_ms, 0)));
  return store.ScanRecords(
      kBottleneckHistoryTable, from, "", [&](std::string_view, std::string_view value) {
        Result<Bottleneck> b = BottleneckFromJson(json::parse(value, nullptr, false));
        return b.ok() ? fn(*b) : true;
      });
}

}  // namespace inferscope
