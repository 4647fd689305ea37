// GET /v1/export/prometheus and GET /v1/access (query/handlers.h).

#include <algorithm>
#include <cmath>
#include <span>
#include <string>
#include <string_view>

#include "pipeline/config.h"
#include "pipeline/metrics.h"
#include "query/handlers.h"
#include "state/state_store.h"
#include "values/aggregate.h"

namespace inferscope {
namespace {

using nlohmann::json;

// The request metrics exported as latency families, in ms in the store, seconds in the export
// (Prometheus base units; promtool refuses abbreviated units such as _ms).
struct LatencyFamily {
  std::string_view metric;  // stored series
  std::string_view name;    // Prometheus family
  std::string_view help;
};
constexpr LatencyFamily kLatencies[] = {
    {"ttft_ms", "inferscope_ttft_seconds", "Time to first token"},
    {"tpot_ms", "inferscope_tpot_seconds", "Time per output token"},
    {"e2e_ms", "inferscope_e2e_seconds", "End-to-end request latency"},
};
// Quantiles of each latency family: 0 and 1 are the window's exact min and max.
constexpr double kQuantiles[] = {0, 0.5, 0.9, 0.95, 0.99, 1};
constexpr std::string_view kQuantileLabels[] = {"0", "0.5", "0.9", "0.95", "0.99", "1"};

// Token counts exported as rates (sum over the window / window seconds).
struct TokenFamily {
  std::string_view metric;
  std::string_view name;
  std::string_view help;
};
constexpr TokenFamily kTokenRates[] = {
    {"output_tokens", "inferscope_output_tokens_per_second",
     "Output (generated) tokens per second over the window"},
    {"prompt_tokens", "inferscope_prompt_tokens_per_second",
     "Prompt tokens per second over the window"},
    {"cached_tokens", "inferscope_cached_tokens_per_second",
     "Prompt tokens served from the prefix cache per second over the window"},
};

bool IsRequestMetric(std::string_view metric) {
  for (const LatencyFamily& f : kLatencies) {
    if (f.metric == metric) return true;
  }
  for (const TokenFamily& f : kTokenRates) {
    if (f.metric == metric) return true;
  }
  return metric == "cost_usd" || metric == "quality";
}

// One family's samples, rendered as they are found and concatenated at the end (the text format
// wants each family's samples together).
struct Family {
  std::string name;
  std::string_view type;
  std::string help;
  std::string samples;

