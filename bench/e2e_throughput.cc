// End-to-end ingest throughput, side by side with raw libzmq on the very same messages.
//
//   (a) raw libzmq:     publisher PUSH ──tcp──► PULL, a bare receive-and-count loop
//   (b) decode only:    publisher PUSH ──tcp──► PULL + WireDecoder (no operators)
//   (c) engine:         publisher PUSH ──tcp──► the default topology (zmq source → window_aggregate
//                       → rocksdb_state + zmq_pub), state in a temp dir
//
// The messages are encoded once, up front, with the C++ client's BatchEncoder (about 100 bytes per
// event, so 20 M events take about 2 GB of memory); a publisher thread in this process then sends
// the very same bytes to each receiver, so the three rows differ only in the receiving side.
// Workload: request outcomes over G (instance, model) groups; each request updates the 5 request
// metrics it carries (ttft, tpot, e2e, prompt and output tokens), so G=2000 gives 10,000 series.
// Event time advances 60 s over the run, so six 10 s panes close for every series and go to RocksDB
// while ingest goes on.
//
// (d), with --query-node BIN: (c) again with `BIN query-node` (a separate process) attached to the
// engine's state directory, catching up every 500 ms throughout, so (c) and (d) compare the
// engine's ingest rate without and with a query node in the same run; the node's catch-up count,
// mean and last duration and its lag are printed.
//
// Usage: e2e_throughput [--events N] [--groups G] [--batch B] [--topology FILE] [--runs R]
//                       [--query-node BIN]

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <httplib.h>

#include <zmq.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_child.h"
#include "cli/engine.h"
#include "clients/cpp/publisher.h"
#include "sources/wire_decoder.h"

namespace inferscope {
namespace {

using SteadyClock = std::chrono::steady_clock;

struct Args {
  uint64_t events = 20'000'000;
  int groups = 2000;
  int batch = 256;
  int runs = 1;
  std::string topology = "topologies/inference-fleet.yaml";
  std::string query_node;  // the inferscope binary: run (d) with a query node attached
};

// A query node subprocess on `state` (run (d)); Stop prints what its /metrics and /v1/health say.
class AttachedQueryNode {
 public:
  AttachedQueryNode(const std::string& binary, const std::string& state) {
    ready_ = state + ".node.json";
    std::filesystem::remove(ready_);
    pid_ = fork();
    if (pid_ == 0) {
      std::freopen("/dev/null", "w", stdout);
      std::freopen("/dev/null", "w", stderr);
      execl(binary.c_str(), binary.c_str(), "query-node", "--state-dir", state.c_str(), "--listen",
            "127.0.0.1:0", "--catch-up-interval", "500ms", "--ready-file", ready_.c_str(),
            static_cast<char*>(nullptr));
      _exit(127);
    }
    for (int i = 0; i < 500 && !std::filesystem::exists(ready_); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::string text;
    if (FILE* f = std::fopen(ready_.c_str(), "r")) {
      char buf[512];
      size_t n = std::fread(buf, 1, sizeof(buf), f);
      text.assign(buf, n);
      std::fclose(f);
    }
    size_t at = text.find("\"http\":\"");
    if (at != std::string::npos) {
      at += 8;
      url_ = text.substr(at, text.find('"', at) - at);
    }
    if (url_.empty()) std::fprintf(stderr, "query node did not start\n");
  }
  void Report() {
    if (url_.empty()) return;
    httplib::Client http(url_);
    auto metrics = http.Get("/metrics");
    auto health = http.Get("/v1/health");
    auto value = [&](const std::string& name) {
      if (!metrics) return 0.0;
      size_t at = metrics->body.find("\n" + name + " ");
      return at == std::string::npos ? 0.0 : std::stod(metrics->body.substr(at + name.size() + 2));
    };
    const double count = value("inferscope_query_node_catch_up_seconds_count");
    const double sum = value("inferscope_query_node_catch_up_seconds_sum");
    std::printf("query node: %.0f catch-ups, mean %.1f ms%s\n  health: %s\n", count,
                count > 0 ? sum / count * 1000 : 0.0,
                value("inferscope_query_node_catch_up_failures_total") > 0 ? " (some failed)" : "",
                health ? health->body.c_str() : "(no answer)");
  }
  ~AttachedQueryNode() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
    std::filesystem::remove(ready_);
  }

