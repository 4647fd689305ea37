// GET /v1/bottlenecks and the stateless POST /v1/analysis/detect-bottlenecks.

#include <algorithm>
#include <array>

#include <cmath>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "bottlenecks/bottleneck_json.h"
#include "bottlenecks/classify.h"
#include "pipeline/glob.h"
#include "query/handlers.h"
#include "state/bottleneck_store.h"
#include "state/state_store.h"

namespace inferscope {
namespace {

using nlohmann::json;

constexpr std::string_view kValidationError = "VALIDATION_ERROR";

// At most this much of a refused parameter's value is echoed.
std::string_view Echo(const std::string& value) { return std::string_view(value).substr(0, 256); }

// At most this many instances per detect-bottlenecks request.
constexpr size_t kMaxDetectInstances = 1000;

}  // namespace

// Reads one metric's statistics ({"count", "events", "errors", "sum", "mean", "max", "last",
// "p50", "p95", "p99", "first_mean", "last_mean"}, all optional numbers) into `*out`; the error
// names the field.
std::optional<std::string> ReadMetricStatistics(const json& j, const std::string& path,
                                                MetricWindow* out) {
  if (!j.is_object()) return path + ": expected an object of statistics";
  bool has_mean = false, has_sum = false;
  for (const auto& item : j.items()) {
    // Not a structured binding: clang 14 cannot capture one in the lambda below.
    const std::string& key = item.key();
    const json& value = item.value();
    if (!value.is_number()) return path + "." + key + ": expected a number";
    const double v = value.get<double>();
    if (!std::isfinite(v)) return path + "." + key + ": expected a finite number";
    auto count = [&](uint64_t* target) -> std::optional<std::string> {
      if (v < 0 || v != std::floor(v) || v > 1e15) {
        return path + "." + key + ": expected a non-negative integer";
      }
      *target = static_cast<uint64_t>(v);
      return std::nullopt;
    };
    std::optional<std::string> error;
    if (key == "count") {
      error = count(&out->count);
    } else if (key == "events") {
      error = count(&out->events);
    } else if (key == "errors") {
      error = count(&out->errors);
    } else if (key == "sum") {
      out->sum = v;
      has_sum = true;
    } else if (key == "mean") {
      out->mean = v;
      has_mean = true;
    } else if (key == "max") {
      out->max = v;
    } else if (key == "last") {
      out->last = v;
    } else if (key == "p50") {
      out->p50 = v;
    } else if (key == "p95") {
      out->p95 = v;
    } else if (key == "p99") {
      out->p99 = v;
    } else if (key == "first_mean") {
      out->first_mean = v;
    } else if (key == "last_mean") {
      out->last_mean = v;
    } else {
      return path + "." + key +
             ": unknown statistic (expected count, events, errors, sum, mean, max, last, p50, p95, "
             "p99, first_mean, last_mean)";
    }
    if (error) return error;
  }
  if (out->count == 0 && !j.empty()) out->count = 1;  // a gauge given by its mean alone
  if (out->events == 0) out->events = out->count;
  if (out->errors > out->events) return path + ".errors: more errors than events";
  if (has_mean && !has_sum) out->sum = out->mean * static_cast<double>(out->count);
  if (has_sum && !has_mean) out->mean = out->sum / static_cast<double>(out->count);
  if (!j.contains("first_mean")) out->first_mean = out->mean;
  if (!j.contains("last_mean")) out->last_mean = out->mean;
  return std::nullopt;
}

ApiReply HandleDetectBottlenecks(const ApiContext& ctx, const ApiRequest& req) {
  json body;
  if (std::optional<ApiReply> error = ParseJsonBody(ctx, req.body, &body)) return *error;
  for (const auto& [key, value] : body.items()) {
    if (key != "instances" && key != "options" && key != "window_ms") {
      return BadField(ctx, key, "unknown field (expected instances, options, window_ms)");
    }
  }
  // The rules, with the topology's option syntax (YAML reads JSON) and its validation.
  BottleneckOptions options;
  if (body.contains("options")) {
    if (!body["options"].is_object()) return BadField(ctx, "options", "expected an object");
    // yaml-cpp throws on what it cannot parse; the dump of a JSON object always parses, but the
    // boundary converts rather than trusts that.
    YAML::Node yaml;
    try {
      yaml = YAML::Load(body["options"].dump());
    } catch (const YAML::Exception& e) {
      return BadField(ctx, "options", std::string("unreadable: ") + e.what());
    }
    ConfigNode node("request", yaml, "options");
    for (const auto& [key, value] : body["options"].items()) {
      if (std::find(kBottleneckOptionFields.begin(), kBottleneckOptionFields.end(), key) ==
          kBottleneckOptionFields.end()) {
        return BadField(ctx, "options." + key, "unknown field");
      }
    }
    Status st = ParseBottleneckOptions(node, &options);
    if (!st.ok()) return ErrorReply(*ctx.clock, 400, kValidationError, st.message());
  }
  int64_t window_ms = 30'000;
  if (body.contains("window_ms")) {
    if (!body["window_ms"].is_number_integer() || body["window_ms"].get<int64_t>() < 1 ||
        body["window_ms"].get<int64_t>() > 86'400'000) {
      return BadField(ctx, "window_ms", "expected an integer in 1..86400000 (ms)");
    }
    window_ms = body["window_ms"].get<int64_t>();
  }
  const auto instances_it = body.find("instances");
  if (instances_it == body.end() || !instances_it->is_array() || instances_it->empty() ||
      instances_it->size() > kMaxDetectInstances) {
    return BadField(ctx, "instances", "expected an array of 1..1000 instances");
  }
  const json& instances = *instances_it;
  const size_t n = instances.size();
  std::vector<InstanceWindow> windows(n);
  std::vector<std::pair<std::string, std::string>> names(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string path = "instances[" + std::to_string(i) + "]";
    const json& in = instances[i];
    if (!in.is_object()) return BadField(ctx, path, "expected an object");
    for (const auto& [key, value] : in.items()) {
      if (key != "instance" && key != "model" && key != "metrics") {
        return BadField(ctx, path + "." + key, "unknown field (expected instance, model, metrics)");
      }
    }
    if (!in.contains("instance") || !in["instance"].is_string() ||
        in["instance"].get<std::string>().empty()) {
      return BadField(ctx, path + ".instance", "expected a non-empty string");
    }
    if (in.contains("model") && !in["model"].is_string()) {
      return BadField(ctx, path + ".model", "expected a string");
    }
    names[i] = {in["instance"].get<std::string>(), in.value("model", std::string())};
    if (!in.contains("metrics") || !in["metrics"].is_object()) {
      return BadField(ctx, path + ".metrics", "expected an object of metric name to statistics");
    }
    InstanceWindow& w = windows[i];
    w.start_ms = 0;
    w.end_ms = window_ms;
    for (const auto& [metric, stats] : in["metrics"].items()) {
      MetricWindow* target = nullptr;
      for (size_t m = 0; m < kNumWindowMetrics && target == nullptr; ++m) {
        if (WindowMetricName(static_cast<WindowMetric>(m)) == metric) target = &w.metrics[m];
      }
      for (size_t g = 0; g < options.saturation.size() && target == nullptr; ++g) {
        if (options.saturation[g].metric == metric) target = &w.saturation[g];
      }
      if (target == nullptr) {
        return BadField(ctx, path + ".metrics." + metric,
                        "unknown metric (the metric contract's names, or a configured "
                        "resource_saturation gauge)");
      }
      if (auto error = ReadMetricStatistics(stats, path + ".metrics." + metric, target)) {
        // "<field>: <message>": details name the field.
        return ErrorReply(*ctx.clock, 400, kValidationError, *error,
                          {{"field", error->substr(0, error->find(": "))}});
      }
    }
  }
  // Peers: the request's instances of the same model.
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return names[a].second < names[b].second; });
  std::vector<PeerSample> samples(n);
  std::vector<PeerView> views(n);
  for (size_t k = 0; k < n; ++k) samples[k] = PeerSampleOf(windows[order[k]], options);
  std::vector<std::pair<double, uint32_t>> scratch;
  for (size_t begin = 0; begin < n;) {
    size_t end = begin + 1;
    while (end < n && names[order[end]].second == names[order[begin]].second) ++end;
    ComputePeerViews(std::span<const PeerSample>(samples).subspan(begin, end - begin),
                     std::span<PeerView>(views).subspan(begin, end - begin), scratch);
    begin = end;
  }
  std::vector<json> results(n);
  for (size_t k = 0; k < n; ++k) {
    const size_t i = order[k];
    RuleVerdicts verdicts;
    ClassifyInstance(windows[i], views[k], options, &verdicts);
    uint32_t mask = 0;
    std::array<BottleneckSeverity, kNumBottleneckTypes> severity{};
    for (size_t t = 0; t < kNumBottleneckTypes; ++t) {
      if (verdicts[t].judgement != Judgement::kActive) continue;
      mask |= uint32_t{1} << t;
      severity[t] = verdicts[t].severity;
    }
    json list = json::array();
    json primary_name;
    if (mask != 0) {
      std::array<CausalPath, kNumBottleneckTypes> paths;
      const BottleneckType primary = CausalOrder(mask, severity, &paths);
      primary_name = BottleneckTypeName(primary);
      for (size_t t = 0; t < kNumBottleneckTypes; ++t) {
        if (((mask >> t) & 1) == 0) continue;
        const auto type = static_cast<BottleneckType>(t);
        const RuleVerdict& v = verdicts[t];
        json chain = json::array();
        for (uint8_t c = 0; c < paths[t].length; ++c) {
          chain.push_back(BottleneckTypeName(paths[t].chain[c]));
        }
        auto number = [](double x) { return std::isfinite(x) ? json(x) : json(); };
        list.push_back({{"type", BottleneckTypeName(type)},
                        {"severity", BottleneckSeverityName(v.severity)},
                        {"primary", type == primary},
                        {"root", BottleneckTypeName(paths[t].root)},
                        {"chain", std::move(chain)},
                        {"metric", v.metric},
                        {"stat", v.stat},
                        {"value", number(v.value)},
                        {"threshold", number(v.threshold)},
                        {"basis", BottleneckBasisName(v.basis)},
                        {"peer_median", number(v.peer_median)},
                        {"description", DescribeVerdict(type, v, window_ms)}});
      }
    }
    results[i] = {{"instance", names[i].first},
                  {"model", names[i].second},
                  {"primary", primary_name},
                  {"bottlenecks", std::move(list)}};
  }
  ApiReply reply;
  reply.body = {{"timestamp", FormatRfc3339(ctx.clock->NowMs())},
                {"window_ms", window_ms},
                {"instances", std::move(results)}};
  return reply;
}

