// POST /v1/optimization/recommend, POST /v1/performance/optimize and
// GET /v1/performance/profile/{model_id}: what to change on an instance, estimated with the
// calibrated serving model (optimize/), and a model's profile over a window.

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <set>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "bottlenecks/bottleneck.h"
#include "bottlenecks/classify.h"
#include "optimize/optimize.h"
#include "pipeline/config.h"
#include "pipeline/json_text.h"
#include "pipeline/names.h"
#include "query/handlers.h"
#include "state/bottleneck_store.h"
#include "state/state_store.h"
#include "values/aggregate.h"

namespace inferscope {
namespace {

using nlohmann::json;
using optimize::Observation;

constexpr std::string_view kValidationError = "VALIDATION_ERROR";
constexpr std::string_view kNotFound = "NOT_FOUND";
constexpr int64_t kDefaultRangeMs = 5 * 60'000;  // the window read by default: the last 5 minutes
constexpr int64_t kMaxRangeMs = 24 * 3'600'000;  // at most a day of panes per request
constexpr size_t kMaxPeers = 64;                 // peers read from the store per request
constexpr size_t kMaxProfileInstances = 256;     // instances listed by a profile
constexpr size_t kMaxStatelessInstances = 1000;

json Num(double x) { return JsonNumberOrNull(x); }

// The body's unknown fields: a 400 naming the first.
std::optional<ApiReply> UnknownField(const ApiContext& ctx, const json& body,
                                     std::initializer_list<std::string_view> known,
                                     const std::string& prefix = "") {
  for (const auto& item : body.items()) {
    if (std::find(known.begin(), known.end(), item.key()) == known.end()) {
      std::string expected;
      for (std::string_view k : known) expected += (expected.empty() ? "" : ", ") + std::string(k);
      return BadField(ctx, prefix + item.key(), "unknown field (expected " + expected + ")");
    }
  }
  return std::nullopt;
}

std::optional<ApiReply> RefuseParameters(const ApiContext& ctx, const ApiRequest& req) {
  if (req.params.empty()) return std::nullopt;
  const std::string name = req.params.begin()->first.substr(0, 64);
  return ErrorReply(*ctx.clock, 400, kValidationError,
                    "unknown parameter '" + name + "'; this endpoint takes none",
                    {{"parameter", name}});
}

// The engine of an instance: given, else its name up to the first '-' when that is an engine.
bool EngineOf(const json& given, const std::string& instance, optimize::Engine* out) {
  if (given.is_string()) return optimize::ParseEngine(given.get<std::string>(), out);
  if (!given.is_null()) return false;
  *out = optimize::Engine::kVllm;
  optimize::ParseEngine(std::string_view(instance).substr(0, instance.find('-')), out);
  return true;
}

// A metric of the store read over [from, to): the merged panes, summarised.
Status ReadMetric(const StateStore& store, const std::string& instance, const std::string& model,
                  std::string_view metric, int64_t from, int64_t to, MetricWindow* out) {
  Aggregate agg;
  double first_mean = NAN, last_mean = NAN;
  Status st = store.ScanPanes(instance, model, metric, from, to, [&](const StoredPane& pane) {
    agg.Merge(pane.agg);
    if (pane.agg.count > 0) {
      if (std::isnan(first_mean)) first_mean = pane.agg.mean;
      last_mean = pane.agg.mean;
    }
    return Status::Ok();
  });
  if (!st.ok()) return st;
  *out = MetricWindow{};
  if (agg.count == 0 && agg.events == 0) return Status::Ok();
  SummaryStats s = Summarize(agg, to - from);
  out->count = s.count;
  out->events = s.events;
  out->errors = s.errors;
  out->sum = s.sum;
  out->mean = s.mean;
  out->max = s.max;
  out->last = s.last;
  if (s.count > 0) {
    out->p50 = s.p50;
    out->p95 = s.p95;
    out->p99 = s.p99;
  }
  out->first_mean = std::isnan(first_mean) ? s.mean : first_mean;
  out->last_mean = std::isnan(last_mean) ? s.mean : last_mean;
  return Status::Ok();
}

// Every metric of the classifier's window, plus output_tokens and cost_usd, from the store.
Status ReadObservation(const StateStore& store, const std::string& instance,
                       const std::string& model, int64_t from, int64_t to, Observation* obs) {
  obs->instance = instance;
  obs->model = model;
  obs->window.start_ms = from;
  obs->window.end_ms = to;
  for (size_t m = 0; m < kNumWindowMetrics; ++m) {
    Status st = ReadMetric(store, instance, model, WindowMetricName(static_cast<WindowMetric>(m)),
                           from, to, &obs->window.metrics[m]);
    if (!st.ok()) return st;
  }
  Status st = ReadMetric(store, instance, model, "output_tokens", from, to, &obs->output_tokens);
  if (!st.ok()) return st;
  return ReadMetric(store, instance, model, "cost_usd", from, to, &obs->cost_usd);
}

// The instances with an e2e_ms series of `model` (bounded), by a streaming scan of the index.
Status InstancesOf(const StateStore& store, const std::string& model, size_t limit,
                   std::vector<std::string>* out) {
  return store.ScanSeries("", false, [&](const SeriesInfo& info) {
    if (info.model == model && info.metric == "e2e_ms") out->push_back(info.instance);
    return out->size() < limit;
  });
}

// What a recommend/optimize request is about: the observation of the instance judged, its
// verdicts against its peers, and the classifier's options.
struct Subject {
  Observation obs;
  RuleVerdicts verdicts;
  int64_t from = 0, to = 0;
};

// Reads the classifier options of `body["options"]` (detect-bottlenecks' syntax).
std::optional<ApiReply> ReadClassifierOptions(const ApiContext& ctx, const json& body,
                                              BottleneckOptions* options) {
  if (!body.contains("options")) return std::nullopt;
  const json& o = body["options"];
  if (!o.is_object()) return BadField(ctx, "options", "expected an object");
  for (const auto& item : o.items()) {
    if (std::find(kBottleneckOptionFields.begin(), kBottleneckOptionFields.end(), item.key()) ==
        kBottleneckOptionFields.end()) {
      return BadField(ctx, "options." + item.key(), "unknown field");
    }
  }
  YAML::Node yaml;
  try {
    yaml = YAML::Load(o.dump());
  } catch (const YAML::Exception& e) {
    return BadField(ctx, "options", std::string("unreadable: ") + e.what());
  }
  ConfigNode node("request", yaml, "options");
  Status st = ParseBottleneckOptions(node, options);
  if (!st.ok()) return ErrorReply(*ctx.clock, 400, kValidationError, st.message());
  return std::nullopt;
}

// Judges `windows[target]` against the others of the same model.
void JudgeWithPeers(const std::vector<InstanceWindow>& windows, const std::vector<bool>& same_model,
                    size_t target, const BottleneckOptions& options, Subject* subject) {
  std::vector<PeerSample> samples;
  size_t target_pos = 0;
  for (size_t i = 0; i < windows.size(); ++i) {
    if (!same_model[i]) continue;
    if (i == target) target_pos = samples.size();
    samples.push_back(PeerSampleOf(windows[i], options));
  }
  std::vector<PeerView> views(samples.size());
  std::vector<std::pair<double, uint32_t>> scratch;
  ComputePeerViews(samples, views, scratch);
  subject->obs.peer_hit_rate = views[target_pos].hit_rate.median;
  ClassifyInstance(windows[target], views[target_pos], options, &subject->verdicts);
}

// Parses the subject of a recommend/optimize body: a stored instance (`instance`, `model`,
// `engine`, `from`, `to`) or request windows (`instances`, `window_ms`, `instance`).
std::optional<ApiReply> ReadSubject(const ApiContext& ctx, const json& body,
                                    const BottleneckOptions& options, Subject* subject) {
  if (body.contains("instance") &&
      (!body["instance"].is_string() || body["instance"].get<std::string>().empty() ||
       body["instance"].get<std::string>().size() > kMaxNameBytes)) {
    return BadField(ctx, "instance", "expected a non-empty string of at most 255 bytes");
  }
  if (body.contains("model") &&
      (!body["model"].is_string() || body["model"].get<std::string>().size() > kMaxNameBytes)) {
    return BadField(ctx, "model", "expected a string of at most 255 bytes");
  }
  if (body.contains("engine")) {
    optimize::Engine e;
    if (!body["engine"].is_string() ||
        !optimize::ParseEngine(body["engine"].get<std::string>(), &e)) {
      return BadField(ctx, "engine", "expected vllm, sglang or tgi");
    }
  }
  const std::string wanted = body.contains("instance") ? body["instance"].get<std::string>() : "";
  if (body.contains("instances")) {
    // Stateless: the windows in the request; peers are its instances of the same model.
    if (body.contains("from") || body.contains("to")) {
      return BadField(ctx, body.contains("from") ? "from" : "to",
                      "a time range applies to stored data, not to instances in the request");
    }
    const json& list = body["instances"];
    if (!list.is_array() || list.empty() || list.size() > kMaxStatelessInstances) {
      return BadField(ctx, "instances", "expected an array of 1..1000 instances");
    }
    int64_t window_ms = 30'000;
    if (body.contains("window_ms")) {
      if (!body["window_ms"].is_number_integer() || body["window_ms"].get<int64_t>() < 1 ||
          body["window_ms"].get<int64_t>() > 86'400'000) {
        return BadField(ctx, "window_ms", "expected an integer in 1..86400000 (ms)");
      }
      window_ms = body["window_ms"].get<int64_t>();
    }
    std::vector<InstanceWindow> windows(list.size());
    std::vector<Observation> observations(list.size());
    std::optional<size_t> target;
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string path = "instances[" + std::to_string(i) + "]";
      const json& in = list[i];
      if (!in.is_object()) return BadField(ctx, path, "expected an object");
      if (auto e = UnknownField(ctx, in, {"instance", "model", "engine", "metrics"}, path + ".")) {
        return e;
      }
      if (!in.contains("instance") || !in["instance"].is_string() ||
          in["instance"].get<std::string>().empty()) {
        return BadField(ctx, path + ".instance", "expected a non-empty string");
      }
      if (in.contains("model") && !in["model"].is_string()) {
        return BadField(ctx, path + ".model", "expected a string");
      }
      Observation& o = observations[i];
      o.instance = in["instance"].get<std::string>();
      o.model = in.contains("model") ? in["model"].get<std::string>() : "";
      if (!EngineOf(in.contains("engine") ? in["engine"] : json(), o.instance, &o.engine)) {
        return BadField(ctx, path + ".engine", "expected vllm, sglang or tgi");
      }
      if (!in.contains("metrics") || !in["metrics"].is_object()) {
        return BadField(ctx, path + ".metrics", "expected an object of metric name to statistics");
      }
      windows[i].start_ms = 0;
      windows[i].end_ms = window_ms;
      for (const auto& item : in["metrics"].items()) {
        const std::string& metric = item.key();
        MetricWindow* slot = nullptr;
        for (size_t m = 0; m < kNumWindowMetrics && slot == nullptr; ++m) {
          if (WindowMetricName(static_cast<WindowMetric>(m)) == metric)
            slot = &windows[i].metrics[m];
        }
        if (metric == "output_tokens") slot = &o.output_tokens;
        if (metric == "cost_usd") slot = &o.cost_usd;
        if (slot == nullptr) {
          return BadField(ctx, path + ".metrics." + metric,
                          "unknown metric (the metric contract's names, output_tokens, cost_usd)");
        }
        if (auto error = ReadMetricStatistics(item.value(), path + ".metrics." + metric, slot)) {
          return ErrorReply(*ctx.clock, 400, kValidationError, *error,
                            {{"field", error->substr(0, error->find(": "))}});
        }
      }
      if (o.instance == wanted || (wanted.empty() && list.size() == 1)) target = i;
    }
    if (!target) {
      return BadField(ctx, "instance",
                      wanted.empty() ? "name the instance to judge among several"
                                     : "not among the request's instances");
    }
    std::vector<bool> same(list.size());
    for (size_t i = 0; i < list.size(); ++i)
      same[i] = observations[i].model == observations[*target].model;
    subject->obs = std::move(observations[*target]);
    subject->obs.window = windows[*target];
    subject->from = 0;
    subject->to = window_ms;
    JudgeWithPeers(windows, same, *target, options, subject);
    return std::nullopt;
  }
  // Stored: the instance's panes over [from, to).
  if (body.contains("window_ms")) {
    return BadField(ctx, "window_ms", "applies to instances in the request; use from/to");
  }
  if (wanted.empty()) return BadField(ctx, "instance", "required (or give instances)");
  const int64_t watermark = ctx.store->Watermark();
  int64_t to = watermark, from = 0;
  for (const char* name : {"from", "to"}) {
    if (!body.contains(name)) continue;
    const json& v = body[name];
    std::optional<int64_t> ms;
    if (v.is_string()) ms = ParseTimeMs(v.get<std::string>());
    if (v.is_number_integer() && v.get<int64_t>() >= 0) ms = v.get<int64_t>();
    if (!ms || *ms > 253'402'300'799'999) {
      return BadField(ctx, name, "expected an RFC 3339 time or epoch milliseconds");
    }
    (std::string_view(name) == "from" ? from : to) = *ms;
  }
  if (!body.contains("from")) from = to - kDefaultRangeMs;
  if (from >= to) return BadField(ctx, "from", "from must be before to");
  if (to - from > kMaxRangeMs) return BadField(ctx, "from", "the range may span at most 24h");
  const std::string* model_ptr = nullptr;
  std::string model;
  if (body.contains("model")) {
    model = body["model"].get<std::string>();
    model_ptr = &model;
  }
  Result<SeriesMatch> match = ctx.store->FindSeries(wanted, model_ptr, "e2e_ms");
  if (!match.ok()) return StatusReply(*ctx.clock, match.status());
  if (!match->instance_known) {
    return ErrorReply(*ctx.clock, 404, kNotFound, "unknown instance '" + wanted + "'",
                      {{"instance", wanted}});
  }
  if (!match->model_known || match->models.empty()) {
    return ErrorReply(*ctx.clock, 404, kNotFound,
                      "instance '" + wanted + "' has no request series" +
                          (model_ptr ? " of model '" + model + "'" : std::string()),
                      {{"instance", wanted}});
  }
  if (!model_ptr) {
    if (match->models.size() > 1) {
      return BadField(ctx, "model", "required: the instance serves several models");
    }
    model = match->models.front();
  }
  std::vector<std::string> peers;
  Status st = InstancesOf(*ctx.store, model, kMaxPeers, &peers);
  if (!st.ok()) return StatusReply(*ctx.clock, st);
  if (std::find(peers.begin(), peers.end(), wanted) == peers.end()) peers.push_back(wanted);
  std::vector<InstanceWindow> windows(peers.size());
  size_t target = 0;
  for (size_t i = 0; i < peers.size(); ++i) {
    Observation o;
    st = ReadObservation(*ctx.store, peers[i], model, from, to, &o);
    if (!st.ok()) return StatusReply(*ctx.clock, st);
    windows[i] = o.window;
    if (peers[i] == wanted) {
      target = i;
      subject->obs = std::move(o);
    }
  }
  if (!EngineOf(body.contains("engine") ? body["engine"] : json(), wanted, &subject->obs.engine)) {
    return BadField(ctx, "engine", "expected vllm, sglang or tgi");
  }
  if (subject->obs.window.Get(WindowMetric::kE2e).events == 0) {
    return ErrorReply(*ctx.clock, 404, kNotFound,
                      "instance '" + wanted + "' has no requests between " + FormatRfc3339(from) +
                          " and " + FormatRfc3339(to),
                      {{"instance", wanted}, {"from", from}, {"to", to}});
  }
  subject->from = from;
  subject->to = to;
  JudgeWithPeers(windows, std::vector<bool>(windows.size(), true), target, options, subject);
  return std::nullopt;
}

// The model's bounds and cost assumptions from the body (`simulation`).
std::optional<ApiReply> ReadSimulationOptions(const ApiContext& ctx, const json& body,
                                              optimize::OptimizeOptions* out) {
  if (!body.contains("simulation")) return std::nullopt;
  const json& s = body["simulation"];
  if (!s.is_object()) return BadField(ctx, "simulation", "expected an object");
  if (auto e =
          UnknownField(ctx, s, {"max_requests", "seed", "instance_cost_per_hour"}, "simulation.")) {
    return e;
  }
  if (s.contains("max_requests")) {
    if (!s["max_requests"].is_number_integer() || s["max_requests"].get<int64_t>() < 100 ||
        s["max_requests"].get<int64_t>() > 20'000) {
      return BadField(ctx, "simulation.max_requests", "expected an integer in 100..20000");
    }
    out->max_requests = s["max_requests"].get<uint64_t>();
  }
  if (s.contains("seed")) {
    if (!s["seed"].is_number_unsigned()) {
      return BadField(ctx, "simulation.seed", "expected a non-negative integer");
    }
    out->seed = s["seed"].get<uint64_t>();
  }
  if (s.contains("instance_cost_per_hour")) {
    if (!s["instance_cost_per_hour"].is_number() ||
        !(s["instance_cost_per_hour"].get<double>() > 0) ||
        !std::isfinite(s["instance_cost_per_hour"].get<double>())) {
      return BadField(ctx, "simulation.instance_cost_per_hour", "expected a number > 0 (USD)");
    }
    out->instance_cost_per_hour = s["instance_cost_per_hour"].get<double>();
  }
  return std::nullopt;
}

json PredictionJson(const optimize::Prediction& p) {
  return {{"ttft_p50_ms", Num(p.ttft_p50)},
          {"ttft_p95_ms", Num(p.ttft_p95)},
          {"tpot_p50_ms", Num(p.tpot_p50)},
          {"tpot_p95_ms", Num(p.tpot_p95)},
          {"e2e_p50_ms", Num(p.e2e_p50)},
          {"e2e_p95_ms", Num(p.e2e_p95)},
          {"e2e_p99_ms", Num(p.e2e_p99)},
          {"throughput_tokens_per_s", Num(p.throughput_tokens_per_s)},
          {"error_ratio", Num(p.error_ratio)},
          {"preemptions_per_s", Num(p.preemptions_per_s)},
          {"cost_per_1k_tokens", Num(p.cost_per_1k_tokens)},
          {"simulated_requests", p.simulated_requests}};
}

json OptionsJson(const std::vector<std::pair<std::string, std::string>>& options) {
  json out = json::object();
  for (const auto& [name, value] : options) out[name] = value;
  return out;
}

// The configuration in the engine's option names.
json ConfigJson(optimize::Engine engine, const optimize::EngineConfig& c) {
  optimize::EngineConfig none;  // differs in every field, so every option is named
  none.max_num_seqs = c.max_num_seqs + 1;
  none.max_num_batched_tokens = c.max_num_batched_tokens + 1;
  none.memory_fraction = c.memory_fraction + 1;
  none.kv_capacity_tokens = c.kv_capacity_tokens + 1;
  none.prefix_caching = false;
  none.replicas = c.replicas + 1;
  json out = OptionsJson(optimize::OptionChanges(engine, none, c, {}));
  out["kv_cache_capacity_tokens"] = c.kv_capacity_tokens;
  out["prefix_caching"] = c.prefix_caching;
  return out;
}

json CommonJson(const ApiContext& ctx, const Subject& s, const optimize::Workload& w,
                const optimize::Calibration& cal) {
  return {{"timestamp", FormatRfc3339(ctx.clock->NowMs())},
          {"instance", s.obs.instance},
          {"model", s.obs.model},
          {"engine", optimize::EngineName(s.obs.engine)},
          {"window", {{"from", s.from}, {"to", s.to}}},
          {"workload",
           {{"rate_per_s", Num(w.rate_per_s)},
            {"prompt_tokens_median", Num(w.prompt_median)},
            {"prompt_tokens_sigma", Num(w.prompt_sigma)},
            {"output_tokens_median", Num(w.output_median)},
            {"output_tokens_sigma", Num(w.output_sigma)},
            {"prefix_hit_fraction", Num(w.hit_fraction)},
            {"prefix_hit_observed", w.hit_observed}}},
          {"calibration",
           {{"speed_factor", Num(cal.speed_factor)},
            {"fitted_on", cal.fitted_on},
            {"observed", Num(cal.observed)},
            {"simulated", Num(cal.simulated)}}}};
}

json BottlenecksJson(const Subject& s, int64_t window_ms, std::string* primary_name) {
  uint32_t mask = 0;
  std::array<BottleneckSeverity, kNumBottleneckTypes> severity{};
  for (size_t t = 0; t < kNumBottleneckTypes; ++t) {
    if (s.verdicts[t].judgement != Judgement::kActive) continue;
    mask |= uint32_t{1} << t;
    severity[t] = s.verdicts[t].severity;
  }
  json list = json::array();
  if (mask == 0) return list;
  std::array<CausalPath, kNumBottleneckTypes> paths;
  const BottleneckType primary = CausalOrder(mask, severity, &paths);
  *primary_name = BottleneckTypeName(primary);
  for (size_t t = 0; t < kNumBottleneckTypes; ++t) {
    if (((mask >> t) & 1) == 0) continue;
    const auto type = static_cast<BottleneckType>(t);
    list.push_back({{"type", BottleneckTypeName(type)},
                    {"severity", BottleneckSeverityName(severity[t])},
                    {"primary", type == primary},
                    {"root", BottleneckTypeName(paths[t].root)},
                    {"description", DescribeVerdict(type, s.verdicts[t], window_ms)}});
  }
  return list;
}

// Parses the body as a JSON object, refusing query parameters.
std::optional<ApiReply> ParseBody(const ApiContext& ctx, const ApiRequest& req, json* body) {
  if (auto e = RefuseParameters(ctx, req)) return e;
  return ParseJsonBody(ctx, req.body, body);
}

}  // namespace

