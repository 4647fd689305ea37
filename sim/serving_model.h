#pragma once

// A discrete-event model of one LLM serving instance (a vLLM / SGLang / TGI process serving one
// model), in virtual time. See sim/README.md for the model, its parameters and where the defaults
// come from.

#include <array>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/status.h"
#include "sim/faults.h"

namespace inferscope::sim {

// Simulated time: milliseconds since the start of the run (the fleet's clock starts at 0).
using SimMs = double;

// Why a request failed. Names as the wire protocol's `err` (docs/PROTOCOL.md).
enum class RequestError : uint8_t {
  kNone = 0,
  kTimeout,      // waited and/or ran longer than `timeout_s`
  kServerError,  // injected (`error_probability`, the `error_burst` fault)
  kClientError,  // prompt + output longer than `max_model_len` or than the whole KV cache
  kRateLimited,  // the waiting queue was full (`max_waiting`)
};
// "" for kNone, else the protocol's error kind ("timeout", "server_error", ...).
std::string_view ErrorName(RequestError error);

// The gauges of the metric contract (docs/PROTOCOL.md, "Serving gauges"): names as vLLM exposes
// them, without the `vllm:` prefix.
enum class Gauge : uint8_t {
  kNumRequestsRunning = 0,  // requests in the running batch at sample time
  kNumRequestsWaiting,      // requests in the waiting queue at sample time
  kKvCacheUsage,            // fraction 0..1 of the KV-cache tokens held at sample time
  kNumPreemptions,          // preemptions during the last interval (a count, not a total)
  kPrefixCacheHitRate,      // prompt tokens from the prefix cache / prompt tokens scheduled,
                            // last interval (not sampled when none were scheduled)
  kGenerationTokensPerS,    // output tokens generated per second, last interval
  kPromptTokensPerS,        // prompt tokens prefilled (computed) per second, last interval
  kMaxNumSeqs,              // the slot limit in effect
  kKvCacheCapacityTokens,   // the KV-cache size in tokens in effect
  kCount,
};
std::string_view GaugeName(Gauge gauge);

// What a request asks for: its category (drawn per request by the fleet, FleetOptions::
// category_weights). A backend has a latent quality per category; vision requests need a
// vision-capable backend.
enum class Category : uint8_t { kChat = 0, kCode, kVision, kCount };
inline constexpr size_t kCategories = static_cast<size_t>(Category::kCount);
std::string_view CategoryName(Category category);

// One request as it arrives at an instance. The fields below `model` are the request's features
// a router may use; `output_tokens` is the truth the simulation runs (a router should use
// `expected_output_tokens`, a noisy estimate of it, as a length predictor would give).
struct Request {
  uint64_t id = 0;
  SimMs arrival_ms = 0;
  uint32_t prompt_tokens = 1;  // >= 1
  uint32_t output_tokens = 1;  // >= 1: tokens to generate before the request completes
  uint32_t model = 0;          // index of the model in the fleet (routing only)
  Category category = Category::kChat;
  bool needs_vision = false;            // category == kVision
  uint32_t expected_output_tokens = 1;  // the router's estimate of output_tokens
};

// The outcome of one request, reported when it completes or fails.
struct RequestOutcome {
  uint32_t instance = 0;  // the instance's index in its fleet
  uint64_t id = 0;
  SimMs arrival_ms = 0;
  SimMs time_ms = 0;    // completion or failure time (the event time to publish)
  double e2e_ms = 0;    // time_ms - arrival_ms
  double ttft_ms = -1;  // arrival to first token; < 0: no token was generated
  double tpot_ms = -1;  // (e2e - ttft) / (output - 1); < 0: fewer than two tokens generated
  uint32_t prompt_tokens = 0;
  uint32_t output_tokens = 0;  // tokens generated (all of them on success)
  uint32_t cached_tokens = 0;  // prompt tokens served from the prefix cache at first admission
  RequestError error = RequestError::kNone;
  Category category = Category::kChat;
  // A vision request sent to an instance without vision: refused at arrival with client_error.
  bool capability_violation = false;
  // USD billed: prompt tokens (once prefilled) and generated tokens at the instance's prices in
  // effect at completion (the price_change fault); 0 for a request refused at arrival.
  double cost_usd = 0;
  // The latent quality of the answer in [0, 1] (successful requests; < 0 otherwise): drawn from
  // Beta around the instance's quality for the category (times the quality_drop fault). Routers
  // see it only through the fleet's sparse, delayed quality feedback (FleetOptions).
  double quality = -1;
  bool ok() const { return error == RequestError::kNone; }
};

struct GaugeSample {
  uint32_t instance = 0;
  SimMs time_ms = 0;
  Gauge gauge = Gauge::kNumRequestsRunning;
  double value = 0;
};

// Receives what a simulation produces, in non-decreasing time order (an injected server error is
// reported at its arrival, stamped `error_latency_ms` later). Called on the simulating thread.
class OutcomeSink {
 public:
  virtual ~OutcomeSink() = default;
  virtual void OnRequest(const RequestOutcome& outcome) = 0;
  virtual void OnGauge(const GaugeSample& sample) = 0;
  // A request was routed to `instance` (before it is queued). Optional.
  virtual void OnArrival(const Request& /*request*/, uint32_t /*instance*/) {}
};

// How one instance (model on its GPUs, engine configuration) performs. The defaults describe
// Llama-3.1-8B in bf16 on one A100-80GB under vLLM; sim/README.md says where they come from.
// Per-step time:
//   step_ms = slowdown * (step_base_ms + step_per_seq_ms * sequences in the batch
//                         + step_per_kv_token_ms * KV tokens the batch reads
//                         + prefill_per_token_ms * prompt tokens prefilled in the step)
struct ServingParams {
  double step_base_ms = 22;       // weights read once per step (memory-bound decode)
  double step_per_seq_ms = 0.15;  // per sequence in the batch (sampling, scheduling, MLP rows)
  double step_per_kv_token_ms = 6.5e-5;    // attention reads of the KV cache, per token held
  double prefill_per_token_ms = 0.08;      // compute-bound prefill, per uncached prompt token
  int64_t kv_capacity_tokens = 400'000;    // KV-cache size (vLLM: --gpu-memory-utilization 0.9)
  uint32_t block_tokens = 16;              // KV allocation granularity (vLLM --block-size)
  uint32_t max_num_seqs = 256;             // slot limit (vLLM --max-num-seqs)
  uint32_t max_num_batched_tokens = 2048;  // tokens per step (chunked prefill budget)
  uint32_t max_model_len = 32768;          // longer prompt + output: client_error at arrival
  uint32_t max_waiting = 100'000;          // waiting queue bound; beyond: rate_limited
  double watermark = 0.01;     // fraction of KV blocks kept free when admitting (vLLM's watermark)
  bool prefix_caching = true;  // off: no prompt token is ever served from the cache
  double prefix_hit_mean = 0.35;        // mean fraction of a prompt found in the prefix cache
  double prefix_hit_concentration = 5;  // per-request hit ~ Beta(mean * c, (1 - mean) * c)
  double error_probability = 0;         // injected server errors, per request
  double error_latency_ms = 5;          // how long an injected server error takes
  double timeout_s = 120;               // waiting + running longer than this: timeout

