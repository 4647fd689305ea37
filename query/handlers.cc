#include "query/handlers.h"

#include <time.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <numeric>
#include <set>
#include <utility>

#include "pipeline/config.h"
#include "pipeline/int_math.h"
#include "pipeline/json_text.h"
#include "pipeline/names.h"
#include "pipeline/tiers.h"
#include "state/state_store.h"
#include "values/aggregate.h"

namespace inferscope {
namespace {

using nlohmann::json;

constexpr std::string_view kValidationError = "VALIDATION_ERROR";
constexpr std::string_view kNotFound = "NOT_FOUND";
// Bounds that keep window arithmetic far from int64 overflow: times up to the year 9999, windows
// up to about 31 years.
constexpr int64_t kMaxTimeMs = 253'402'300'799'999;
constexpr int64_t kMaxWindowMs = 1'000'000'000'000;

// A positive duration parameter ("10s", "1m", "5m", "1h"...), or an error reply.
std::optional<int64_t> ParseWindowParam(const ApiContext& ctx, const ApiRequest& req,
                                        std::string_view default_text, std::string* text,
                                        ApiReply* error) {
  *text = req.Param("window").value_or(std::string(default_text));
  std::optional<int64_t> ms = ParseDurationMs(*text);
  if (!ms || *ms <= 0 || *ms > kMaxWindowMs) {
    *error = BadParameter(
        ctx, "window",
        "window must be a positive duration such as 10s, 1m, 5m or 1h, got '" + *text + "'",
        {{"value", *text}});
    return std::nullopt;
  }
  return ms;
}

std::optional<int64_t> ParseTimeParam(const ApiContext& ctx, const ApiRequest& req,
                                      const std::string& name, ApiReply* error, bool* present) {
  std::optional<std::string> text = req.Param(name);
  *present = text.has_value();
  if (!text) return std::nullopt;
  std::optional<int64_t> ms = ParseTimeMs(*text);
  if (ms && *ms > kMaxTimeMs) ms.reset();
  if (!ms) {
    *error = BadParameter(
        ctx, name, name + " must be epoch milliseconds or an RFC 3339 time, got '" + *text + "'",
        {{"value", *text}});
  }
  return ms;
}

// The fields of one window of a summary response.
json WindowJson(int64_t start, int64_t end, const Aggregate& agg) {
  SummaryStats stats = Summarize(agg, end - start);
  json w = {{"start", start}, {"end", end}, {"count", stats.count}};
  const bool has_values = stats.count > 0;
  w["sum"] = has_values ? JsonNumberOrNull(stats.sum) : json();
  w["mean"] = has_values ? JsonNumberOrNull(stats.mean) : json();
  w["min"] = has_values ? JsonNumberOrNull(stats.min) : json();
  w["max"] = has_values ? JsonNumberOrNull(stats.max) : json();
  w["variance"] = has_values ? JsonNumberOrNull(stats.variance) : json();
  w["p50"] = has_values ? JsonNumberOrNull(stats.p50) : json();
  w["p90"] = has_values ? JsonNumberOrNull(stats.p90) : json();
  w["p95"] = has_values ? JsonNumberOrNull(stats.p95) : json();
  w["p99"] = has_values ? JsonNumberOrNull(stats.p99) : json();
  // Whether some value came as histogram buckets: the quantiles are then exact only to the width
  // of the bucket holding them (docs/API.md, "Percentiles").
  w["bucket_bounded"] = agg.bucket_bounded;
  w["rate"] = JsonNumberOrNull(stats.rate_per_s);
  w["error_ratio"] = stats.events > 0 ? JsonNumberOrNull(stats.error_ratio) : json();
  w["events"] = stats.events;
  w["errors"] = stats.errors;
  return w;
}

}  // namespace

std::string EncodeCursor(std::string_view position) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(position.size() * 2);
  for (unsigned char c : position) {
    out += kHex[c >> 4];
    out += kHex[c & 0xf];
  }
  return out;
}

