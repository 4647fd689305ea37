#pragma once

// A fleet of simulated serving instances: arrivals (a Poisson rate or a replayed trace), a
// dispatcher with a pluggable routing policy, faults, gauge sampling, and a pacer that ties the
// simulated clock to a wall clock.

#include <array>
#include <cmath>
#include <cstdint>
#include <deque>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/status.h"
#include "sim/faults.h"
#include "sim/serving_model.h"
#include "sim/trace.h"

namespace inferscope::sim {

// A model the simulator knows: serving parameters on its usual hardware, and prices.
struct ModelProfile {
  std::string_view name;
  std::string_view hardware;  // what the parameters describe
  ServingParams params;
  double input_price_per_1k = 0;   // USD per 1k prompt tokens
  double output_price_per_1k = 0;  // USD per 1k output tokens
};
// The catalogue (sim/README.md, "Defaults"): Llama-3.1-8B, Mistral-7B, Qwen2.5-14B,
// Llama-3.1-70B, Mixtral-8x7B.
std::span<const ModelProfile> Models();
// nullptr when unknown.
const ModelProfile* FindModel(std::string_view name);
// The engine defaults that differ: SGLang (RadixAttention) finds more prefixes, TGI admits 128
// concurrent requests by default (--max-concurrent-requests) and caches fewer prefixes.
ServingParams WithEngineDefaults(ServingParams params, std::string_view engine);

// The fleet `inferscope simulate` runs: `instances` instances named `<engine>-<i>` (engines
// vllm, sglang, tgi in turn), each serving `models` models (instance i's m-th model is
// Models()[(i + m) % 5]; with more than 5 models, names get a `-<m>` suffix) with its engine's
// defaults (WithEngineDefaults). Every instance is a little different (step and prefill times x
// 0.9..1.1, seeded); every fourth (i % 4 == 3) is a weaker node: times x 1.8 and 3 % server
// errors instead of 0.5 %. `timeout_s` applies to all.
std::vector<InstanceOptions> StandardFleet(int instances, int models, uint64_t seed,
                                           double timeout_s = 120);

// One arrival before routing. The fleet assigns the model.
struct Arrival {
  SimMs time_ms = 0;
  uint32_t prompt_tokens = 1;
  uint32_t output_tokens = 1;
};

// Arrivals in non-decreasing time order.
class ArrivalSource {
 public:
  virtual ~ArrivalSource() = default;
  // The next arrival; false when there are no more.
  virtual bool Next(Arrival* out) = 0;
};

struct PoissonOptions {
  double rate_per_s = 10;  // mean arrivals per second of simulated time, whole fleet
  // The load wanders: the rate is rate_per_s x w(t), w a mean-reverting random walk around 1
  // (steps every `wander_step_s`, standard deviation `wander` per step, w clamped to [0.2, 2]).
  // 0 = a constant rate.
  double wander = 0;
  double wander_step_s = 10;
  // Token counts: lognormal with these medians and log-space sigmas, clamped to [1, max].
  double prompt_median = 600, prompt_sigma = 0.8;
  uint32_t prompt_max = 8192;
  double output_median = 180, output_sigma = 0.7;
  uint32_t output_max = 1024;
  double duration_s = 0;  // arrivals end after this much simulated time; 0 = never
  uint64_t seed = 1;

  Status Validate() const;
};

class PoissonArrivals final : public ArrivalSource {
 public:
  explicit PoissonArrivals(PoissonOptions options);
  bool Next(Arrival* out) override;

 private:
  PoissonOptions options_;
  std::mt19937_64 rng_;
  double t_ms_ = 0;
  double w_ = 1;
  double next_wander_ms_;
};

struct TraceArrivalOptions {
  // Arrival times are (timestamp - first timestamp) / time_scale: 2 = the same arrivals in half
  // the time (twice the load). The CLI's --speed does not use this: it replays the trace's own
  // times and runs the simulated clock faster than the wall clock (sim/README.md, "Time").
  double time_scale = 1;
  uint32_t prompt_max = 0;  // > 0: clamp prompts to this (0 = as recorded)
  Status Validate() const;
};

// Replays trace records: one arrival per record, with its token counts.
class TraceArrivals final : public ArrivalSource {
 public:
  TraceArrivals(std::vector<TraceRecord> records, TraceArrivalOptions options = {});
  bool Next(Arrival* out) override;