ApiReply HandleRecommend(const ApiContext& ctx, const ApiRequest& req) {
  json body;
  if (auto e = ParseBody(ctx, req, &body)) return *e;
  if (auto e = UnknownField(ctx, body,
                            {"instance", "model", "engine", "from", "to", "instances", "window_ms",
                             "options", "simulation"})) {
    return *e;
  }
  BottleneckOptions classifier;
  if (auto e = ReadClassifierOptions(ctx, body, &classifier)) return *e;
  optimize::OptimizeOptions options;
  if (auto e = ReadSimulationOptions(ctx, body, &options)) return *e;
  Subject s;
  if (auto e = ReadSubject(ctx, body, classifier, &s)) return *e;
  Result<optimize::RecommendResult> r = optimize::Recommend(s.obs, s.verdicts, options);
  if (!r.ok()) return ErrorReply(*ctx.clock, 400, kValidationError, r.status().message());
  std::string primary;
  json bottlenecks = BottlenecksJson(s, s.to - s.from, &primary);
  json recs = json::array();
  for (const optimize::Recommendation& rec : r->recommendations) {
    recs.push_back({{"type", optimize::RecommendationTypeName(rec.type)},
                    {"priority", optimize::PriorityName(rec.priority)},
                    {"addresses", BottleneckTypeName(rec.addresses)},
                    {"description", rec.description},
                    {"config_changes", OptionsJson(rec.options)},
                    {"estimated_improvement",
                     {{"metric", rec.metric},
                      {"current", Num(rec.current)},
                      {"predicted", Num(rec.predicted)},
                      {"improvement", Num(rec.improvement)}}},
                    {"predicted", PredictionJson(rec.prediction)},
                    {"risks", rec.risks}});
  }
  ApiReply reply;
  reply.body = CommonJson(ctx, s, r->workload, r->calibration);
  reply.body["primary"] = primary.empty() ? json() : json(primary);
  reply.body["bottlenecks"] = std::move(bottlenecks);
  reply.body["configuration"] = ConfigJson(s.obs.engine, r->current_config);
  reply.body["current"] = r->model_runs > 0 ? PredictionJson(r->current) : json();
  reply.body["recommendations"] = std::move(recs);
  reply.body["model_runs"] = r->model_runs;
  return reply;
}