std::optional<std::string> DecodeCursor(std::string_view cursor) {
  if (cursor.empty() || cursor.size() % 2 != 0 || cursor.size() > 2048) return std::nullopt;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(cursor.size() / 2);
  for (size_t i = 0; i < cursor.size(); i += 2) {
    int hi = nibble(cursor[i]), lo = nibble(cursor[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi << 4 | lo);
  }
  return out;
}

std::optional<PageRequest> ParsePage(const ApiContext& ctx, const ApiRequest& req,
                                     ApiReply* error) {
  PageRequest page;
  if (std::optional<std::string> text = req.Param("limit")) {
    size_t limit = 0;
    auto [ptr, ec] = std::from_chars(text->data(), text->data() + text->size(), limit);
    if (ec != std::errc() || ptr != text->data() + text->size() || limit < 1 ||
        limit > kMaxPageLimit) {
      *error = BadParameter(ctx, "limit",
                            "limit must be an integer in 1.." + std::to_string(kMaxPageLimit),
                            {{"value", *text}, {"max", kMaxPageLimit}});
      return std::nullopt;
    }
    page.limit = limit;
  }
  if (std::optional<std::string> text = req.Param("cursor")) {
    page.after = DecodeCursor(*text);
    if (!page.after) {
      *error = BadParameter(ctx, "cursor",
                            "cursor must be the next_cursor of an earlier reply of this endpoint",
                            {{"value", text->substr(0, 64)}});
      return std::nullopt;
    }
  }
  return page;
}

std::optional<std::string> ApiRequest::Param(const std::string& name) const {
  auto it = params.find(name);
  if (it == params.end()) return std::nullopt;
  return it->second;
}

ApiReply ErrorReply(const Clock& clock, int status, std::string_view code, std::string message,
                    json details) {
  ApiReply reply;
  reply.status = status;
  reply.body = {
      {"error", {{"code", code}, {"message", std::move(message)}, {"details", std::move(details)}}},
      {"timestamp", FormatRfc3339(clock.NowMs())}};
  return reply;
}

ApiReply BadParameter(const ApiContext& ctx, std::string_view parameter, std::string message,
                      json extra) {
  extra["parameter"] = parameter;
  return ErrorReply(*ctx.clock, 400, kValidationError, std::move(message), std::move(extra));
}

ApiReply BadParameterValue(const ApiContext& ctx, std::string_view parameter, std::string message,
                           std::string_view value) {
  return BadParameter(ctx, parameter, std::move(message), {{"value", value}});
}

ApiReply BadField(const ApiContext& ctx, std::string_view field, std::string message) {
  return ErrorReply(*ctx.clock, 400, kValidationError,
                    std::string(field) + ": " + std::move(message), {{"field", field}});
}

size_t JsonNestingDepth(std::string_view text, size_t limit) {
  size_t depth = 0;
  size_t deepest = 0;
  bool in_string = false;
  bool escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) return deepest;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

std::optional<ApiReply> ParseJsonBody(const ApiContext& ctx, std::string_view body, json* out) {
  if (JsonNestingDepth(body, kMaxJsonBodyDepth) > kMaxJsonBodyDepth) {
    return ErrorReply(*ctx.clock, 400, kValidationError,
                      "the body nests arrays and objects more than " +
                          std::to_string(kMaxJsonBodyDepth) + " levels deep (at most " +
                          std::to_string(kMaxJsonBodyDepth) + " are allowed)",
                      {{"max_depth", kMaxJsonBodyDepth}});
  }
  *out = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (out->is_discarded() || !out->is_object()) {
    return ErrorReply(*ctx.clock, 400, kValidationError, "the body must be a JSON object");
  }
  return std::nullopt;
}

std::string ShowJsonValue(const json& value) {
  constexpr size_t kShownBytes = 64;
  switch (value.type()) {
    case json::value_t::string: {
      const std::string& s = value.get_ref<const std::string&>();
      if (s.size() <= kShownBytes) {
        return json(s).dump(-1, ' ', false, json::error_handler_t::replace);
      }
      return json(s.substr(0, kShownBytes)).dump(-1, ' ', false, json::error_handler_t::replace) +
             "...";
    }
    case json::value_t::array:
      return "an array of " + std::to_string(value.size());
    case json::value_t::object:
      return "an object of " + std::to_string(value.size()) + " fields";
    default:
      return value.dump();  // a number, boolean or null: short
  }
}

ApiReply StatusReply(const Clock& clock, const Status& status) {
  switch (status.code()) {
    case Status::Code::kInvalidArgument:
      return ErrorReply(clock, 400, kValidationError, status.message());
    case Status::Code::kNotFound:
      return ErrorReply(clock, 404, kNotFound, status.message());
    case Status::Code::kFailedPrecondition:
      return ErrorReply(clock, 409, "CONFLICT", status.message());
    default:
      return ErrorReply(clock, 500, "INTERNAL_ERROR", status.ToString());
  }
}

std::string FormatRfc3339(int64_t epoch_ms) {
  int64_t secs = FloorDiv(epoch_ms, 1000);
  int millis = static_cast<int>(epoch_ms - secs * 1000);
  time_t t = static_cast<time_t>(secs);
  struct tm tm {};
  if (gmtime_r(&t, &tm) == nullptr) return "1970-01-01T00:00:00.000Z";
  char buf[40];
  size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + n, sizeof(buf) - n, ".%03dZ", millis);
  return buf;
}

std::optional<int64_t> ParseTimeMs(std::string_view text) {
  if (text.empty()) return std::nullopt;
  if (std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    int64_t ms = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), ms);
    if (ec != std::errc() || ptr != text.data() + text.size()) return std::nullopt;
    return ms;
  }
  // YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)
  size_t pos = 0;
  auto digits = [&](size_t n, int* out) {
    if (pos + n > text.size()) return false;
    int v = 0;
    for (size_t i = 0; i < n; ++i) {
      char c = text[pos + i];
      if (c < '0' || c > '9') return false;
      v = v * 10 + (c - '0');
    }
    *out = v;
    pos += n;
    return true;
  };
  auto expect = [&](std::string_view chars) {
    if (pos >= text.size() || chars.find(text[pos]) == std::string_view::npos) return false;
    ++pos;
    return true;
  };
  int year, month, day, hour, minute, second;
  if (!digits(4, &year) || !expect("-") || !digits(2, &month) || !expect("-") || !digits(2, &day) ||
      !expect("Tt ") || !digits(2, &hour) || !expect(":") || !digits(2, &minute) || !expect(":") ||
      !digits(2, &second)) {
    return std::nullopt;
  }
  int64_t millis = 0;
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    int64_t scale = 100;
    size_t start = pos;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
      millis += (text[pos] - '0') * scale;
      scale /= 10;
      ++pos;
    }
    if (pos == start) return std::nullopt;
  }
  int64_t offset_min = 0;
  if (pos < text.size() && (text[pos] == 'Z' || text[pos] == 'z')) {
    ++pos;
  } else if (pos < text.size() && (text[pos] == '+' || text[pos] == '-')) {
    int sign = text[pos] == '-' ? -1 : 1;
    ++pos;
    int oh, om;
    if (!digits(2, &oh) || !expect(":") || !digits(2, &om) || oh > 23 || om > 59) {
      return std::nullopt;
    }
    offset_min = sign * (oh * 60 + om);
  } else {
    return std::nullopt;
  }
  if (pos != text.size()) return std::nullopt;
  if (hour > 23 || minute > 59 || second > 60) return std::nullopt;
  std::chrono::year_month_day ymd{std::chrono::year(year),
                                  std::chrono::month(static_cast<unsigned>(month)),
                                  std::chrono::day(static_cast<unsigned>(day))};
  if (!ymd.ok()) return std::nullopt;
  int64_t days = std::chrono::sys_days(ymd).time_since_epoch().count();
  int64_t secs = days * 86'400 + hour * 3'600 + minute * 60 + second - offset_min * 60;
  return secs * 1000 + millis;
}

