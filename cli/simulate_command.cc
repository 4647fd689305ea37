// `inferscope simulate`: a realistic inference fleet published through the public protocol.

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cli/commands.h"
#include "clients/cpp/publisher.h"

namespace inferscope {
namespace {

constexpr const char* kEngines[] = {"vllm", "sglang", "tgi"};

struct ModelProfile {
  const char* name;
  double ttft_median_ms;  // at nominal load
  double tpot_median_ms;
  double input_price_per_1k;   // USD
  double output_price_per_1k;  // USD
};
constexpr ModelProfile kModels[] = {
    {"llama-3.1-8b-instruct", 120, 18, 0.0002, 0.0002},
    {"mistral-7b-instruct", 110, 16, 0.0002, 0.0002},
    {"qwen2.5-14b-instruct", 190, 28, 0.0004, 0.0004},
    {"llama-3.1-70b-instruct", 420, 55, 0.0009, 0.0009},
    {"mixtral-8x7b-instruct", 260, 32, 0.0006, 0.0006},
};

// One (instance, model) backend with its own character: how slow, how error-prone, how well its
// prefix cache works, and a load that wanders.
struct Backend {
  std::string instance;
  std::string model;
  const ModelProfile* profile;
  double slowness;        // multiplies latencies
  double error_rate;      // probability a request fails
  double cache_hit;       // mean fraction of prompt tokens served from the prefix cache
  double load = 0.5;      // 0..1, drives queueing and KV-cache usage
  uint64_t requests = 0;  // since the last gauge sample
  uint64_t output_tokens = 0;
};

class Fleet {
 public:
  explicit Fleet(const SimulateArgs& args) : args_(args), rng_(args.seed) {
    std::uniform_real_distribution<double> u(0, 1);
    for (int i = 0; i < args.instances; ++i) {
      std::string instance = std::string(kEngines[i % 3]) + "-" + std::to_string(i);
      // Every fourth instance is a weaker node: slower and failing more often.
      bool weak = i % 4 == 3;
      for (int m = 0; m < args.models; ++m) {
        const ModelProfile& p = kModels[(i + m) % std::size(kModels)];
        std::string model = args.models > static_cast<int>(std::size(kModels))
                                ? std::string(p.name) + "-" + std::to_string(m)
                                : p.name;
        backends_.push_back(Backend{instance, model, &p, (weak ? 1.8 : 1.0) * (0.9 + 0.2 * u(rng_)),
                                    weak ? 0.03 : 0.005, 0.3 + 0.5 * u(rng_)});
      }
    }
  }

  // Fills `r` with one request outcome on a random backend at event time `now_ms`.
  void NextRequest(int64_t now_ms, double elapsed_s, client::RequestOutcome& r) {
    std::uniform_int_distribution<size_t> pick(0, backends_.size() - 1);
    Backend& b = backends_[pick(rng_)];
    double factor = b.slowness * (1 + 1.5 * b.load * b.load);
    if (InSpike(b, elapsed_s)) factor *= args_.spike_factor;
    double ttft = b.profile->ttft_median_ms * factor * std::exp(0.5 * normal_(rng_));
    if (uniform_(rng_) < 0.02) ttft *= std::pow(1 - uniform_(rng_), -1 / 1.5);  // Pareto tail
    double tpot = b.profile->tpot_median_ms * factor * std::exp(0.25 * normal_(rng_));
    auto prompt =
        static_cast<uint32_t>(std::clamp(600 * std::exp(0.8 * normal_(rng_)), 4.0, 32000.0));
    auto output =
        static_cast<uint32_t>(std::clamp(180 * std::exp(0.7 * normal_(rng_)), 1.0, 8192.0));
    auto cached =
        static_cast<uint32_t>(prompt * std::clamp(b.cache_hit + 0.15 * normal_(rng_), 0.0, 1.0));

    r = client::RequestOutcome{};
    r.instance = b.instance;
    r.model = b.model;
    // Event times lag a little and arrive slightly out of order, as they do from real gateways.
    r.time_ms = now_ms - static_cast<int64_t>(300 * uniform_(rng_));
    r.prompt_tokens = prompt;
    r.cached_tokens = cached;
    if (uniform_(rng_) < b.error_rate * (InSpike(b, elapsed_s) ? 5 : 1)) {
      static constexpr const char* kErrors[] = {"timeout", "server_error", "rate_limited",
                                                "cancelled"};
      r.error = kErrors[static_cast<size_t>(uniform_(rng_) * 4) % 4];
      r.e2e_ms = ttft * 2;
    } else {
      r.ttft_ms = ttft;
      r.tpot_ms = tpot;
      r.output_tokens = output;
      r.e2e_ms = ttft + tpot * output;
      r.cost_usd =
          (prompt * b.profile->input_price_per_1k + output * b.profile->output_price_per_1k) / 1000;
      r.quality = std::clamp(0.85 + 0.05 * normal_(rng_), 0.0, 1.0);
      b.output_tokens += output;
    }
    ++b.requests;
  }