ApiReply HandleOptimize(const ApiContext& ctx, const ApiRequest& req) {
  json body;
  if (auto e = ParseBody(ctx, req, &body)) return *e;
  if (auto e = UnknownField(ctx, body,
                            {"instance", "model", "engine", "from", "to", "instances", "window_ms",
                             "goal", "constraints", "simulation"})) {
    return *e;
  }
  optimize::Goal goal = optimize::Goal::kMinimizeP95Ttft;
  if (body.contains("goal") &&
      (!body["goal"].is_string() || !optimize::ParseGoal(body["goal"].get<std::string>(), &goal))) {
    return BadField(ctx, "goal",
                    "expected minimize_p95_ttft, minimize_p95_e2e, minimize_p50_tpot, "
                    "minimize_cost_per_1k_tokens or maximize_throughput");
  }
  optimize::OptimizeOptions options;
  if (auto e = ReadSimulationOptions(ctx, body, &options)) return *e;
  optimize::Constraints constraints;
  if (body.contains("constraints")) {
    const json& c = body["constraints"];
    if (!c.is_object()) return BadField(ctx, "constraints", "expected an object");
    if (auto e = UnknownField(ctx, c,
                              {"p95_ttft_ms", "p99_e2e_ms", "p50_tpot_ms", "max_error_ratio",
                               "max_cost_per_1k_tokens", "max_instances"},
                              "constraints.")) {
      return *e;
    }
    for (const auto& item : c.items()) {
      const std::string field = "constraints." + item.key();
      if (item.key() == "max_instances") {
        if (!item.value().is_number_integer() || item.value().get<int64_t>() < 1 ||
            item.value().get<int64_t>() > 64) {
          return BadField(ctx, field, "expected an integer in 1..64");
        }
        options.max_instances = item.value().get<int>();
        continue;
      }
      if (!item.value().is_number() || !std::isfinite(item.value().get<double>()) ||
          item.value().get<double>() < 0) {
        return BadField(ctx, field, "expected a non-negative number");
      }
      const double v = item.value().get<double>();
      if (item.key() == "p95_ttft_ms") constraints.p95_ttft_ms = v;
      if (item.key() == "p99_e2e_ms") constraints.p99_e2e_ms = v;
      if (item.key() == "p50_tpot_ms") constraints.p50_tpot_ms = v;
      if (item.key() == "max_error_ratio") constraints.max_error_ratio = v;
      if (item.key() == "max_cost_per_1k_tokens") constraints.max_cost_per_1k_tokens = v;
    }
  }
  Subject s;
  if (auto e = ReadSubject(ctx, body, BottleneckOptions{}, &s)) return *e;
  Result<optimize::OptimizeResult> r = optimize::Optimize(s.obs, goal, constraints, options);
  if (!r.ok()) return ErrorReply(*ctx.clock, 400, kValidationError, r.status().message());
  const double now = optimize::GoalValue(goal, r->current.prediction);
  json candidates = json::array();
  for (const optimize::Candidate& c : r->candidates) {
    const std::string violated = optimize::ViolatedConstraint(c.prediction, constraints);
    const double value = optimize::GoalValue(goal, c.prediction);
    candidates.push_back(
        {{"type", optimize::RecommendationTypeName(c.type)},
         {"description", c.description},
         {"config_changes", OptionsJson(c.options)},
         {"predicted", PredictionJson(c.prediction)},
         {"meets_constraints", violated.empty()},
         {"violates", violated.empty() ? json() : json(violated)},
         {"goal_change",
          Num(std::isfinite(now) && now != 0 ? (value - now) / std::abs(now) : NAN)}});
  }
  ApiReply reply;
  reply.body = CommonJson(ctx, s, r->workload, r->calibration);
  reply.body["goal"] = optimize::GoalName(goal);
  reply.body["current"] = {{"configuration", ConfigJson(s.obs.engine, r->current_config)},
                           {"predicted", PredictionJson(r->current.prediction)},
                           {"meets_constraints", r->current_meets}};
  if (r->best >= 0) {
    const optimize::Candidate& best = r->candidates[static_cast<size_t>(r->best)];
    reply.body["status"] = "improved";
    reply.body["recommended"] = {
        {"configuration", ConfigJson(s.obs.engine, best.config)},
        {"config_changes", OptionsJson(best.options)},
        {"predicted", PredictionJson(best.prediction)},
        {"description", best.description},
        {"goal_change", candidates[static_cast<size_t>(r->best)]["goal_change"]}};
  } else if (r->keep_current) {
    reply.body["status"] = "keep_current";
    reply.body["recommended"] = json();
  } else {
    reply.body["status"] = "no_candidate_meets_constraints";
    reply.body["recommended"] = json();
  }
  reply.body["candidates"] = std::move(candidates);
  reply.body["model_runs"] = r->model_runs;
  return reply;
}

