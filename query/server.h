#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "pipeline/clock.h"
#include "pipeline/metrics.h"
#include "pipeline/registry.h"
#include "pipeline/status.h"
#include "query/access.h"

namespace inferscope {

class GatedServer;
class ResponseCache;
class ResponseLog;
struct RouteRequest;
struct RouteResponse;
struct RouteRuntime;
class SilenceRegistry;
class WorkflowRegistry;
namespace routing {
class RoutingRegistry;
}
class StateStore;
struct ApiContext;

// QueryServer is the HTTP + JSON query node: it answers from committed state (the StateStore) and
// serves the engine's own metrics. Routes (one table, one handler each; see query/handlers.h):
//
//   GET /v1/health                        liveness, plus whatever `health_info` returns
//   GET /v1/capabilities                  registered source/operator/sink types
//   GET /v1/instances                     the series index grouped by instance and model
//   GET /v1/instances/{id}/summary        tumbling windows merged from stored panes or rollups
//   GET /v1/series                        one point per step over [from, to) (dashboards)
//   GET /v1/performance/metrics           fleet-wide latency, throughput, error and cache rates
//   GET /v1/alerts                        stored alerts (latest state), filtered
//   GET /v1/alerts/{fingerprint}          one alert and its state changes
//   POST|GET /v1/silences, DELETE /v1/silences/{id}
//   POST|GET /v1/workflows, GET /v1/workflows/{id}, POST /v1/workflows/{id}/approve|reject|applied
//   GET /v1/reports/comparison|trend      reports as JSON, CSV or Markdown (report_handlers.cc)
//   GET /, GET /ui/{file}                 the dashboard, embedded at build time (no token needed)
//   GET /metrics                          Prometheus text format 0.0.4 (the engine's own metrics)
//   GET /v1/export/prometheus             the latest closed window of every series as Prometheus
//                                         samples (query/export_handlers.cc)
//   GET /v1/access                        tokens (names and scopes), limits, CORS (admin scope)
//
// Every error, including unknown routes, is {"error":{"code","message","details"},"timestamp"} with
// code VALIDATION_ERROR (400, 431), UNAUTHORIZED (401), FORBIDDEN (403: a token without the
// route's scope, a refused CORS preflight), NOT_FOUND (404), READ_ONLY (405: a write to a read-only
// query node), REQUEST_TIMEOUT (408: a request body not complete within read_timeout_ms),
// CONFLICT (409: a workflow transition its state does not allow), PAYLOAD_TOO_LARGE (413),
// URI_TOO_LONG (414), RATE_LIMITED (429, with Retry-After), INTERNAL_ERROR (500) or UNAVAILABLE
// (503: the workflow registry is full; the request bodies being read are at their budget, with
// Retry-After).
//
// Access (query/access.h, docs/API_ACCESS.md): with tokens configured every route but /v1/health
// needs "Authorization: Bearer <token>" (401 UNAUTHORIZED with WWW-Authenticate otherwise) and the
// route's scope (403 FORBIDDEN): `write` for routes that change state (Route::writes), `admin` for
// admin routes, `read` for the rest. Without tokens the server refuses to listen on anything but a
// loopback address. Requests are rate-limited per token (per peer address without a valid token)
// with token buckets: 429 RATE_LIMITED with Retry-After. CORS headers are sent only for the
// configured origins; preflights (OPTIONS) are answered without a token.
//
// Connections (query/gated_server.h): an accepted socket holds no thread until a whole request,
// header and body, has arrived (idle and slow sockets wait in one epoll set, and the connection
// gate reads bodies beyond its 16 KiB peek window, and chunked ones, into memory); complete
// requests are served by `threads` workers, which never wait for a client. A header must arrive
// within header_timeout_ms (else the connection is closed), a kept-alive connection is closed
// after idle_timeout_ms without a request, a body must arrive within read_timeout_ms of its header
// (else 408 REQUEST_TIMEOUT); connections beyond max_connections, or beyond
// max_connections_per_address from one client address, are closed at accept; a header over
// max_header_bytes gets 431 and a declared body over max_body_bytes gets 413 before it is read
// (PAYLOAD_TOO_LARGE; chunked bodies at the chunk that takes them over the limit); the bodies
// the gate holds are at most max_buffered_body_bytes in all (one body alone always fits), and a
// body beyond that gets 503 UNAVAILABLE with Retry-After. Every such close is counted in
// inferscope_http_connections_closed_total{reason}. Start raises the soft RLIMIT_NOFILE towards
// max_connections + 256 when the hard limit allows.
//
// Response cache (query/response_cache.h): answers of GET /v1/instances/{id}/summary and
// GET /v1/series are kept, rendered, and served again to the same request (route, path, query
// parameters and the token's scopes) while the store's view is the one they were read from
// (StateStore::ViewVersion: on a query node it moves at each catch-up that brought pane, rollup or
// series-index writes; in the engine at each such write) — or a later view whose changes since
// all start at or after the end of the answer's range (StateStore::EarliestChangeSince: a pane
// batch's earliest pane start, a rollup's previous cursor; a new or dropped series changes
// everything) —, the watermark is in the range that gives
// the same window range (a step, when `to` is not given) and no bucket of the range has expired
// since; "as_of" is the current watermark. So a cached answer is the one the handler would give
// now. Every request is still authenticated, rate-limited, checked, counted, timed and logged.
// Counters: inferscope_query_cache_lookups_total{result}, inferscope_query_cache_carried_total
// (entries found valid in a later view), inferscope_query_cache_evictions_total,
// gauges inferscope_query_cache_entries and inferscope_query_cache_bytes.
//
// Lifecycle: construct → Start (binds, serves on threads of its own) → Stop (idempotent; the
// destructor calls it). The pointers given at construction must outlive the server.
// Concurrency: handlers run on `threads` worker threads and only read the store.
// Limitations: plain HTTP (put TLS in front: tokens travel in clear otherwise); tokens are read at
// start (a restart picks up a changed token file).
class QueryServer {
 public:
  struct Options {
    std::string host = "127.0.0.1";  // address to bind; loopback by default
    int port = 0;                    // 0 = an ephemeral port (read it back with port()); 0..65535
    // Tokens, rate limits and CORS (see "Access" above). No tokens: loopback only.
    AccessOptions access;
    // The Prometheus export's window and series cap.
    ExportOptions export_options;
    int threads = 8;  // request worker threads; 1..256
    // Connection limits (see "Connections" above). Times in milliseconds, each 1..3,600,000.
    int64_t header_timeout_ms = 10'000;  // a request header must arrive within this
    int64_t idle_timeout_ms = 5'000;     // a kept-alive connection may idle this long
    int64_t read_timeout_ms = 10'000;    // a request body must arrive within this
    int64_t write_timeout_ms = 10'000;   // each response write must progress within this
    int max_connections = 4'096;         // open connections; more are closed at accept; 1..1M
    // Open connections from one client address (IPv4, or IPv6 address); more are closed at
    // accept, so that one client cannot take every connection. Raise it behind a proxy that
    // concentrates many clients on one address. 1..1M.
    int max_connections_per_address = 256;
    int listen_backlog = 1'024;           // accept queue length (the kernel caps it at somaxconn)
    size_t max_header_bytes = 16 * 1024;  // larger request headers get 431; 1 KiB..1 MiB
    size_t max_body_bytes = 1024 * 1024;  // larger request bodies get 413; 1 B..1 GiB
    size_t max_url_bytes = 8'192;         // longer request targets get 414; 256..8192
    // Response bytes held for clients slow to read them, over all connections (see "Connections"
    // above); a response that would go over closes its connection. 64 KiB..1 TiB.
    size_t max_pending_response_bytes = 64 * 1024 * 1024;
    // Request bodies the connection gate reads and holds until their request is served, over all
    // connections (see "Connections" above); a body that would go over gets 503 with Retry-After,
    // except when it is the only one held. 64 KiB..1 TiB.
    size_t max_buffered_body_bytes = 64 * 1024 * 1024;
    // A query node (cli/query_node.h) over a read-only store: the routes that change state
    // (silences, workflows: Route::writes) answer 405 READ_ONLY without calling their handler,
    // naming `engine_url` (the engine's API, where writes go; may be empty) in the error details.
    bool read_only = false;
    std::string engine_url;
    // Size of the response cache of the summary and series routes (see "Response cache" above):
    // keys, bodies and a fixed overhead per entry; least recently used answers are evicted first.
    // 0 turns it off. At most 1 TiB.
    size_t response_cache_bytes = 64 * 1024 * 1024;