ApiReply HandleHealth(const ApiContext& ctx, const ApiRequest&) {
  ApiReply reply;
  reply.body = json::object();
  if (ctx.health_info) {
    json extra = ctx.health_info();
    if (extra.is_object()) reply.body.update(extra);
  }
  // "ok" unless `health_info` says otherwise ("degraded", with a "reason").
  if (!reply.body.contains("status") || !reply.body["status"].is_string())
    reply.body["status"] = "ok";
  reply.body["timestamp"] = FormatRfc3339(ctx.clock->NowMs());
  return reply;
}

ApiReply HandleCapabilities(const ApiContext& ctx, const ApiRequest&) {
  json kinds = {{"sources", json::array()}, {"operators", json::array()}, {"sinks", json::array()}};
  for (const Registry::Entry& entry : ctx.capabilities) {
    std::string key = entry.kind + "s";
    if (!kinds.contains(key)) kinds[key] = json::array();
    kinds[key].push_back({{"name", entry.name}, {"description", entry.description}});
  }
  ApiReply reply;
  reply.body = {{"capabilities", std::move(kinds)},
                {"timestamp", FormatRfc3339(ctx.clock->NowMs())}};
  return reply;
}

ApiReply HandleInstances(const ApiContext& ctx, const ApiRequest& req) {
  ApiReply error;
  std::optional<PageRequest> page = ParsePage(ctx, req, &error);
  if (!page) return error;
  struct ModelInfo {
    std::vector<std::string> metrics;
    int64_t first_seen = INT64_MAX;
    int64_t last_seen = INT64_MIN;
  };
  struct InstanceInfo {
    std::string id;
    std::map<std::string, ModelInfo> models;
    int64_t first_seen = INT64_MAX;
    int64_t last_seen = INT64_MIN;
  };
  // Streams the series index from the cursor, keeping only this page's instances (plus one series
  // of the next, which says there is a next page).
  std::vector<InstanceInfo> instances;
  bool more = false;
  Status s = ctx.store->ScanSeries(
      page->after.value_or(""), page->after.has_value(), [&](const SeriesInfo& info) {
        if (instances.empty() || instances.back().id != info.instance) {
          if (instances.size() == page->limit) {
            more = true;
            return false;
          }
          instances.emplace_back().id = info.instance;
        }
        InstanceInfo& inst = instances.back();
        ModelInfo& model = inst.models[info.model];
        model.metrics.push_back(info.metric);
        model.first_seen = std::min(model.first_seen, info.first_seen_ms);
        model.last_seen = std::max(model.last_seen, info.last_seen_ms);
        inst.first_seen = std::min(inst.first_seen, info.first_seen_ms);
        inst.last_seen = std::max(inst.last_seen, info.last_seen_ms);
        return true;
      });
  if (!s.ok()) return StatusReply(*ctx.clock, s);
  json list = json::array();
  for (InstanceInfo& inst : instances) {
    json models = json::array();
    for (auto& [name, model] : inst.models) {
      std::sort(model.metrics.begin(), model.metrics.end());
      models.push_back({{"name", name},
                        {"metrics", model.metrics},
                        {"first_seen", model.first_seen},
                        {"last_seen", model.last_seen}});
    }
    list.push_back({{"id", inst.id},
                    {"first_seen", inst.first_seen},
                    {"last_seen", inst.last_seen},
                    {"models", std::move(models)}});
  }
  ApiReply reply;
  reply.body = {{"instances", std::move(list)},
                {"next_cursor", more ? json(EncodeCursor(instances.back().id)) : json()},
                {"as_of", ctx.store->Watermark()},
                {"timestamp", FormatRfc3339(ctx.clock->NowMs())}};
  return reply;
}

