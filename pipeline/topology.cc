#include "pipeline/topology.h"

#include <algorithm>
#include <map>
#include <set>
#include <vector>

#include "pipeline/address.h"
#include "pipeline/yaml_file.h"

namespace inferscope {
namespace {

Result<std::vector<StageSpec>> ParseStages(const ConfigNode& root, std::string_view section,
                                           bool has_inputs) {
  std::vector<StageSpec> out;
  if (!root.Has(section)) return out;
  YAML::Node list = root.node()[std::string(section)];
  if (!list.IsSequence()) return root.Error(section, "expected a list of stages");
  for (size_t i = 0; i < list.size(); ++i) {
    std::string path = std::string(section) + "[" + std::to_string(i) + "]";
    if (!list[i].IsMap()) {
      return Status::InvalidArgument(YamlMarkPrefix(root.file(), list[i].Mark()) + ": " + path +
                                     ": expected a mapping with name, type" +
                                     (has_inputs ? ", inputs" : "") + " and options");
    }
    ConfigNode stage(root.file(), list[i], path);
    if (has_inputs) {
      INFERSCOPE_RETURN_IF_ERROR(stage.CheckKnownFields({"name", "type", "inputs", "options"}));
    } else {
      INFERSCOPE_RETURN_IF_ERROR(stage.CheckKnownFields({"name", "type", "options"}));
    }
    StageSpec spec;
    spec.at = stage;
    Result<std::string> name = stage.GetString("name");
    if (!name.ok()) return name.status();
    if (name->empty()) return stage.Error("name", "must not be empty");
    spec.name = *name;
    Result<std::string> type = stage.GetString("type");
    if (!type.ok()) return type.status();
    spec.type = *type;
    if (has_inputs) {
      if (!stage.Has("inputs")) return stage.Error("inputs", "required field is missing");
      YAML::Node inputs = list[i]["inputs"];
      if (inputs.IsScalar()) {
        spec.inputs.push_back(inputs.Scalar());
      } else if (inputs.IsSequence() && inputs.size() > 0) {
        for (const auto& input : inputs) {
          if (!input.IsScalar()) return stage.Error("inputs", "expected stage names");
          spec.inputs.push_back(input.Scalar());
        }
      } else {
        return stage.Error("inputs", "expected a stage name or a non-empty list of stage names");
      }
    }
    Result<ConfigNode> options = stage.Child("options");
    if (!options.ok()) return options.status();
    spec.options = *options;
    out.push_back(std::move(spec));
  }
  return out;
}

// state: path, tiers, rollup_delay, maintenance_interval, record_retention.
Status ParseStateSettings(const ConfigNode& root, TopologySpec* spec) {
  Result<ConfigNode> state = root.Child("state");
  if (!state.ok()) return state.status();
  spec->state_at = *state;
  INFERSCOPE_RETURN_IF_ERROR(state->CheckKnownFields(
      {"path", "tiers", "rollup_delay", "maintenance_interval", "record_retention"}));
  Result<std::string> state_path = state->GetString("path", std::string());
  if (!state_path.ok()) return state_path.status();
  spec->state_path = *state_path;
  if (!spec->state_path.empty()) {
    if (std::optional<std::string> problem = StateDirProblem(spec->state_path)) {
      return state->Error("path", *problem);
    }
  }
  Result<int64_t> delay = state->GetDurationMs("rollup_delay", spec->rollup_delay_ms, 0);
  if (!delay.ok()) return delay.status();
  spec->rollup_delay_ms = *delay;
  Result<int64_t> interval =
      state->GetDurationMs("maintenance_interval", spec->maintenance_interval_ms, 100);
  if (!interval.ok()) return interval.status();
  spec->maintenance_interval_ms = *interval;
  // record_retention: {table: duration}; which tables exist is the state store's business
  // (Engine::Build checks the names).
  if (state->Has("record_retention")) {
    if (!state->node()["record_retention"].IsMap()) {
      return state->Error("record_retention",
                          "expected a mapping of record table to duration, e.g. {dead_letter: 7d}");
    }
    Result<ConfigNode> retention = state->Child("record_retention");
    if (!retention.ok()) return retention.status();
    spec->record_retention_at = *retention;
    for (const auto& item : retention->node()) {
      const std::string table = item.first.as<std::string>();
      Result<int64_t> ms = retention->GetDurationMs(table);
      if (!ms.ok()) return ms.status();
      spec->record_retention_ms.emplace_back(table, *ms);
    }
  }

  std::vector<ConfigNode> tier_nodes;
  if (state->Has("tiers")) {
    YAML::Node list = state->node()["tiers"];
    if (!list.IsSequence() || list.size() == 0) {
      return state->Error("tiers", "expected a non-empty list of {resolution, retention}");
    }
    spec->state_tiers.clear();
    spec->state_tiers_given = true;
    for (size_t i = 0; i < list.size(); ++i) {
      std::string path = state->path() + ".tiers[" + std::to_string(i) + "]";
      if (!list[i].IsMap()) {
        return Status::InvalidArgument(YamlMarkPrefix(root.file(), list[i].Mark()) + ": " + path +
                                       ": expected a mapping {resolution, retention}");
      }
      ConfigNode tier(root.file(), list[i], path);
      INFERSCOPE_RETURN_IF_ERROR(tier.CheckKnownFields({"resolution", "retention"}));
      Result<int64_t> resolution = tier.GetDurationMs("resolution", std::nullopt, 1);
      if (!resolution.ok()) return resolution.status();
      TierSpec t;
      t.resolution_ms = *resolution;
      // "forever" (or an absent retention) keeps the tier's buckets for good.
      if (tier.Has("retention") && list[i]["retention"].IsScalar() &&
          list[i]["retention"].Scalar() == "forever") {
        t.retention_ms = 0;
      } else if (tier.Has("retention")) {
        Result<int64_t> retention = tier.GetDurationMs("retention", std::nullopt, 1);
        if (!retention.ok()) return retention.status();
        t.retention_ms = *retention;
      }
      spec->state_tiers.push_back(t);
      tier_nodes.push_back(tier);
    }
  }
  TierProblem problem;
  if (!ValidateTiers(spec->state_tiers, spec->rollup_delay_ms, spec->maintenance_interval_ms,
                     &problem)
           .ok()) {
    if (problem.index >= 0 && static_cast<size_t>(problem.index) < tier_nodes.size()) {
      return tier_nodes[static_cast<size_t>(problem.index)].Error(problem.field, problem.message);
    }
    // Default tiers that do not fit the configured delay or interval: blame those fields.
    std::string field = problem.index >= 0 ? "rollup_delay" : problem.field;
    std::string message = problem.index >= 0 ? "too long for the default tiers (" +
                                                   problem.message + "); list state.tiers"
                                             : problem.message;
    return state->Error(field, message);
  }
  return Status::Ok();
}

Status ParseEngineSettings(const ConfigNode& root, EngineSettings* out) {
  Result<ConfigNode> engine = root.Child("engine");
  if (!engine.ok()) return engine.status();
  INFERSCOPE_RETURN_IF_ERROR(engine->CheckKnownFields(
      {"queue_capacity", "batch_pool", "batch_reserve", "sink_queue_capacity", "timer_interval",
       "checkpoint_interval", "string_sweep_interval"}));
  EngineSettings d;
  Result<int64_t> queue = engine->GetInt("queue_capacity", d.queue_capacity, 1, 1 << 20);
  if (!queue.ok()) return queue.status();
  Result<int64_t> pool = engine->GetInt("batch_pool", d.batch_pool, 2, 1 << 20);
  if (!pool.ok()) return pool.status();
  Result<int64_t> reserve = engine->GetInt("batch_reserve", d.batch_reserve, 1, 1 << 20);
  if (!reserve.ok()) return reserve.status();
  Result<int64_t> sink_queue =
      engine->GetInt("sink_queue_capacity", d.sink_queue_capacity, 1, 1 << 20);
  if (!sink_queue.ok()) return sink_queue.status();
  Result<int64_t> timer = engine->GetDurationMs("timer_interval", d.timer_interval_ms, 1);
  if (!timer.ok()) return timer.status();
  Result<int64_t> checkpoint =
      engine->GetDurationMs("checkpoint_interval", d.checkpoint_interval_ms, 0);
  if (!checkpoint.ok()) return checkpoint.status();
  Result<int64_t> sweep =
      engine->GetDurationMs("string_sweep_interval", d.string_sweep_interval_ms, 0);
  if (!sweep.ok()) return sweep.status();
  out->queue_capacity = static_cast<size_t>(*queue);
  out->batch_pool = static_cast<size_t>(*pool);
  out->batch_reserve = static_cast<size_t>(*reserve);
  out->sink_queue_capacity = static_cast<size_t>(*sink_queue);
  out->timer_interval_ms = *timer;
  out->checkpoint_interval_ms = *checkpoint;
  out->string_sweep_interval_ms = *sweep;
  if (out->batch_pool <= out->queue_capacity) {
    return engine->Error(
        "batch_pool",
        "must be larger than queue_capacity (batches in the queue come from the pool)");
  }
  return Status::Ok();
}

}  // namespace

Result<TopologySpec> ParseTopology(const std::string& yaml_text, const std::string& file) {
  Result<YAML::Node> parsed = ParseYamlDocument(yaml_text, file);
  if (!parsed.ok()) return parsed.status();
  const YAML::Node doc = *parsed;
  if (!doc.IsMap()) {
    return Status::InvalidArgument(file + ": expected a mapping with sources, operators and sinks");
  }
  ConfigNode root(file, doc, "");
  INFERSCOPE_RETURN_IF_ERROR(
      root.CheckKnownFields({"name", "state", "query", "engine", "sources", "operators", "sinks"}));

  TopologySpec spec;
  spec.file = file;
  Result<std::string> name = root.GetString("name", std::string("unnamed"));
  if (!name.ok()) return name.status();
  spec.name = *name;

  INFERSCOPE_RETURN_IF_ERROR(ParseStateSettings(root, &spec));

  Result<ConfigNode> query = root.Child("query");
  if (!query.ok()) return query.status();
  // Access control, limits, CORS and the Prometheus export are parsed by the engine
  // (query/access.h: ParseQueryAccess) from spec.query_at.
  INFERSCOPE_RETURN_IF_ERROR(
      query->CheckKnownFields({"listen", "tokens", "token_file", "rate_limit", "cors", "export",
                               "max_url_bytes", "max_body_bytes", "max_connections_per_address"}));
  Result<std::string> listen = query->GetString("listen", std::string());
  if (!listen.ok()) return listen.status();
  if (!listen->empty()) {
    if (Result<HostPort> hp = ParseHostPort(*listen); !hp.ok()) {
      return query->Error("listen", hp.status().message());
    }
  }
  spec.query_listen = *listen;
  spec.query_at = *query;

  INFERSCOPE_RETURN_IF_ERROR(ParseEngineSettings(root, &spec.engine));

  Result<std::vector<StageSpec>> sources = ParseStages(root, "sources", false);
  if (!sources.ok()) return sources.status();
  spec.sources = std::move(sources).value();
  Result<std::vector<StageSpec>> operators = ParseStages(root, "operators", true);
  if (!operators.ok()) return operators.status();
  spec.operators = std::move(operators).value();
  // Default tiers store the panes of the window operator, whatever their length, as long as the
  // coarser tiers stay multiples of it (ValidateTopology reports it otherwise).
  if (!spec.state_tiers_given) {
    for (const StageSpec& s : spec.operators) {
      if (s.type != "window_aggregate") continue;
      Result<int64_t> pane = s.options.GetDurationMs("pane", 10'000, 1);
      if (pane.ok() && spec.state_tiers.size() > 1 &&
          spec.state_tiers[1].resolution_ms % *pane == 0 &&
          *pane < spec.state_tiers[1].resolution_ms) {
        spec.state_tiers[0].resolution_ms = *pane;
      }
      break;
    }
  }
  Result<std::vector<StageSpec>> sinks = ParseStages(root, "sinks", true);
  if (!sinks.ok()) return sinks.status();
  spec.sinks = std::move(sinks).value();
  return spec;
}

Result<TopologySpec> LoadTopologyFile(const std::string& path) {
  Result<std::string> text = ReadBoundedFile(path, "topology file", kMaxTopologyFileBytes);
  if (!text.ok()) return text.status();
  return ParseTopology(*text, path);
}

namespace {

// Structure only: names, types, roles of inputs (see CreateTopologyStages).
Status ValidateStructure(const TopologySpec& spec, const Registry& registry) {
  if (spec.sources.empty())
    return Status::InvalidArgument(spec.file + ": sources: at least one source is required");
  if (spec.operators.empty()) {
    return Status::InvalidArgument(spec.file + ": operators: at least one operator is required");
  }
  enum class Kind { kSource, kOperator, kSink };
  std::map<std::string, Kind> kinds;
  auto declare = [&](const StageSpec& s, Kind kind) -> Status {
    if (!kinds.emplace(s.name, kind).second) {
      return s.at.Error("name", "duplicate stage name '" + s.name + "'");
    }
    return Status::Ok();
  };
  for (const auto& s : spec.sources) {
    INFERSCOPE_RETURN_IF_ERROR(declare(s, Kind::kSource));
    if (!registry.HasSource(s.type)) {
      return s.at.Error(
          "type", "unknown source type '" + s.type + "' (known: " + registry.Names("source") + ")");
    }
  }
  for (const auto& s : spec.operators) {
    INFERSCOPE_RETURN_IF_ERROR(declare(s, Kind::kOperator));
    if (!registry.HasOperator(s.type)) {
      return s.at.Error("type", "unknown operator type '" + s.type +
                                    "' (known: " + registry.Names("operator") + ")");
    }
    // Tier 0 of the state store is the panes themselves: its resolution is the pane length.
    if (s.type == "window_aggregate" && !spec.state_path.empty() && !spec.state_tiers.empty()) {
      Result<int64_t> pane = s.options.GetDurationMs("pane", 10'000, 1);
      if (!pane.ok()) return pane.status();
      const int64_t tier0 = spec.state_tiers.front().resolution_ms;
      if (*pane != tier0) {
        return s.options.Error(
            "pane", FormatDurationMs(*pane) + " differs from state.tiers[0].resolution (" +
                        FormatDurationMs(tier0) +
                        "); the finest tier stores the panes, so they must match");
      }
    }
  }
  for (const auto& s : spec.sinks) {
    INFERSCOPE_RETURN_IF_ERROR(declare(s, Kind::kSink));
    if (!registry.HasSink(s.type)) {
      return s.at.Error(
          "type", "unknown sink type '" + s.type + "' (known: " + registry.Names("sink") + ")");
    }
  }

  std::set<std::string> consumed;
  std::set<std::string> declared_operators;  // operators declared before the one being checked
  auto check_inputs = [&](const StageSpec& s, Kind want, std::string_view want_name) -> Status {
    std::set<std::string> seen;
    for (const auto& input : s.inputs) {
      auto it = kinds.find(input);
      if (it == kinds.end()) return s.at.Error("inputs", "no stage named '" + input + "'");
      // An operator may also read the results of an operator listed before it (chaining).
      bool chained = want == Kind::kSource && it->second == Kind::kOperator;
      if (chained && !declared_operators.count(input)) {
        return s.at.Error(
            "inputs", "operator '" + input + "' must be listed before the operators that read it");
      }
      if (it->second != want && !chained) {
        return s.at.Error("inputs", "'" + input + "' is not a " + std::string(want_name) +
                                        "; this stage reads " + std::string(want_name) + "s");
      }
      if (!seen.insert(input).second)
        return s.at.Error("inputs", "'" + input + "' is listed twice");
      consumed.insert(input);
    }
    return Status::Ok();
  };
  for (const auto& s : spec.operators) {
    INFERSCOPE_RETURN_IF_ERROR(check_inputs(s, Kind::kSource, "source"));
    declared_operators.insert(s.name);
  }
  for (const auto& s : spec.sinks)
    INFERSCOPE_RETURN_IF_ERROR(check_inputs(s, Kind::kOperator, "operator"));
  for (const auto& s : spec.sources) {
    if (!consumed.count(s.name))
      return s.at.Error("name", "source '" + s.name + "' feeds no operator");
  }
  return Status::Ok();
}

// The error for input `index` of stage `s`, located at that input (`inputs: [a, b]`) or at the
// field (`inputs: a`).
Status InputError(const StageSpec& s, size_t index, const std::string& message) {
  YAML::Node inputs = s.at.node()["inputs"];
  if (inputs && inputs.IsSequence() && index < inputs.size()) {
    ConfigNode at(s.at.file(), inputs[index],
                  s.at.path() + ".inputs[" + std::to_string(index) + "]");
    return at.Error("", message);
  }
  return s.at.Error("inputs", message);
}

std::string Describe(const StageSpec& s) { return "'" + s.name + "' (" + s.type + ")"; }

// The kinds along every edge (rules in topology.h). Structure is valid already.
Status CheckKinds(const TopologySpec& spec, const TopologyStages& stages) {
  std::map<std::string, size_t> operator_index;
  for (size_t i = 0; i < spec.operators.size(); ++i) operator_index[spec.operators[i].name] = i;
  const KindSet events = KindSet::Of<kind::Event>();
  for (size_t i = 0; i < spec.operators.size(); ++i) {
    const StageSpec& s = spec.operators[i];
    const KindSet reads = stages.operators[i]->Reads();
    for (size_t k = 0; k < s.inputs.size(); ++k) {
      auto it = operator_index.find(s.inputs[k]);
      if (it == operator_index.end()) {  // a source: emits events
        if (!reads.Has<kind::Event>()) {
          return InputError(s, k,
                            "operator " + Describe(s) + " reads " + reads.Names() +
                                ", not the events source '" + s.inputs[k] +
                                "' emits; its inputs must name operators emitting those");
        }
        continue;
      }
      const StageSpec& from = spec.operators[it->second];
      const KindSet emits = stages.operators[it->second]->Emits();
      if (emits.Intersect(reads.Without(events)).empty()) {
        return InputError(s, k,
                          "operator " + Describe(from) + " emits " + emits.Names() + "; operator " +
                              Describe(s) + " reads " + reads.Names());
      }
    }
  }
  for (size_t i = 0; i < spec.sinks.size(); ++i) {
    const StageSpec& s = spec.sinks[i];
    const KindSet accepts = stages.sinks[i]->Accepts();
    for (size_t k = 0; k < s.inputs.size(); ++k) {
      const size_t from = operator_index.at(s.inputs[k]);
      const KindSet emits = stages.operators[from]->Emits();
      if (emits.Intersect(accepts).empty()) {
        return InputError(s, k,
                          "operator " + Describe(spec.operators[from]) + " emits " + emits.Names() +
                              "; sink " + Describe(s) + " accepts " + accepts.Names());
      }
    }
  }
  return Status::Ok();
}

}  // namespace

Result<TopologyStages> CreateTopologyStages(const TopologySpec& spec, const Registry& registry) {
  INFERSCOPE_RETURN_IF_ERROR(ValidateStructure(spec, registry));
  TopologyStages stages;
  for (const auto& s : spec.sources) {
    Result<std::unique_ptr<Source>> made = registry.CreateSource(s.type, s.options);
    if (!made.ok()) return made.status();
    stages.sources.push_back(std::move(made).value());
  }
  for (const auto& s : spec.operators) {
    Result<std::unique_ptr<Operator>> made = registry.CreateOperator(s.type, s.options);
    if (!made.ok()) return made.status();
    stages.operators.push_back(std::move(made).value());
  }
  for (const auto& s : spec.sinks) {
    Result<std::unique_ptr<Sink>> made = registry.CreateSink(s.type, s.options);
    if (!made.ok()) return made.status();
    stages.sinks.push_back(std::move(made).value());
  }
  INFERSCOPE_RETURN_IF_ERROR(CheckKinds(spec, stages));
  return stages;
}

Status ValidateTopology(const TopologySpec& spec, const Registry& registry) {
  Result<TopologyStages> stages = CreateTopologyStages(spec, registry);
  return stages.ok() ? Status::Ok() : stages.status();
}

}  // namespace inferscope