  void Sample(std::string_view instance, std::string_view model, std::string_view extra_label,
              std::string_view extra_value, double value) {
    samples += name;
    samples += "{instance=\"";
    AppendPromLabelValue(samples, instance);
    samples += "\",model=\"";
    AppendPromLabelValue(samples, model);
    samples += '"';
    if (!extra_label.empty()) {
      samples += ',';
      samples += extra_label;
      samples += "=\"";
      AppendPromLabelValue(samples, extra_value);
      samples += '"';
    }
    samples += "} ";
    AppendPromValue(samples, value);
    samples += '\n';
  }
  void AppendTo(std::string& out) const {
    AppendPromFamilyHeader(out, name, help, type);
    out += samples;
  }
};

void AppendScalar(std::string& out, std::string_view name, std::string_view help, double value) {
  AppendPromFamilyHeader(out, name, help, "gauge");
  out += name;
  out += ' ';
  AppendPromValue(out, value);
  out += '\n';
}

}  // namespace

ApiReply HandleExportPrometheus(const ApiContext& ctx, const ApiRequest& req) {
  for (const auto& [name, value] : req.params) {
    if (name != "window") {
      return BadParameter(ctx, name,
                          "unknown parameter '" + name + "' (this endpoint takes: window)");
    }
  }
  int64_t window_ms = ctx.export_options.window_ms;
  if (std::optional<std::string> text = req.Param("window")) {
    std::optional<int64_t> ms = ParseDurationMs(*text);
    if (!ms || *ms < 1'000 || *ms > 86'400'000) {
      return BadParameterValue(ctx, "window",
                               "window must be a duration in 1s..1d such as 10s, 1m or 5m", *text);
    }
    window_ms = *ms;
  }
  const int64_t watermark = ctx.store->Watermark();
  // The latest window [start, end) of this length, aligned to the epoch, that the watermark closed.
  const int64_t end = watermark > 0 ? watermark / window_ms * window_ms : 0;
  const int64_t start = end - window_ms;
  const double seconds = static_cast<double>(window_ms) / 1000.0;

  Family latency[std::size(kLatencies)];
  Family latency_mean[std::size(kLatencies)];
  for (size_t i = 0; i < std::size(kLatencies); ++i) {
    latency[i] = {std::string(kLatencies[i].name),
                  "summary",
                  std::string(kLatencies[i].help) +
                      " in seconds over the latest closed window: quantiles from the window's "
                      "sketch, 0 and 1 its exact min and max",
                  {}};
    latency_mean[i] = {
        std::string(kLatencies[i].name) + "_mean",
        "gauge",
        std::string(kLatencies[i].help) + " in seconds, mean over the latest closed window",
        {}};
  }
  Family requests{"inferscope_requests_per_second",
                  "gauge",
                  "Requests per second over the latest closed window",
                  {}};
  Family window_requests{
      "inferscope_window_requests", "gauge", "Requests in the latest closed window", {}};
  Family errors{"inferscope_error_ratio",
                "gauge",
                "Failed requests / requests over the latest closed window",
                {}};
  Family tokens[std::size(kTokenRates)];
  for (size_t i = 0; i < std::size(kTokenRates); ++i) {
    tokens[i] = {std::string(kTokenRates[i].name), "gauge", std::string(kTokenRates[i].help), {}};
  }
  Family gauges{"inferscope_reported_value",
                "gauge",
                "Last value in the latest closed window of a reported gauge (label gauge: its "
                "name, e.g. kv_cache_usage)",
                {}};

  size_t read = 0, dropped = 0;
  Status failure;
  bool bad_window = false;
  Status scanned = ctx.store->ScanSeries("", false, [&](const SeriesInfo& info) {
    if (end <= 0 || info.last_seen_ms < start || info.first_seen_ms >= end) return true;
    if (read >= ctx.export_options.max_series) {
      ++dropped;
      return true;
    }
    ++read;
    WindowsRequest request;
    request.instance = info.instance;
    request.models = std::span<const std::string>(&info.model, 1);
    request.metric = info.metric;
    request.from_ms = start;
    request.window_ms = window_ms;
    request.num_windows = 1;
    WindowsRead result;
    failure = ctx.store->ReadWindows(request, &result);
    if (result.mismatched_bucket_ms) {
      failure = Status::InvalidArgument("window " + std::to_string(window_ms) +
                                        "ms is not a multiple of the stored pane length (" +
                                        std::to_string(*result.mismatched_bucket_ms) + "ms)");
      bad_window = true;
      return false;
    }
    if (!failure.ok()) return false;
    if (result.windows.empty()) return true;
    const SummaryStats stats = Summarize(result.windows[0], window_ms);
    if (stats.count == 0 && stats.events == 0) return true;
    for (size_t i = 0; i < std::size(kLatencies); ++i) {
      if (info.metric != kLatencies[i].metric || stats.count == 0) continue;
      const double q[] = {stats.min, stats.p50, stats.p90, stats.p95, stats.p99, stats.max};
      for (size_t k = 0; k < std::size(kQuantiles); ++k) {
        latency[i].Sample(info.instance, info.model, "quantile", kQuantileLabels[k], q[k] / 1000);
      }
      latency_mean[i].Sample(info.instance, info.model, {}, {}, stats.mean / 1000);
    }
    // Every request outcome carries e2e: its series counts requests and errors.
    if (info.metric == "e2e_ms") {
      requests.Sample(info.instance, info.model, {}, {},
                      static_cast<double>(stats.events) / seconds);
      window_requests.Sample(info.instance, info.model, {}, {}, static_cast<double>(stats.events));
      if (stats.events > 0) errors.Sample(info.instance, info.model, {}, {}, stats.error_ratio);
    }
    for (size_t i = 0; i < std::size(kTokenRates); ++i) {
      if (info.metric == kTokenRates[i].metric) {
        tokens[i].Sample(info.instance, info.model, {}, {}, stats.sum / seconds);
      }
    }
    if (!IsRequestMetric(info.metric) && stats.count > 0) {
      gauges.Sample(info.instance, info.model, "gauge", info.metric, stats.last);
    }
    return true;
  });
  if (!failure.ok()) {
    if (bad_window) {
      return BadParameterValue(ctx, "window", failure.message(), std::to_string(window_ms) + "ms");
    }
    return StatusReply(*ctx.clock, failure);
  }
  if (!scanned.ok()) return StatusReply(*ctx.clock, scanned);
  if (ctx.export_dropped != nullptr && dropped > 0) {
    ctx.export_dropped->Inc(static_cast<double>(dropped));
  }

  std::string out;
  AppendScalar(out, "inferscope_export_window_start_timestamp_seconds",
               "Start of the exported window (Unix seconds)", static_cast<double>(start) / 1000);
  AppendScalar(out, "inferscope_export_window_end_timestamp_seconds",
               "End of the exported window (Unix seconds, exclusive)",
               static_cast<double>(end) / 1000);
  AppendScalar(out, "inferscope_export_window_seconds", "Length of the exported window", seconds);
  AppendScalar(out, "inferscope_export_series", "Stored series read for this scrape",
               static_cast<double>(read));
  AppendScalar(out, "inferscope_export_series_dropped",
               "Stored series with data in the window left out by the series cap "
               "(export.max_series) in this scrape",
               static_cast<double>(dropped));
  // Families without samples are left out (a family needs at least one sample to be useful, and
  // an empty one would still declare a type).
  auto append = [&out](const Family& family) {
    if (!family.samples.empty()) family.AppendTo(out);
  };
  for (const Family& f : latency) append(f);
  for (const Family& f : latency_mean) append(f);
  append(requests);
  append(window_requests);
  append(errors);
  for (const Family& f : tokens) append(f);
  append(gauges);
  ApiReply reply;
  reply.text = std::move(out);
  reply.content_type = "text/plain; version=0.0.4";
  return reply;
}

ApiReply HandleAccess(const ApiContext& ctx, const ApiRequest& req) {
  if (!req.params.empty()) {
    const std::string& name = req.params.begin()->first;
    return BadParameter(ctx, name, "unknown parameter '" + name + "' (this endpoint takes none)");
  }
  json tokens = json::array();
  json body = {{"timestamp", FormatRfc3339(ctx.clock->NowMs())}};
  if (ctx.access != nullptr) {
    for (const ApiToken& t : ctx.access->tokens) {
      json scopes = json::array();
      for (Scope s : {Scope::kRead, Scope::kWrite, Scope::kAdmin}) {
        if ((t.scopes & static_cast<uint8_t>(s)) != 0) scopes.push_back(ScopeName(s));
      }
      tokens.push_back({{"name", t.name}, {"scopes", std::move(scopes)}});
    }
    const RateLimitOptions& r = ctx.access->rate_limit;
    body["rate_limit"] = {{"rate", r.rate},
                          {"burst", r.burst > 0 ? r.burst : std::max(1.0, r.rate)},
                          {"max_clients", r.max_clients},
                          {"clients", ctx.limiter != nullptr ? ctx.limiter->size() : 0}};
    body["cors"] = {{"allowed_origins", ctx.access->cors.allowed_origins},
                    {"max_age_s", ctx.access->cors.max_age_s}};
  }
  body["tokens"] = std::move(tokens);
  body["export"] = {{"window_ms", ctx.export_options.window_ms},
                    {"max_series", ctx.export_options.max_series}};
  ApiReply reply;
  reply.body = std::move(body);
  return reply;
}

}  // namespace inferscope
