#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "pipeline/config.h"
#include "pipeline/registry.h"
#include "pipeline/status.h"
#include "pipeline/tiers.h"
#include "pipeline/yaml_file.h"

namespace inferscope {

// One source, operator or sink as a topology declares it.
struct StageSpec {
  std::string name;
  std::string type;
  std::vector<std::string> inputs;  // names of upstream stages (empty for sources)
  ConfigNode options;               // the stage's `options` mapping, handed to its factory
  ConfigNode at;                    // the stage's own mapping, for error locations
};

// Engine-wide settings of a topology.
struct EngineSettings {
  size_t queue_capacity = 64;       // event batches queued in front of the operators
  size_t batch_pool = 160;          // event batches in circulation (bounds ingest memory)
  size_t batch_reserve = 1024;      // events each pooled batch reserves up front
  size_t sink_queue_capacity = 64;  // result batches queued in front of each sink
  int64_t timer_interval_ms = 100;  // processing-time tick for operators
  // How often operator state and applied sequence numbers are checkpointed to the state store
  // (needs a sink that writes checkpoints: the state sink, state/). 0 disables.
  int64_t checkpoint_interval_ms = 1000;
  // How often the Interner reclaims names that nobody holds any more (series expired, one-off
  // names of rejected events). A name unused for two whole intervals goes. 0 disables.
  int64_t string_sweep_interval_ms = 60'000;
};

// A parsed topology: what runs, how it is wired, where state and the query API live. Files in
// topologies/ parse into this; a builder can fill it in code just the same.
struct TopologySpec {
  std::string file;  // where it came from ("<builder>" when built in code)
  std::string name;
  std::string state_path;  // RocksDB directory; empty = no state store
  // state.tiers, finest first (default: 10s/6h, 1m/7d, 1h/90d); tiers[0].resolution must equal the
  // pane of every window_aggregate operator.
  // Without `state.tiers`: the default tiers, with tier 0 following the window operator's pane.
  std::vector<TierSpec> state_tiers = DefaultTiers();
  bool state_tiers_given = false;            // `state.tiers` was in the file
  int64_t rollup_delay_ms = 60'000;          // state.rollup_delay (1m)
  int64_t maintenance_interval_ms = 10'000;  // state.maintenance_interval (10s); rollups, retention
  // state.record_retention: retention per time-keyed record table (state/record_table.h), in file
  // order; 0 keeps forever. Tables not named keep their declared default.
  std::vector<std::pair<std::string, int64_t>> record_retention_ms;
  ConfigNode record_retention_at;  // the `state.record_retention` mapping
  ConfigNode state_at;             // the `state` mapping, for error locations
  std::string query_listen;        // "host:port" of the HTTP API; empty = no API
  // The `query` mapping (empty when absent): its access, limit, CORS and export fields are read by
  // query/access.h (ParseQueryAccess), which pipeline/ does not depend on.
  ConfigNode query_at;
  EngineSettings engine;
  std::vector<StageSpec> sources;
  std::vector<StageSpec> operators;
  std::vector<StageSpec> sinks;
};

// The largest topology file LoadTopologyFile reads: 2 MiB, as every YAML file (yaml_file.h).
inline constexpr int64_t kMaxTopologyFileBytes = kMaxYamlFileBytes;

// Parses YAML text; `file` names it in errors ("file:line:col: field: message"). The text is one
// YAML document (ParseYamlDocument: a second document, unreadable content or a key given twice in
// one mapping is an error).
Result<TopologySpec> ParseTopology(const std::string& yaml_text, const std::string& file);
// Reads and parses a topology file: NotFound when it cannot be opened (with the errno reason),
// InvalidArgument for a directory or a file larger than kMaxTopologyFileBytes (at most that many
// bytes plus one are read, so /dev/zero or a FIFO is refused too).
Result<TopologySpec> LoadTopologyFile(const std::string& path);

// The stages of a topology, created by their factories, in the order the spec lists them.
struct TopologyStages {
  std::vector<std::unique_ptr<Source>> sources;
  std::vector<std::unique_ptr<Operator>> operators;
  std::vector<std::unique_ptr<Sink>> sinks;
};

// Checks the wiring against the registry, creates every stage, and checks the result kinds along
// every edge:
// - structure: unique names, known types, inputs that exist and have the right role (operators
//   read sources and operators listed before them, sinks read operators), every source consumed;
// - options: each factory checks its stage's options (file, line and field in its errors);
// - kinds (pipeline/result_kind.h): an operator reading a source must read kind::Event; a consumer
//   (operator or sink) of an operator must read (Reads / Accepts) at least one kind that operator
//   emits. Kinds it does not read pass it by. A mismatch names the file, line and column of the
//   input in the consumer's `inputs`, both stages and their kinds.
// Nothing is opened: creating a stage binds no socket and opens no file.
Result<TopologyStages> CreateTopologyStages(const TopologySpec& spec, const Registry& registry);

// CreateTopologyStages without keeping the stages.
Status ValidateTopology(const TopologySpec& spec, const Registry& registry);

}  // namespace inferscope
