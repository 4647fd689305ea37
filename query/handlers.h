#pragma once

// Internal to query/: the handlers behind QueryServer's route table. Each takes the parsed request
// and returns a reply; none throws on bad input (errors are replies in the one error shape).

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "pipeline/clock.h"
#include "pipeline/metrics.h"
#include "pipeline/registry.h"
#include "pipeline/status.h"
#include "query/access.h"
#include "query/response_cache.h"
#include "values/aggregate.h"

namespace inferscope {

struct MetricWindow;
class SilenceRegistry;
class StateStore;
class WorkflowRegistry;
namespace routing {
class RoutingRegistry;
}

// What every handler may read. Owned by QueryServer; shared read-only by the request threads.
struct ApiContext {
  StateStore* store = nullptr;
  MetricsRegistry* metrics = nullptr;
  const Clock* clock = nullptr;
  std::function<nlohmann::json()> health_info;
  std::vector<Registry::Entry> capabilities;
  SilenceRegistry* silences = nullptr;    // null: the silence routes answer 500
  WorkflowRegistry* workflows = nullptr;  // null: the workflow routes answer 500
  // The engine's live routing learner: null (or none registered), select and recommendations
  // answer 503; GET /v1/routing/weights reads the store and needs none.
  routing::RoutingRegistry* routing = nullptr;
  // The Prometheus export (query/export_handlers.cc): its options, and the counter of series it
  // left out (the cap).
  ExportOptions export_options;
  Counter* export_dropped = nullptr;
  // What GET /v1/access shows (never a secret): the access options and the rate limiter.
  const AccessOptions* access = nullptr;
  const RateLimiter* limiter = nullptr;
};

struct ApiRequest {
  std::vector<std::string> path_params;            // the route pattern's captures, in order
  std::multimap<std::string, std::string> params;  // query parameters
  std::string body;                                // request body (POST)
  // The first value of `name`, if present.
  std::optional<std::string> Param(const std::string& name) const;
};

struct ApiReply {
  int status = 200;
  nlohmann::json body;                                       // sent as JSON unless `text` is set
  std::string text;                                          // a non-JSON body (Prometheus text)
  std::string content_type;                                  // for `text`
  std::vector<std::pair<std::string, std::string>> headers;  // extra response headers
  // Set by the handlers of cacheable routes (Route::cacheable) on an answer that is a function of
  // the request, the store's view (StateStore::ViewVersion) and what this says, so that
  // QueryServer may serve it again from its ResponseCache. Unset: never cached.
  std::optional<CacheValidity> cache;
};

using ApiHandler = std::function<ApiReply(const ApiContext&, const ApiRequest&)>;

// One route: method, httplib path pattern (a regex; captures become path_params), the name used as
// the `route` metric label, whether the bearer token applies, the handler, and whether it changes
// state (a read-only query node answers such routes 405 READ_ONLY without calling the handler;
// tokens need the `write` scope) or is an admin route (tokens need the `admin` scope); other routes
// need `read`. A `cacheable` route's answers go through the server's response cache when its
// handler marks them (ApiReply::cache).
struct Route {
  std::string method;
  std::string pattern;
  std::string name;
  bool requires_auth = true;
  ApiHandler handler;
  bool writes = false;
  bool admin = false;
  bool cacheable = false;
};

// The route table.
const std::vector<Route>& Routes();

// The error reply: {"error":{"code","message","details"},"timestamp"}.
ApiReply ErrorReply(const Clock& clock, int status, std::string_view code, std::string message,
                    nlohmann::json details = nlohmann::json::object());
// 400 VALIDATION_ERROR naming a query parameter: details {"parameter": name} plus `extra`.
ApiReply BadParameter(const ApiContext& ctx, std::string_view parameter, std::string message,
                      nlohmann::json extra = nlohmann::json::object());
// The same with the offending value as details.value.
ApiReply BadParameterValue(const ApiContext& ctx, std::string_view parameter, std::string message,
                           std::string_view value);
// 400 VALIDATION_ERROR naming a field of the request body: "<field>: <message>", details
// {"field": name}.
ApiReply BadField(const ApiContext& ctx, std::string_view field, std::string message);
// The deepest nesting of arrays and objects a request body may have (`{"a":[1]}` is 2 deep).
// Deeper bodies are refused before they are parsed: serialising or copying a JSON value recurses
// once per level (an error message that echoed a 60,000-deep value overflowed the worker's stack).
inline constexpr size_t kMaxJsonBodyDepth = 64;
// How deep `text` nests arrays and objects, read as JSON (brackets inside strings do not count),
// in one pass without recursion; it stops at the first level past `limit` and returns that.
// Malformed text gets some count (the parser refuses it later).
size_t JsonNestingDepth(std::string_view text, size_t limit);
// Parses a request body that must be a JSON object into `*out`: nullopt when it is one, else the
// reply: 400 VALIDATION_ERROR "the body must be a JSON object", or, for a body nesting deeper than
// kMaxJsonBodyDepth, a message naming the limit with details {"max_depth"}.
std::optional<ApiReply> ParseJsonBody(const ApiContext& ctx, std::string_view body,
                                      nlohmann::json* out);
// A JSON value as an error message shows it: a string quoted and cut to 64 bytes, a number,
// boolean or null as JSON, an array or object by its kind only ("an array of 3"), so that what a
// message echoes is short whatever the client sent.
std::string ShowJsonValue(const nlohmann::json& value);
// A Status turned into an error reply: InvalidArgument → 400, NotFound → 404, else 500.
// FailedPrecondition → 409 (CONFLICT), else 500.
ApiReply StatusReply(const Clock& clock, const Status& status);

// "2025-06-22T10:30:00.000Z".
std::string FormatRfc3339(int64_t epoch_ms);
// Epoch milliseconds ("1718000000000") or RFC 3339 ("2024-06-10T06:13:20Z", with optional fraction
// and numeric offset).
std::optional<int64_t> ParseTimeMs(std::string_view text);

// Largest number of windows one summary request may ask for.
inline constexpr int64_t kMaxWindowsPerRequest = 10'000;
// Largest number of stored-bucket merges one sliding read (GET /v1/series with window != step) may
// make (SlidingMergeCount). Its buckets are bounded by kMaxWindowsPerRequest, which bounds the
// merges to about 3 × 10,000 (2 per bucket + 1 per point) below this.
inline constexpr int64_t kMaxMergesPerRequest = 1'000'000;

// The windows of `width` consecutive sub-windows starting every `stride` sub-windows (`points` of
// them) over `subs`, which must hold (points - 1) × stride + width sub-windows; `subs` is used as
// scratch (overwritten). Overlapping windows (width > stride) take SlidingMergeCount merges (van
// Herk / Gil-Werman block suffixes and prefixes) instead of points × width.
std::vector<Aggregate> SlidingMerge(std::vector<Aggregate>& subs, int64_t points, int64_t stride,
                                    int64_t width);
int64_t SlidingMergeCount(int64_t points, int64_t stride, int64_t width);

// Pagination of the list endpoints (instances, alerts, an alert's history, silences): `limit`
// items per page, 1..kMaxPageLimit, default kDefaultPageLimit; the reply's "next_cursor" (a string,
// or null on the last page) passed back as `cursor` continues after the page's last item. Cursors
// are opaque (hex) and stay valid across restarts; items added or removed between pages may
// appear or not, but no item present throughout is skipped or repeated.
inline constexpr size_t kDefaultPageLimit = 100;
inline constexpr size_t kMaxPageLimit = 1'000;

struct PageRequest {
  size_t limit = kDefaultPageLimit;
  std::optional<std::string> after;  // the decoded cursor: where the previous page ended
};
// Reads `limit` and `cursor`; nullopt and *error (400, parameter named) when either is malformed.
std::optional<PageRequest> ParsePage(const ApiContext& ctx, const ApiRequest& req, ApiReply* error);
// The cursor for a page that ended at the item whose position is `position`.
std::string EncodeCursor(std::string_view position);
std::optional<std::string> DecodeCursor(std::string_view cursor);

ApiReply HandleHealth(const ApiContext& ctx, const ApiRequest& req);
ApiReply HandleCapabilities(const ApiContext& ctx, const ApiRequest& req);
ApiReply HandleInstances(const ApiContext& ctx, const ApiRequest& req);
// Summary and series answer windows of one step over [from, to) as merges of stored buckets, each
// from the coarsest storage tier whose resolution divides the step (and is at most `resolution`)
// and that has rolled up that far; the reply names the tiers ("tier", "resolution_ms", "tiers":
// [{tier, resolution_ms, from, to}]) and "complete_from", before which data is past retention.
ApiReply HandleInstanceSummary(const ApiContext& ctx, const ApiRequest& req);
// GET /v1/series?instance=&model=&metric=&from=&to=&step=&resolution=: one point per step
// (default: the 60 steps before the watermark).
ApiReply HandleSeries(const ApiContext& ctx, const ApiRequest& req);
ApiReply HandlePerformanceMetrics(const ApiContext& ctx, const ApiRequest& req);
ApiReply HandlePrometheus(const ApiContext& ctx, const ApiRequest& req);
// GET /v1/export/prometheus?window= (query/export_handlers.cc): the latest closed window of every
// request series as Prometheus samples, in the text format 0.0.4 (docs/API_ACCESS.md, "Prometheus
// export"); at most export_options.max_series stored series are read.
ApiReply HandleExportPrometheus(const ApiContext& ctx, const ApiRequest& req);
// GET /v1/access (admin): token names and scopes, the rate limit, CORS, the export's settings.
ApiReply HandleAccess(const ApiContext& ctx, const ApiRequest& req);
// Alerts and silences (query/alert_handlers.cc).
ApiReply HandleAlerts(const ApiContext& ctx, const ApiRequest& req);
ApiReply HandleAlert(const ApiContext& ctx, const ApiRequest& req);
ApiReply HandleCreateSilence(const ApiContext& ctx, const ApiRequest& req);
ApiReply HandleListSilences(const ApiContext& ctx, const ApiRequest& req);
ApiReply HandleDeleteSilence(const ApiContext& ctx, const ApiRequest& req);
// GET /v1/bottlenecks?instance=&model=&type=&severity=&state=&primary=&limit=&cursor= (query/
// bottleneck_handlers.cc): the latest change per (instance, model, type), by instance; `state`
// active (default), resolved or all. (Undeclared query parameters of every route are refused
// centrally by server.cc from the OpenAPI document, before any handler runs.)
ApiReply HandleBottlenecks(const ApiContext& ctx, const ApiRequest& req);
// POST /v1/analysis/detect-bottlenecks: stateless — an evidence window's statistics per instance
// in, the active bottlenecks (peers: the request's instances of the same model; causal order) out.
// No `for`, no state: what the windows say now (docs/BOTTLENECKS.md, "Stateless detection").
ApiReply HandleDetectBottlenecks(const ApiContext& ctx, const ApiRequest& req);
// Reads one metric's statistics of a request body ({"count", "events", "errors", "sum", "mean",
// "max", "last", "p50", "p95", "p99", "first_mean", "last_mean"}, all optional numbers) into
// `*out`; the error is "<path>.<key>: <message>" (query/bottleneck_handlers.cc).
std::optional<std::string> ReadMetricStatistics(const nlohmann::json& j, const std::string& path,
                                                MetricWindow* out);
// POST /v1/optimization/recommend (query/optimize_handlers.cc): an instance's active bottlenecks
// and a recommendation per root, estimated with the calibrated serving model (optimize/). The
// body names a stored instance (and optionally a time range) or carries the windows' statistics
// as detect-bottlenecks does (docs/BOTTLENECKS.md, "Recommendations").
ApiReply HandleRecommend(const ApiContext& ctx, const ApiRequest& req);
// POST /v1/performance/optimize: a goal and constraints for an instance; the best configuration
// found among the candidates, its predicted effect against the current one, every candidate.
ApiReply HandleOptimize(const ApiContext& ctx, const ApiRequest& req);
// GET /v1/performance/profile/{model_id}?window=&from=&to=: per instance of the model and in
// total, rates, latency quantiles, errors, KV usage, running/waiting, active bottlenecks and cost
// per 1k tokens; 404 when no instance serves the model.
ApiReply HandleModelProfile(const ApiContext& ctx, const ApiRequest& req);
// Optimization workflows (query/workflow_handlers.cc, docs/WORKFLOWS.md). Transitions the
// workflow's state does not allow answer 409. POST /v1/workflows → 201 with the workflow.
ApiReply HandleCreateWorkflow(const ApiContext& ctx, const ApiRequest& req);
// GET /v1/workflows?status=&instance_id=&limit=&cursor=, by id (paginated).
ApiReply HandleListWorkflows(const ApiContext& ctx, const ApiRequest& req);
ApiReply HandleGetWorkflow(const ApiContext& ctx, const ApiRequest& req);
// POST /v1/workflows/{id}/approve {"by"?}, /reject {"by"?, "reason"?}, /applied {"by"?,
// "applied_at"? (event time: epoch ms or RFC 3339; default now)}.
ApiReply HandleApproveWorkflow(const ApiContext& ctx, const ApiRequest& req);
ApiReply HandleRejectWorkflow(const ApiContext& ctx, const ApiRequest& req);
ApiReply HandleWorkflowApplied(const ApiContext& ctx, const ApiRequest& req);
// Routing (query/routing_handlers.cc, docs/ROUTING.md). Unknown body fields are 400s naming
// them; an unknown model 404; no routable backend 503 (with the decision's reason).
// GET /v1/routing/weights?model=&strategy=: the latest stored weights (store, not the learner).
ApiReply HandleRoutingWeights(const ApiContext& ctx, const ApiRequest& req);
// POST /v1/routing/select {"model", "strategy"?, "prompt_tokens"?, "expected_output_tokens"?,
// "required_capabilities"?}: the live learner's decision (backend, confidence, reasoning, ranked
// alternatives, gated backends).
ApiReply HandleRoutingSelect(const ApiContext& ctx, const ApiRequest& req);
// GET /v1/models/recommendations?model=&strategy=&capabilities=&prompt_tokens=
// &expected_output_tokens=&n=: the top-n backends for those features.
ApiReply HandleModelRecommendations(const ApiContext& ctx, const ApiRequest& req);
// Reports (query/report_handlers.cc), as JSON, CSV or Markdown (`format=`); errors are JSON.
// GET /v1/reports/comparison?instances=a,b|models=x,y&window=&to=&format=: side by side, the
// better value marked per metric.
ApiReply HandleComparisonReport(const ApiContext& ctx, const ApiRequest& req);
// GET /v1/reports/trend?instance=&model=&window=&period=&to=&alpha=&format=: the last `window`
// against the `window` that ended `period` earlier, with change and significance.
ApiReply HandleTrendReport(const ApiContext& ctx, const ApiRequest& req);
// The dashboard (query/dashboard_handlers.cc): GET / (index.html) and GET /ui/{file}, from the
// files embedded at build time; 404 for a file not embedded.
ApiReply HandleDashboardIndex(const ApiContext& ctx, const ApiRequest& req);
ApiReply HandleDashboardFile(const ApiContext& ctx, const ApiRequest& req);
// GET /v1/openapi.json (query/openapi.cc): the OpenAPI 3.1 document compiled into the binary.
ApiReply HandleOpenApi(const ApiContext& ctx, const ApiRequest& req);

}  // namespace inferscope
