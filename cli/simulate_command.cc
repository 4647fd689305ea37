// `inferscope simulate`: a simulated inference fleet (the serving model of sim/) published through
// the public protocol, paced to the wall clock x --speed.

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cli/commands.h"
#include "cli/progress.h"
#include "clients/cpp/publisher.h"
#include "pipeline/address.h"
#include "sim/fleet.h"

namespace inferscope {
namespace {

// Publishes every outcome and gauge the model produces, stamped start + simulated time.
class PublishingSink final : public sim::OutcomeSink {
 public:
  PublishingSink(client::Publisher* pub, uint64_t seed) : pub_(pub), rng_(seed) {}

  void Bind(const sim::Fleet* fleet, const sim::Pacer* pacer) {
    fleet_ = fleet;
    pacer_ = pacer;
    for (size_t i = 0; i < fleet->size(); ++i) {
      const sim::ModelProfile* p = sim::FindModel(fleet->instance(i).options().model);
      prices_.push_back(p != nullptr ? std::pair{p->input_price_per_1k, p->output_price_per_1k}
                                     : std::pair{0.0002, 0.0002});
    }
  }

  // Events before this are the warm-up: computed, not published (nor is anything before Bind).
  void set_publish_from(sim::SimMs t) { publish_from_ms_ = t; }

  void OnRequest(const sim::RequestOutcome& o) override {
    if (pacer_ == nullptr || o.time_ms < publish_from_ms_) return;
    const sim::InstanceOptions& inst = fleet_->instance(o.instance).options();
    client::RequestOutcome r;
    r.instance = inst.name;
    r.model = inst.model;
    r.time_ms = pacer_->EventTimeMs(o.time_ms);
    r.e2e_ms = o.e2e_ms;
    if (o.ttft_ms >= 0) r.ttft_ms = o.ttft_ms;
    if (o.tpot_ms >= 0) r.tpot_ms = o.tpot_ms;
    r.prompt_tokens = o.prompt_tokens;
    r.output_tokens = o.output_tokens;
    r.cached_tokens = o.cached_tokens;
    r.error = sim::ErrorName(o.error);
    if (o.ok()) {
      const auto [in, out] = prices_[o.instance];
      r.cost_usd = (o.prompt_tokens * in + o.output_tokens * out) / 1000;
      r.quality = std::clamp(0.85 + 0.05 * normal_(rng_), 0.0, 1.0);
      ++completed_;
    } else {
      ++failed_;
    }
    pub_->Request(r);
  }

  void OnGauge(const sim::GaugeSample& g) override {
    if (pacer_ == nullptr || g.time_ms < publish_from_ms_) return;
    const sim::InstanceOptions& inst = fleet_->instance(g.instance).options();
    pub_->Gauge(inst.name, inst.model, sim::GaugeName(g.gauge), g.value,
                pacer_->EventTimeMs(g.time_ms));
  }

  uint64_t completed() const { return completed_; }
  uint64_t failed() const { return failed_; }