  // Publishes one sample of every gauge of every backend and lets the load wander.
  void PublishGauges(client::Publisher& pub, int64_t now_ms, double interval_s) {
    for (Backend& b : backends_) {
      b.load = std::clamp(b.load + 0.05 * normal_(rng_), 0.05, 0.98);
      double running = std::round(b.load * 64);
      double waiting = std::max(0.0, std::round((b.load - 0.8) * 200 + 2 * normal_(rng_)));
      pub.Gauge(b.instance, b.model, "kv_cache_usage",
                std::clamp(b.load * 0.95 + 0.02 * normal_(rng_), 0.0, 1.0), now_ms);
      pub.Gauge(b.instance, b.model, "num_requests_running", running, now_ms);
      pub.Gauge(b.instance, b.model, "num_requests_waiting", waiting, now_ms);
      pub.Gauge(b.instance, b.model, "gpu_memory_bytes", (40 + 38 * b.load) * 1e9, now_ms);
      pub.Gauge(b.instance, b.model, "tokens_per_s",
                static_cast<double>(b.output_tokens) / interval_s, now_ms);
      b.requests = 0;
      b.output_tokens = 0;
    }
  }

 private:
  bool InSpike(const Backend& b, double elapsed_s) const {
    return !args_.spike_instance.empty() && b.instance == args_.spike_instance &&
           args_.spike_start_s >= 0 && elapsed_s >= args_.spike_start_s &&
           elapsed_s < args_.spike_start_s + args_.spike_duration_s;
  }

  const SimulateArgs& args_;
  std::mt19937_64 rng_;
  std::normal_distribution<double> normal_{0, 1};
  std::uniform_real_distribution<double> uniform_{0, 1};
  std::vector<Backend> backends_;
};

}  // namespace

int SimulateCommand(const SimulateArgs& args) {
  client::PublisherOptions options;
  options.endpoint = args.endpoint;
  options.publisher_id = args.publisher_id;
  options.batch_size = static_cast<size_t>(args.batch_size);
  std::string error;
  if (!args.curve_key.empty() || !args.curve_server_key.empty()) {
    if (!client::LoadCurveClientKeys(args.curve_key, args.curve_server_key, &options.curve,
                                     &error)) {
      spdlog::error("simulate: --curve-key/--curve-server-key: {}", error);
      return 2;
    }
  }
  client::Publisher pub(options);
  if (!pub.Connect(&error)) {
    spdlog::error("simulate: cannot connect to {}: {}", args.endpoint, error);
    return 1;
  }
  Fleet fleet(args);
  spdlog::info("simulate: {} instances x {} models, {:.0f} requests/s, {} -> {}", args.instances,
               args.models, args.rate,
               args.duration_s > 0 ? std::to_string(args.duration_s) + " s" : "until stopped",
               args.endpoint);

  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  uint64_t requests = 0;
  double next_gauge_s = 0;
  double last_flush_s = 0;
  client::RequestOutcome r;
  while (true) {
    double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    if (args.duration_s > 0 && elapsed >= args.duration_s) break;
    int64_t now_ms = client::NowMs();
    if (elapsed >= next_gauge_s) {
      fleet.PublishGauges(pub, now_ms, args.gauge_interval_ms / 1000.0);
      next_gauge_s += args.gauge_interval_ms / 1000.0;
    }
    // Catch up to where the rate says we should be, then sleep a little.
    auto due = static_cast<uint64_t>(elapsed * args.rate);
    if (requests >= due) {
      // Keep batches large at low rates, but never hold events back for more than 50 ms.
      if (elapsed - last_flush_s >= 0.05) {
        pub.Flush();
        last_flush_s = elapsed;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      continue;
    }
    for (uint64_t n = std::min<uint64_t>(due - requests, 10'000); n > 0; --n, ++requests) {
      fleet.NextRequest(now_ms, elapsed, r);
      pub.Request(r);
    }
  }
  pub.Close();
  spdlog::info("simulate: sent {} events in {} messages ({} dropped)", pub.events_sent(),
               pub.messages_sent(), pub.events_dropped());
  return pub.events_dropped() == 0 ? 0 : 1;
}

}  // namespace inferscope
