// The /v1/alerts and /v1/silences handlers.

#include <algorithm>
#include <charconv>

#include "pipeline/alert_store.h"
#include "pipeline/silence.h"
#include "pipeline/state_store.h"
#include "query/handlers.h"

namespace inferscope {
namespace {

using nlohmann::json;

constexpr std::string_view kValidationError = "VALIDATION_ERROR";
constexpr int64_t kDefaultLimit = 100;
constexpr int64_t kMaxLimit = 10'000;
constexpr size_t kMaxHistory = 1'000;

ApiReply BadParameter(const ApiContext& ctx, std::string_view parameter, std::string message,
                      const std::string& value) {
  return ErrorReply(*ctx.clock, 400, kValidationError, std::move(message),
                    {{"parameter", parameter}, {"value", value}});
}

ApiReply NoSilences(const ApiContext& ctx) {
  return ErrorReply(*ctx.clock, 500, "INTERNAL_ERROR", "this query node has no silence registry");
}

}  // namespace

ApiReply HandleAlerts(const ApiContext& ctx, const ApiRequest& req) {
  std::optional<AlertState> state;
  if (auto text = req.Param("state")) {
    state = ParseAlertState(*text);
    if (!state) {
      return BadParameter(ctx, "state", "state must be pending, firing or resolved", *text);
    }
  }
  std::optional<Severity> severity;
  if (auto text = req.Param("severity")) {
    severity = ParseSeverity(*text);
    if (!severity) {
      return BadParameter(ctx, "severity", "severity must be info, warning, critical or emergency",
                          *text);
    }
  }
  std::optional<std::string> instance = req.Param("instance");
  int64_t since = INT64_MIN;
  if (auto text = req.Param("since")) {
    std::optional<int64_t> ms = ParseTimeMs(*text);
    if (!ms) {
      return BadParameter(ctx, "since", "since must be epoch milliseconds or an RFC 3339 time",
                          *text);
    }
    since = *ms;
  }
  int64_t limit = kDefaultLimit;
  if (auto text = req.Param("limit")) {
    auto [ptr, ec] = std::from_chars(text->data(), text->data() + text->size(), limit);
    if (ec != std::errc() || ptr != text->data() + text->size() || limit < 1 || limit > kMaxLimit) {
      return BadParameter(ctx, "limit", "limit must be an integer in 1..10000", *text);
    }
  }

  std::vector<Alert> matched;
  uint64_t skipped = 0;
  Status st = ScanAlerts(
      *ctx.store,
      [&](const Alert& a) {
        if (state && a.state != *state) return true;
        if (severity && a.severity != *severity) return true;
        if (instance && !GlobMatch(*instance, a.instance)) return true;
        if (a.detected_at_ms < since) return true;
        matched.push_back(a);
        return true;
      },
      &skipped);
  if (!st.ok()) return StatusReply(*ctx.clock, st);
  // Newest change first; ties by fingerprint so pages are stable.
  std::sort(matched.begin(), matched.end(), [](const Alert& a, const Alert& b) {
    if (a.detected_at_ms != b.detected_at_ms) return a.detected_at_ms > b.detected_at_ms;
    return a.fingerprint < b.fingerprint;
  });
  const size_t total = matched.size();
  if (matched.size() > static_cast<size_t>(limit)) matched.resize(static_cast<size_t>(limit));
  json alerts = json::array();
  for (const Alert& a : matched) alerts.push_back(AlertToJson(a));
  ApiReply reply;
  reply.body = {{"timestamp", FormatRfc3339(ctx.clock->NowMs())},
                {"alerts", std::move(alerts)},
                {"count", matched.size()},
                {"matched", total},
                {"unreadable_records", skipped}};
  return reply;
}

ApiReply HandleAlert(const ApiContext& ctx, const ApiRequest& req) {
  const std::string& text = req.path_params.at(0);
  std::optional<uint64_t> fingerprint = ParseFingerprintHex(text);
  if (!fingerprint) {
    return BadParameter(ctx, "fingerprint", "fingerprint must be 1..16 hex digits", text);
  }
  Result<std::optional<Alert>> latest = LoadAlert(*ctx.store, *fingerprint);
  if (!latest.ok()) return StatusReply(*ctx.clock, latest.status());
  if (!latest->has_value()) {
    return ErrorReply(*ctx.clock, 404, "NOT_FOUND", "no alert with fingerprint " + text,
                      {{"fingerprint", text}});
  }
  json history = json::array();
  Status st = ScanAlertHistory(*ctx.store, 0, [&](const Alert& a) {
    if (a.fingerprint == *fingerprint) history.push_back(AlertToJson(a));
    return history.size() < kMaxHistory;
  });
  if (!st.ok()) return StatusReply(*ctx.clock, st);
  ApiReply reply;
  reply.body = {{"timestamp", FormatRfc3339(ctx.clock->NowMs())},
                {"alert", AlertToJson(**latest)},
                {"history", std::move(history)}};
  return reply;
}

ApiReply HandleCreateSilence(const ApiContext& ctx, const ApiRequest& req) {
  if (ctx.silences == nullptr) return NoSilences(ctx);
  json body = json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.is_object()) {
    return ErrorReply(*ctx.clock, 400, kValidationError, "the body must be a JSON object");
  }
  // Times may be RFC 3339 strings; the silence parser takes epoch milliseconds.
  for (const char* field : {"starts_at", "ends_at"}) {
    auto it = body.find(field);
    if (it == body.end() || !it->is_string()) continue;
    std::optional<int64_t> ms = ParseTimeMs(it->get<std::string>());
    if (!ms) {
      return BadParameter(ctx, field,
                          std::string(field) + " must be epoch milliseconds or an RFC 3339 time",
                          it->get<std::string>());
    }
    *it = *ms;
  }
  body.erase("id");
  body.erase("created_at");
  body.erase("status");
  const int64_t now = ctx.clock->NowMs();
  Result<Silence> silence = SilenceFromJson(body, now);
  if (!silence.ok()) return StatusReply(*ctx.clock, silence.status());
  Result<Silence> added = ctx.silences->Add(std::move(silence).value());
  if (!added.ok()) return StatusReply(*ctx.clock, added.status());
  ApiReply reply;
  reply.status = 201;
  reply.body = SilenceToJson(*added, now);
  return reply;
}

ApiReply HandleListSilences(const ApiContext& ctx, const ApiRequest& req) {
  if (ctx.silences == nullptr) return NoSilences(ctx);
  std::optional<std::string> status = req.Param("status");
  if (status && *status != "active" && *status != "pending" && *status != "expired") {
    return BadParameter(ctx, "status", "status must be active, pending or expired", *status);
  }
  const int64_t now = ctx.clock->NowMs();
  json list = json::array();
  for (const Silence& s : ctx.silences->List()) {
    json j = SilenceToJson(s, now);
    if (status && j["status"] != *status) continue;
    list.push_back(std::move(j));
  }
  ApiReply reply;
  reply.body = {{"timestamp", FormatRfc3339(now)}, {"silences", std::move(list)}};
  return reply;
}

ApiReply HandleDeleteSilence(const ApiContext& ctx, const ApiRequest& req) {
  if (ctx.silences == nullptr) return NoSilences(ctx);
  const std::string& id = req.path_params.at(0);
  Status st = ctx.silences->Remove(id);
  if (!st.ok()) return StatusReply(*ctx.clock, st);
  ApiReply reply;
  reply.body = {{"timestamp", FormatRfc3339(ctx.clock->NowMs())}, {"deleted", id}};
  return reply;
}

}  // namespace inferscope
