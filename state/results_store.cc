#include "state/results_store.h"

#include <algorithm>
#include <limits>
#include <map>
#include <span>
#include <tuple>

#include "pipeline/coding.h"
#include "state/alert_store.h"
#include "state/bottleneck_store.h"
#include "state/rocksdb_state_sink.h"
#include "state/routing_store.h"
#include "state/state_store.h"

namespace inferscope {

const RecordTable kResultsPositionTable("results_position");
const RecordTable kResultsNodesTable("results_nodes");

namespace {

std::string Be64(uint64_t v) {
  std::string out;
  AppendBigEndian64(&out, v);
  return out;
}

}  // namespace

void ResultsBatch::Clear() {
  panes.clear();
  alerts.clear();
  bottlenecks.clear();
  weights.clear();
  dead_letters.clear();
  node_watermarks.clear();
  position = 0;
}

bool ResultsBatch::empty() const {
  return panes.empty() && alerts.empty() && bottlenecks.empty() && weights.empty() &&
         dead_letters.empty() && node_watermarks.empty();
}

Result<std::optional<uint64_t>> LoadResultsPosition(const StateStore& store, std::string_view key) {
  Result<std::optional<std::string>> value = store.GetRecord(kResultsPositionTable, key);
  if (!value.ok()) return value.status();
  if (!value->has_value()) return std::optional<uint64_t>();
  if ((*value)->size() != 8) {
    return Status::Corruption("results_position '" + std::string(key) + "' is not 8 bytes");
  }
  return std::optional<uint64_t>(ReadBigEndian64(**value));
}

Result<std::map<std::string, int64_t, std::less<>>> LoadNodeWatermarks(const StateStore& store) {
  std::map<std::string, int64_t, std::less<>> out;
  Status s = store.ScanRecords(
      kResultsNodesTable, "", "", [&](std::string_view key, std::string_view value) {
        if (value.size() == 8) {
          out[std::string(key)] = static_cast<int64_t>(ReadBigEndian64(value));
        }
        return true;
      });
  if (!s.ok()) return s;
  return out;
}

Result<ApplyReport> ApplyResults(StateStore& store, const Interner& names,
                                 const ResultsBatch& batch) {
  ApplyReport report;
  std::vector<RecordWrite> writes;
  // An alert's current row follows its latest transition in event time: a slot taken over replays
  // from its last checkpoint and emits transitions again, with new detection times (so new
  // Msg-Ids, not dropped by the stream's duplicate window); one older than the stored current row
  // must not replace it (it still goes to the history). Ties: the later arrival wins.
  std::map<uint64_t, int64_t> newest;  // fingerprint -> window end of its current row
  for (const Alert& a : batch.alerts) {
    auto it = newest.find(a.fingerprint);
    if (it == newest.end()) {
      Result<std::optional<Alert>> stored = LoadAlert(store, a.fingerprint);
      if (!stored.ok()) return stored.status();
      it = newest
               .emplace(a.fingerprint, stored->has_value() ? (*stored)->window_end_ms
                                                           : std::numeric_limits<int64_t>::min())
               .first;
    }
    const bool current = a.window_end_ms >= it->second;
    if (current) it->second = a.window_end_ms;
    AppendAlertWrite(a, current, &writes);
  }
  AppendBottleneckWrites(batch.bottlenecks, &writes);
  AppendRoutingWeightsWrites(batch.weights, &writes);
  for (const auto& [at_ms, json] : batch.dead_letters) {
    // Keyed like the rocksdb_state sink's (be64 ms, be64 sequence), the sequence a hash of the
    // content: the same dead letter applied twice is one record.
    std::string key = Be64(static_cast<uint64_t>(std::max<int64_t>(at_ms, 0)));
    uint64_t h = 1469598103934665603ULL;
    for (unsigned char c : json) {
      h ^= c;
      h *= 1099511628211ULL;
    }
    AppendBigEndian64(&key, h);
    writes.push_back({&kDeadLetterTable, std::move(key), json});
  }

  // The fleet watermark: the minimum of every node's latest (stored, raised by this batch).
  Result<std::map<std::string, int64_t, std::less<>>> nodes = LoadNodeWatermarks(store);
  if (!nodes.ok()) return nodes.status();
  for (const auto& [node, watermark] : batch.node_watermarks) {
    int64_t& stored = (*nodes)[node];
    if (watermark > stored) {
      stored = watermark;
      writes.push_back({&kResultsNodesTable, node, Be64(static_cast<uint64_t>(watermark))});
    }
  }
  int64_t fleet = 0;
  if (!nodes->empty()) {
    fleet = std::numeric_limits<int64_t>::max();
    for (const auto& [node, watermark] : *nodes) fleet = std::min(fleet, watermark);
  }
  if (!batch.position_key.empty()) {
    writes.push_back({&kResultsPositionTable, batch.position_key, Be64(batch.position)});
  }

  // Panes: the last version of each (series, start) in the batch, unless the store holds one with
  // more events.
  std::map<std::tuple<StringId, StringId, StringId, int64_t>, size_t> last;
  for (size_t i = 0; i < batch.panes.size(); ++i) {
    const WindowSummary& p = batch.panes[i];
    last[{p.series.instance, p.series.model, p.series.metric, p.start_ms}] = i;
  }
  std::vector<WindowSummary> panes;
  panes.reserve(last.size());
  for (size_t i = 0; i < batch.panes.size(); ++i) {
    const WindowSummary& pane = batch.panes[i];
    if (last[{pane.series.instance, pane.series.model, pane.series.metric, pane.start_ms}] != i) {
      ++report.panes_skipped;  // replaced by a later version in the batch
      continue;
    }
    uint64_t stored_count = 0;
    bool stored = false;
    Status s = store.ScanPanes(names.Name(pane.series.instance), names.Name(pane.series.model),
                               names.Name(pane.series.metric), pane.start_ms, pane.start_ms + 1,
                               [&](const StoredPane& p) {
                                 stored = true;
                                 stored_count = p.agg.count;
                                 return Status::Ok();
                               });
    if (!s.ok()) return s;
    if (stored && stored_count > pane.agg.count) {
      ++report.panes_skipped;
      continue;
    }
    panes.push_back(pane);
  }
  INFERSCOPE_RETURN_IF_ERROR(store.WritePanes(panes, names, fleet, writes));
  report.panes_written = panes.size();
  report.watermark_ms = std::max(fleet, store.Watermark());
  return report;
}

}  // namespace inferscope
