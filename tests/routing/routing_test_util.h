#pragma once

// Helpers shared by the routing tests: feeding a learner synthetic outcomes from known
// distributions, and counting decisions.

#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <string_view>

#include "routing/learner.h"

namespace inferscope::routing::testing {

// A backend whose true latency is log-normal with median `ttft_ms` / `tpot_ms` (log-sd `sigma`),
// with a true error rate, quality and cost per request.
struct TrueBackend {
  std::string name;
  double ttft_ms = 100;
  double tpot_ms = 20;
  double sigma = 0.3;
  double error_rate = 0;
  double quality = -1;  // < 0: no quality reported
  double cost_usd = -1;
};

// A catalogue backend (designated initializers would leave fields GCC warns about).
inline BackendSpec Spec(std::string name, uint32_t capabilities = 0, uint32_t max_context = 0) {
  BackendSpec b;
  b.name = std::move(name);
  b.capabilities = capabilities;
  b.max_context = max_context;
  return b;
}

inline Outcome Draw(const TrueBackend& b, std::string_view model, int64_t t, std::mt19937_64& rng,
                    ErrorKind error_kind = ErrorKind::kServerError) {
  std::normal_distribution<double> z;
  std::uniform_real_distribution<double> u;
  Outcome o;
  o.backend = b.name;
  o.model = model;
  o.time_ms = t;
  o.prompt_tokens = 500;
  o.output_tokens = 200;
  o.ttft_ms = b.ttft_ms * std::exp(b.sigma * z(rng));
  o.tpot_ms = b.tpot_ms * std::exp(b.sigma * z(rng));
  o.e2e_ms = o.ttft_ms + o.tpot_ms * 200;
  if (b.quality >= 0) o.quality = b.quality;
  if (b.cost_usd >= 0) o.cost_usd = b.cost_usd;
  if (u(rng) < b.error_rate) o.error = error_kind;
  return o;
}

// Share of `n` selections per backend name.
inline std::map<std::string, double> Shares(RoutingLearner& learner, std::string_view model,
                                            const RequestFeatures& features, Strategy strategy,
                                            int64_t now, int n) {
  std::map<std::string, double> out;
  Decision d;
  for (int i = 0; i < n; ++i) {
    learner.Select(model, features, strategy, now, &d);
    if (d.ok) out[std::string(d.backend_name)] += 1.0 / n;
  }
  return out;
}

}  // namespace inferscope::routing::testing