  Status Validate() const;
};

// One serving instance: a name (`<engine>-<n>` by convention), the model it serves, its engine,
// and what it offers a router (prices, latent quality, capabilities).
struct InstanceOptions {
  std::string name;             // required, e.g. "vllm-0"
  std::string model;            // required
  std::string engine = "vllm";  // vllm, sglang or tgi (informative; the classifier reads it)
  ServingParams params;
  uint64_t seed = 1;  // draws: prefix-cache hits, injected errors (quality has its own stream)
  double input_price_per_1k = 0;   // USD per 1k prompt tokens, >= 0
  double output_price_per_1k = 0;  // USD per 1k generated tokens, >= 0
  // Latent quality per category (chat, code, vision), each in [0, 1].
  std::array<double, kCategories> quality = {0.8, 0.8, 0.8};
  double quality_concentration = 10;  // per-request quality ~ Beta(q * c, (1 - q) * c)
  bool vision = true;                 // accepts vision requests

  Status Validate() const;
};

// What a router sees of an instance when it picks one.
struct InstanceView {
  uint32_t index = 0;  // in the fleet
  std::string_view name, model, engine;
  uint32_t running = 0;
  uint32_t waiting = 0;
  double kv_usage = 0;  // 0..1
  uint32_t max_num_seqs = 0;
  bool vision = true;                                      // the catalogue's capability
  double input_price_per_1k = 0, output_price_per_1k = 0;  // list prices (not the faults')
};

// What an instance would give one request sent to it now, from its true parameters, the faults
// in effect and its current load (running batch, queue, KV cache): an analytic approximation of
// the model below, used as the routing evaluation's oracle (bench/routing/README.md).
struct Expectation {
  bool capable = true;  // false: a capability violation (the request fails)
  double p_ok = 1;      // probability of success (0 when down or incapable)
  double ttft_ms = 0;
  double e2e_ms = 0;
  double cost_usd = 0;  // on success
  double quality = 0;   // mean latent quality for the request's category
};

// ServingInstance models continuous batching on one instance: a FCFS waiting queue, a running
// batch of at most `max_num_seqs` requests, steps of at most `max_num_batched_tokens` tokens
// (decodes first, then prefill chunks; chunked prefill), a paged KV cache of
// `kv_capacity_tokens` tokens allocated in blocks, preemption by recomputation (the newest
// running request loses its KV and goes back to the front of the queue) when a step cannot get a
// block, a prefix cache, timeouts and injected errors. Faults (sim/faults.h) change its
// parameters for a time.
//
// Lifecycle: the fleet (or a test) drives it: Arrive() at non-decreasing times, Step() whenever
// next_event_ms() is the earliest event, SampleGauges() every gauge interval.
// Concurrency: none; one thread drives it.
// Memory: request slots and the queues grow to the largest number of requests held at once
// (bounded by `max_waiting` + `max_num_seqs`); steady state allocates nothing.
class ServingInstance {
 public:
  ServingInstance(InstanceOptions options, uint32_t index, OutcomeSink* sink);

