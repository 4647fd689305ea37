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
// Usage: alert_latency [--pane MS] [--ooo MS] [--idle-timeout MS] [--probes N] [--groups G]
//                      [--light-rate R] [--saturation-s S]

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
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
    else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
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
