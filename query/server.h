#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "pipeline/clock.h"
#include "pipeline/metrics.h"
#include "pipeline/registry.h"
#include "pipeline/status.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace inferscope {

class SilenceRegistry;
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
//   GET /metrics                          Prometheus text format 0.0.4
//
// Every error, including unknown routes, is {"error":{"code","message","details"},"timestamp"} with
// code VALIDATION_ERROR (400), UNAUTHORIZED (401), NOT_FOUND (404) or INTERNAL_ERROR (500).
//
// Lifecycle: construct → Start (binds, serves on a thread pool of its own) → Stop (idempotent; the
// destructor calls it). The pointers given at construction must outlive the server.
// Concurrency: handlers run on `threads` pool threads and only read the store.
// Limitations: plain HTTP; when a bearer token is configured every route but /v1/health requires
// it.
class QueryServer {
 public:
  struct Options {
    std::string host = "127.0.0.1";  // address to bind; loopback by default
    int port = 0;                    // 0 = an ephemeral port (read it back with port()); 0..65535
    std::string bearer_token;        // empty = no authentication
    int threads = 4;                 // request threads; 1..256

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
  // Validates the options, binds and starts serving. IOError when the address cannot be bound;
  // Internal when already started.
  Status Start();
  // The bound port (after a successful Start), else 0.
  int port() const { return port_; }
  // Stops accepting, lets running requests finish and joins the server thread.
  void Stop();

 private:
  void RegisterRoutes();

  Options options_;
  std::unique_ptr<ApiContext> ctx_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::atomic<bool> thread_done_{false};
  int port_ = 0;
};

}  // namespace inferscope