namespace {

// How a windowed read is asked for: which parameter names the step, its default, how many steps
// the range covers by default, and the key of the list in the reply.
struct RangeQuery {
  std::string_view step_param;
  std::string_view default_step;
  int64_t default_steps = 1;
  std::string_view list_key;
  // Whether a `window` parameter (default: the step) sets each point's window [t - window, t) at
  // every step boundary t (GET /v1/series).
  bool sliding = false;
};

// A positive duration parameter `name` ("10s", "1m", "5m", "1h"...), or an error reply.
std::optional<int64_t> ParseStepParam(const ApiContext& ctx, const ApiRequest& req,
                                      std::string_view name, std::string_view default_text,
                                      std::string* text, ApiReply* error) {
  *text = req.Param(std::string(name)).value_or(std::string(default_text));
  std::optional<int64_t> ms = ParseDurationMs(*text);
  if (!ms || *ms <= 0 || *ms > kMaxWindowMs) {
    *error = BadParameter(ctx, name,
                          std::string(name) +
                              " must be a positive duration such as 10s, 1m, 5m or 1h, got '" +
                              *text + "'",
                          {{"value", *text}});
    return std::nullopt;
  }
  return ms;
}

// The parameters of a windowed read, parsed and checked (ParseWindowedRead).
struct WindowedParams {
  std::optional<std::string> model;
  std::string metric;
  std::string step_text;  // as given, for the reply
  int64_t step_ms = 0;
  std::string window_text;  // each point's window (sliding reads; else the step)
  int64_t window_ms = 0;
  std::optional<int64_t> from;
  std::optional<int64_t> to;
  int64_t max_resolution_ms = INT64_MAX;
};

// Reads and checks the names, the step, from/to and resolution of a windowed read; nullopt with
// `*error` set when one is wrong.
std::optional<WindowedParams> ParseWindowedRead(const ApiContext& ctx, const ApiRequest& req,
                                                const std::string& instance,
                                                const RangeQuery& query, ApiReply* error) {
  WindowedParams p;
  p.model = req.Param("model");
  p.metric = req.Param("metric").value_or("ttft_ms");
  const std::string limit = std::to_string(kMaxNameBytes);
  if (instance.size() > kMaxNameBytes) {
    *error = ErrorReply(*ctx.clock, 400, kValidationError,
                        "instance id longer than " + limit + " bytes", {{"parameter", "id"}});
    return std::nullopt;
  }
  if (p.model && p.model->size() > kMaxNameBytes) {
    *error = BadParameter(ctx, "model", "model longer than " + limit + " bytes");
    return std::nullopt;
  }
  if (p.metric.empty() || p.metric.size() > kMaxNameBytes) {
    *error = BadParameter(ctx, "metric", "metric must be 1 to " + limit + " bytes");
    return std::nullopt;
  }

  std::optional<int64_t> step =
      ParseStepParam(ctx, req, query.step_param, query.default_step, &p.step_text, error);
  if (!step) return std::nullopt;
  p.step_ms = *step;
  p.window_text = p.step_text;
  p.window_ms = p.step_ms;
  if (query.sliding && req.Param("window")) {
    std::optional<int64_t> window = ParseWindowParam(ctx, req, "", &p.window_text, error);
    if (!window) return std::nullopt;
    p.window_ms = *window;
  }
  bool has_from = false, has_to = false;
  p.from = ParseTimeParam(ctx, req, "from", error, &has_from);
  if (has_from && !p.from) return std::nullopt;
  p.to = ParseTimeParam(ctx, req, "to", error, &has_to);
  if (has_to && !p.to) return std::nullopt;

  const std::vector<TierSpec>& tiers = ctx.store->tiers();
  const int64_t finest = tiers.front().resolution_ms;  // 0: unknown (checked per bucket on read)
  if (finest > 0 && p.step_ms % finest != 0) {
    *error = BadParameter(ctx, query.step_param,
                          std::string(query.step_param) + " " + p.step_text +
                              " is not a multiple of the stored pane length (" +
                              FormatDurationMs(finest) + ")",
                          {{"value", p.step_text}, {"pane_ms", finest}});
    return std::nullopt;
  }
  if (finest > 0 && p.window_ms % finest != 0) {
    *error =
        BadParameter(ctx, "window",
                     "window " + p.window_text + " is not a multiple of the stored pane length (" +
                         FormatDurationMs(finest) + ")",
                     {{"value", p.window_text}, {"pane_ms", finest}});
    return std::nullopt;
  }
  if (std::optional<std::string> text = req.Param("resolution")) {
    std::optional<int64_t> ms = ParseDurationMs(*text);
    bool known = false;
    for (const TierSpec& t : tiers) known = known || (ms && t.resolution_ms == *ms);
    if (!known) {
      json names = json::array();
      for (const TierSpec& t : tiers) names.push_back(t.Name());
      *error =
          BadParameter(ctx, "resolution",
                       "resolution must be the resolution of a storage tier, got '" + *text + "'",
                       {{"value", *text}, {"tiers", names}});
      return std::nullopt;
    }
    if (p.step_ms % *ms != 0) {
      *error = BadParameter(ctx, "resolution",
                            "resolution " + *text + " does not divide " +
                                std::string(query.step_param) + " " + p.step_text,
                            {{"value", *text}, {query.step_param, p.step_text}});
      return std::nullopt;
    }
    if (p.window_ms % *ms != 0) {
      *error = BadParameter(ctx, "resolution",
                            "resolution " + *text + " does not divide window " + p.window_text,
                            {{"value", *text}, {"window", p.window_text}});
      return std::nullopt;
    }
    p.max_resolution_ms = *ms;
  }
  return p;
}

// The windows a read covers: [first_start, first_start + num_windows × step).
struct WindowRange {
  int64_t first_start = 0;
  int64_t num_windows = 0;
};

// The range of a windowed read: `to` defaults to the watermark rounded down to a step boundary,
// `from` to `default_steps` steps before `to`; windows are aligned to multiples of the step.
// nullopt with `*error` set when the range is empty or holds too many windows.
std::optional<WindowRange> ResolveRange(const ApiContext& ctx, const WindowedParams& params,
                                        const RangeQuery& query, int64_t watermark,
                                        ApiReply* error) {
  const int64_t w = params.step_ms;
  const int64_t to_ms = params.to ? *params.to : FloorDiv(watermark, w) * w;
  const int64_t from_ms = params.from ? *params.from : to_ms - query.default_steps * w;
  if (from_ms >= to_ms) {
    *error =
        BadParameter(ctx, "from", "from must be before to", {{"from", from_ms}, {"to", to_ms}});
    return std::nullopt;
  }
  WindowRange range;
  range.first_start = FloorDiv(from_ms, w) * w;
  const int64_t span = to_ms - range.first_start;
  range.num_windows = span / w + (span % w != 0 ? 1 : 0);
  if (range.num_windows > kMaxWindowsPerRequest) {
    *error = BadParameter(ctx, query.step_param,
                          "the range holds " + std::to_string(range.num_windows) +
                              " windows; at most " + std::to_string(kMaxWindowsPerRequest) +
                              " are allowed per request (use a larger " +
                              std::string(query.step_param) + " or a shorter range)",
                          {{"windows", range.num_windows}, {"max_windows", kMaxWindowsPerRequest}});
    return std::nullopt;
  }
  return range;
}

// The reply of a windowed read.
// `points[i]` is the window of length params.window_ms ending at the (i + 1)-th step boundary.
json WindowedReply(const ApiContext& ctx, const std::string& instance, const WindowedParams& params,
                   const RangeQuery& query, const std::vector<std::string>& models,
                   const WindowRange& range, const WindowsRead& read,
                   const std::vector<Aggregate>& points, int64_t watermark) {
  const int64_t w = params.step_ms;
  const std::vector<TierSpec>& tiers = ctx.store->tiers();
  json segments = json::array();
  for (const TierSegment& seg : read.plan) {
    const TierSpec& tier = tiers[seg.tier];
    segments.push_back({{"tier", tier.Name()},
                        {"resolution_ms", tier.resolution_ms},
                        {"from", seg.from_ms},
                        {"to", seg.to_ms}});
  }
  json list = json::array();
  for (int64_t i = 0; i < range.num_windows; ++i) {
    const int64_t end = range.first_start + (i + 1) * w;
    list.push_back(WindowJson(end - params.window_ms, end, points[static_cast<size_t>(i)]));
  }
  const TierSpec& answered = tiers[read.plan.empty() ? 0 : read.plan.front().tier];
  json reply = {{"instance", instance},
                {"model", params.model ? json(*params.model) : json()},
                {"models", models},
                {"metric", params.metric},
                {query.step_param, params.step_text},
                {std::string(query.step_param) + "_ms", w},
                {"from", range.first_start},
                {"to", range.first_start + range.num_windows * w},
                {"complete_from", read.complete_from_ms},
                {"tier", answered.Name()},
                {"resolution_ms", answered.resolution_ms},
                {"tiers", std::move(segments)},
                {"as_of", watermark},
                {query.list_key, std::move(list)}};
  if (query.sliding) {
    reply["window"] = params.window_text;
    reply["window_ms"] = params.window_ms;
  }
  return reply;
}

// Windows of one step over [from, to) for one instance (one model or all of them), each merged
// from the stored buckets of the coarsest tier that answers it exactly (StateStore::ReadWindows).
// Errors come in this order: parameters (400), series (404), range (400), stored panes (400).
ApiReply WindowedRead(const ApiContext& ctx, const ApiRequest& req, const std::string& instance,
                      const RangeQuery& query) {
  ApiReply error;
  std::optional<WindowedParams> params = ParseWindowedRead(ctx, req, instance, query, &error);
  if (!params) return error;
  const std::optional<std::string>& model = params->model;
  const std::string& metric = params->metric;

  // Which series: every model of the instance that has the metric, or just the one asked for.
  Result<SeriesMatch> match = ctx.store->FindSeries(instance, model ? &*model : nullptr, metric);
  if (!match.ok()) return StatusReply(*ctx.clock, match.status());
  if (!match->instance_known) {
    return ErrorReply(*ctx.clock, 404, kNotFound, "unknown instance '" + instance + "'",
                      {{"instance", instance}});
  }
  if (!match->model_known) {
    return ErrorReply(*ctx.clock, 404, kNotFound,
                      "instance '" + instance + "' has no model '" + *model + "'",
                      {{"instance", instance}, {"model", *model}});
  }
  if (match->models.empty()) {
    return ErrorReply(*ctx.clock, 404, kNotFound,
                      "instance '" + instance + "' has no series of metric '" + metric + "'",
                      {{"instance", instance}, {"metric", metric}});
  }

  const int64_t watermark = ctx.store->Watermark();
  std::optional<WindowRange> range = ResolveRange(ctx, *params, query, watermark, &error);
  if (!range) return error;

  // The point at step boundary t is the window [t - window, t): read the stored buckets in
  // sub-windows of g = gcd(step, window) (so the tier that answers is one whose resolution divides
  // both) from the first point's window start to the last step boundary, then merge window / g
  // consecutive sub-windows per point. With window = step this is one sub-window per point.
  // A window longer than the step is merged from block suffixes and prefixes (see
  // SlidingMergeCount): about 2 merges per sub-window plus one per point, not window / g per point.
  const int64_t step = params->step_ms;
  const int64_t window = params->window_ms;
  const int64_t g = std::gcd(step, window);
  const int64_t read_from = range->first_start + step - window;
  const int64_t read_end = range->first_start + range->num_windows * step;
  const int64_t sub_windows = (read_end - read_from) / g;
  const int64_t merges = SlidingMergeCount(range->num_windows, step / g, window / g);
  if (window != step && (sub_windows > kMaxWindowsPerRequest || merges > kMaxMergesPerRequest)) {
    return BadParameter(
        ctx, "window",
        "the request merges " + std::to_string(merges) + " stored buckets of " +
            FormatDurationMs(g) + " from " + std::to_string(sub_windows) + "; at most " +
            std::to_string(kMaxMergesPerRequest) + " merges of at most " +
            std::to_string(kMaxWindowsPerRequest) +
            " buckets are allowed per request (use fewer points, a shorter window, or a step and "
            "window with a larger common divisor)",
        {{"merges", merges},
         {"buckets", sub_windows},
         {"max_merges", kMaxMergesPerRequest},
         {"max_buckets", kMaxWindowsPerRequest}});
  }

  WindowsRequest request;
  request.instance = instance;
  request.models = match->models;
  request.metric = metric;
  request.from_ms = read_from;
  request.window_ms = g;
  request.num_windows = sub_windows;
  request.max_resolution_ms = params->max_resolution_ms;
  WindowsRead read;
  Status s = ctx.store->ReadWindows(request, &read);
  // A bucket of length <= 0 is reported as a store error, never as a mismatch (the guard keeps
  // `step % pane_ms` from dividing by zero whatever the store reports).
  if (read.mismatched_bucket_ms && *read.mismatched_bucket_ms > 0) {
    const int64_t pane_ms = *read.mismatched_bucket_ms;
    const bool by_window = step % pane_ms == 0;
    const std::string_view param = by_window ? std::string_view("window") : query.step_param;
    const std::string& text = by_window ? params->window_text : params->step_text;
    return BadParameter(ctx, param,
                        std::string(param) + " " + text +
                            " is not a multiple of the stored pane length (" +
                            std::to_string(pane_ms) + "ms)",
                        {{"value", text}, {"pane_ms", pane_ms}});
  }
  if (!s.ok()) return StatusReply(*ctx.clock, s);

  std::vector<Aggregate> points;
  if (window == step) {
    points = std::move(read.windows);
  } else {
    points = SlidingMerge(read.windows, range->num_windows, step / g, window / g);
  }

  ApiReply reply;
  reply.body =
      WindowedReply(ctx, instance, *params, query, match->models, *range, read, points, watermark);
  // The answer depends on the view, on the watermark only through `to`'s default (a step boundary)
  // and "as_of", and on the clock only through expiry.
  CacheValidity validity;
  if (!params->to) {
    validity.watermark_from = FloorDiv(watermark, step) * step;
    validity.watermark_until = validity.watermark_from + step;
  }
  validity.clock_until_ms = read.stable_until_ms;
  // Only buckets starting before the read's end were read (ReadWindows).
  validity.data_until_ms = read_end;
  validity.splice_as_of = true;
  reply.cache = validity;
  return reply;
}

}  // namespace

