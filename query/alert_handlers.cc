// The /v1/alerts and /v1/silences handlers.

#include <algorithm>
#include <charconv>

#include "alerting/silence.h"
#include "query/handlers.h"
#include "state/alert_store.h"
#include "state/state_store.h"

namespace inferscope {
namespace {

using nlohmann::json;

constexpr std::string_view kValidationError = "VALIDATION_ERROR";

// Where a page of /v1/alerts ended: the last alert's (detected_at, fingerprint), the list's order.
std::string AlertPosition(const Alert& a) {
  return std::to_string(a.detected_at_ms) + ":" + std::to_string(a.fingerprint);
}

std::optional<std::pair<int64_t, uint64_t>> ParseAlertPosition(std::string_view text) {
  const size_t colon = text.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  int64_t ms = 0;
  uint64_t fp = 0;
  auto [p1, e1] = std::from_chars(text.data(), text.data() + colon, ms);
  auto [p2, e2] = std::from_chars(text.data() + colon + 1, text.data() + text.size(), fp);
  if (e1 != std::errc() || p1 != text.data() + colon || e2 != std::errc() ||
      p2 != text.data() + text.size()) {
    return std::nullopt;
  }
  return std::make_pair(ms, fp);
}

// The /v1/alerts order: newest change first; ties by fingerprint so that pages are stable.
bool AlertBefore(int64_t a_ms, uint64_t a_fp, int64_t b_ms, uint64_t b_fp) {
  if (a_ms != b_ms) return a_ms > b_ms;
  return a_fp < b_fp;
}

ApiReply BadCursor(const ApiContext& ctx) {
  return ErrorReply(*ctx.clock, 400, kValidationError,
                    "cursor must be the next_cursor of an earlier reply of this endpoint",
                    {{"parameter", "cursor"}});
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
      return BadParameterValue(ctx, "state", "state must be pending, firing, resolved or retracted",
                               *text);
    }
  }
  std::optional<Severity> severity;
  if (auto text = req.Param("severity")) {
    severity = ParseSeverity(*text);
    if (!severity) {
      return BadParameterValue(ctx, "severity",
                               "severity must be info, warning, critical or emergency", *text);
    }
  }
  std::optional<std::string> instance = req.Param("instance");
  int64_t since = INT64_MIN;
  if (auto text = req.Param("since")) {
    std::optional<int64_t> ms = ParseTimeMs(*text);
    if (!ms) {
      return BadParameterValue(ctx, "since", "since must be epoch milliseconds or an RFC 3339 time",
                               *text);
    }
    since = *ms;
  }
  ApiReply error;
  std::optional<PageRequest> page = ParsePage(ctx, req, &error);
  if (!page) return error;
  std::optional<std::pair<int64_t, uint64_t>> after;
  if (page->after) {
    after = ParseAlertPosition(*page->after);
    if (!after) return BadCursor(ctx);
  }

  // The page is the first `limit` matches after the cursor in the list's order, kept in a bounded
  // max-heap (the worst of the kept ones on top), so memory does not grow with the store.
  auto before = [](const Alert& a, const Alert& b) {
    return AlertBefore(a.detected_at_ms, a.fingerprint, b.detected_at_ms, b.fingerprint);
  };
  std::vector<Alert> kept;
  size_t total = 0, after_cursor = 0;
  uint64_t skipped = 0;
  Status st = ScanAlerts(
      *ctx.store,
      [&](const Alert& a) {
        if (state && a.state != *state) return true;
        if (severity && a.severity != *severity) return true;
        if (instance && !GlobMatch(*instance, a.instance)) return true;
        if (a.detected_at_ms < since) return true;
        ++total;
        if (after && !AlertBefore(after->first, after->second, a.detected_at_ms, a.fingerprint)) {
          return true;
        }
        ++after_cursor;
        if (kept.size() == page->limit) {
          if (!before(a, kept.front())) return true;
          std::pop_heap(kept.begin(), kept.end(), before);
          kept.back() = a;
        } else {
          kept.push_back(a);
        }
        std::push_heap(kept.begin(), kept.end(), before);
        return true;
      },
      &skipped);
  if (!st.ok()) return StatusReply(*ctx.clock, st);
  std::sort_heap(kept.begin(), kept.end(), before);
  json alerts = json::array();
  for (const Alert& a : kept) alerts.push_back(AlertToJson(a));
  const bool more = after_cursor > kept.size();
  ApiReply reply;
  reply.body = {{"timestamp", FormatRfc3339(ctx.clock->NowMs())},
                {"alerts", std::move(alerts)},
                {"count", kept.size()},
                {"matched", total},
                {"next_cursor", more ? json(EncodeCursor(AlertPosition(kept.back()))) : json()},
                {"unreadable_records", skipped}};
  return reply;
}