 private:
  client::Publisher* pub_;
  const sim::Fleet* fleet_ = nullptr;
  const sim::Pacer* pacer_ = nullptr;
  std::vector<std::pair<double, double>> prices_;
  std::mt19937_64 rng_;
  std::normal_distribution<double> normal_{0, 1};
  uint64_t completed_ = 0, failed_ = 0;
  sim::SimMs publish_from_ms_ = 0;
};

}  // namespace

int SimulateCommand(const SimulateArgs& args) {
  if (std::optional<std::string> problem = ZmqEndpointProblem(args.endpoint)) {
    spdlog::error(
        "simulate: --endpoint: {}; the engine's ingest is its zmq_pull source "
        "(default tcp://127.0.0.1:5555)",
        *problem);
    return 2;
  }
  if (!(std::isfinite(args.speed) && args.speed > 0)) {
    spdlog::error("simulate: --speed must be > 0");
    return 2;
  }
  if (!(std::isfinite(args.timeout_s) && args.timeout_s > 0)) {
    spdlog::error("simulate: --timeout must be > 0");
    return 2;
  }
  std::vector<sim::Fault> faults;
  for (const std::string& spec : args.faults) {
    Result<sim::Fault> f = sim::ParseFault(spec);
    if (!f.ok()) {
      spdlog::error("simulate: --fault: {}", f.status().message());
      return 2;
    }
    faults.push_back(std::move(*f));
  }
  // The warm-up: simulated seconds computed before the first published event, so the first panes
  // show a fleet in its steady state. Fault times count from the end of the warm-up.
  const double warmup_s = args.warmup_s >= 0 ? args.warmup_s : (args.trace.empty() ? 60 : 0);
  const double warmup_ms = warmup_s * 1000;
  for (sim::Fault& f : faults) {
    f.start_ms += warmup_ms;
    f.end_ms += warmup_ms;
  }
  // The old latency spike is a slow GPU now.
  if (!args.spike_instance.empty() && args.spike_start_s >= 0) {
    if (!(args.spike_factor > 0)) {
      spdlog::error("simulate: --spike-factor must be > 0");
      return 2;
    }
    sim::Fault f;
    f.kind = sim::FaultKind::kSlowGpu;
    f.instance = args.spike_instance;
    f.start_ms = warmup_ms + args.spike_start_s * 1000;
    f.end_ms = warmup_ms + (args.spike_start_s + args.spike_duration_s) * 1000;
    f.factor = args.spike_factor;
    faults.push_back(std::move(f));
  }
  std::unique_ptr<sim::ArrivalSource> arrivals;
  double trace_span_ms = -1;  // simulated time the trace covers (-1: no trace)
  std::string load;
  if (!args.trace.empty()) {
    Result<std::vector<sim::TraceRecord>> records = sim::ReadAzureTrace(args.trace);
    if (!records.ok()) {
      spdlog::error("simulate: --trace: {}", records.status().message());
      return 2;
    }
    load = "trace " + args.trace + " (" + std::to_string(records->size()) + " requests)";
    if (!records->empty()) {
      trace_span_ms =
          static_cast<double>(records->back().time_us - records->front().time_us) / 1000;
    }
    arrivals = std::make_unique<sim::TraceArrivals>(std::move(*records));
  } else {
    sim::PoissonOptions p;
    p.rate_per_s = args.rate;
    p.wander = args.wander;
    p.prompt_median = args.prompt_median;
    p.output_median = args.output_median;
    p.seed = args.seed;
    if (Status st = p.Validate(); !st.ok()) {
      spdlog::error("simulate: {}", st.message());
      return 2;
    }
    load = fmt::format("Poisson {:.1f} requests/s", args.rate);
    arrivals = std::make_unique<sim::PoissonArrivals>(p);
  }
  std::unique_ptr<sim::Router> router = sim::MakeRouter(args.router, args.seed + 1);
  if (router == nullptr) {
    spdlog::error("simulate: --router: expected round_robin or random, got '{}'", args.router);
    return 2;
  }

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
  PublishingSink sink(&pub, args.seed + 2);
  sim::FleetOptions fleet_options;
  fleet_options.gauge_interval_ms = static_cast<double>(args.gauge_interval_ms);
  fleet_options.duration_ms =
      args.duration_s > 0 ? warmup_ms + args.duration_s * args.speed * 1000 : 0;
  fleet_options.seed = args.seed;
  Result<std::unique_ptr<sim::Fleet>> fleet = sim::Fleet::Create(
      fleet_options, sim::StandardFleet(args.instances, args.models, args.seed, args.timeout_s),
      std::move(faults), std::move(arrivals), std::move(router), &sink);
  if (!fleet.ok()) {
    spdlog::error("simulate: {}", fleet.status().message());
    return 2;
  }
  if (!pub.Connect(&error)) {
    spdlog::error("simulate: cannot connect to {}: {}", args.endpoint, error);
    return 1;
  }
  sink.set_publish_from(warmup_ms);
  (*fleet)->RunUntil(warmup_ms);  // the warm-up, unpublished (the sink is not bound yet)
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  // Where event time starts. At speed 1, now. Faster, event times run ahead of the clock, which
  // the engine refuses beyond its source's max_future_skew (5 min by default); when the simulated
  // span is known (a duration, or a trace) the events are stamped so that the run *ends* at the
  // wall clock's end instead: they start span x (1 - 1 / speed) in the past and catch up with the
  // clock as the run ends (sim/README.md, "Time").
  double span_ms = args.duration_s > 0 ? args.duration_s * args.speed * 1000 : -1;
  if (trace_span_ms >= 0) span_ms = span_ms < 0 ? trace_span_ms : std::min(span_ms, trace_span_ms);
  int64_t start_ms = client::NowMs();
  if (args.speed > 1) {
    if (span_ms >= 0) {
      start_ms -= static_cast<int64_t>(span_ms * (1 - 1 / args.speed));
    } else {
      spdlog::warn(
          "simulate: --speed {} without an end: event times run ahead of the clock; the engine "
          "accepts them only up to its source's max_future_skew (5 min by default)",
          args.speed);
    }
  }
  sim::Pacer pacer(fleet->get(), args.speed, start_ms, warmup_ms);
  sink.Bind(fleet->get(), &pacer);
  spdlog::info("simulate: {} instances x {} models, {}, speed x{}, {:.0f} s warm-up, {} -> {}",
               args.instances, args.models, load, args.speed, warmup_s,
               args.duration_s > 0 ? std::to_string(args.duration_s) + " s" : "until stopped",
               args.endpoint);

  double last_flush_ms = 0;
  Progress progress(!args.no_progress);
  while (true) {
    double elapsed_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    if (progress.Due()) {
      // Time left: to --duration, or to the trace's end in wall time; unknown otherwise.
      double left_s = -1;
      if (args.duration_s > 0) left_s = args.duration_s - elapsed_ms / 1000;
      const double simulated_ms = (*fleet)->now_ms() - warmup_ms;
      if (trace_span_ms >= 0) {
        const double trace_left_s = (trace_span_ms - simulated_ms) / 1000 / args.speed;
        left_s = left_s < 0 ? trace_left_s : std::min(left_s, trace_left_s);
      }
      progress.Show(fmt::format(
          "simulate: {} events sent ({:.0f}/s), {:.0f} s simulated, {}", pub.events_sent(),
          elapsed_ms > 0 ? static_cast<double>(pub.events_sent()) * 1000 / elapsed_ms : 0.0,
          simulated_ms / 1000,
          left_s >= 0 ? fmt::format("{:.0f} s left", std::max(0.0, left_s))
                      : std::string("until stopped")));
    }
    if (args.duration_s > 0 && elapsed_ms >= args.duration_s * 1000) {
      pacer.Advance(args.duration_s * 1000);
      break;
    }
    if (!pacer.Advance(elapsed_ms)) break;  // the trace is over and every request done
    // Keep batches large at low rates, but never hold events back for more than 50 ms.
    if (elapsed_ms - last_flush_ms >= 50) {
      pub.Flush();
      last_flush_ms = elapsed_ms;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  progress.Done();
  pub.Close();
  uint64_t preemptions = 0, timeouts = 0;
  for (size_t i = 0; i < (*fleet)->size(); ++i) {
    preemptions += (*fleet)->instance(i).totals().preemptions;
    timeouts += (*fleet)->instance(i).totals().timeouts;
  }
  spdlog::info(
      "simulate: {:.0f} s simulated after the warm-up; {} requests (warm-up included): {} "
      "published completed, {} failed ({} timeouts), {} "
      "preemptions; sent {} events in {} messages ({} dropped)",
      ((*fleet)->now_ms() - warmup_ms) / 1000, (*fleet)->requests(), sink.completed(),
      sink.failed(), timeouts, preemptions, pub.events_sent(), pub.messages_sent(),
      pub.events_dropped());
  return pub.events_dropped() == 0 ? 0 : 1;
}

}  // namespace inferscope
