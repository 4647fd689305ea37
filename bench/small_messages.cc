// Small messages: what the engine's CPU costs per message and per million requests when a fleet
// publishes few requests per message at a realistic pace (issue 15, item 1).
//
// The same request rate (P publishers x 8 requests every 20 ms by default: 3,200 requests/s) is
// sent as 1, 8, 64 and 256 requests per message, each publisher on its own PUSH socket over TCP on
// 127.0.0.1, to two receivers, each a separate process (this binary re-executed) whose CPU
// (its CPU clock: every thread, libzmq's I/O thread included) is read over the
// measured interval:
//
//   raw     a bare libzmq PULL receive loop (blocking zmq_poll, no timeout): the baseline
//   engine  the default topology (topologies/inference-fleet.yaml, ephemeral ports, temp state)
//
// Printed per row: engine CPU µs per message, CPU-s per million requests, and the ratio to raw in
// the same run. The engine child reports how many events its operators received, so a row whose
// count is short says so.
//
// The idle cost (the engine with no input) is bench/idle_cost.cc.
//
// Usage: small_messages [--publishers P] [--seconds S] [--sizes 1,8,64,256] [--topology FILE]
//                       [--connect ENDPOINT  (send only, to a receiver started by hand)]

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <zmq.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_child.h"
#include "clients/cpp/publisher.h"