ApiReply HandleBottlenecks(const ApiContext& ctx, const ApiRequest& req) {
  std::optional<std::string> instance = req.Param("instance");
  std::optional<std::string> model = req.Param("model");
  std::optional<BottleneckType> type;
  if (auto text = req.Param("type")) {
    type = ParseBottleneckType(*text);
    if (!type) {
      return BadParameterValue(
          ctx, "type",
          "type must be MEMORY_PRESSURE, RESOURCE_SATURATION, CACHE_INEFFICIENCY, "
          "LOW_THROUGHPUT, QUEUE_BUILDUP, ERROR_SPIKE or HIGH_LATENCY",
          Echo(*text));
    }
  }
  std::optional<BottleneckSeverity> severity;
  if (auto text = req.Param("severity")) {
    severity = ParseBottleneckSeverity(*text);
    if (!severity || *severity == BottleneckSeverity::kNone) {
      return BadParameterValue(ctx, "severity", "severity must be LOW, MEDIUM, HIGH or CRITICAL",
                               Echo(*text));
    }
  }
  // Default: what limits the instances now.
  std::optional<BottleneckState> state = BottleneckState::kActive;
  if (auto text = req.Param("state")) {
    if (*text == "all") {
      state.reset();
    } else {
      state = ParseBottleneckState(*text);
      if (!state)
        return BadParameterValue(ctx, "state", "state must be active, resolved, retracted or all",
                                 Echo(*text));
    }
  }
  std::optional<bool> primary;
  if (auto text = req.Param("primary")) {
    if (*text != "true" && *text != "false") {
      return BadParameterValue(ctx, "primary", "primary must be true or false", Echo(*text));
    }
    primary = *text == "true";
  }
  ApiReply error;
  std::optional<PageRequest> page = ParsePage(ctx, req, &error);
  if (!page) return error;

  // Key order (instance, model, type): streamed from the cursor, at most limit + 1 kept.
  json list = json::array();
  std::string last_key;
  bool more = false;
  uint64_t skipped = 0;
  Status st = ScanBottlenecks(
      *ctx.store, page->after.value_or(""),
      [&](std::string_view key, const Bottleneck& b) {
        if (state && b.state != *state) return true;
        if (type && b.type != *type) return true;
        if (severity && b.severity != *severity) return true;
        if (primary && b.primary != *primary) return true;
        if (instance && !GlobMatch(*instance, b.instance)) return true;
        if (model && !GlobMatch(*model, b.model)) return true;
        if (list.size() == page->limit) {
          more = true;
          return false;
        }
        list.push_back(BottleneckToJson(b));
        last_key = std::string(key);
        return true;
      },
      &skipped);
  if (!st.ok()) return StatusReply(*ctx.clock, st);
  ApiReply reply;
  reply.body = {{"timestamp", FormatRfc3339(ctx.clock->NowMs())},
                {"count", list.size()},
                {"bottlenecks", std::move(list)},
                {"next_cursor", more ? json(EncodeCursor(last_key)) : json()},
                {"unreadable_records", skipped}};
  return reply;
}

}  // namespace inferscope