int64_t SlidingMergeCount(int64_t points, int64_t stride, int64_t width) {
  if (points <= 0) return 0;
  if (width <= stride) return points * width;
  const int64_t subs = (points - 1) * stride + width;
  return 2 * subs + points;
}

std::vector<Aggregate> SlidingMerge(std::vector<Aggregate>& subs, int64_t points, int64_t stride,
                                    int64_t width) {
  std::vector<Aggregate> out(static_cast<size_t>(std::max<int64_t>(points, 0)));
  auto at = [&](int64_t k) -> Aggregate& { return subs[static_cast<size_t>(k)]; };
  if (width <= stride) {
    // Windows do not overlap: merge each directly (at most one merge per sub-window).
    for (int64_t i = 0; i < points; ++i) {
      for (int64_t k = i * stride; k < i * stride + width; ++k)
        out[static_cast<size_t>(i)].Merge(at(k));
    }
    return out;
  }
  // Blocks of `width` sub-windows. A window starting at s in block b is the suffix of block b
  // from s merged with the prefix of block b + 1 up to s + width - 1 (nothing when s starts the
  // block). Suffixes are built in place, backwards, when a block is first reached (the block's
  // own sub-windows are not read again: later windows start in later blocks); prefixes accumulate
  // forwards as the starts in the block increase.
  const auto n = static_cast<int64_t>(subs.size());
  int64_t block = -1;
  Aggregate prefix;
  int64_t prefix_end = 0;  // prefix = merge of [next block start, prefix_end)
  for (int64_t i = 0; i < points; ++i) {
    const int64_t s = i * stride;
    const int64_t b = s / width;
    if (b != block) {
      block = b;
      const int64_t end = std::min((b + 1) * width, n);
      for (int64_t k = end - 2; k >= b * width; --k) at(k).Merge(at(k + 1));
      prefix = Aggregate();
      prefix_end = end;
    }
    Aggregate& point = out[static_cast<size_t>(i)];
    point = at(s);
    const int64_t last = s + width;  // exclusive
    for (; prefix_end < last; ++prefix_end) prefix.Merge(at(prefix_end));
    if (s % width != 0) point.Merge(prefix);
  }
  return out;
}