ApiReply HandleModelProfile(const ApiContext& ctx, const ApiRequest& req) {
  for (const auto& [name, value] : req.params) {
    if (name != "window" && name != "from" && name != "to") {
      return BadParameter(
          ctx, name.substr(0, 64),
          "unknown parameter '" + name.substr(0, 64) + "'; expected window, from or to");
    }
  }
  const std::string model = req.path_params.empty() ? std::string() : req.path_params[0];
  if (model.empty() || model.size() > kMaxNameBytes) {
    return BadParameter(ctx, "model_id", "model_id must be 1 to 255 bytes");
  }
  int64_t to = ctx.store->Watermark();
  if (auto text = req.Param("to")) {
    std::optional<int64_t> ms = ParseTimeMs(*text);
    if (!ms || *ms > 253'402'300'799'999) {
      return BadParameterValue(ctx, "to", "to must be epoch milliseconds or an RFC 3339 time",
                               text->substr(0, 64));
    }
    to = *ms;
  }
  int64_t window = kDefaultRangeMs;
  if (auto text = req.Param("window")) {
    std::optional<int64_t> ms = ParseDurationMs(*text);
    if (!ms || *ms <= 0 || *ms > kMaxRangeMs) {
      return BadParameterValue(ctx, "window", "window must be a duration from 1ms to 24h",
                               text->substr(0, 64));
    }
    window = *ms;
  }
  int64_t from = to - window;
  if (auto text = req.Param("from")) {
    if (req.Param("window")) return BadParameter(ctx, "from", "give window or from, not both");
    std::optional<int64_t> ms = ParseTimeMs(*text);
    if (!ms || *ms > 253'402'300'799'999) {
      return BadParameterValue(ctx, "from", "from must be epoch milliseconds or an RFC 3339 time",
                               text->substr(0, 64));
    }
    from = *ms;
    if (from >= to) return BadParameter(ctx, "from", "from must be before to");
    if (to - from > kMaxRangeMs) return BadParameter(ctx, "from", "the range may span at most 24h");
  }
  std::vector<std::string> instances;
  Status st = InstancesOf(*ctx.store, model, kMaxProfileInstances + 1, &instances);
  if (!st.ok()) return StatusReply(*ctx.clock, st);
  if (instances.empty()) {
    return ErrorReply(*ctx.clock, 404, kNotFound, "no instance serves model '" + model + "'",
                      {{"model", model}});
  }
  const bool truncated = instances.size() > kMaxProfileInstances;
  if (truncated) instances.resize(kMaxProfileInstances);
  // Active bottlenecks of the model's instances (the store keeps the latest change per type);
  // early raises not yet confirmed by a closed pane are left out (they may still be retracted).
  std::map<std::string, json> active;
  std::map<std::string, std::string> primary;
  const std::set<std::string> wanted(instances.begin(), instances.end());
  st = ScanBottlenecks(*ctx.store, "", [&](std::string_view, const Bottleneck& b) {
    if (b.model != model || b.state != BottleneckState::kActive || b.early ||
        !wanted.count(b.instance)) {
      return true;
    }
    json& list = active[b.instance];
    if (list.is_null()) list = json::array();
    list.push_back({{"type", BottleneckTypeName(b.type)},
                    {"severity", BottleneckSeverityName(b.severity)},
                    {"primary", b.primary}});
    if (b.primary) primary[b.instance] = std::string(BottleneckTypeName(b.type));
    return true;
  });
  if (!st.ok()) return StatusReply(*ctx.clock, st);

  const double seconds = static_cast<double>(to - from) / 1000.0;
  // Totals: latency sketches merged over instances; sums and means added.
  Aggregate ttft_all, tpot_all, e2e_all;
  double tokens_all = 0, cost_all = 0, running_all = 0, waiting_all = 0, kv_sum = 0;
  int kv_n = 0;
  json list = json::array();
  auto metric_json = [](const Aggregate& agg, int64_t ms) {
    if (agg.count == 0) return json();
    SummaryStats s = Summarize(agg, ms);
    return json{{"p50", Num(s.p50)}, {"p95", Num(s.p95)}, {"p99", Num(s.p99)}, {"count", s.count}};
  };
  for (const std::string& instance : instances) {
    std::array<Aggregate, 3> lat;
    const char* names[] = {"ttft_ms", "tpot_ms", "e2e_ms"};
    for (size_t k = 0; k < 3; ++k) {
      st = ctx.store->ScanPanes(instance, model, names[k], from, to, [&](const StoredPane& p) {
        lat[k].Merge(p.agg);
        return Status::Ok();
      });
      if (!st.ok()) return StatusReply(*ctx.clock, st);
    }
    ttft_all.Merge(lat[0]);
    tpot_all.Merge(lat[1]);
    e2e_all.Merge(lat[2]);
    auto sum_of = [&](std::string_view metric, double* sum, double* mean, uint64_t* n) -> Status {
      Aggregate agg;
      Status s = ctx.store->ScanPanes(instance, model, metric, from, to, [&](const StoredPane& p) {
        agg.Merge(p.agg);
        return Status::Ok();
      });
      *sum = agg.sum;
      *mean = agg.count > 0 ? agg.mean : NAN;
      *n = agg.count;
      return s;
    };
    double prompt = 0, output = 0, cost = 0, running = NAN, waiting = NAN, kv = NAN, unused = 0;
    uint64_t n = 0, cost_n = 0;
    for (auto [metric, sum, mean, count] :
         {std::tuple{"prompt_tokens", &prompt, &unused, &n},
          std::tuple{"output_tokens", &output, &unused, &n},
          std::tuple{"cost_usd", &cost, &unused, &cost_n},
          std::tuple{"num_requests_running", &unused, &running, &n},
          std::tuple{"num_requests_waiting", &unused, &waiting, &n},
          std::tuple{"kv_cache_usage", &unused, &kv, &n}}) {
      st = sum_of(metric, sum, mean, count);
      if (!st.ok()) return StatusReply(*ctx.clock, st);
    }
    const double tokens = prompt + output;
    tokens_all += tokens;
    cost_all += cost;
    if (std::isfinite(running)) running_all += running;
    if (std::isfinite(waiting)) waiting_all += waiting;
    if (std::isfinite(kv)) kv_sum += kv, ++kv_n;
    const uint64_t requests = lat[2].events;
    list.push_back(
        {{"instance", instance},
         {"requests_per_s", static_cast<double>(requests) / seconds},
         {"tokens_per_s", tokens / seconds},
         {"ttft_ms", metric_json(lat[0], to - from)},
         {"tpot_ms", metric_json(lat[1], to - from)},
         {"e2e_ms", metric_json(lat[2], to - from)},
         {"error_ratio", requests > 0 ? Num(lat[2].error_ratio()) : json()},
         {"kv_cache_usage", Num(kv)},
         {"running", Num(running)},
         {"waiting", Num(waiting)},
         {"cost_per_1k_tokens", cost_n > 0 && tokens > 0 ? Num(cost / tokens * 1000) : json()},
         {"primary_bottleneck", primary.count(instance) ? json(primary[instance]) : json()},
         {"bottlenecks", active.count(instance) ? active[instance] : json::array()}});
  }
  ApiReply reply;
  reply.body = {{"timestamp", FormatRfc3339(ctx.clock->NowMs())},
                {"model", model},
                {"from", from},
                {"to", to},
                {"as_of", ctx.store->Watermark()},
                {"instances", std::move(list)},
                {"truncated", truncated},
                {"total",
                 {{"instances", instances.size()},
                  {"requests_per_s", static_cast<double>(e2e_all.events) / seconds},
                  {"tokens_per_s", tokens_all / seconds},
                  {"ttft_ms", metric_json(ttft_all, to - from)},
                  {"tpot_ms", metric_json(tpot_all, to - from)},
                  {"e2e_ms", metric_json(e2e_all, to - from)},
                  {"error_ratio", e2e_all.events > 0 ? Num(e2e_all.error_ratio()) : json()},
                  {"kv_cache_usage", kv_n > 0 ? Num(kv_sum / kv_n) : json()},
                  {"running", running_all},
                  {"waiting", waiting_all},
                  {"cost_per_1k_tokens",
                   tokens_all > 0 && cost_all > 0 ? Num(cost_all / tokens_all * 1000) : json()},
                  {"instances_with_bottlenecks", active.size()}}}};
  return reply;
}

}  // namespace inferscope