  // Faults for this instance (already matched to its name); load_double is the fleet's business.
  void SetFaults(std::vector<Fault> faults) { faults_ = std::move(faults); }

  // A request arrives at `r.arrival_ms` (>= every earlier call's time).
  void Arrive(const Request& r);
  // When the step in flight ends; +infinity when idle.
  SimMs next_event_ms() const { return busy_ ? step_end_ms_ : kIdle; }
  // Completes the step in flight at next_event_ms() and starts the next one, if any.
  void Step();
  // Reports every gauge at `now_ms`; rates are over the `interval_ms` since the last sample.
  void SampleGauges(SimMs now_ms, double interval_ms);

  InstanceView View() const;
  // See Expectation. Does not change the instance; O(running requests).
  Expectation Expect(const Request& r, SimMs now_ms) const;
  // The mean latent quality of an answer to `category` at t_ms (the quality_drop faults in
  // effect then), in [0, 1]: Expectation::quality at another time.
  double QualityAt(Category category, SimMs t_ms) const;
  // Down (the down fault, or flapping in a down half-period) at `t`.
  bool DownAt(SimMs t) const;
  // Failing at `t`: down, or a brownout or error burst in effect (the routing evaluation's
  // "unhealthy" backends).
  bool FailingAt(SimMs t) const;
  const InstanceOptions& options() const { return options_; }
  uint32_t index() const { return index_; }

