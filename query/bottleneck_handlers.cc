// GET /v1/bottlenecks.

#include <algorithm>
#include <array>

#include "bottlenecks/bottleneck_json.h"
#include "pipeline/glob.h"
#include "query/handlers.h"
#include "state/bottleneck_store.h"
#include "state/state_store.h"

namespace inferscope {
namespace {

using nlohmann::json;

constexpr std::string_view kValidationError = "VALIDATION_ERROR";
constexpr std::array<std::string_view, 8> kParams = {"instance", "model",   "type",  "severity",
                                                     "state",    "primary", "limit", "cursor"};

ApiReply BadParameter(const ApiContext& ctx, std::string_view parameter, std::string message,
                      const std::string& value) {
  return ErrorReply(*ctx.clock, 400, kValidationError, std::move(message),
                    {{"parameter", parameter}, {"value", value.substr(0, 256)}});
}

}  // namespace

ApiReply HandleBottlenecks(const ApiContext& ctx, const ApiRequest& req) {
  for (const auto& [name, value] : req.params) {
    if (std::find(kParams.begin(), kParams.end(), name) == kParams.end()) {
      return ErrorReply(*ctx.clock, 400, kValidationError,
                        "unknown parameter '" + name.substr(0, 64) +
                            "'; expected instance, model, type, severity, state, primary, "
                            "limit or cursor",
                        {{"parameter", name.substr(0, 64)}});
    }
  }
  std::optional<std::string> instance = req.Param("instance");
  std::optional<std::string> model = req.Param("model");
  std::optional<BottleneckType> type;
  if (auto text = req.Param("type")) {
    type = ParseBottleneckType(*text);
    if (!type) {
      return BadParameter(ctx, "type",
                          "type must be MEMORY_PRESSURE, RESOURCE_SATURATION, CACHE_INEFFICIENCY, "
                          "LOW_THROUGHPUT, QUEUE_BUILDUP, ERROR_SPIKE or HIGH_LATENCY",
                          *text);
    }
  }
  std::optional<BottleneckSeverity> severity;
  if (auto text = req.Param("severity")) {
    severity = ParseBottleneckSeverity(*text);
    if (!severity || *severity == BottleneckSeverity::kNone) {
      return BadParameter(ctx, "severity", "severity must be LOW, MEDIUM, HIGH or CRITICAL", *text);
    }
  }
  // Default: what limits the instances now.
  std::optional<BottleneckState> state = BottleneckState::kActive;
  if (auto text = req.Param("state")) {
    if (*text == "all") {
      state.reset();
    } else {
      state = ParseBottleneckState(*text);
      if (!state) return BadParameter(ctx, "state", "state must be active, resolved or all", *text);
    }
  }
  std::optional<bool> primary;
  if (auto text = req.Param("primary")) {
    if (*text != "true" && *text != "false") {
      return BadParameter(ctx, "primary", "primary must be true or false", *text);
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
