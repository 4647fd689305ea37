// End-to-end alert latency: event publish → alert received by a ZeroMQ subscriber, with the engine
// in this process (zmq source → window_aggregate → threshold_rules → zmq_alerts + RocksDB sinks).
//
// A background publisher sends request outcomes (event time = now) over `--groups` (instance,
// model) groups at a controlled rate; a probe publisher sends, now and then, one request with a
// TTFT far above the rule's threshold on a fresh instance `probe-<k>`; a SUB socket on `alerts.`
// records when each probe's alert arrives. Phases, all in one run:
//
//   saturation  the background publisher as fast as it can for a few seconds: the engine's
//               maximum throughput (events/s it processed) on this machine, now
//   idle        no background load: the probe's pane closes through the idle timeout
//   light       background at `--light-rate` events/s (default 1,000)
//   half        background at 50 % of the measured maximum
//
// Two latencies per probe: from the probe's publish, and from the moment the pane carrying it is
// complete — its end plus the out-of-orderness allowance, the earliest wall-clock time the
// watermark can pass it when event time tracks wall time. The first is dominated by where in the
// pane the evidence falls (up to one pane); the second is the engine's own delay.
//
// Before those, in virtual time (a manual clock; no wall-clock measurement), the spike and clean
// scenarios of issue 15 item 3 on the real window_aggregate and threshold_rules operators: when a
// threshold rule on p95 TTFT fires after a latency spike starts, for the exact per-second
// evaluation of the raw samples (the reference), today's evaluation of the closed pane, and the
// early evaluation of the open pane (early_slice + `early: true`), for `for: 0s` and `for: 30s`;
// and how many alerts each raises on a clean fleet (false alerts). See RunScenarios.
//
// Usage: alert_latency [--pane MS] [--ooo MS] [--idle-timeout MS] [--probes N] [--groups G]
//                      [--light-rate R] [--saturation-s S] [--trials N] [--clean-minutes M]
//                      [--scenarios-only 1] [--seed S]

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <msgpack.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "cli/builtins.h"
#include "cli/engine.h"
#include "clients/cpp/publisher.h"
#include "operators/anomaly_detect.h"
#include "operators/threshold_rules.h"
#include "operators/window_aggregate.h"
#include "pipeline/clock.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "pipeline/topology.h"

namespace inferscope {
namespace {

struct Args {
  int64_t pane_ms = 200;
  int64_t ooo_ms = 20;
  int64_t idle_timeout_ms = 100;
  int probes = 60;
  int groups = 200;
  double light_rate = 1000;
  double saturation_s = 4;
  // Virtual-time scenarios.
  int trials = 40;            // spike trials per `for` setting
  double clean_minutes = 60;  // clean fleet duration (virtual)
  bool scenarios_only = false;
  int min_count = 20;  // the rule's min_count in the spike and clean rows (kMinCount)
  uint64_t seed = 1;
};

int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Topology(const Args& a, const std::string& state) {
  char buf[2048];
  std::snprintf(buf, sizeof(buf), R"(name: alert-latency
state: {path: %s}
engine: {timer_interval: 100ms}
sources:
  - name: ingest
    type: zmq
    options: {endpoint: "tcp://127.0.0.1:*", batch_events: 1024}
operators:
  - name: windows
    type: window_aggregate
    inputs: [ingest]
    options: {pane: %ldms, out_of_orderness: %ldms, idle_timeout: %ldms}
  - name: rules
    type: threshold_rules
    inputs: [windows]
    options:
      rules:
        - name: probe_ttft
          metric: ttft_ms
          stat: max
          instance: "probe-*"
          levels: {warning: 1000, critical: 3000}
sinks:
  - name: state
    type: rocksdb_state
    inputs: [windows]
  - name: alert_store
    type: rocksdb_alerts
    inputs: [rules]
  - name: alerts
    type: zmq_alerts
    inputs: [rules]
    options: {endpoint: "tcp://127.0.0.1:*"}
)",
                state.c_str(), static_cast<long>(a.pane_ms), static_cast<long>(a.ooo_ms),
                static_cast<long>(a.idle_timeout_ms));
  return buf;
}

// Background load at `rate` events/s (0: none; < 0: as fast as possible), event time = now,
// flushed every millisecond so event time never lags wall time by more than that.
class Load {
 public:
  Load(const std::string& endpoint, int groups) : endpoint_(endpoint) {
    for (int g = 0; g < groups; ++g) {
      // Appending (not "load-" + ...) avoids GCC 12's false -Wrestrict warning.
      std::string instance("load-");
      instance.append(std::to_string(g / 4));
      instances_.push_back(std::move(instance));
      std::string model("m");
      model.append(std::to_string(g % 4));
      models_.push_back(std::move(model));
    }
  }
  ~Load() { Stop(); }