namespace {

// The fleet's request latency, token sums and active instances over the panes starting in
// [from_ms, to_ms), read series by series (a store without the engine's fleet rollup).
Status ScanFleetPerSeries(const ApiContext& ctx, int64_t from_ms, int64_t to_ms, Aggregate* e2e,
                          double* cached_tokens, double* prompt_tokens, size_t* active) {
  std::string last_active;
  Status scan_error;
  Status s = ctx.store->ScanSeries("", false, [&](const SeriesInfo& info) {
    const bool is_e2e = info.metric == kFleetLatencyMetric;
    const bool is_cached = info.metric == kFleetCachedMetric;
    const bool is_prompt = info.metric == kFleetPromptMetric;
    if (!is_e2e && !is_cached && !is_prompt) return true;
    if (info.last_seen_ms < from_ms || info.first_seen_ms >= to_ms) return true;
    uint64_t requests = 0;
    scan_error = ctx.store->ScanPanes(info.instance, info.model, info.metric, from_ms, to_ms,
                                      [&](const StoredPane& pane) -> Status {
                                        if (is_e2e) {
                                          e2e->Merge(pane.agg);
                                          requests += pane.agg.events;
                                        }
                                        if (is_cached) *cached_tokens += pane.agg.sum;
                                        if (is_prompt) *prompt_tokens += pane.agg.sum;
                                        return Status::Ok();
                                      });
    // An instance is active when it has request outcomes in the range, so `active_instances` is
    // 0 exactly when `requests` is.
    if (requests > 0 && (*active == 0 || info.instance != last_active)) {
      ++*active;
      last_active = info.instance;
    }
    return scan_error.ok();
  });
  if (!scan_error.ok()) return scan_error;
  return s;
}

}  // namespace

