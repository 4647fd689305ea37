#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "alerting/alert.h"
#include "bottlenecks/bottleneck.h"
#include "pipeline/interner.h"
#include "pipeline/status.h"
#include "pipeline/summary.h"
#include "routing/learner.h"
#include "state/record_table.h"

namespace inferscope {

class StateStore;

// Materialising the results stream (docs/ARCHITECTURE.md, "Several engine nodes") into a store
// of a query node's own: the rows the engines' own rocksdb_* sinks write, through the same
// StateStore code (WritePanes with its fleet rollup, AppendAlertWrites, ...), plus what the
// materialiser needs to be exactly-once and to know the fleet's watermark:
//
// clang-format off
//   results_position  key: the consumer's name       value: be64(stream sequence of the last message applied)
//   results_nodes     key: the engine node's name    value: be64(its latest watermark ms)
// clang-format on
//
// Everything of one ResultsBatch — panes, series index, fleet rows, records, the node watermarks,
// the fleet watermark and the position — goes into one atomic WriteBatch, so a crash of the query
// node leaves the store at a message boundary and it resumes right after the stored position.
//
// Idempotence (a result the stream holds twice: an engine re-emitted it after a restart outside
// the stream's duplicate window): alerts, bottlenecks and routing weights are keyed by their
// identity and change, so applying one again writes the same rows. A pane is an upsert by series
// and start; one with fewer events than the pane stored is skipped (counted), since a pane only
// gains events: a re-emission of an earlier, smaller version after a restart must not replace the
// final one. WritePanes' fleet rollup recomputes an instance's row when one of its panes is stored
// already, so a pane applied twice is counted once (StateStoreTest.FleetRollup...). An alert goes
// to the history tables always and to its current row only when its window ends no earlier than
// the stored current row's: a transition replayed late (a slot taken over, whose new owner
// re-detects transitions after its restored checkpoint) does not replace a newer one.
//
// The fleet watermark is the minimum of the nodes' latest watermarks (a node's panes up to its
// watermark are in the stream before its watermark message): every pane a node will still fire
// ends after it, so rollups (RunMaintenance) never roll up a bucket a lagging node still feeds.
// Limitation: a node that stops for good holds the minimum back until its results_nodes record is
// deleted.
extern const RecordTable kResultsPositionTable;  // "results_position"
extern const RecordTable kResultsNodesTable;     // "results_nodes"

// The decoded content of a run of results-stream messages, applied together.
struct ResultsBatch {
  std::vector<WindowSummary> panes;  // names interned in the `names` given to ApplyResults
  std::vector<Alert> alerts;
  std::vector<Bottleneck> bottlenecks;
  std::vector<routing::RoutingWeights> weights;
  // Dead letters: (published at ms, JSON as the rocksdb_state sink stores it).
  std::vector<std::pair<int64_t, std::string>> dead_letters;
  std::map<std::string, int64_t, std::less<>> node_watermarks;  // the highest per node
  std::string position_key;                                     // the consumer's name
  uint64_t position = 0;  // stream sequence of the last message in the batch

  void Clear();
  bool empty() const;
};

// What ApplyResults did.
struct ApplyReport {
  size_t panes_written = 0;
  size_t panes_skipped = 0;  // fewer events than the pane stored
  int64_t watermark_ms = 0;  // the fleet watermark stored
};

// Applies `batch` to `store` in one atomic WriteBatch (see above). `names` holds the panes' names.
Result<ApplyReport> ApplyResults(StateStore& store, const Interner& names,
                                 const ResultsBatch& batch);
// The position stored under `key` (nullopt: nothing applied yet).
Result<std::optional<uint64_t>> LoadResultsPosition(const StateStore& store, std::string_view key);
// Every node's latest watermark as stored.
Result<std::map<std::string, int64_t, std::less<>>> LoadNodeWatermarks(const StateStore& store);

}  // namespace inferscope