  void Start(double rate) {
    Stop();
    stop_ = false;
    thread_ = std::thread([this, rate] { Run(rate); });
  }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  uint64_t sent() const { return sent_.load(); }

 private:
  void Run(double rate) {
    client::PublisherOptions o;
    o.endpoint = endpoint_;
    o.publisher_id = "load-" + std::to_string(++generation_);
    o.batch_size = 1024;
    o.sndhwm = 100;
    client::Publisher pub(o);
    if (rate == 0 || !pub.Connect()) return;
    std::mt19937_64 rng(1);
    std::lognormal_distribution<double> ttft(std::log(150.0), 0.5);
    const auto t0 = std::chrono::steady_clock::now();
    uint64_t sent = 0;
    size_t g = 0;
    while (!stop_) {
      const double elapsed =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      uint64_t due = rate < 0 ? sent + 1024 : static_cast<uint64_t>(elapsed * rate);
      const int64_t now_ms = client::NowMs();
      for (; sent < due && !stop_; ++sent) {
        client::RequestOutcome r;
        r.instance = instances_[g];
        r.model = models_[g];
        g = g + 1 == instances_.size() ? 0 : g + 1;
        r.ttft_ms = ttft(rng);
        r.e2e_ms = *r.ttft_ms * 4;
        r.time_ms = now_ms;
        pub.Request(r);
      }
      pub.Flush();
      sent_.store(sent);
      if (rate > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    pub.Close();
  }

  std::string endpoint_;
  std::vector<std::string> instances_, models_;
  std::thread thread_;
  std::atomic<bool> stop_{true};
  std::atomic<uint64_t> sent_{0};
  int generation_ = 0;
};

// ---- Virtual-time scenarios (issue 15 item 3)
// ----------------------------------------------------
//
// A fleet of kInstances instances of one model, each sending kRate requests/s (event times evenly
// spaced with jitter) with a lognormal TTFT (median 150 ms, sigma 0.5: clean p95 ~340 ms), each
// instance its own publisher flushing a batch every 100 ms that arrives 0-50 ms later (virtual
// time; the manual clock is set to each batch's arrival). The rule: p95 ttft_ms > 1000 ms
// (critical), min_count 20, on 10 s panes with 2 s out-of-orderness (the default topology's).
// Spike: from a random moment the TTFT of one instance is multiplied by a factor ramping linearly
// from 1 to 6 over 10 s, then held (a queue building up). Latency is from the spike's start to
//   exact   the first whole second t (event time) at which the p95 of the raw samples of
//           [t - 10 s, t) has been above the threshold at every second since t - `for` (known at t)
//   today   the arrival of the batch after which the rule (closed panes only) fired
//   early   the same with early_slice 1s and `early: true`
// in virtual time. Clean: the same fleet without a spike; every alert is false.

constexpr int kInstances = 8;
constexpr double kRate = 20;  // requests/s per instance
constexpr int64_t kPaneMs = 10'000;
constexpr int64_t kFlushMs = 100;
constexpr double kThreshold = 1000;
constexpr int kMinCount = 20;

struct Sample {
  int64_t time_ms;
  double ttft;
};

// One virtual-time pipeline: window_aggregate → threshold_rules and anomaly_detect, all real.
// The anomaly detector has the default topology's options (p95 ttft_ms, min_count, warning,
// keep_firing_for 30s, default detector), and `for` and `early` like the rule.
class VirtualPipeline {
 public:
  VirtualPipeline(Interner& interner, bool early, int64_t for_ms, int min_count = kMinCount)
      : interner_(interner) {
    char anomalies[256];
    std::snprintf(anomalies, sizeof(anomalies),
                  "{metrics: [ttft_ms], stats: [p95], min_count: %d, min_severity: warning, "
                  "for: %lldms, keep_firing_for: 30s, early: %s}",
                  min_count, static_cast<long long>(for_ms), early ? "true" : "false");
    auto d =
        AnomalyDetectOperator::Create(ConfigNode("<bench>", YAML::Load(anomalies), "anomalies"));
    if (!d.ok()) {
      std::fprintf(stderr, "bench topology: %s\n", d.status().ToString().c_str());
      std::exit(2);
    }
    detect_ = std::move(d).value();
    char window[256];
    std::snprintf(window, sizeof(window),
                  "{pane: %lldms, out_of_orderness: 2s, idle_timeout: 5s%s}",
                  static_cast<long long>(kPaneMs), early ? ", early_slice: 1s" : "");
    char rules[512];
    std::snprintf(rules, sizeof(rules), R"(
rules:
  - name: ttft_p95
    metric: ttft_ms
    stat: p95
    levels: {critical: %g}
    min_count: %d
    for: %lldms
    early: %s
)",
                  kThreshold, min_count, static_cast<long long>(for_ms), early ? "true" : "false");
    auto w = WindowAggregateOperator::Create(ConfigNode("<bench>", YAML::Load(window), "window"));
    auto r = ThresholdRulesOperator::Create(ConfigNode("<bench>", YAML::Load(rules), "rules"));
    if (!w.ok() || !r.ok()) {
      std::fprintf(stderr, "bench topology: %s %s\n", w.status().ToString().c_str(),
                   r.status().ToString().c_str());
      std::exit(2);
    }
    window_ = std::move(w).value();
    rules_ = std::move(r).value();
    StageContext ctx;
    ctx.interner = &interner_;
    ctx.metrics = &metrics_;
    ctx.clock = &clock_;
    ctx.name = "windows";
    (void)window_->Open(ctx);
    ctx.name = "rules";
    (void)rules_->Open(ctx);
    ctx.name = "anomalies";
    (void)detect_->Open(ctx);
  }

  // Processes one batch arriving at `arrival_ms`; returns the alerts it caused.
  const std::vector<Alert>& Process(const EventBatch& batch, int64_t arrival_ms) {
    clock_.Set(arrival_ms);
    windows_.Clear();
    out_.Clear();
    (void)window_->Process(batch, windows_);
    (void)rules_->ProcessResults(windows_, out_);
    alerts_.assign(out_.Get<kind::Alert>().begin(), out_.Get<kind::Alert>().end());
    out_.Clear();
    (void)detect_->ProcessResults(windows_, out_);
    anomaly_alerts_.assign(out_.Get<kind::Alert>().begin(), out_.Get<kind::Alert>().end());
    return alerts_;
  }
  // The anomaly detector's alerts of the latest Process.
  const std::vector<Alert>& anomaly_alerts() const { return anomaly_alerts_; }
  uint64_t early_points() const {
    return metrics_.CounterValue("inferscope_detector_early_points_total",
                                 {{"stage", "anomalies"}});
  }
  const AlertLifecycle& lifecycle() const { return rules_->lifecycle(); }
  uint64_t early_evaluations() const {
    return metrics_.CounterValue("inferscope_rule_early_evaluations_total", {{"stage", "rules"}});
  }

 private:
  Interner& interner_;
  MetricsRegistry metrics_;
  ManualClock clock_{0};
  std::unique_ptr<WindowAggregateOperator> window_;
  std::unique_ptr<ThresholdRulesOperator> rules_;
  std::unique_ptr<AnomalyDetectOperator> detect_;
  OutputBatch windows_, out_;
  std::vector<Alert> alerts_, anomaly_alerts_;
};

struct Arrival {
  int64_t arrival_ms;
  int instance;
  std::vector<Sample> samples;
};

// The fleet's batches over [0, duration) in arrival order; instance 0's TTFT is spiked from
// `spike_ms` (INT64_MAX: never).
// `tail`: the fraction of requests (any instance) whose TTFT is 8x (a heavy tail; 0 by default).
std::vector<Arrival> FleetBatches(std::mt19937_64& rng, int64_t t0, int64_t duration_ms,
                                  int64_t spike_ms, double factor, int64_t ramp_ms,
                                  double tail = 0) {
  std::lognormal_distribution<double> ttft(std::log(150.0), 0.5);
  std::uniform_real_distribution<double> unit(0, 1);
  std::uniform_int_distribution<int64_t> delay(0, 50);
  std::vector<Arrival> out;
  const double gap_ms = 1000.0 / kRate;
  for (int i = 0; i < kInstances; ++i) {
    double next = unit(rng) * gap_ms;
    for (int64_t flush = kFlushMs; flush <= duration_ms; flush += kFlushMs) {
      Arrival a{t0 + flush + delay(rng), i, {}};
      for (; next < static_cast<double>(flush); next += gap_ms * (0.5 + unit(rng))) {
        const auto t = static_cast<int64_t>(next);
        double v = ttft(rng);
        if (tail > 0 && unit(rng) < tail) v *= 8;
        if (i == 0 && t >= spike_ms) {
          const double ramp =
              ramp_ms > 0
                  ? std::min(1.0, static_cast<double>(t - spike_ms) / static_cast<double>(ramp_ms))
                  : 1.0;
          v *= 1 + (factor - 1) * ramp;
        }
        a.samples.push_back({t0 + t, v});
      }
      out.push_back(std::move(a));
    }
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const Arrival& x, const Arrival& y) { return x.arrival_ms < y.arrival_ms; });
  return out;
}

// The exact per-second reference for instance 0: the first whole second (event time, offset from
// t0) at which the p95 over [t - pane, t) has exceeded the threshold at every second since
// t - for_ms; -1 when never.
int64_t ExactFiring(const std::vector<Arrival>& batches, int64_t t0, int64_t duration_ms,
                    int64_t for_ms, int min_count) {
  std::vector<Sample> s;
  for (const Arrival& a : batches) {
    if (a.instance == 0) s.insert(s.end(), a.samples.begin(), a.samples.end());
  }
  std::sort(s.begin(), s.end(),
            [](const Sample& x, const Sample& y) { return x.time_ms < y.time_ms; });
  int64_t active_since = -1;
  std::vector<double> window;
  for (int64_t t = 1000; t <= duration_ms; t += 1000) {
    window.clear();
    for (const Sample& x : s) {
      if (x.time_ms >= t0 + t - kPaneMs && x.time_ms < t0 + t) window.push_back(x.ttft);
    }
    bool active = false;
    if (static_cast<int>(window.size()) >= min_count) {
      std::sort(window.begin(), window.end());
      const double rank = 0.95 * static_cast<double>(window.size() - 1);
      active = window[static_cast<size_t>(std::ceil(rank))] > kThreshold;
    }
    if (!active) {
      active_since = -1;
      continue;
    }
    if (active_since < 0) active_since = t;
    if (t - active_since >= for_ms) return t;
  }
  return -1;
}

struct Outcome {
  int64_t fired_ms = -1;  // arrival (virtual) of the first firing, offset from t0; -1 never
  int firings = 0, early_firings = 0, retractions = 0;
  // Counts the alert (instance_filter < 0: any instance); firings before `from_ms` (offset from
  // t0) and firings on other instances are counted in `other_firings`, not as the detection.
  void Count(const Alert& alert, int64_t arrival_ms, int64_t t0, int instance_filter,
             int64_t from_ms) {
    if (instance_filter >= 0 && alert.instance != "vllm-" + std::to_string(instance_filter)) {
      other_firings += alert.state == AlertState::kFiring ? 1 : 0;
      return;
    }
    if (alert.state == AlertState::kFiring) {
      if (arrival_ms - t0 < from_ms) {
        ++other_firings;
        return;
      }
      ++firings;
      early_firings += alert.early ? 1 : 0;
      if (fired_ms < 0) fired_ms = arrival_ms - t0;
    } else if (alert.state == AlertState::kRetracted) {
      ++retractions;
    }
  }
  int other_firings = 0;
};

// Drives the fleet's batches through `p`; the anomaly detector's alerts go to `anomalies` (if
// given), counted from `anomaly_from_ms` on.
Outcome Drive(VirtualPipeline& p, Interner& interner, const std::vector<Arrival>& batches,
              int64_t t0, int instance_filter, Outcome* anomalies = nullptr,
              int64_t anomaly_from_ms = 0) {
  Outcome o;
  EventBatch batch;
  std::vector<StringId> publishers, instances;
  for (int i = 0; i < kInstances; ++i) {
    publishers.push_back(interner.Intern("gw-" + std::to_string(i)));
    instances.push_back(interner.Intern("vllm-" + std::to_string(i)));
  }
  const StringId model = interner.Intern("llama");
  for (const Arrival& a : batches) {
    batch.events.clear();
    batch.publisher = publishers[a.instance];
    for (const Sample& x : a.samples) {
      Event e;
      e.kind = EventKind::kRequest;
      e.time_ms = x.time_ms;
      e.instance = instances[a.instance];
      e.model = model;
      e.publisher = batch.publisher;
      e.present = kHasTtft;
      e.ttft_ms = x.ttft;
      batch.events.push_back(e);
    }
    for (const Alert& alert : p.Process(batch, a.arrival_ms)) {
      if (instance_filter >= 0 && alert.instance != "vllm-" + std::to_string(instance_filter))
        continue;
      o.Count(alert, a.arrival_ms, t0, instance_filter, 0);
    }
    if (anomalies != nullptr) {
      for (const Alert& alert : p.anomaly_alerts())
        anomalies->Count(alert, a.arrival_ms, t0, instance_filter, anomaly_from_ms);
    }
  }
  return o;
}

struct Stats {
  std::vector<double> v;
  void Add(double x) { v.push_back(x); }
  double Q(double q) const {
    if (v.empty()) return 0;
    std::vector<double> sorted = v;
    std::sort(sorted.begin(), sorted.end());
    const size_t i = static_cast<size_t>(q * static_cast<double>(sorted.size() - 1) + 0.5);
    return sorted[std::min(i, sorted.size() - 1)];
  }
};

void RunScenarios(const Args& args) {
  std::printf(
      "Virtual-time scenarios (real window_aggregate + threshold_rules, manual clock): %d "
      "instances x %.0f req/s, lognormal TTFT (median 150 ms), rule p95 ttft_ms > %.0f ms, "
      "min_count %d, pane 10 s, out_of_orderness 2 s, early_slice 1 s; spike: one instance's TTFT "
      "x1 -> x6 over 10 s, then held; %d trials per row, seed %llu\n\n",
      kInstances, kRate, kThreshold, args.min_count, args.trials,
      static_cast<unsigned long long>(args.seed));
  std::printf(
      "spike: seconds from the spike's start; exact = exact per-second evaluation of the raw "
      "samples, today = closed panes, early = open panes (early_slice + early: true)\n");
  std::printf("%-5s %-24s %-24s %-24s %6s %s\n", "for", "exact fired p50/p90/max",
              "today - exact p50/p90/max", "early - exact p50/p90/max", "missed",
              "early firings retracted");
  const int64_t t0 = 1'700'000'000'000;  // aligned to the pane
  for (int64_t for_ms : {int64_t{0}, int64_t{30'000}}) {
    Stats exact, today_d, early_d;
    int missed = 0, retractions = 0, early_fired = 0, over = 0;
    std::mt19937_64 rng(args.seed * 7919 + static_cast<uint64_t>(for_ms));
    for (int trial = 0; trial < args.trials; ++trial) {
      // Warm-up of 20 s, then the spike at a uniformly random point of a pane.
      std::uniform_int_distribution<int64_t> offset(0, kPaneMs - 1);
      const int64_t spike = 20'000 + offset(rng);
      const int64_t duration = spike + 10'000 + for_ms + 30'000;
      const std::vector<Arrival> shifted = FleetBatches(rng, t0, duration, spike, 6, 10'000);
      const int64_t ref = ExactFiring(shifted, t0, duration, for_ms, args.min_count);
      Interner interner;
      VirtualPipeline today(interner, false, for_ms, args.min_count),
          early(interner, true, for_ms, args.min_count);
      const Outcome a = Drive(today, interner, shifted, t0, 0);
      const Outcome b = Drive(early, interner, shifted, t0, 0);
      if (ref < 0 || a.fired_ms < 0 || b.fired_ms < 0) {
        ++missed;
        continue;
      }
      exact.Add(static_cast<double>(ref - spike) / 1000);
      today_d.Add(static_cast<double>(a.fired_ms - ref) / 1000);
      early_d.Add(static_cast<double>(b.fired_ms - ref) / 1000);
      over += b.fired_ms - ref > 1000 ? 1 : 0;
      retractions += b.retractions;
      early_fired += b.early_firings;
    }
    char label[32];
    std::snprintf(label, sizeof(label), "%llds", static_cast<long long>(for_ms / 1000));
    std::printf(
        "%-5s %6.2f / %6.2f / %6.2f %6.2f / %6.2f / %6.2f %6.2f / %6.2f / %6.2f %6d %d of %d; "
        "early "
        "> exact + 1 s in %d of %d\n",
        label, exact.Q(0.5), exact.Q(0.9), exact.Q(1.0), today_d.Q(0.5), today_d.Q(0.9),
        today_d.Q(1.0), early_d.Q(0.5), early_d.Q(0.9), early_d.Q(1.0), missed, retractions,
        early_fired, over, static_cast<int>(early_d.v.size()));
  }
  // The anomaly detector on the same spike. It needs 30 closed panes of warm-up (the default
  // detector's warmup_points), so the spike starts after 400 s; latency from the spike's start to
  // the first firing on the spiked instance, closed panes (today) vs early.
  std::printf(
      "\nanomaly_detect (p95 ttft_ms, default detector, min_count %d, min_severity warning, "
      "keep_firing_for 30s): seconds from the spike's start (after 400 s of warm-up)\n",
      args.min_count);
  std::printf("%-24s %-24s %-24s %6s %s\n", "today fired p50/p90/max", "early fired p50/p90/max",
              "early - today p50/p90/max", "missed", "early firings retracted; other firings");
  {
    Stats today_f, early_f, gain;
    int missed = 0, retractions = 0, early_fired = 0, other_today = 0, other_early = 0;
    std::mt19937_64 rng(args.seed * 6151);
    for (int trial = 0; trial < args.trials; ++trial) {
      std::uniform_int_distribution<int64_t> offset(0, kPaneMs - 1);
      const int64_t spike = 400'000 + offset(rng);
      const int64_t duration = spike + 10'000 + 30'000;
      const std::vector<Arrival> shifted = FleetBatches(rng, t0, duration, spike, 6, 10'000);
      Interner interner;
      VirtualPipeline today(interner, false, 0, args.min_count),
          early(interner, true, 0, args.min_count);
      Outcome a, b;
      Drive(today, interner, shifted, t0, 0, &a, spike);
      Drive(early, interner, shifted, t0, 0, &b, spike);
      other_today += a.other_firings;
      other_early += b.other_firings;
      if (a.fired_ms < 0 || b.fired_ms < 0) {
        ++missed;
        continue;
      }
      today_f.Add(static_cast<double>(a.fired_ms - spike) / 1000);
      early_f.Add(static_cast<double>(b.fired_ms - spike) / 1000);
      gain.Add(static_cast<double>(b.fired_ms - a.fired_ms) / 1000);
      retractions += b.retractions;
      early_fired += b.early_firings;
    }
    std::printf(
        "%6.2f / %6.2f / %6.2f %6.2f / %6.2f / %6.2f %6.2f / %6.2f / %6.2f %6d %d of %d; "
        "today %d, early %d (other instances, or before the spike)\n",
        today_f.Q(0.5), today_f.Q(0.9), today_f.Q(1.0), early_f.Q(0.5), early_f.Q(0.9),
        early_f.Q(1.0), gain.Q(0.5), gain.Q(0.9), gain.Q(1.0), missed, retractions, early_fired,
        other_today, other_early);
  }
  // Clean fleet: every alert is false.
  std::printf("\nclean fleet, %.0f min (virtual), %d instances: false alerts\n", args.clean_minutes,
              kInstances);
  for (int64_t for_ms : {int64_t{0}, int64_t{30'000}}) {
    std::mt19937_64 rng(args.seed * 104729 + static_cast<uint64_t>(for_ms));
    const auto duration = static_cast<int64_t>(args.clean_minutes * 60'000);
    std::vector<Arrival> batches = FleetBatches(rng, t0, duration, INT64_MAX, 1, 0);
    Interner interner;
    VirtualPipeline today(interner, false, for_ms, args.min_count),
        early(interner, true, for_ms, args.min_count);
    Outcome da, db;
    const Outcome a = Drive(today, interner, batches, t0, -1, &da);
    const Outcome b = Drive(early, interner, batches, t0, -1, &db);
    std::printf(
        "  for %2llds: today %d firings; early %d firings (%d of them early), %d retractions, "
        "%llu early evaluations judged\n",
        static_cast<long long>(for_ms / 1000), a.firings, b.firings, b.early_firings, b.retractions,
        static_cast<unsigned long long>(early.early_evaluations()));
    std::printf(
        "         anomaly_detect: today %d firings; early %d firings (%d of them early), %d "
        "retractions, %llu early points scored\n",
        da.firings, db.firings, db.early_firings, db.retractions,
        static_cast<unsigned long long>(early.early_points()));
  }
  // A clean fleet with a heavy tail (1 % of requests 8x slower): the open pane's first seconds
  // are thin samples, which is what min_count guards.
  std::printf("clean fleet with a heavy tail (1 %% of requests 8x), %.0f min, for 0s:\n",
              args.clean_minutes);
  for (int min_count : {20, 60, 120}) {
    std::mt19937_64 rng(args.seed * 15485863);
    const auto duration = static_cast<int64_t>(args.clean_minutes * 60'000);
    std::vector<Arrival> batches = FleetBatches(rng, t0, duration, INT64_MAX, 1, 0, 0.01);
    Interner interner;
    VirtualPipeline today(interner, false, 0, min_count), early(interner, true, 0, min_count);
    Outcome da, db;
    const Outcome a = Drive(today, interner, batches, t0, -1, &da);
    const Outcome b = Drive(early, interner, batches, t0, -1, &db);
    std::printf(
        "  min_count %3d: today %d firings; early %d firings (%d of them early), %d retractions, "
        "%llu early evaluations judged\n",
        min_count, a.firings, b.firings, b.early_firings, b.retractions,
        static_cast<unsigned long long>(early.early_evaluations()));
    std::printf(
        "         anomaly_detect: today %d firings; early %d firings (%d of them early), %d "
        "retractions, %llu early points scored\n",
        da.firings, db.firings, db.early_firings, db.retractions,
        static_cast<unsigned long long>(early.early_points()));
  }
  std::printf("\n");
}

struct Probe {
  int64_t published_us = 0;
  int64_t complete_us = 0;  // pane end + out_of_orderness, as wall time
  int64_t received_us = 0;
};

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

struct PhaseResult {
  std::string name;
  double rate = 0;
  int received = 0, sent = 0;
  double pub_p50 = 0, pub_p99 = 0, done_p50 = 0, done_p99 = 0, done_max = 0;
};

int Main(int argc, char** argv) {
  Args args;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    double v = std::stod(argv[i + 1]);
    if (flag == "--pane")
      args.pane_ms = static_cast<int64_t>(v);
    else if (flag == "--ooo")
      args.ooo_ms = static_cast<int64_t>(v);
    else if (flag == "--idle-timeout")
      args.idle_timeout_ms = static_cast<int64_t>(v);
    else if (flag == "--probes")
      args.probes = static_cast<int>(v);
    else if (flag == "--groups")
      args.groups = static_cast<int>(v);
    else if (flag == "--light-rate")
      args.light_rate = v;
    else if (flag == "--saturation-s")
      args.saturation_s = v;
    else if (flag == "--trials")
      args.trials = static_cast<int>(v);
    else if (flag == "--clean-minutes")
      args.clean_minutes = v;
    else if (flag == "--scenarios-only")
      args.scenarios_only = v != 0;
    else if (flag == "--min-count")
      args.min_count = static_cast<int>(v);
    else if (flag == "--seed")
      args.seed = static_cast<uint64_t>(v);
    else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  RunScenarios(args);
  if (args.scenarios_only) return 0;
  const std::string state = (std::filesystem::temp_directory_path() /
                             ("inferscope-alert-bench-" + std::to_string(getpid())))
                                .string();
  std::filesystem::remove_all(state);
  Result<TopologySpec> spec = ParseTopology(Topology(args, state), "<alert_latency>");
  if (!spec.ok()) {
    std::fprintf(stderr, "%s\n", spec.status().ToString().c_str());
    return 2;
  }
  Registry registry;
  RegisterBuiltins(registry);
  Result<std::unique_ptr<Engine>> built = Engine::Build(*spec, registry);
  if (!built.ok()) {
    std::fprintf(stderr, "%s\n", built.status().ToString().c_str());
    return 2;
  }
  Engine& engine = **built;
  if (Status st = engine.Start(); !st.ok()) {
    std::fprintf(stderr, "%s\n", st.ToString().c_str());
    return 2;
  }
  const std::string ingest = engine.Endpoint("ingest");

  // The subscriber: probe index → receive time.
  std::mutex mu;
  std::map<int, int64_t> received;
  std::atomic<bool> stop_sub{false};
  zmq::context_t zctx;
  std::thread subscriber([&] {
    zmq::socket_t sub(zctx, zmq::socket_type::sub);
    sub.set(zmq::sockopt::subscribe, "alerts.");
    sub.set(zmq::sockopt::rcvtimeo, 50);
    sub.connect(engine.Endpoint("alerts"));
    while (!stop_sub) {
      std::vector<zmq::message_t> frames;
      if (!zmq::recv_multipart(sub, std::back_inserter(frames)) || frames.size() != 2) continue;
      const int64_t now = NowUs();
      msgpack::object_handle oh = msgpack::unpack(frames[1].data<char>(), frames[1].size());
      auto m = oh.get().as<std::map<std::string, msgpack::object>>();
      if (m.at("state").as<std::string>() != "firing") continue;
      std::string instance = m.at("instance").as<std::string>();
      if (instance.rfind("probe-", 0) != 0) continue;
      std::lock_guard lock(mu);
      received.emplace(std::stoi(instance.substr(6)), now);
    }
  });

  client::PublisherOptions po;
  po.endpoint = ingest;
  po.publisher_id = "probe";
  client::Publisher probe_pub(po);
  Load load(ingest, args.groups);
  if (!probe_pub.Connect()) {
    std::fprintf(stderr, "probe publisher cannot connect\n");
    return 2;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // let the SUB connect (bench only)

  // Saturation: the engine's maximum throughput on this machine, now.
  auto processed = [&] { return engine.metrics().CounterValue("inferscope_window_events_total"); };
  load.Start(-1);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // warm up
  uint64_t e0 = processed();
  auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(args.saturation_s));
  const double max_rate =
      static_cast<double>(processed() - e0) /
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  load.Stop();
  // Let the queues drain before measuring latency.
  for (uint64_t last = 0; processed() != last;) {
    last = processed();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  std::printf(
      "engine: pane %ldms, out_of_orderness %ldms, idle_timeout %ldms, timer 100ms; %d load groups "
      "(%d series)\n",
      static_cast<long>(args.pane_ms), static_cast<long>(args.ooo_ms),
      static_cast<long>(args.idle_timeout_ms), args.groups, args.groups * 2);
  std::printf(
      "saturation: %.0f events/s processed (maximum throughput, publisher in this process)\n\n",
      max_rate);

  int next_probe = 0;
  std::mt19937_64 rng(3);
  std::vector<PhaseResult> results;
  for (auto [name, rate] : {std::pair<const char*, double>{"idle (no load)", 0},
                            {"light", args.light_rate},
                            {"50% of max", max_rate * 0.5}}) {
    load.Start(rate);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    std::vector<std::pair<int, Probe>> probes;
    for (int i = 0; i < args.probes; ++i) {
      // A random position inside a pane, then one probe event. Meanwhile the probe publisher keeps
      // publishing a tick every 2 ms, as a live gateway does: watermarks are per publisher, and
      // one that fell silent after its probe would hold the watermark back for idle_timeout.
      std::uniform_int_distribution<int64_t> offset(0, args.pane_ms - 1);
      const auto wake =
          std::chrono::steady_clock::now() + std::chrono::milliseconds(args.pane_ms + offset(rng));
      while (std::chrono::steady_clock::now() < wake) {
        probe_pub.Gauge("tick", "m", "tick", 1, NowUs() / 1000);
        probe_pub.Flush();
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
      Probe p;
      const int index = next_probe++;
      const std::string instance = "probe-" + std::to_string(index);
      client::RequestOutcome r;
      r.instance = instance;
      r.model = "m";
      r.ttft_ms = 5000;
      r.e2e_ms = 6000;
      p.published_us = NowUs();
      r.time_ms = p.published_us / 1000;
      const int64_t pane_end_ms = (r.time_ms / args.pane_ms + 1) * args.pane_ms;
      p.complete_us = (pane_end_ms + args.ooo_ms) * 1000;
      probe_pub.Request(r);
      probe_pub.Flush();
      probes.emplace_back(index, p);
    }
    // Wait for the stragglers (bounded), ticking on.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
      {
        std::lock_guard lock(mu);
        if (received.count(probes.back().first)) break;
      }
      probe_pub.Gauge("tick", "m", "tick", 1, NowUs() / 1000);
      probe_pub.Flush();
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    load.Stop();
    PhaseResult res;
    res.name = name;
    res.rate = rate;
    res.sent = static_cast<int>(probes.size());
    std::vector<double> from_pub, from_done;
    {
      std::lock_guard lock(mu);
      for (auto& [index, p] : probes) {
        auto it = received.find(index);
        if (it == received.end()) continue;
        from_pub.push_back(static_cast<double>(it->second - p.published_us) / 1000.0);
        from_done.push_back(static_cast<double>(it->second - p.complete_us) / 1000.0);
      }
    }
    res.received = static_cast<int>(from_pub.size());
    res.pub_p50 = Percentile(from_pub, 0.5);
    res.pub_p99 = Percentile(from_pub, 0.99);
    res.done_p50 = Percentile(from_done, 0.5);
    res.done_p99 = Percentile(from_done, 0.99);
    res.done_max = Percentile(from_done, 1.0);
    results.push_back(res);
  }

  std::printf("%-16s %12s %8s %22s %34s\n", "phase", "load ev/s", "alerts",
              "publish->alert p50/p99", "pane complete->alert p50/p99/max");
  for (const PhaseResult& r : results) {
    std::printf("%-16s %12.0f %4d/%-4d %10.1f / %6.1f ms %14.1f / %6.1f / %6.1f ms\n",
                r.name.c_str(), r.rate, r.received, r.sent, r.pub_p50, r.pub_p99, r.done_p50,
                r.done_p99, r.done_max);
  }
  stop_sub = true;
  subscriber.join();
  probe_pub.Close();
  engine.Stop();
  built->reset();
  std::filesystem::remove_all(state);
  return 0;
}

}  // namespace
}  // namespace inferscope

int main(int argc, char** argv) { return inferscope::Main(argc, argv); }
