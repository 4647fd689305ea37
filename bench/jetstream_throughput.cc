// Events/s end to end through NATS JetStream with one engine node, against the ZeroMQ source and
// against JetStream's own publish and consume rates, all in the same run on the same messages.
//
//   (a) JetStream publish:  JetStreamPublisher::PublishRaw (async, acknowledged, 1024 in flight)
//                           of the pre-encoded messages into a file-backed stream, until all acked
//   (b) JetStream consume:  a bare pull consumer (fetch 256, AckAll per fetch), count only
//   (c) engine, jetstream:  the stream already full, the engine's jetstream source (1 partition,
//                           fetch 256) → window_aggregate → rocksdb_state, until every event is off
//                           the operator queue
//   (d) engine, zmq:        the same topology with a zmq PULL source, the same bytes PUSHed by a
//                           thread of this process
//
// A real nats-server (Debian's 2.9) is started as a child on a port it picks, storing in a temp
// directory. Messages: request outcomes over 200 (instance, model) groups, 256 events each, event
// times spread over 60 s. Prints a Markdown table.
//
// With --cluster URLS (the client URLs of a 3-server cluster, e.g. from scripts/nats-cluster.sh
// start), (a) and (b) are measured again on an R3 stream there, in the same run: rows (a3), (b3).
//
// Usage: jetstream_throughput [--events N] [--fetch-batch B] [--cluster URLS]

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nats/nats.h>
#include <zmq.hpp>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_child.h"
#include "cli/engine.h"
#include "clients/cpp/jetstream_publisher.h"
#include "clients/cpp/nats_pull.h"
#include "clients/cpp/publisher.h"
#include "pipeline/topology.h"