 private:
  std::vector<TraceRecord> records_;
  TraceArrivalOptions options_;
  size_t next_ = 0;
};

// A request's latent quality, reported back to the router later (FleetOptions: a sample of the
// successful requests, after a delay), as user ratings or an offline judge would.
struct QualityFeedback {
  uint32_t instance = 0;
  uint64_t id = 0;
  Category category = Category::kChat;
  SimMs completed_ms = 0;  // when the request completed
  SimMs time_ms = 0;       // when the feedback is delivered
  double quality = 0;      // 0..1
};

// Picks the instance for a request among the instances serving its model, and learns from the
// feedback the fleet delivers (all in simulated time, on the fleet's event order):
//   - OnOutcome: every request's outcome at its completion or failure (ttft, tpot, e2e, tokens,
//     error, cost; quality is not known then and reads < 0), as a gateway sees its responses;
//   - OnGauge: every gauge sample, FleetOptions::gauge_delay_ms after it was taken (a scrape or
//     stream delay; none while an instance is down: its scrape fails);
//   - OnQuality: for a sample of the successful requests, their quality, later.
// A request's `arrival_ms` is the current time when Pick is called.
// Concurrency: called on the simulating thread only.
class Router {
 public:
  virtual ~Router() = default;
  virtual std::string_view Name() const = 0;
  // `candidates` is not empty; returns an index into it.
  virtual size_t Pick(const Request& request, std::span<const InstanceView> candidates) = 0;
  virtual void OnOutcome(const RequestOutcome& /*outcome*/) {}
  virtual void OnGauge(const GaugeSample& /*sample*/) {}
  virtual void OnQuality(const QualityFeedback& /*feedback*/) {}
  // The probability that the last Pick chose the best candidate, in [0, 1]; < 0 when the router
  // does not estimate one (calibration is scored only for routers that do).
  virtual double Confidence() const { return -1; }
};

// Each model's candidates in turn.
class RoundRobinRouter final : public Router {
 public:
  std::string_view Name() const override { return "round_robin"; }
  size_t Pick(const Request& request, std::span<const InstanceView> candidates) override;

 private:
  std::vector<uint64_t> next_;  // per model
};

// Uniformly at random (seeded).
class RandomRouter final : public Router {
 public:
  explicit RandomRouter(uint64_t seed) : rng_(seed) {}
  std::string_view Name() const override { return "random"; }
  size_t Pick(const Request& request, std::span<const InstanceView> candidates) override;

 private:
  std::mt19937_64 rng_;
};

// "round_robin" or "random"; nullptr otherwise.
std::unique_ptr<Router> MakeRouter(std::string_view name, uint64_t seed);

struct FleetOptions {
  double gauge_interval_ms =
      1000;  // every instance samples its gauges this often (from t = 1 interval)
  // The run ends at this simulated time (0 = once the arrivals are exhausted and every instance
  // is idle).
  double duration_ms = 0;
  uint64_t seed = 42;  // model assignment, load_double copies

  // Feedback to the router (Router): gauges are delivered this long after they are sampled.
  double gauge_delay_ms = 0;
  // The fraction of successful requests whose quality is reported to the router (0..1), and how
  // long after their completion.
  double quality_feedback_fraction = 0;
  double quality_feedback_delay_ms = 120'000;
  // Request features: the category of each request is drawn with these weights (chat, code,
  // vision; >= 0, not all 0); expected_output_tokens = output_tokens x a lognormal error of this
  // log-space sigma (0 = exact). Both draw from their own stream (seeded from `seed`): the
  // defaults change no draw of the rest of the simulation.
  std::array<double, kCategories> category_weights = {1, 0, 0};
  double expected_output_sigma = 0.5;

  Status Validate() const;
};

// Fleet runs a discrete-event simulation of instances in one global time order: step ends,
// arrivals, gauge samples (ties in that order). Each arrival gets a model (uniformly by instance:
// a model served by more instances receives more requests) and goes to the instance the router
// picks among that model's instances; the outcomes and gauges go to the sink.
//
// Faults: `load_double` on `*`/`fleet` adds factor - 1 copies of each arrival (the fractional
// part as a probability); on instances, each matched instance receives, for every arrival of its
// model, (factor - 1) / (instances of the model) copies in expectation, besides what the router
// gives it: its share of the model's load is multiplied by the factor while the others' stay
// unchanged. Copies arrive at the same time with the same token counts. Every other kind is
// applied by the matched instances (ServingInstance).
//
// Feedback: the router gets every outcome as it happens, gauges and quality feedback delayed
// (FleetOptions); a delivery due at the same time as another event comes first.
//
// Lifecycle: Create, then RunUntil with increasing times (or Run). Not thread-safe.
class Fleet {
 public:
  static Result<std::unique_ptr<Fleet>> Create(FleetOptions options,
                                               std::vector<InstanceOptions> instances,
                                               std::vector<Fault> faults,
                                               std::unique_ptr<ArrivalSource> arrivals,
                                               std::unique_ptr<Router> router, OutcomeSink* sink);