namespace inferscope {
namespace {

using SteadyClock = std::chrono::steady_clock;
using bench::Child;
using bench::EngineChild;
using bench::Finish;
using bench::ProcessCpuSeconds;
using bench::Spawn;

struct Args {
  int publishers = 8;
  double seconds = 10;
  std::vector<int> sizes = {1, 8, 64, 256};
  std::string topology = "topologies/inference-fleet.yaml";
  // Send to this endpoint instead of spawning receivers (no CPU figures): for profiling a
  // receiver started by hand, e.g. `valgrind --tool=callgrind small_messages --child engine`.
  std::string connect;
};

// Child: the raw receiver. Prints its endpoint, receives until stdin closes, prints the count.
int RawChild() {
  zmq::context_t ctx;
  zmq::socket_t pull(ctx, zmq::socket_type::pull);
  pull.set(zmq::sockopt::rcvhwm, 1000);
  pull.bind("tcp://127.0.0.1:*");
  std::printf("endpoint %s\n", pull.get(zmq::sockopt::last_endpoint).c_str());
  std::fflush(stdout);
  zmq::pollitem_t items[2] = {{pull.handle(), 0, ZMQ_POLLIN, 0}, {nullptr, 0, ZMQ_POLLIN, 0}};
  uint64_t messages = 0;
  zmq::message_t topic, payload;
  while (true) {
    zmq::poll(items, 2, std::chrono::milliseconds(-1));
    while (pull.recv(topic, zmq::recv_flags::dontwait)) {
      if (topic.more()) (void)pull.recv(payload);
      ++messages;
    }
    if (items[1].revents != 0) break;  // the parent closed our stdin (POLLHUP)
  }
  std::printf("count %lu\n", static_cast<unsigned long>(messages));
  return 0;
}

struct Row {
  uint64_t messages = 0;
  uint64_t requests = 0;
  uint64_t received = 0;
  double cpu_seconds = 0;
};

// P publishers send `per_message` requests per message for args.seconds, together 400 * P requests
// per second (8 requests every 20 ms each). CPU is measured from the first send to 300 ms after
// the last one.
Row Run(const Args& args, const std::string& receiver, int per_message) {
  Child child;
  if (args.connect.empty()) {
    child = Spawn({"small_messages", "--child", receiver, "--topology", args.topology});
  } else {
    child.endpoint = args.connect;  // a receiver someone else runs (e.g. under callgrind)
  }
  const auto interval = std::chrono::microseconds(20'000LL * per_message / 8);
  const auto t0 = SteadyClock::now() + std::chrono::milliseconds(500);  // let connects settle
  const auto end = t0 + std::chrono::milliseconds(static_cast<int64_t>(args.seconds * 1000));
  std::atomic<uint64_t> messages{0}, requests{0};
  std::vector<std::thread> publishers;
  zmq::context_t ctx;
  for (int p = 0; p < args.publishers; ++p) {
    publishers.emplace_back([&, p] {
      zmq::socket_t push(ctx, zmq::socket_type::push);
      push.set(zmq::sockopt::linger, -1);
      push.connect(child.endpoint);
      client::BatchEncoder enc("small-pub-" + std::to_string(p));
      const std::string instance = "node-" + std::to_string(p);
      // Publishers start spread over the interval, as independent instances would.
      auto next = t0 + interval * p / args.publishers;
      uint64_t k = 0;
      while (next < end) {
        std::this_thread::sleep_until(next);
        const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count();
        client::RequestOutcome r;
        for (int i = 0; i < per_message; ++i, ++k) {
          r.instance = instance;
          r.model = "model-" + std::to_string(k % 2);
          r.time_ms = now_ms;
          r.ttft_ms = 100.0 + static_cast<double>(k % 97);
          r.tpot_ms = 20.0 + static_cast<double>(k % 13);
          r.prompt_tokens = 200 + static_cast<uint32_t>(k % 300);
          r.output_tokens = 100 + static_cast<uint32_t>(k % 200);
          r.e2e_ms = *r.ttft_ms + *r.tpot_ms * *r.output_tokens;
          enc.AddRequest(r);
        }
        std::string_view payload = enc.Finish();
        push.send(zmq::buffer("metrics", 7), zmq::send_flags::sndmore);
        push.send(zmq::buffer(payload.data(), payload.size()), zmq::send_flags::none);
        messages.fetch_add(1);
        requests.fetch_add(static_cast<uint64_t>(per_message));
        next += interval;
      }
    });
  }
  std::this_thread::sleep_until(t0);
  const double cpu0 = child.pid > 0 ? ProcessCpuSeconds(child.pid) : 0;
  for (std::thread& t : publishers) t.join();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  Row row;
  row.cpu_seconds = child.pid > 0 ? ProcessCpuSeconds(child.pid) - cpu0 : 0;
  row.messages = messages.load();
  row.requests = requests.load();
  row.received = child.pid > 0 ? Finish(child) : 0;
  return row;
}

int Main(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "--child" && i + 1 < argc) {
      std::string kind = argv[i + 1];
      for (int j = i + 2; j + 1 < argc; ++j) {
        if (std::string(argv[j]) == "--topology") args.topology = argv[j + 1];
      }
      return kind == "raw" ? RawChild() : EngineChild(args.topology);
    }
    if (i + 1 >= argc) break;
    if (flag == "--publishers") {
      args.publishers = std::atoi(argv[++i]);
    } else if (flag == "--seconds") {
      args.seconds = std::atof(argv[++i]);
    } else if (flag == "--topology") {
      args.topology = argv[++i];
    } else if (flag == "--connect") {
      args.connect = argv[++i];
    } else if (flag == "--sizes") {
      args.sizes.clear();
      std::stringstream list(argv[++i]);
      std::string item;
      while (std::getline(list, item, ',')) args.sizes.push_back(std::atoi(item.c_str()));
    }
  }
  signal(SIGPIPE, SIG_IGN);
  std::printf(
      "small messages: %d publishers x 8 requests every 20 ms (%d requests/s), %.0f s per row; "
      "CPU clock of the receiving process (all threads)\n\n",
      args.publishers, args.publishers * 400, args.seconds);
  std::printf(
      "| req/msg | messages | raw CPU s | engine CPU s | raw us/msg | engine us/msg | "
      "engine CPU-s/M req | engine/raw | events seen |\n|---|---|---|---|---|---|---|---|---|\n");
  for (int size : args.sizes) {
    if (!args.connect.empty()) {
      Row sent = Run(args, "", size);
      std::printf("| %d | %lu sent to %s | | | | | | | |\n", size,
                  static_cast<unsigned long>(sent.messages), args.connect.c_str());
      continue;
    }
    Row raw = Run(args, "raw", size);
    Row eng = Run(args, "engine", size);
    const double us_per_msg = eng.cpu_seconds * 1e6 / static_cast<double>(eng.messages);
    const double per_million = eng.cpu_seconds * 1e6 / static_cast<double>(eng.requests);
    const double raw_us_per_msg = raw.cpu_seconds * 1e6 / static_cast<double>(raw.messages);
    std::printf("| %d | %lu | %.3f | %.3f | %.1f | %.1f | %.2f | %.2f | %lu of %lu |\n", size,
                static_cast<unsigned long>(eng.messages), raw.cpu_seconds, eng.cpu_seconds,
                raw_us_per_msg, us_per_msg, per_million,
                raw.cpu_seconds > 0 ? eng.cpu_seconds / raw.cpu_seconds : 0.0,
                static_cast<unsigned long>(eng.received), static_cast<unsigned long>(eng.requests));
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace
}  // namespace inferscope

int main(int argc, char** argv) { return inferscope::Main(argc, argv); }
