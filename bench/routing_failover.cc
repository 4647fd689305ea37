// Routing failover latency: a backend's first failed request reaching the engine → a
// `routing.<model>.` update that moves traffic off it (its weight ≤ the probe fraction), through
// the default topology in this process (zmq source → routing_learn → zmq_routing), real sockets.
//
// Each trial uses a fresh model with 4 backends: a publisher PUSHes one message per tick holding
// one request outcome per backend (event time = now) at `--rate` ticks/s; after `--warmup-ms` of
// healthy traffic plus a random 0..100 ms, one random backend's outcomes turn into server errors.
// A SUB socket on "routing." decodes every publication (msgpack) and records when the first one
// of that model gives the failed backend a weight ≤ 0.02 (the default probe fraction). The
// latency is from sending the first failed outcome to that receipt.
//
// Baseline, same run: a raw libzmq PUSH → PULL → PUB → SUB round trip (one forwarding thread)
// of one small message, the transport floor under any engine path.
//
// Usage: routing_failover [--trials N] [--rate TICKS_PER_S] [--warmup-ms MS] [--select-threads N]
//                         [--topology FILE]

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

#include <httplib.h>

#include "bench/bench_child.h"
#include "cli/engine.h"
#include "clients/cpp/publisher.h"
#include "clients/cpp/topics.h"
#include "pipeline/topology.h"

namespace inferscope {
namespace {

using SteadyClock = std::chrono::steady_clock;

struct Args {
  int trials = 100;
  double rate = 200;  // ticks per second; 4 outcomes per tick
  int64_t warmup_ms = 400;
  int select_threads = 0;  // clients calling POST /v1/routing/select in a loop meanwhile
  std::string topology = "topologies/inference-fleet.yaml";
};

int64_t SteadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(SteadyClock::now().time_since_epoch())
      .count();
}

double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  return v[i];
}

