// GET /v1/routing/weights, POST /v1/routing/select, GET /v1/models/recommendations
// (docs/ROUTING.md, "API").

#include <algorithm>
#include <charconv>
#include <initializer_list>
#include <memory>
#include <string>

#include "query/handlers.h"
#include "routing/live_router.h"
#include "routing/published.h"
#include "state/routing_store.h"

namespace inferscope {
namespace {

using nlohmann::json;
using routing::Decision;
using routing::LiveRouter;
using routing::RequestFeatures;
using routing::Strategy;

constexpr int64_t kMaxTokens = 100'000'000;
constexpr int64_t kMaxRecommendations = routing::kMaxRanked;

std::string StrategyList() {
  return "lowest_latency, highest_quality, cost_effective, balanced, adaptive";
}

// Capability names separated by commas ("vision,code") → mask; nullopt on an unknown name.
std::optional<uint32_t> CapabilitiesFromList(std::string_view text, std::string* bad) {
  uint32_t mask = 0;
  while (!text.empty()) {
    const size_t comma = text.find(',');
    const std::string_view name = text.substr(0, comma);
    if (!name.empty()) {
      std::optional<uint32_t> bit = routing::ParseCapability(name);
      if (!bit) {
        *bad = std::string(name.substr(0, 64));
        return std::nullopt;
      }
      mask |= *bit;
    }
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return mask;
}

std::optional<int64_t> ParseCount(std::string_view text, int64_t min, int64_t max) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || v < min || v > max) {
    return std::nullopt;
  }
  return v;
}

ApiReply NoLearner(const ApiContext& ctx) {
  return ErrorReply(*ctx.clock, 503, "UNAVAILABLE",
                    "this node runs no routing_learn operator (GET /v1/routing/weights serves the "
                    "stored weights)",
                    {{"reason", "no_routing_learner"}});
}

// A decision that found no backend as an error reply: 404 for an unknown model, else 503.
ApiReply NoBackendReply(const ApiContext& ctx, std::string_view model, const Decision& d) {
  if (d.reason == routing::NoBackendReason::kUnknownModel) {
    return ErrorReply(*ctx.clock, 404, "NOT_FOUND",
                      "unknown model '" + std::string(model.substr(0, 256)) + "'",
                      {{"model", std::string(model.substr(0, 256))}});
  }
  json details = routing::DecisionToJson(d);
  details["model"] = std::string(model);
  return ErrorReply(
      *ctx.clock, 503, "UNAVAILABLE",
      "no backend of '" + std::string(model.substr(0, 256)) +
          "' can take this request: " + std::string(routing::NoBackendReasonName(d.reason)),
      std::move(details));
}

// Runs Select for `model` with the live learner; fills *d.
// Decides at the learner's time (its newest event time; the wall clock before any event), read
// under the same lock as the decision: read before it, a wall-clock time taken just before the
// first batch was applied would move the learner's gates that far ahead of its events (ending an
// ejection early). Returns that time.
int64_t SelectLive(const ApiContext& ctx, LiveRouter& router, std::string_view model,
                   const RequestFeatures& features, Strategy strategy, Decision* d, json* out,
                   size_t limit) {
  return router.With([&](routing::RoutingLearner& learner) {
    int64_t now = router.now_ms();
    if (now == INT64_MIN) now = ctx.clock->NowMs();
    learner.Select(model, features, strategy, now, d);
    // The names in *d are views into the learner: render them under the lock.
    if (d->ok) *out = routing::DecisionToJson(*d, limit);
    return now;
  });
}

}  // namespace

ApiReply HandleRoutingWeights(const ApiContext& ctx, const ApiRequest& req) {
  if (ctx.store == nullptr) {
    return ErrorReply(*ctx.clock, 500, "INTERNAL_ERROR", "this query node has no state store");
  }
  const std::string model = req.Param("model").value_or("");
  std::optional<Strategy> strategy;
  if (std::optional<std::string> s = req.Param("strategy")) {
    Strategy parsed;
    if (!routing::ParseStrategy(*s, &parsed)) {
      return BadParameterValue(ctx, "strategy",
                               "unknown strategy (expected " + StrategyList() + ")", *s);
    }
    strategy = parsed;
  }
  json weights = json::array();
  uint64_t skipped = 0;
  Status st = ScanRoutingWeights(
      *ctx.store, model,
      [&](const routing::RoutingWeights& w) {
        if (!strategy || w.strategy == *strategy) weights.push_back(routing::WeightsToJson(w));
        return true;
      },
      &skipped);
  if (!st.ok()) return StatusReply(*ctx.clock, st);
  if (!model.empty() && weights.empty()) {
    return ErrorReply(
        *ctx.clock, 404, "NOT_FOUND",
        "no routing weights stored for model '" + model.substr(0, 256) + "'" +
            (strategy ? " and strategy " + std::string(StrategyName(*strategy)) : std::string()),
        {{"model", model.substr(0, 256)}});
  }
  ApiReply reply;
  reply.body = {{"timestamp", FormatRfc3339(ctx.clock->NowMs())}, {"weights", std::move(weights)}};
  if (skipped > 0) reply.body["skipped_records"] = skipped;
  return reply;
}

