#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bottlenecks/bottleneck.h"
#include "pipeline/status.h"
#include "state/record_table.h"
#include "state/state_store.h"

namespace inferscope {

class StateStore;

// Bottleneck records in the StateStore, shared by the sink that writes them (rocksdb_bottlenecks)
// and the query node that reads them (GET /v1/bottlenecks). Values are JSON (BottleneckToJson).
//
// clang-format off
//   bottlenecks         key: str(instance) str(model) u8(type)                     value: JSON of its latest change
//   bottleneck_history  key: be64(detected_at ms) be64(BottleneckId)
//                            be64(window_start ms) u8(change)                      value: JSON of that change
// clang-format on
//
// The evidence window's start (event time) keeps apart, in order, the changes of one bottleneck
// within one millisecond (a backlog closes many panes in one step). Stores written before
// 2026-12-07 have history keys without it (17 bytes); they are read and expire alike.
//
// The current table keeps one record per (instance, model, type): its latest change, active or
// resolved; key order groups an instance's bottlenecks together (the API lists them in that
// order). The history orders changes by detection time and is time-keyed (state/record_table.h):
// its changes expire after kDefaultBottleneckHistoryRetentionMs (the topology's
// `state.record_retention.bottleneck_history` overrides it), and an expiring resolution takes the
// current record with it when that record is the resolution (a bottleneck resolved longer ago than
// the retention is forgotten). Active records stay.

// Default retention of bottleneck_history: 7 days.
inline constexpr int64_t kDefaultBottleneckHistoryRetentionMs = 7LL * 24 * 3600 * 1000;

extern const RecordTable kBottlenecksTable;        // "bottlenecks"
extern const RecordTable kBottleneckHistoryTable;  // "bottleneck_history" (time-keyed)

std::string BottleneckKey(std::string_view instance, std::string_view model, BottleneckType type);
std::string BottleneckHistoryKey(const Bottleneck& b);

// Writes each change as the latest state of its (instance, model, type) and appends it to the
// history, in one atomic WriteBatch.
Status StoreBottlenecks(StateStore& store, std::span<const Bottleneck> changes);
// The record writes StoreBottlenecks makes, appended to `*writes`.
void AppendBottleneckWrites(std::span<const Bottleneck> changes, std::vector<RecordWrite>* writes);
// Calls `fn(key, bottleneck)` for every current record with key > `after` (empty: from the first),
// in key order, until it returns false. Undecodable records are skipped and counted in *skipped.
Status ScanBottlenecks(const StateStore& store, std::string_view after,
                       const std::function<bool(std::string_view, const Bottleneck&)>& fn,
                       uint64_t* skipped = nullptr);
// Calls `fn` with every change detected at or after `from_ms`, oldest first, until it returns
// false.
Status ScanBottleneckHistory(const StateStore& store, int64_t from_ms,
                             const std::function<bool(const Bottleneck&)>& fn);

}  // namespace inferscope