  // Totals since construction (for tests and benchmarks).
  struct Totals {
    uint64_t arrived = 0;
    uint64_t completed = 0;
    uint64_t failed = 0;
    uint64_t timeouts = 0;
    uint64_t capability_violations = 0;
    uint64_t preemptions = 0;
    uint64_t steps = 0;
    uint64_t generated_tokens = 0;
    uint64_t prefill_tokens = 0;  // computed prompt (and recomputed) tokens
    double busy_ms = 0;           // sum of step durations
    double running_ms = 0;        // integral of the running batch size over time (request-ms)
  };
  const Totals& totals() const { return totals_; }
  uint32_t running() const { return static_cast<uint32_t>(running_.size()); }
  uint32_t waiting() const { return static_cast<uint32_t>(waiting_.size()); }
  double kv_usage() const;

  static constexpr SimMs kIdle = 1e300;

 private:
  // A request held by the instance (waiting or running).
  struct Slot {
    uint64_t id = 0;
    SimMs arrival_ms = 0;
    SimMs first_token_ms = -1;
    uint32_t prompt = 0;
    uint32_t output = 0;
    uint32_t generated = 0;
    uint32_t cached = 0;           // prompt tokens from the prefix cache at first admission
    uint32_t computed = 0;         // tokens in the KV cache
    uint32_t prefill_target = 0;   // tokens to be in the KV cache before decoding resumes
    uint32_t blocks = 0;           // KV blocks held
    uint32_t scheduled = 0;        // tokens in the step in flight
    float hit_fraction = 0;        // drawn at arrival
    bool admitted_before = false;  // preempted at least once (recompute)
    Category category = Category::kChat;
  };

  // A FIFO of slot indices with push_front (preempted requests go back to the front).
  class Ring {
   public:
    bool empty() const { return size_ == 0; }
    size_t size() const { return size_; }
    uint32_t front() const { return buf_[head_]; }
    void PushBack(uint32_t v);
    void PushFront(uint32_t v);
    void PopFront();

   private:
    void Grow();
    std::vector<uint32_t> buf_;
    size_t head_ = 0, size_ = 0;
  };

  // Parameters in effect, latched at the start of every step.
  struct Effective {
    uint32_t total_blocks = 0;
    uint32_t max_num_seqs = 0;
    double slowdown = 1;
    bool prefix_caching = true;
  };

  Effective EffectiveAt(SimMs t) const;
  double ErrorProbabilityAt(SimMs t) const;
  double FactorAt(FaultKind kind, SimMs t) const;  // product of the active faults' factors
  uint32_t NewSlot();
  void FreeSlot(uint32_t s);
  uint32_t BlocksFor(uint32_t tokens) const {
    return (tokens + options_.params.block_tokens - 1) / options_.params.block_tokens;
  }
  void StartStep(SimMs t);
  void ExpireTimeouts(SimMs t);
  // Preempts the newest running request (recompute).
  void PreemptNewest();
  void Fail(uint32_t s, SimMs t, RequestError error);
  void Complete(uint32_t s, SimMs t);
  void Emit(uint32_t s, SimMs t, RequestError error);
  void AccountRunning(SimMs t);

  InstanceOptions options_;
  uint32_t index_;
  OutcomeSink* sink_;
  std::vector<Fault> faults_;
  std::mt19937_64 rng_;
  std::mt19937_64 quality_rng_;  // its own stream: quality draws change no other draw

  std::vector<Slot> slots_;
  std::vector<uint32_t> free_slots_;
  Ring waiting_;
  std::vector<uint32_t> running_;  // admission order: newest last

  Effective eff_;
  uint32_t used_blocks_ = 0;
  bool busy_ = false;
  SimMs step_end_ms_ = 0;
  SimMs last_change_ms_ = 0;  // for the running-size integral
  double step_ewma_ms_ = 0;   // recent step durations (EWMA, weight 0.2): Expect's pace

  // Per gauge interval.
  uint64_t interval_preemptions_ = 0;
  uint64_t interval_generated_ = 0;
  uint64_t interval_prefilled_ = 0;
  uint64_t interval_prompt_scheduled_ = 0;
  uint64_t interval_prompt_hits_ = 0;

  Totals totals_;
};

}  // namespace inferscope::sim