ApiReply HandleRoutingSelect(const ApiContext& ctx, const ApiRequest& req) {
  json body;
  if (std::optional<ApiReply> error = ParseJsonBody(ctx, req.body, &body)) return *error;
  RequestFeatures features;
  Strategy strategy = Strategy::kBalanced;
  std::string model;
  for (const auto& [key, value] : body.items()) {
    if (key == "model") {
      if (!value.is_string() || value.get<std::string>().empty()) {
        return BadField(ctx, key, "expected a non-empty string");
      }
      model = value.get<std::string>();
    } else if (key == "strategy") {
      if (!value.is_string() || !routing::ParseStrategy(value.get<std::string>(), &strategy)) {
        return BadField(ctx, key, "expected one of " + StrategyList());
      }
    } else if (key == "prompt_tokens" || key == "expected_output_tokens") {
      if (!value.is_number_integer() || value.get<int64_t>() < 0 ||
          value.get<int64_t>() > kMaxTokens) {
        return BadField(ctx, key, "expected an integer 0..100000000");
      }
      (key == "prompt_tokens" ? features.prompt_tokens : features.expected_output_tokens) =
          static_cast<uint32_t>(value.get<int64_t>());
    } else if (key == "required_capabilities") {
      if (!value.is_array()) return BadField(ctx, key, "expected a list such as [\"vision\"]");
      for (const json& c : value) {
        std::optional<uint32_t> bit =
            c.is_string() ? routing::ParseCapability(c.get<std::string>()) : std::nullopt;
        if (!bit) {
          return BadField(ctx, key,
                          "unknown capability " + ShowJsonValue(c) +
                              " (expected vision, code, tools, json, audio, reasoning)");
        }
        features.required_capabilities |= *bit;
      }
    } else {
      return BadField(ctx, key,
                      "unknown field (expected model, strategy, prompt_tokens, "
                      "expected_output_tokens, required_capabilities)");
    }
  }
  if (model.empty()) return BadField(ctx, "model", "required");
  if (ctx.routing == nullptr) return NoLearner(ctx);
  std::shared_ptr<LiveRouter> router = ctx.routing->Get();
  if (router == nullptr) return NoLearner(ctx);
  Decision d;
  json decision;
  const int64_t now = SelectLive(ctx, *router, model, features, strategy, &d, &decision, 0);
  if (!d.ok) return NoBackendReply(ctx, model, d);
  decision["model"] = model;
  decision["time"] = now;
  ApiReply reply;
  reply.body = std::move(decision);
  return reply;
}

ApiReply HandleModelRecommendations(const ApiContext& ctx, const ApiRequest& req) {
  std::optional<std::string> model = req.Param("model");
  if (!model || model->empty()) return BadParameter(ctx, "model", "model is required");
  Strategy strategy = Strategy::kBalanced;
  if (std::optional<std::string> s = req.Param("strategy")) {
    if (!routing::ParseStrategy(*s, &strategy)) {
      return BadParameterValue(ctx, "strategy",
                               "unknown strategy (expected " + StrategyList() + ")", *s);
    }
  }
  RequestFeatures features;
  if (std::optional<std::string> c = req.Param("capabilities")) {
    std::string bad;
    std::optional<uint32_t> mask = CapabilitiesFromList(*c, &bad);
    if (!mask) {
      return BadParameterValue(
          ctx, "capabilities",
          "unknown capability (expected vision, code, tools, json, audio, reasoning)", bad);
    }
    features.required_capabilities = *mask;
  }
  for (const char* name : {"prompt_tokens", "expected_output_tokens"}) {
    if (std::optional<std::string> v = req.Param(name)) {
      std::optional<int64_t> n = ParseCount(*v, 0, kMaxTokens);
      if (!n) return BadParameterValue(ctx, name, "expected an integer 0..100000000", *v);
      (std::string_view(name) == "prompt_tokens" ? features.prompt_tokens
                                                 : features.expected_output_tokens) =
          static_cast<uint32_t>(*n);
    }
  }
  int64_t n = 3;
  if (std::optional<std::string> v = req.Param("n")) {
    std::optional<int64_t> parsed = ParseCount(*v, 1, kMaxRecommendations);
    if (!parsed) {
      return BadParameterValue(ctx, "n",
                               "expected an integer 1.." + std::to_string(routing::kMaxRanked), *v);
    }
    n = *parsed;
  }
  if (ctx.routing == nullptr) return NoLearner(ctx);
  std::shared_ptr<LiveRouter> router = ctx.routing->Get();
  if (router == nullptr) return NoLearner(ctx);
  Decision d;
  json decision;
  const int64_t now =
      SelectLive(ctx, *router, *model, features, strategy, &d, &decision, static_cast<size_t>(n));
  if (!d.ok) return NoBackendReply(ctx, *model, d);
  ApiReply reply;
  reply.body = {
      {"model", *model},
      {"strategy", routing::StrategyName(strategy)},
      {"time", now},
      {"features",
       {{"prompt_tokens", features.prompt_tokens},
        {"expected_output_tokens", features.expected_output_tokens},
        {"capabilities", routing::CapabilityMaskToString(features.required_capabilities)}}},
      {"recommendations", std::move(decision["ranked"])},
      {"gated", std::move(decision["gated"])},
      {"panic", d.panic},
      {"capable", d.capable},
      {"incapable", d.incapable}};
  return reply;
}

}  // namespace inferscope
