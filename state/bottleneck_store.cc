#include "state/bottleneck_store.h"

#include <algorithm>
#include <vector>

#include <nlohmann/json.hpp>

#include "bottlenecks/bottleneck_json.h"
#include "pipeline/coding.h"
#include "pipeline/json_text.h"
#include "state/state_store.h"

namespace inferscope {

const RecordTable kBottlenecksTable("bottlenecks");
const RecordTable kBottleneckHistoryTable("bottleneck_history");

using nlohmann::json;

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
  key.push_back(static_cast<char>(b.change));
  return key;
}

Status StoreBottlenecks(StateStore& store, std::span<const Bottleneck> changes) {
  if (changes.empty()) return Status::Ok();
  std::vector<RecordWrite> writes;
  writes.reserve(changes.size() * 2);
  for (const Bottleneck& b : changes) {
    std::string value = ToJsonText(BottleneckToJson(b));
    writes.push_back({&kBottlenecksTable, BottleneckKey(b.instance, b.model, b.type), value});
    writes.push_back({&kBottleneckHistoryTable, BottleneckHistoryKey(b), std::move(value)});
  }
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

Result<size_t> PruneBottlenecks(StateStore& store, int64_t before_ms, size_t max_deletes) {
  std::vector<RecordWrite> deletes;
  std::string to;
  AppendBigEndian64(&to, static_cast<uint64_t>(std::max<int64_t>(before_ms, 0)));
  Status st = store.ScanRecords(
      kBottleneckHistoryTable, "", to, [&](std::string_view key, std::string_view) {
        deletes.push_back({&kBottleneckHistoryTable, std::string(key), std::nullopt});
        return deletes.size() < max_deletes;
      });
  if (!st.ok()) return st;
  if (deletes.size() < max_deletes) {
    st = store.ScanRecords(
        kBottlenecksTable, "", "", [&](std::string_view key, std::string_view value) {
          Result<Bottleneck> b = BottleneckFromJson(json::parse(value, nullptr, false));
          if (!b.ok() ||
              (b->state == BottleneckState::kResolved && b->detected_at_ms < before_ms)) {
            deletes.push_back({&kBottlenecksTable, std::string(key), std::nullopt});
          }
          return deletes.size() < max_deletes;
        });
    if (!st.ok()) return st;
  }
  if (deletes.empty()) return size_t{0};
  INFERSCOPE_RETURN_IF_ERROR(store.WriteRecords(deletes));
  return deletes.size();
}

}  // namespace inferscope
