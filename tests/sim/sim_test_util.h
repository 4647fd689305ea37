#pragma once

// Helpers of the simulator tests: a sink that keeps everything, runs of one instance or a fleet,
// and statistics over what they produced.

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "sim/fleet.h"

namespace inferscope::sim::testing {

struct Recorder final : OutcomeSink {
  std::vector<RequestOutcome> requests;
  std::vector<GaugeSample> gauges;
  std::vector<std::pair<Request, uint32_t>> arrivals;
  void OnRequest(const RequestOutcome& o) override { requests.push_back(o); }
  void OnGauge(const GaugeSample& g) override { gauges.push_back(g); }
  void OnArrival(const Request& r, uint32_t instance) override {
    arrivals.emplace_back(r, instance);
  }

  // Gauge values of one instance with from_ms <= time < to_ms.
  std::vector<double> Gauges(Gauge which, uint32_t instance = 0, double from_ms = 0,
                             double to_ms = 1e300) const {
    std::vector<double> v;
    for (const GaugeSample& g : gauges) {
      if (g.gauge == which && g.instance == instance && g.time_ms >= from_ms && g.time_ms < to_ms) {
        v.push_back(g.value);
      }
    }
    return v;
  }
  // Outcomes of one instance (any when instance < 0) completed in [from_ms, to_ms).
  std::vector<RequestOutcome> Outcomes(int instance = -1, double from_ms = 0,
                                       double to_ms = 1e300) const {
    std::vector<RequestOutcome> v;
    for (const RequestOutcome& o : requests) {
      if ((instance < 0 || o.instance == static_cast<uint32_t>(instance)) && o.time_ms >= from_ms &&
          o.time_ms < to_ms) {
        v.push_back(o);
      }
    }
    return v;
  }
};

inline double Mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / static_cast<double>(v.size());
}

inline double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * static_cast<double>(v.size() - 1))];
}

// ttft / tpot / e2e of the successful outcomes.
inline std::vector<double> Ttfts(const std::vector<RequestOutcome>& v) {
  std::vector<double> out;
  for (const RequestOutcome& o : v) {
    if (o.ok()) out.push_back(o.ttft_ms);
  }
  return out;
}
inline std::vector<double> Tpots(const std::vector<RequestOutcome>& v) {
  std::vector<double> out;
  for (const RequestOutcome& o : v) {
    if (o.ok() && o.tpot_ms >= 0) out.push_back(o.tpot_ms);
  }
  return out;
}
inline double ErrorRatio(const std::vector<RequestOutcome>& v) {
  double errors = 0;
  for (const RequestOutcome& o : v) errors += o.ok() ? 0 : 1;
  return v.empty() ? 0 : errors / static_cast<double>(v.size());
}

// Llama-3.1-8B on vllm with no injected errors.
inline InstanceOptions Instance(std::string name = "vllm-0", ServingParams params = {}) {
  InstanceOptions o;
  o.name = std::move(name);
  o.model = "llama-3.1-8b-instruct";
  o.params = params;
  return o;
}

inline PoissonOptions Poisson(double rate, uint64_t seed = 7) {
  PoissonOptions p;
  p.rate_per_s = rate;
  p.seed = seed;
  return p;
}

// Runs a fleet to `duration_s` of simulated time and returns it (the recorder has the output).
inline std::unique_ptr<Fleet> RunFleet(Recorder* rec, std::vector<InstanceOptions> instances,
                                       std::unique_ptr<ArrivalSource> arrivals, double duration_s,
                                       std::vector<Fault> faults = {},
                                       std::unique_ptr<Router> router = nullptr,
                                       uint64_t seed = 42) {
  FleetOptions fo;
  fo.duration_ms = duration_s * 1000;
  fo.seed = seed;
  if (router == nullptr) router = std::make_unique<RoundRobinRouter>();
  Result<std::unique_ptr<Fleet>> fleet = Fleet::Create(fo, std::move(instances), std::move(faults),
                                                       std::move(arrivals), std::move(router), rec);
  if (!fleet.ok()) return nullptr;
  (*fleet)->Run();
  return std::move(*fleet);
}

}  // namespace inferscope::sim::testing