// The raw libzmq round trip: PUSH → PULL, forwarded to PUB → SUB.
std::vector<double> RawRoundTripsMs(int samples) {
  zmq::context_t ctx;
  zmq::socket_t pull(ctx, zmq::socket_type::pull);
  pull.bind("tcp://127.0.0.1:*");
  zmq::socket_t pub(ctx, zmq::socket_type::pub);
  pub.bind("tcp://127.0.0.1:*");
  const std::string pull_ep = pull.get(zmq::sockopt::last_endpoint);
  const std::string pub_ep = pub.get(zmq::sockopt::last_endpoint);
  std::atomic<bool> stop{false};
  std::thread forward([&] {
    pull.set(zmq::sockopt::rcvtimeo, 50);
    while (!stop.load()) {
      zmq::message_t m;
      if (!pull.recv(m)) continue;
      pub.send(zmq::str_buffer("routing."), zmq::send_flags::sndmore);
      pub.send(m, zmq::send_flags::none);
    }
  });
  zmq::socket_t push(ctx, zmq::socket_type::push);
  push.connect(pull_ep);
  zmq::socket_t sub(ctx, zmq::socket_type::sub);
  sub.set(zmq::sockopt::subscribe, "routing.");
  sub.set(zmq::sockopt::rcvtimeo, 20);
  sub.connect(pub_ep);
  // Wait for the subscription to reach the PUB (slow joiner): probe until one arrives.
  for (;;) {
    push.send(zmq::str_buffer("probe"), zmq::send_flags::none);
    std::vector<zmq::message_t> frames;
    if (zmq::recv_multipart(sub, std::back_inserter(frames))) break;
  }
  sub.set(zmq::sockopt::rcvtimeo, 1000);
  // Drain leftovers.
  sub.set(zmq::sockopt::rcvtimeo, 50);
  for (std::vector<zmq::message_t> f; zmq::recv_multipart(sub, std::back_inserter(f)); f.clear()) {
  }
  sub.set(zmq::sockopt::rcvtimeo, 1000);
  std::vector<double> out;
  std::string payload(200, 'x');  // about one outcome batch
  for (int i = 0; i < samples; ++i) {
    const int64_t t0 = SteadyNs();
    push.send(zmq::buffer(payload), zmq::send_flags::none);
    std::vector<zmq::message_t> frames;
    if (!zmq::recv_multipart(sub, std::back_inserter(frames))) break;
    out.push_back(static_cast<double>(SteadyNs() - t0) / 1e6);
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  stop.store(true);
  forward.join();
  return out;
}

int Main(int argc, char** argv) {
  Args args;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--trials") {
      args.trials = std::stoi(argv[i + 1]);
    } else if (flag == "--rate") {
      args.rate = std::stod(argv[i + 1]);
    } else if (flag == "--warmup-ms") {
      args.warmup_ms = std::stoll(argv[i + 1]);
    } else if (flag == "--select-threads") {
      args.select_threads = std::stoi(argv[i + 1]);
    } else if (flag == "--topology") {
      args.topology = argv[i + 1];
    } else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  TopologySpec spec = bench::LoadTopologyOrExit(args.topology);
  std::string routing_sink;
  for (const auto& s : spec.sinks) {
    if (s.type == "zmq_routing") routing_sink = s.name;
  }
  if (routing_sink.empty()) {
    std::fprintf(stderr, "%s has no zmq_routing sink\n", args.topology.c_str());
    return 2;
  }
  const std::string state = bench::TempStateDir("inferscope-failover");
  std::unique_ptr<Engine> built = bench::StartEngine(spec, state);
  Engine& engine = *built;

  // Subscriber: the first publication per model that moves traffic off its failed backend.
  std::mutex mu;
  std::string watch_model, watch_backend;  // the current trial's
  int64_t moved_ns = 0;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> publications{0};
  zmq::context_t zctx;
  zmq::socket_t sub(zctx, zmq::socket_type::sub);
  sub.set(zmq::sockopt::subscribe, "routing.");
  sub.set(zmq::sockopt::rcvtimeo, 50);
  sub.connect(engine.Endpoint(routing_sink));
  std::thread subscriber([&] {
    while (!stop.load()) {
      std::vector<zmq::message_t> frames;
      if (!zmq::recv_multipart(sub, std::back_inserter(frames)) || frames.size() != 2) continue;
      const int64_t now = SteadyNs();
      publications.fetch_add(1);
      msgpack::object_handle oh = msgpack::unpack(frames[1].data<char>(), frames[1].size());
      auto m = oh.get().as<std::map<std::string, msgpack::object>>();
      const std::string model = m.at("model").as<std::string>();
      std::lock_guard<std::mutex> lock(mu);
      if (model != watch_model || moved_ns != 0 || watch_backend.empty()) continue;
      for (const auto& b :
           m.at("backends").as<std::vector<std::map<std::string, msgpack::object>>>()) {
        if (b.at("backend").as<std::string>() != watch_backend) continue;
        if (b.at("weight").type == msgpack::type::FLOAT64 && b.at("weight").as<double>() <= 0.02) {
          moved_ns = now;
        }
      }
    }
  });

  // API load: clients asking the live learner (the lock the operator takes once per batch) for
  // decisions on the current trial's model, as fast as they can.
  std::atomic<uint64_t> selects{0};
  std::vector<std::thread> clients;
  const std::string http = engine.HttpUrl();
  for (int c = 0; c < args.select_threads; ++c) {
    clients.emplace_back([&] {
      httplib::Client cli(http);
      while (!stop.load()) {
        std::string model;
        {
          std::lock_guard<std::mutex> lock(mu);
          model = watch_model;
        }
        auto res =
            cli.Post("/v1/routing/select", "{\"model\": \"" + model + "\"}", "application/json");
        if (res && res->status == 200) selects.fetch_add(1);
      }
    });
  }
  const auto select_t0 = SteadyClock::now();

  zmq::socket_t push(zctx, zmq::socket_type::push);
  push.set(zmq::sockopt::sndhwm, 100000);
  push.connect(engine.Endpoint(spec.sources[0].name));
  std::mt19937_64 rng(12345);
  client::BatchEncoder enc("failover-bench");
  const auto tick = std::chrono::nanoseconds(static_cast<int64_t>(1e9 / args.rate));
  std::vector<double> latencies;
  std::vector<double> engine_path;  // from the 5th failure (the one that ejects)
  int timeouts = 0;
  const std::array<std::string, 4> backends = {"vllm-0", "vllm-1", "sglang-0", "tgi-0"};
  for (int trial = 0; trial < args.trials; ++trial) {
    const std::string model = "failover-model-" + std::to_string(trial);
    const int failed = static_cast<int>(rng() % 4);
    const int64_t fail_after_ns = (args.warmup_ms + static_cast<int64_t>(rng() % 100)) * 1'000'000;
    {
      std::lock_guard<std::mutex> lock(mu);
      watch_model = model;
      watch_backend = backends[static_cast<size_t>(failed)];
      moved_ns = 0;
    }
    const int64_t start = SteadyNs();
    int64_t first_failure_ns = 0, fifth_failure_ns = 0;
    int failures_sent = 0;
    auto next = SteadyClock::now();
    while (true) {
      const int64_t now = SteadyNs();
      const bool failing = now - start >= fail_after_ns;
      enc.Reset();
      const int64_t t = client::NowMs();
      for (int b = 0; b < 4; ++b) {
        client::RequestOutcome r;
        r.instance = backends[static_cast<size_t>(b)];
        r.model = model;
        r.time_ms = t;
        const bool bad = failing && b == failed;
        r.e2e_ms = bad ? 5 : 1500 + 100 * b;
        if (!bad) {
          r.ttft_ms = 80 + 10 * b;
          r.tpot_ms = 14;
          r.output_tokens = 100;
        }
        r.prompt_tokens = 500;
        r.error = bad ? "server_error" : "";
        enc.AddRequest(r);
      }
      const std::string_view payload = enc.Finish();
      if (failing && first_failure_ns == 0) first_failure_ns = SteadyNs();
      if (failing && ++failures_sent == 5) fifth_failure_ns = SteadyNs();
      push.send(zmq::buffer("metrics", 7), zmq::send_flags::sndmore);
      push.send(zmq::buffer(payload.data(), payload.size()), zmq::send_flags::none);
      {
        std::lock_guard<std::mutex> lock(mu);
        if (moved_ns != 0) break;
      }
      if (first_failure_ns != 0 && SteadyNs() - first_failure_ns > 2'000'000'000) {
        ++timeouts;
        break;
      }
      next += tick;
      std::this_thread::sleep_until(next);
    }
    std::lock_guard<std::mutex> lock(mu);
    if (moved_ns != 0) latencies.push_back(static_cast<double>(moved_ns - first_failure_ns) / 1e6);
    if (moved_ns != 0 && fifth_failure_ns != 0) {
      engine_path.push_back(static_cast<double>(moved_ns - fifth_failure_ns) / 1e6);
    }
  }
  const double select_s = std::chrono::duration<double>(SteadyClock::now() - select_t0).count();
  stop.store(true);
  subscriber.join();
  for (std::thread& c : clients) c.join();
  const uint64_t events = engine.metrics().CounterValue("inferscope_operator_queue_events_total");
  engine.Stop();
  built.reset();
  std::filesystem::remove_all(state);

  const std::vector<double> raw = RawRoundTripsMs(1000);
  std::printf(
      "routing failover: %d trials, 4 backends, %.0f outcomes/s per backend, %lu events, "
      "%lu publications received\n",
      args.trials, args.rate, static_cast<unsigned long>(events),
      static_cast<unsigned long>(publications.load()));
  if (args.select_threads > 0) {
    std::printf("meanwhile %d API clients: %lu successful POST /v1/routing/select (%.0f/s)\n",
                args.select_threads, static_cast<unsigned long>(selects.load()),
                static_cast<double>(selects.load()) / select_s);
  }
  std::printf("%-58s %9s %9s %9s %9s\n", "path", "n", "p50 ms", "p99 ms", "max ms");
  std::printf("%-58s %9zu %9.3f %9.3f %9.3f\n",
              "first failed outcome sent -> weights moving traffic off", latencies.size(),
              Quantile(latencies, 0.5), Quantile(latencies, 0.99),
              latencies.empty() ? NAN : *std::max_element(latencies.begin(), latencies.end()));
  std::printf(
      "%-58s %9zu %9.3f %9.3f %9.3f\n", "5th failed outcome sent (it ejects) -> weights moving off",
      engine_path.size(), Quantile(engine_path, 0.5), Quantile(engine_path, 0.99),
      engine_path.empty() ? NAN : *std::max_element(engine_path.begin(), engine_path.end()));
  std::printf("%-58s %9zu %9.3f %9.3f %9.3f\n", "baseline: raw libzmq PUSH->PULL->PUB->SUB",
              raw.size(), Quantile(raw, 0.5), Quantile(raw, 0.99),
              raw.empty() ? NAN : *std::max_element(raw.begin(), raw.end()));
  const double inter = 1000.0 / args.rate;
  std::printf(
      "(the gate ejects after 5 consecutive failures: 4 more outcomes of the failed backend "
      "after the first = %.1f ms of the latency at this rate)\n",
      4 * inter);
  if (timeouts > 0) std::printf("%d trials timed out (no move within 2 s)\n", timeouts);
  return timeouts > 0 ? 1 : 0;
}

}  // namespace
}  // namespace inferscope

int main(int argc, char** argv) { return inferscope::Main(argc, argv); }