namespace inferscope {
namespace {

using SteadyClock = std::chrono::steady_clock;

double Seconds(SteadyClock::time_point a, SteadyClock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

constexpr char kTopology[] = R"(name: jetstream-bench
state:
  path: /unused
engine:
  checkpoint_interval: 1s
sources:
  - name: ingest
    SOURCE
operators:
  - name: windows
    type: window_aggregate
    inputs: [ingest]
    options:
      pane: 10s
sinks:
  - name: state
    type: rocksdb_state
    inputs: [windows]
)";

std::string WriteTopology(const std::string& dir, const std::string& name,
                          const std::string& source) {
  std::string text = kTopology;
  text.replace(text.find("SOURCE"), 6, source);
  const std::string path = dir + "/" + name + ".yaml";
  std::ofstream(path) << text;
  return path;
}

// nats-server -js as a child; returns its URL.
std::string StartNats(const std::string& dir, pid_t* pid) {
  std::filesystem::create_directories(dir + "/ports");
  *pid = fork();
  if (*pid == 0) {
    const std::string log = dir + "/nats.log";
    (void)!freopen(log.c_str(), "w", stderr);
    (void)!freopen(log.c_str(), "a", stdout);
    execl("/usr/sbin/nats-server", "nats-server", "-js", "-sd", (dir + "/data").c_str(), "-a",
          "127.0.0.1", "-p", "-1", "--ports_file_dir", (dir + "/ports").c_str(), nullptr);
    _exit(127);
  }
  for (int i = 0; i < 500; ++i) {
    for (const auto& e : std::filesystem::directory_iterator(dir + "/ports")) {
      std::ifstream in(e.path());
      std::stringstream ss;
      ss << in.rdbuf();
      const std::string text = ss.str();
      const size_t at = text.find("nats://");
      if (at != std::string::npos) return text.substr(at, text.find('"', at) - at);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::fprintf(stderr, "nats-server did not start (see %s/nats.log)\n", dir.c_str());
  std::exit(2);
}

uint64_t WaitForEngine(Engine& engine, uint64_t events) {
  uint64_t seen = 0;
  auto last = SteadyClock::now();
  for (;;) {
    const uint64_t n = engine.metrics().CounterValue("inferscope_operator_queue_events_total");
    if (n >= events) return n;
    if (n != seen) {
      seen = n;
      last = SteadyClock::now();
    } else if (Seconds(last, SteadyClock::now()) > 10) {
      std::fprintf(stderr, "engine stalled at %lu of %lu events\n", static_cast<unsigned long>(n),
                   static_cast<unsigned long>(events));
      return n;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// (a): the messages published to partition 0 of `stream` (async, acked, 1024 in flight) until
// every one is acknowledged; seconds, or -1 on failure.
double PublishAll(const std::string& url, const std::string& stream,
                  const std::vector<std::string>& messages,
                  const std::string& prefix = "inferscope.in") {
  client::JetStreamPublisherOptions po;
  po.url = url;
  po.stream = stream;
  po.subject_prefix = prefix;
  po.publisher_id = "bench";
  po.ack_timeout_ms = 60'000;
  client::JetStreamPublisher pub(po);
  if (!pub.Connect()) {
    std::fprintf(stderr, "%s\n", pub.last_error().c_str());
    return -1;
  }
  const auto t0 = SteadyClock::now();
  for (const std::string& m : messages) {
    if (!pub.PublishRaw(0, m, "")) {
      std::fprintf(stderr, "publish: %s\n", pub.last_error().c_str());
      return -1;
    }
  }
  if (!pub.Flush()) {
    std::fprintf(stderr, "publish: %s\n", pub.last_error().c_str());
    return -1;
  }
  return Seconds(t0, SteadyClock::now());
}

// (b): a bare pull consumer of partition 0 (fetch `batch`, AckAll per fetch) until `count`
// messages; seconds, or -1 when it got fewer.
double ConsumeAll(const std::string& url, const std::string& stream, uint64_t count, int batch,
                  const std::string& prefix = "inferscope.in") {
  natsConnection* conn = nullptr;
  jsCtx* js = nullptr;
  natsSubscription* sub = nullptr;
  const std::string subject = prefix + ".0";
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = stream.c_str();
  so.Config.AckPolicy = js_AckAll;
  so.Config.MaxAckPending = 65536;
  if (natsConnection_ConnectTo(&conn, url.c_str()) != NATS_OK ||
      natsConnection_JetStream(&js, conn, nullptr) != NATS_OK ||
      js_PullSubscribe(&sub, js, subject.c_str(), "rawbench", nullptr, &so, nullptr) != NATS_OK) {
    std::fprintf(stderr, "consume: cannot subscribe to %s on %s\n", subject.c_str(), url.c_str());
    return -1;
  }
  client::PullFetcher fetcher;
  if (fetcher.Open(conn, stream, "rawbench") != NATS_OK) {
    std::fprintf(stderr, "consume: no inbox on %s\n", url.c_str());
    return -1;
  }
  uint64_t got = 0;
  const auto t0 = SteadyClock::now();
  while (got < count) {
    client::PulledMsgs list;
    if (fetcher.Fetch(&list, batch, 1000) != NATS_OK) break;
    got += static_cast<uint64_t>(list.Count());
    if (list.Count() > 0) {
      natsConnection_PublishString(conn, natsMsg_GetReply(list[list.Count() - 1]), "+ACK");
    }
  }
  const double s = Seconds(t0, SteadyClock::now());
  fetcher.Close();
  natsSubscription_Unsubscribe(sub);
  natsSubscription_Destroy(sub);
  jsCtx_Destroy(js);
  natsConnection_Destroy(conn);
  if (got < count) {
    std::fprintf(stderr, "consume: %lu of %lu messages\n", static_cast<unsigned long>(got),
                 static_cast<unsigned long>(count));
    return -1;
  }
  return s;
}

int Main(int argc, char** argv) {
  uint64_t events = 2'000'000;
  int fetch_batch = 256;     // of the engine's jetstream source
  std::string cluster_urls;  // --cluster: a 3-server cluster's client URLs, comma-separated
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--events") == 0) events = std::stoull(argv[i + 1]);
    if (std::strcmp(argv[i], "--fetch-batch") == 0) fetch_batch = std::stoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--cluster") == 0) cluster_urls = argv[i + 1];
  }
  constexpr int kBatch = 256;
  const uint64_t messages_count = (events + kBatch - 1) / kBatch;
  events = messages_count * kBatch;

  // The messages, encoded once.
  std::vector<std::string> messages;
  messages.reserve(messages_count);
  {
    client::BatchEncoder enc("bench/p0");
    const int64_t t0 = client::NowMs() - 120'000;
    uint64_t n = 0;
    for (uint64_t m = 0; m < messages_count; ++m) {
      for (int i = 0; i < kBatch; ++i, ++n) {
        client::RequestOutcome r;
        const std::string instance = "gpu-" + std::to_string(n % 100);
        r.instance = instance;
        r.model = n % 200 < 100 ? "llama" : "qwen";
        r.e2e_ms = 100 + static_cast<double>(n % 997);
        r.ttft_ms = 20 + static_cast<double>(n % 89);
        r.output_tokens = static_cast<uint32_t>(n % 500);
        r.time_ms = t0 + static_cast<int64_t>(n * 60'000 / events);
        enc.AddRequest(r);
      }
      messages.emplace_back(enc.Finish());
    }
  }

  const std::string dir = bench::TempStateDir("inferscope-jsbench");
  pid_t nats_pid = -1;
  const std::string url = StartNats(dir, &nats_pid);
  std::string error;
  if (!client::JetStreamPublisher::EnsureStream(url, "BENCH", "inferscope.in", &error)) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return 2;
  }

  // (a) publish, (b) consume.
  const double publish_s = PublishAll(url, "BENCH", messages);
  const double consume_s = ConsumeAll(url, "BENCH", messages_count, kBatch);
  if (publish_s < 0 || consume_s < 0) return 1;
  // The same on an R3 stream of a 3-server cluster (scripts/nats-cluster.sh), same run.
  double publish3_s = 0;
  double consume3_s = 0;
  if (!cluster_urls.empty()) {
    if (!client::JetStreamPublisher::EnsureStream(cluster_urls, "BENCHR3", "bench3.in", &error,
                                                  3)) {
      std::fprintf(stderr, "%s\n", error.c_str());
      return 2;
    }
    publish3_s = PublishAll(cluster_urls, "BENCHR3", messages, "bench3.in");
    consume3_s = ConsumeAll(cluster_urls, "BENCHR3", messages_count, kBatch, "bench3.in");
    if (publish3_s < 0 || consume3_s < 0) return 1;
  }

  // (c) the engine through the jetstream source.
  double js_engine_s = 0;
  uint64_t js_engine_events = 0;
  {
    TopologySpec spec = bench::LoadTopologyOrExit(WriteTopology(
        dir, "jetstream",
        "type: jetstream\n    options: {url: \"" + url +
            "\", stream: BENCH, partitions: [0], fetch_batch: " + std::to_string(fetch_batch) +
            "}"));
    const std::string state = bench::TempStateDir("inferscope-jsbench-state");
    const auto t0 = SteadyClock::now();
    std::unique_ptr<Engine> engine = bench::StartEngine(spec, state);
    js_engine_events = WaitForEngine(*engine, events);
    js_engine_s = Seconds(t0, SteadyClock::now());
    engine->Stop();
    engine.reset();
    std::filesystem::remove_all(state);
  }

  // (d) the engine through the zmq source, the same bytes.
  double zmq_engine_s = 0;
  uint64_t zmq_engine_events = 0;
  {
    TopologySpec spec = bench::LoadTopologyOrExit(WriteTopology(
        dir, "zmq", "type: zmq\n    options: {endpoint: \"tcp://127.0.0.1:*\", rcvhwm: 1000}"));
    const std::string state = bench::TempStateDir("inferscope-jsbench-state");
    std::unique_ptr<Engine> engine = bench::StartEngine(spec, state);
    const std::string endpoint = engine->Endpoint("ingest");
    const auto t0 = SteadyClock::now();
    std::thread pusher([&] {
      zmq::context_t ctx(1);
      zmq::socket_t push(ctx, zmq::socket_type::push);
      push.set(zmq::sockopt::sndhwm, 1000);
      push.set(zmq::sockopt::linger, 10000);
      push.connect(endpoint);
      for (const std::string& m : messages) {
        push.send(zmq::buffer(std::string_view("metrics")), zmq::send_flags::sndmore);
        push.send(zmq::buffer(m), zmq::send_flags::none);
      }
    });
    zmq_engine_events = WaitForEngine(*engine, events);
    zmq_engine_s = Seconds(t0, SteadyClock::now());
    pusher.join();
    engine->Stop();
    engine.reset();
    std::filesystem::remove_all(state);
  }

  kill(nats_pid, SIGTERM);
  waitpid(nats_pid, nullptr, 0);
  std::filesystem::remove_all(dir);

  const double e = static_cast<double>(events);
  std::printf("%lu events in %lu messages of %d (1 partition, file storage)\n\n",
              static_cast<unsigned long>(events), static_cast<unsigned long>(messages_count),
              kBatch);
  std::printf("| path | events | seconds | events/s |\n|---|---:|---:|---:|\n");
  std::printf("| (a) JetStream publish, acked, 1024 in flight | %lu | %.2f | %.0f |\n",
              static_cast<unsigned long>(events), publish_s, e / publish_s);
  std::printf("| (b) JetStream bare consume, fetch 256, AckAll | %lu | %.2f | %.0f |\n",
              static_cast<unsigned long>(events), consume_s, e / consume_s);
  std::printf(
      "| (c) engine, jetstream source (stream pre-filled, fetch %d) | %lu | %.2f | %.0f |\n",
      fetch_batch, static_cast<unsigned long>(js_engine_events), js_engine_s,
      static_cast<double>(js_engine_events) / js_engine_s);
  std::printf("| (d) engine, zmq source (PUSH from this process) | %lu | %.2f | %.0f |\n",
              static_cast<unsigned long>(zmq_engine_events), zmq_engine_s,
              static_cast<double>(zmq_engine_events) / zmq_engine_s);
  if (!cluster_urls.empty()) {
    std::printf(
        "| (a3) JetStream publish, R3 stream on the 3-server cluster | %lu | %.2f | %.0f |\n",
        static_cast<unsigned long>(events), publish3_s, e / publish3_s);
    std::printf(
        "| (b3) JetStream bare consume, R3 stream, fetch 256, AckAll | %lu | %.2f | %.0f |\n",
        static_cast<unsigned long>(events), consume3_s, e / consume3_s);
    std::printf("\n(a3)/(a) = %.2f; (b3)/(b) = %.2f", publish_s / publish3_s,
                consume_s / consume3_s);
  }
  std::printf("\n(c)/(d) = %.2f; (c)/(b) = %.2f\n",
              (static_cast<double>(js_engine_events) / js_engine_s) /
                  (static_cast<double>(zmq_engine_events) / zmq_engine_s),
              (static_cast<double>(js_engine_events) / js_engine_s) / (e / consume_s));
  return 0;
}

}  // namespace
}  // namespace inferscope

int main(int argc, char** argv) { return inferscope::Main(argc, argv); }