ApiReply HandleAlert(const ApiContext& ctx, const ApiRequest& req) {
  const std::string& text = req.path_params.at(0);
  std::optional<uint64_t> fingerprint = ParseFingerprintHex(text);
  if (!fingerprint) {
    return BadParameterValue(ctx, "fingerprint", "fingerprint must be 1..16 hex digits", text);
  }
  // The history, oldest first, paginated by its store key. It is read before the latest state:
  // both are written in one batch but read without a common snapshot, so reading the latest
  // state second guarantees it is never older than the history beside it.
  ApiReply error;
  std::optional<PageRequest> page = ParsePage(ctx, req, &error);
  if (!page) return error;
  const std::string prefix = AlertKey(*fingerprint);
  if (page->after && page->after->rfind(prefix, 0) != 0) {
    return BadParameterValue(ctx, "cursor", "the cursor belongs to another alert's history",
                             req.Param("cursor").value_or(""));
  }
  std::string end = AlertKey(*fingerprint + 1);
  if (*fingerprint == UINT64_MAX) end.clear();  // no upper bound
  json history = json::array();
  std::string last_key;
  bool more = false;
  Status st = ctx.store->ScanRecords(kAlertHistoryByFingerprintTable, page->after.value_or(prefix),
                                     end, [&](std::string_view key, std::string_view value) {
                                       if (page->after && key == *page->after) return true;
                                       Result<Alert> a =
                                           AlertFromJson(json::parse(value, nullptr, false));
                                       if (!a.ok()) return true;
                                       if (history.size() == page->limit) {
                                         more = true;
                                         return false;
                                       }
                                       history.push_back(AlertToJson(*a));
                                       last_key.assign(key);
                                       return true;
                                     });
  if (!st.ok()) return StatusReply(*ctx.clock, st);
  Result<std::optional<Alert>> latest = LoadAlert(*ctx.store, *fingerprint);
  if (!latest.ok()) return StatusReply(*ctx.clock, latest.status());
  if (!latest->has_value()) {
    return ErrorReply(*ctx.clock, 404, "NOT_FOUND", "no alert with fingerprint " + text,
                      {{"fingerprint", text}});
  }
  ApiReply reply;
  reply.body = {{"timestamp", FormatRfc3339(ctx.clock->NowMs())},
                {"alert", AlertToJson(**latest)},
                {"history", std::move(history)},
                {"next_cursor", more ? json(EncodeCursor(last_key)) : json()}};
  return reply;
}

ApiReply HandleCreateSilence(const ApiContext& ctx, const ApiRequest& req) {
  if (ctx.silences == nullptr) return NoSilences(ctx);
  json body;
  if (std::optional<ApiReply> error = ParseJsonBody(ctx, req.body, &body)) return *error;
  // Times may be RFC 3339 strings; the silence parser takes epoch milliseconds.
  for (const char* field : {"starts_at", "ends_at"}) {
    auto it = body.find(field);
    if (it == body.end() || !it->is_string()) continue;
    std::optional<int64_t> ms = ParseTimeMs(it->get<std::string>());
    if (!ms) {
      return BadParameterValue(
          ctx, field, std::string(field) + " must be epoch milliseconds or an RFC 3339 time",
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
    return BadParameterValue(ctx, "status", "status must be active, pending or expired", *status);
  }
  ApiReply error;
  std::optional<PageRequest> page = ParsePage(ctx, req, &error);
  if (!page) return error;
  const int64_t now = ctx.clock->NowMs();
  // Ordered by id, so that the cursor (the last id of a page) resumes the list.
  std::vector<Silence> silences = ctx.silences->List();
  std::sort(silences.begin(), silences.end(),
            [](const Silence& a, const Silence& b) { return a.id < b.id; });
  json list = json::array();
  std::string last_id;
  bool more = false;
  for (const Silence& s : silences) {
    if (page->after && s.id <= *page->after) continue;
    json j = SilenceToJson(s, now);
    if (status && j["status"] != *status) continue;
    if (list.size() == page->limit) {
      more = true;
      break;
    }
    last_id = s.id;
    list.push_back(std::move(j));
  }
  ApiReply reply;
  reply.body = {{"timestamp", FormatRfc3339(now)},
                {"silences", std::move(list)},
                {"next_cursor", more ? json(EncodeCursor(last_id)) : json()}};
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
