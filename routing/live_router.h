#pragma once

// LiveRouter shares one RoutingLearner between the thread that feeds it (the `routing_learn`
// operator) and the threads that ask it (the query API's POST /v1/routing/select and
// GET /v1/models/recommendations). RoutingRegistry is the engine service (StageContext::services)
// through which the operator hands its LiveRouter to the query server.
//
// Concurrency: every access to the learner goes through With(), under one mutex. The operator
// takes it once per event batch (not per event) and the API once per request; a Select on a built
// decision table holds it for well under a microsecond, so neither side waits long
// (bench/README.md, "Routing failover": the end-to-end throughput with the learner).
// `now_ms()` is the newest event time the operator has fed (lock-free): the API decides "now" in
// the stream's event time, so a replay or a skewed publisher clock is judged consistently.
// Lifecycle: the operator creates its LiveRouter and registers it at Open; the registry keeps it
// alive (shared ownership) for API requests that race with shutdown.

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "pipeline/metrics.h"
#include "routing/learner.h"

namespace inferscope::routing {

class LiveRouter {
 public:
  LiveRouter(RoutingOptions options, MetricsRegistry* metrics)
      : learner_(std::move(options), metrics) {}

  // Calls fn(RoutingLearner&) under the lock and returns what it returns.
  template <typename Fn>
  auto With(Fn&& fn) {
    std::lock_guard<std::mutex> lock(mu_);
    return fn(learner_);
  }

  // The newest event time fed (INT64_MIN before the first event).
  int64_t now_ms() const { return now_ms_.load(std::memory_order_acquire); }
  // Raises now_ms() to `t` (never lowers it).
  void AdvanceTo(int64_t t) {
    int64_t cur = now_ms_.load(std::memory_order_relaxed);
    while (t > cur && !now_ms_.compare_exchange_weak(cur, t, std::memory_order_release)) {
    }
  }

 private:
  std::mutex mu_;
  RoutingLearner learner_;
  std::atomic<int64_t> now_ms_{INT64_MIN};
};

// The engine's routing learners by operator stage name (normally one). Thread-safe.
class RoutingRegistry {
 public:
  void Register(std::string stage, std::shared_ptr<LiveRouter> router) {
    std::lock_guard<std::mutex> lock(mu_);
    stage_ = std::move(stage);
    router_ = std::move(router);
  }
  // The registered learner (the last one registered when a topology has several routing_learn
  // operators); null when there is none.
  std::shared_ptr<LiveRouter> Get() const {
    std::lock_guard<std::mutex> lock(mu_);
    return router_;
  }
  std::string stage() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stage_;
  }

 private:
  mutable std::mutex mu_;
  std::string stage_;
  std::shared_ptr<LiveRouter> router_;
};

}  // namespace inferscope::routing