    Status Validate() const;
  };

  QueryServer(Options options, StateStore* store, MetricsRegistry* metrics, const Clock* clock,
              std::function<nlohmann::json()> health_info,
              std::vector<Registry::Entry> capabilities);
  ~QueryServer();
  QueryServer(const QueryServer&) = delete;
  QueryServer& operator=(const QueryServer&) = delete;

  // The engine's silences, for the /v1/silences routes; call before Start. Must outlive the server.
  void SetSilences(SilenceRegistry* silences);
  // The engine's workflows, for the /v1/workflows routes; call before Start. Must outlive the
  // server.
  void SetWorkflows(WorkflowRegistry* workflows);
  // The engine's routing learners, for POST /v1/routing/select and GET /v1/models/recommendations;
  // call before Start. Must outlive the server.
  void SetRouting(routing::RoutingRegistry* routing);
  // Validates the options, binds and starts serving. IOError when the address cannot be bound;
  // Internal when already started.
  Status Start();
  // The bound port (after a successful Start), else 0.
  int port() const { return port_; }
  // Connections accepted and not yet closed (0 when not started).
  size_t open_connections() const;
  // Stops accepting, lets running requests finish and joins the server thread.
  void Stop();

 private:
  void RegisterRoutes();
  // A request to one route, read by httplib or by the fast path: access checks, parameter checks,
  // the response cache or the handler, the response log, counters and latency.
  void ServeRoute(const RouteRuntime& rt, const RouteRequest& req, RouteResponse* out) const;
  // GatedServer::FastPath: GET requests to the routes the fast path matches (the cacheable ones),
  // in ParseRawRequest's strict subset, answered without httplib's parsing, routing and writing.
  bool ServeFast(std::string_view request, int fd, std::string* response, bool* close) const;

  Options options_;
  std::unique_ptr<ApiContext> ctx_;
  std::unique_ptr<TokenSet> tokens_;
  std::unique_ptr<RateLimiter> limiter_;
  std::unique_ptr<ResponseCache> cache_;  // null when response_cache_bytes is 0
  std::unique_ptr<GatedServer> server_;
  std::vector<std::unique_ptr<RouteRuntime>> routes_;
  ResponseLog* log_ = nullptr;
  std::string keep_alive_;  // the Keep-Alive header's value, as httplib sends it
  std::thread thread_;
  std::atomic<bool> thread_done_{false};
  int port_ = 0;
};

}  // namespace inferscope