ApiReply HandleInstanceSummary(const ApiContext& ctx, const ApiRequest& req) {
  const std::string instance = req.path_params.empty() ? std::string() : req.path_params[0];
  return WindowedRead(ctx, req, instance, {"window", "1m", 1, "windows"});
}

ApiReply HandleSeries(const ApiContext& ctx, const ApiRequest& req) {
  std::optional<std::string> instance = req.Param("instance");
  if (!instance || instance->empty()) {
    return BadParameter(ctx, "instance", "instance is required");
  }
  return WindowedRead(ctx, req, *instance, {"step", "1m", 60, "points", /*sliding=*/true});
}

ApiReply HandlePerformanceMetrics(const ApiContext& ctx, const ApiRequest& req) {
  ApiReply error;
  if (req.Param("window") && req.Param("from")) {
    return BadParameter(ctx, "from", "give window or from, not both");
  }
  std::string window_text;
  std::optional<int64_t> window = ParseWindowParam(ctx, req, "5m", &window_text, &error);
  if (!window) return error;
  bool has_from = false, has_to = false;
  std::optional<int64_t> from_param = ParseTimeParam(ctx, req, "from", &error, &has_from);
  if (has_from && !from_param) return error;
  std::optional<int64_t> to_param = ParseTimeParam(ctx, req, "to", &error, &has_to);
  if (has_to && !to_param) return error;

  // Only whole panes count: `to` is rounded down and `from` up to pane boundaries, so a pane at
  // an edge is never counted with the whole window's length (it used to be dropped while the rate
  // still divided by the whole window, and a window shorter than the distance from the watermark
  // to the last pane boundary held no pane at all).
  const int64_t watermark = ctx.store->Watermark();
  const int64_t pane = std::max<int64_t>(ctx.store->tiers().front().resolution_ms, 1);
  const int64_t requested_to = to_param.value_or(watermark);
  const int64_t to_ms = FloorDiv(requested_to, pane) * pane;
  const int64_t requested_from = from_param.value_or(to_ms - *window);
  const int64_t from_ms = -FloorDiv(-requested_from, pane) * pane;
  if (from_ms >= to_ms) {
    return BadParameter(ctx, from_param ? "from" : "window",
                        "the range holds no whole pane of " + FormatDurationMs(pane) +
                            " (from is rounded up and to down to pane boundaries)",
                        {{"from", requested_from}, {"to", requested_to}, {"pane_ms", pane}});
  }

  // The engine's fleet rollup (one row per pane, StateStore::ReadFleet) when the store has it for
  // the range; else one streaming pass over the series index (grouped by instance), so memory
  // does not grow with the number of series.
  Aggregate e2e;
  double cached_tokens = 0, prompt_tokens = 0;
  size_t active = 0;
  FleetRead fleet;
  Result<bool> from_fleet = ctx.store->ReadFleet(from_ms, to_ms, &fleet);
  if (!from_fleet.ok()) return StatusReply(*ctx.clock, from_fleet.status());
  if (*from_fleet) {
    e2e = std::move(fleet.latency);
    cached_tokens = fleet.cached_tokens;
    prompt_tokens = fleet.prompt_tokens;
    active = fleet.active_instances;
  } else {
    Status s =
        ScanFleetPerSeries(ctx, from_ms, to_ms, &e2e, &cached_tokens, &prompt_tokens, &active);
    if (!s.ok()) return StatusReply(*ctx.clock, s);
  }

  const int64_t span = to_ms - from_ms;
  SummaryStats stats = Summarize(e2e, span);
  const double seconds = static_cast<double>(span) / 1000.0;
  json metrics = {
      {"requests_per_second", static_cast<double>(stats.events) / seconds},
      {"avg_response_time_ms", stats.count > 0 ? JsonNumberOrNull(stats.mean) : json()},
      {"p95_response_time_ms", stats.count > 0 ? JsonNumberOrNull(stats.p95) : json()},
      {"p99_response_time_ms", stats.count > 0 ? JsonNumberOrNull(stats.p99) : json()},
      {"bucket_bounded", e2e.bucket_bounded},
      {"error_rate", stats.events > 0 ? JsonNumberOrNull(stats.error_ratio) : json()},
      {"cache_hit_rate",
       prompt_tokens > 0 ? JsonNumberOrNull(cached_tokens / prompt_tokens) : json()},
      {"active_instances", active},
      {"requests", stats.events},
      {"errors", stats.errors},
  };
  ApiReply reply;
  reply.body = {{"timestamp", FormatRfc3339(ctx.clock->NowMs())},
                {"window", from_param ? FormatDurationMs(span) : window_text},
                {"window_ms", span},
                {"from", from_ms},
                {"to", to_ms},
                {"requested_from", requested_from},
                {"requested_to", requested_to},
                {"pane_ms", pane},
                {"partial_panes", "excluded"},
                {"metrics", std::move(metrics)},
                {"as_of", watermark}};
  return reply;
}