  // Processes every event at or before `until_ms` (and before the duration). Returns false once
  // the simulation is over (nothing left to happen).
  bool RunUntil(SimMs until_ms);
  // To the end (requires a duration or finite arrivals).
  void Run();

  // The time of the last processed event.
  SimMs now_ms() const { return now_ms_; }
  bool done() const { return done_; }
  size_t size() const { return instances_.size(); }
  const ServingInstance& instance(size_t i) const { return *instances_[i]; }
  std::span<const std::string> models() const { return models_; }
  uint32_t model_of(size_t instance) const { return instance_model_[instance]; }
  uint64_t arrivals() const { return arrivals_; }  // from the source
  uint64_t requests() const { return next_id_; }   // routed, copies included

 private:
  // Between the instances and the caller's sink: forwards everything, and feeds the router.
  class Tap final : public OutcomeSink {
   public:
    explicit Tap(Fleet* fleet) : fleet_(fleet) {}
    void OnRequest(const RequestOutcome& outcome) override;
    void OnGauge(const GaugeSample& sample) override;

   private:
    Fleet* fleet_;
  };

  Fleet() : tap_(this) {}
  SimMs NextDelivery() const;
  void Deliver(SimMs t);
  void Dispatch(const Arrival& a);
  void Route(Request r);
  void SendTo(uint32_t instance, const Request& r);

  FleetOptions options_;
  OutcomeSink* sink_ = nullptr;
  std::vector<std::unique_ptr<ServingInstance>> instances_;
  std::vector<Fault> load_faults_;             // load_double only
  std::vector<std::vector<Fault>> inst_load_;  // per instance: its load_double faults
  std::vector<std::string> models_;
  std::vector<uint32_t> instance_model_;
  std::vector<std::vector<uint32_t>> model_instances_;
  std::vector<InstanceView> views_;  // reused per pick
  std::unique_ptr<ArrivalSource> arrivals_src_;
  std::unique_ptr<Router> router_;
  std::mt19937_64 rng_;
  std::mt19937_64 feature_rng_;   // categories, expected output tokens
  std::mt19937_64 feedback_rng_;  // which requests' quality is reported
  Tap tap_;
  std::deque<GaugeSample> delayed_gauges_;       // in delivery order
  std::deque<QualityFeedback> delayed_quality_;  // in delivery order
  Arrival pending_;
  bool has_pending_ = false;
  SimMs next_gauge_ms_ = 0;
  SimMs now_ms_ = 0;
  bool done_ = false;
  uint64_t arrivals_ = 0;
  uint64_t next_id_ = 0;
};

// Pacer ties the simulated clock to a wall clock: simulated time runs `speed` times faster, so
// after `w` ms of wall time the simulation has reached origin + w x speed ms, and an event at
// simulated time s is published at wall offset (s - origin) / speed with event time
// start_ms + (s - origin) (event times advance at speed x real time: the engine's windows see a
// compressed day). `origin_ms` is where the wall clock's start falls in simulated time (a warm-up
// before it is not published).
class Pacer {
 public:
  Pacer(Fleet* fleet, double speed, int64_t start_epoch_ms, SimMs origin_ms = 0)
      : fleet_(fleet), speed_(speed), start_ms_(start_epoch_ms), origin_ms_(origin_ms) {}
  // Runs the fleet up to wall offset `wall_elapsed_ms`; false once the fleet is done.
  bool Advance(double wall_elapsed_ms) {
    return fleet_->RunUntil(origin_ms_ + wall_elapsed_ms * speed_);
  }
  double WallOffsetMs(SimMs sim_ms) const { return (sim_ms - origin_ms_) / speed_; }
  int64_t EventTimeMs(SimMs sim_ms) const {
    return start_ms_ + static_cast<int64_t>(std::floor(sim_ms - origin_ms_));
  }
  double speed() const { return speed_; }

 private:
  Fleet* fleet_;
  double speed_;
  int64_t start_ms_;
  SimMs origin_ms_;
};

}  // namespace inferscope::sim