 private:
  pid_t pid_ = -1;
  std::string ready_;
  std::string url_;
};

double Seconds(SteadyClock::time_point a, SteadyClock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

// Deterministic message generator: message k always holds the same events.
class Generator {
 public:
  Generator(const Args& args, int64_t base_time_ms) : args_(args), base_time_ms_(base_time_ms) {
    for (int g = 0; g < args.groups; ++g) {
      instances_.push_back("bench-node-" + std::to_string(g / 4));
      models_.push_back("model-" + std::to_string(g % 4));
    }
    std::mt19937_64 rng(7);
    std::lognormal_distribution<double> ttft(std::log(150.0), 0.6), tpot(std::log(25.0), 0.3);
    std::lognormal_distribution<double> tokens(std::log(300.0), 0.8);
    for (int i = 0; i < kTable; ++i) {
      ttft_[i] = ttft(rng);
      tpot_[i] = tpot(rng);
      tokens_[i] = static_cast<uint32_t>(std::max(1.0, tokens(rng)));
    }
  }

  uint64_t messages() const { return (args_.events + args_.batch - 1) / args_.batch; }

  // Every message of the run, encoded.
  std::vector<std::string> EncodeAll() {
    client::BatchEncoder enc("bench-publisher");
    std::vector<std::string> out;
    out.reserve(messages());
    for (uint64_t k = 0; k < messages(); ++k) out.emplace_back(Message(k, enc));
    return out;
  }

  // Encodes message `k` into `enc` and returns the payload.
  std::string_view Message(uint64_t k, client::BatchEncoder& enc) {
    client::RequestOutcome r;
    uint64_t first = k * args_.batch;
    uint64_t last = std::min<uint64_t>(first + args_.batch, args_.events);
    for (uint64_t i = first; i < last; ++i) {
      size_t g = (i * 7919) % instances_.size();
      size_t t = i % kTable;
      r.instance = instances_[g];
      r.model = models_[g];
      // 60 s of event time over the whole run.
      r.time_ms = base_time_ms_ + static_cast<int64_t>(i * 60'000 / args_.events);
      r.ttft_ms = ttft_[t];
      r.tpot_ms = tpot_[t];
      r.prompt_tokens = tokens_[t];
      r.output_tokens = tokens_[(t + 17) % kTable];
      r.e2e_ms = ttft_[t] + tpot_[t] * *r.output_tokens;
      enc.AddRequest(r);
    }
    return enc.Finish();
  }

 private:
  static constexpr int kTable = 4096;
  const Args& args_;
  int64_t base_time_ms_;
  std::vector<std::string> instances_, models_;
  double ttft_[kTable], tpot_[kTable];
  uint32_t tokens_[kTable];
};

// Sends every message to `endpoint` over PUSH; returns when all are queued.
void Publish(const std::vector<std::string>& messages, const std::string& endpoint) {
  zmq::context_t ctx;
  zmq::socket_t push(ctx, zmq::socket_type::push);
  push.set(zmq::sockopt::sndhwm, 1000);
  push.set(zmq::sockopt::linger, -1);
  push.connect(endpoint);
  for (const std::string& payload : messages) {
    push.send(zmq::buffer("metrics", 7), zmq::send_flags::sndmore);
    push.send(zmq::buffer(payload.data(), payload.size()), zmq::send_flags::none);
  }
}

struct Measured {
  double seconds = 0;
  double cpu_seconds = 0;
  uint64_t events = 0;
  double rate() const { return static_cast<double>(events) / seconds; }
};

// (a) and (b): PULL on an ephemeral port, receive every message, optionally decode it.
Measured RunPull(const Args& args, const std::vector<std::string>& messages, bool decode) {
  zmq::context_t ctx;
  zmq::socket_t pull(ctx, zmq::socket_type::pull);
  pull.set(zmq::sockopt::rcvhwm, 1000);
  pull.bind("tcp://127.0.0.1:*");
  std::string endpoint = pull.get(zmq::sockopt::last_endpoint);
  Interner interner;
  WireDecoder decoder(WireDecoderOptions{}, interner, SystemClock::Instance(), nullptr, "bench");
  EventBatch batch;
  batch.events.reserve(65536);

  double cpu0 = CpuSeconds();
  auto t0 = SteadyClock::now();
  std::thread publisher([&] { Publish(messages, endpoint); });
  Measured m;
  zmq::message_t topic, payload;
  for (size_t k = 0; k < messages.size(); ++k) {
    (void)pull.recv(topic);
    (void)pull.recv(payload);
    if (decode) {
      DecodeResult r =
          decoder.Decode(std::string_view(payload.data<char>(), payload.size()), batch);
      m.events += r.accepted;
      batch.events.clear();
    } else {
      m.events += args.batch;  // what the message holds; the count is all a bare loop does
    }
  }
  m.seconds = Seconds(t0, SteadyClock::now());
  m.cpu_seconds = CpuSeconds() - cpu0;
  publisher.join();
  m.events = std::min<uint64_t>(m.events, args.events);
  return m;
}

// (c): the engine on the default topology with ephemeral ports and a temp state dir.
Measured RunEngine(const Args& args, const std::vector<std::string>& messages,
                   uint64_t* panes_written, double* drain_s, bool with_query_node = false) {
  TopologySpec spec = bench::LoadTopologyOrExit(args.topology);
  const std::string state = bench::TempStateDir("inferscope-bench");
  std::unique_ptr<Engine> built = bench::StartEngine(spec, state);
  Engine& engine = *built;
  std::string endpoint = engine.Endpoint(spec.sources[0].name);
  std::unique_ptr<AttachedQueryNode> node;
  if (with_query_node) node = std::make_unique<AttachedQueryNode>(args.query_node, state);

  double cpu0 = CpuSeconds();
  auto t0 = SteadyClock::now();
  std::thread publisher([&] { Publish(messages, endpoint); });
  Measured m;
  auto last_progress = SteadyClock::now();
  // Events off the operator queue, counted once however many operators read them (the
  // per-stage inferscope_stage_events_in_total counts an event once per operator that reads it).
  while ((m.events = engine.metrics().CounterValue("inferscope_operator_queue_events_total")) <
         args.events) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    static uint64_t seen = 0;
    if (m.events != seen) {
      seen = m.events;
      last_progress = SteadyClock::now();
    } else if (Seconds(last_progress, SteadyClock::now()) > 10) {
      std::fprintf(stderr, "engine stalled at %lu of %lu events (rejected or late events?)\n",
                   static_cast<unsigned long>(m.events), static_cast<unsigned long>(args.events));
      break;
    }
  }
  m.seconds = Seconds(t0, SteadyClock::now());
  m.cpu_seconds = CpuSeconds() - cpu0;
  publisher.join();
  auto t1 = SteadyClock::now();
  if (node) {
    node->Report();
    node.reset();
    t1 = SteadyClock::now();
  }
  engine.Stop();  // flushes the open panes to RocksDB
  *drain_s = Seconds(t1, SteadyClock::now());
  *panes_written = engine.metrics().CounterValue("inferscope_state_panes_written_total");
  uint64_t rejected = engine.metrics().CounterValue("inferscope_source_rejected_total");
  uint64_t late = engine.metrics().CounterValue("inferscope_window_late_events_total");
  if (rejected + late > 0) {
    std::fprintf(stderr, "warning: %lu rejected, %lu late events\n",
                 static_cast<unsigned long>(rejected), static_cast<unsigned long>(late));
  }
  built.reset();
  std::filesystem::remove_all(state);
  return m;
}

int Main(int argc, char** argv) {
  Args args;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--events")
      args.events = std::stoull(argv[i + 1]);
    else if (flag == "--groups")
      args.groups = std::stoi(argv[i + 1]);
    else if (flag == "--batch")
      args.batch = std::stoi(argv[i + 1]);
    else if (flag == "--topology")
      args.topology = argv[i + 1];
    else if (flag == "--runs")
      args.runs = std::stoi(argv[i + 1]);
    else if (flag == "--query-node")
      args.query_node = argv[i + 1];
    else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  Generator gen(args, client::NowMs() - 120'000);
  std::vector<std::string> messages = gen.EncodeAll();
  size_t bytes = 0;
  for (const auto& m : messages) bytes += m.size();
  std::printf(
      "workload: %lu request events, %d (instance, model) groups = %d series, %d events/message "
      "(%.0f bytes/event), %u cores\n",
      static_cast<unsigned long>(args.events), args.groups, args.groups * 5, args.batch,
      static_cast<double>(bytes) / static_cast<double>(args.events),
      std::thread::hardware_concurrency());
  std::printf("%-34s %14s %10s %12s %10s\n", "run", "events/s", "seconds", "cpu-seconds", "vs raw");
  for (int run = 0; run < args.runs; ++run) {
    Measured raw = RunPull(args, messages, false);
    Measured dec = RunPull(args, messages, true);
    uint64_t panes = 0;
    double drain = 0;
    Measured eng = RunEngine(args, messages, &panes, &drain);
    auto row = [&](const char* name, const Measured& m) {
      std::printf("%-34s %14.0f %10.2f %12.2f %9.2fx\n", name, m.rate(), m.seconds, m.cpu_seconds,
                  m.rate() / raw.rate());
    };
    row("(a) raw libzmq PUSH->PULL", raw);
    row("(b) libzmq + WireDecoder", dec);
    row("(c) engine, default topology", eng);
    if (!args.query_node.empty()) {
      uint64_t panes_d = 0;
      double drain_d = 0;
      Measured with_node = RunEngine(args, messages, &panes_d, &drain_d, true);
      row("(d) engine + query node attached", with_node);
      std::printf("(d)/(c) ingest rate: %.3f\n", with_node.rate() / eng.rate());
    }
    std::printf("engine: %lu panes written to RocksDB; stop (flush of open panes) took %.2f s\n",
                static_cast<unsigned long>(panes), drain);
  }
  return 0;
}

}  // namespace
}  // namespace inferscope

int main(int argc, char** argv) { return inferscope::Main(argc, argv); }