ApiReply HandlePrometheus(const ApiContext& ctx, const ApiRequest&) {
  ApiReply reply;
  reply.text = ctx.metrics->RenderPrometheus();
  reply.content_type = "text/plain; version=0.0.4";
  return reply;
}

const std::vector<Route>& Routes() {
  static const std::vector<Route> routes = {
      {"GET", "/v1/health", "/v1/health", false, &HandleHealth},
      {"GET", "/v1/capabilities", "/v1/capabilities", true, &HandleCapabilities},
      {"GET", "/v1/instances", "/v1/instances", true, &HandleInstances},
      {"GET", "/v1/instances/([^/]+)/summary", "/v1/instances/{id}/summary", true,
       &HandleInstanceSummary, false, false, /*cacheable=*/true},
      {"GET", "/v1/series", "/v1/series", true, &HandleSeries, false, false, /*cacheable=*/true},
      {"GET", "/v1/performance/metrics", "/v1/performance/metrics", true,
       &HandlePerformanceMetrics},
      {"GET", "/v1/alerts", "/v1/alerts", true, &HandleAlerts},
      {"GET", "/v1/alerts/([^/]+)", "/v1/alerts/{fingerprint}", true, &HandleAlert},
      {"POST", "/v1/silences", "/v1/silences", true, &HandleCreateSilence, true},
      {"GET", "/v1/silences", "/v1/silences", true, &HandleListSilences},
      {"DELETE", "/v1/silences/([^/]+)", "/v1/silences/{id}", true, &HandleDeleteSilence, true},
      {"GET", "/v1/bottlenecks", "/v1/bottlenecks", true, &HandleBottlenecks},
      {"POST", "/v1/analysis/detect-bottlenecks", "/v1/analysis/detect-bottlenecks", true,
       &HandleDetectBottlenecks},
      {"POST", "/v1/workflows", "/v1/workflows", true, &HandleCreateWorkflow, true},
      {"GET", "/v1/workflows", "/v1/workflows", true, &HandleListWorkflows},
      {"GET", "/v1/workflows/([^/]+)", "/v1/workflows/{id}", true, &HandleGetWorkflow},
      {"POST", "/v1/workflows/([^/]+)/approve", "/v1/workflows/{id}/approve", true,
       &HandleApproveWorkflow, true},
      {"POST", "/v1/workflows/([^/]+)/reject", "/v1/workflows/{id}/reject", true,
       &HandleRejectWorkflow, true},
      {"POST", "/v1/workflows/([^/]+)/applied", "/v1/workflows/{id}/applied", true,
       &HandleWorkflowApplied, true},
      {"GET", "/metrics", "/metrics", true, &HandlePrometheus},
      // Last, so the query_params fuzzer's seeds (which index this table) keep their routes.
      {"POST", "/v1/optimization/recommend", "/v1/optimization/recommend", true, &HandleRecommend},
      {"POST", "/v1/performance/optimize", "/v1/performance/optimize", true, &HandleOptimize},
      {"GET", "/v1/performance/profile/([^/]+)", "/v1/performance/profile/{model_id}", true,
       &HandleModelProfile},
      {"GET", "/v1/routing/weights", "/v1/routing/weights", true, &HandleRoutingWeights},
      {"POST", "/v1/routing/select", "/v1/routing/select", true, &HandleRoutingSelect},
      {"GET", "/v1/models/recommendations", "/v1/models/recommendations", true,
       &HandleModelRecommendations},
      {"GET", "/v1/reports/comparison", "/v1/reports/comparison", true, &HandleComparisonReport},
      {"GET", "/v1/reports/trend", "/v1/reports/trend", true, &HandleTrendReport},
      // The dashboard's static files hold no data: no token needed to load the page.
      {"GET", "/", "/", false, &HandleDashboardIndex},
      {"GET", "/ui/([A-Za-z0-9._/-]+)", "/ui/{file}", false, &HandleDashboardFile},
      {"GET", "/v1/export/prometheus", "/v1/export/prometheus", true, &HandleExportPrometheus},
      {"GET", "/v1/access", "/v1/access", true, &HandleAccess, false, /*admin=*/true},
      // The API's own description; public, like /v1/health.
      {"GET", "/v1/openapi.json", "/v1/openapi.json", false, &HandleOpenApi},
  };
  return routes;
}

}  // namespace inferscope
