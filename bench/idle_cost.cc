// Idle cost: what the engine's CPU costs with no input at all (issue 15, item 2: target <= 0.05
// CPU-s per 100 s).
//
// Two processes (this binary re-executed), started together and measured over the same interval
// after a settling period:
//
//   baseline  a bare libzmq PULL socket bound on 127.0.0.1 and a thread blocked in zmq_poll with
//             no timeout: what an idle ZeroMQ receiver costs on this machine (libzmq's I/O thread
//             included)
//   engine    the default topology (topologies/inference-fleet.yaml, ephemeral ports, temporary
//             state, the query server on 127.0.0.1:0)
//
// CPU is the process's CPU clock (clock_getcpuclockid: every thread, nanoseconds). Printed: each
// process's CPU-s per 100 s, the engine minus the baseline, their ratio and the target; then the
// engine's threads by name with their CPU and wake-ups per second (voluntary context switches)
// over the interval, which says which thread still wakes.
//
// Usage: idle_cost [--seconds S (30)] [--settle S (3)] [--topology FILE]

#include <signal.h>
#include <unistd.h>

#include <zmq.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_child.h"

namespace inferscope {
namespace {

constexpr double kTargetPer100s = 0.05;

// Child: an idle libzmq receiver. Prints its endpoint, blocks in zmq_poll until stdin closes.
int BaselineChild() {
  zmq::context_t ctx;
  zmq::socket_t pull(ctx, zmq::socket_type::pull);
  pull.bind("tcp://127.0.0.1:*");
  std::printf("endpoint %s\n", pull.get(zmq::sockopt::last_endpoint).c_str());
  std::fflush(stdout);
  zmq::pollitem_t items[2] = {{pull.handle(), 0, ZMQ_POLLIN, 0}, {nullptr, 0, ZMQ_POLLIN, 0}};
  uint64_t messages = 0;
  zmq::message_t msg;
  while (true) {
    zmq::poll(items, 2, std::chrono::milliseconds(-1));
    while (pull.recv(msg, zmq::recv_flags::dontwait)) ++messages;
    if (items[1].revents != 0) break;  // the parent closed our stdin (POLLHUP)
  }
  std::printf("count %lu\n", static_cast<unsigned long>(messages));
  return 0;
}

int Main(int argc, char** argv) {
  double seconds = 30;
  double settle = 3;
  std::string topology = "topologies/inference-fleet.yaml";
  for (int i = 1; i + 1 < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "--child") {
      std::string kind = argv[i + 1];
      for (int j = i + 2; j + 1 < argc; ++j) {
        if (std::string(argv[j]) == "--topology") topology = argv[j + 1];
      }
      return kind == "baseline" ? BaselineChild() : bench::EngineChild(topology);
    }
    if (flag == "--seconds") {
      seconds = std::atof(argv[++i]);
    } else if (flag == "--settle") {
      settle = std::atof(argv[++i]);
    } else if (flag == "--topology") {
      topology = argv[++i];
    } else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  if (seconds <= 0) {
    std::fprintf(stderr, "--seconds must be > 0\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  bench::Child baseline = bench::Spawn({"idle_cost", "--child", "baseline"});
  bench::Child engine = bench::Spawn({"idle_cost", "--child", "engine", "--topology", topology});
  std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int64_t>(settle * 1000)));

  const double base0 = bench::ProcessCpuSeconds(baseline.pid);
  const double eng0 = bench::ProcessCpuSeconds(engine.pid);
  const std::vector<bench::ThreadStats> threads0 = bench::ThreadStatsOf(engine.pid);
  std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
  const double base_cpu = bench::ProcessCpuSeconds(baseline.pid) - base0;
  const double eng_cpu = bench::ProcessCpuSeconds(engine.pid) - eng0;
  const std::vector<bench::ThreadStats> threads1 = bench::ThreadStatsOf(engine.pid);
  bench::Finish(engine);
  bench::Finish(baseline);

  const double per100 = 100 / seconds;
  std::printf(
      "idle cost: no input for %.0f s (after %.0f s to settle); CPU clock of each process\n\n",
      seconds, settle);
  std::printf("| process | CPU-s | CPU-s per 100 s |\n|---|---|---|\n");
  std::printf("| baseline (libzmq PULL, thread blocked in zmq_poll) | %.4f | %.4f |\n", base_cpu,
              base_cpu * per100);
  std::printf("| engine (%s) | %.4f | %.4f |\n", topology.c_str(), eng_cpu, eng_cpu * per100);
  std::printf(
      "\nengine - baseline: %.4f CPU-s per 100 s; engine / baseline: %s; target <= %.2f: %s\n",
      (eng_cpu - base_cpu) * per100,
      base_cpu > 0 ? std::to_string(eng_cpu / base_cpu).c_str() : "n/a (baseline 0)",
      kTargetPer100s, eng_cpu * per100 <= kTargetPer100s ? "met" : "MISSED");

  std::map<std::string, bench::ThreadStats> before;
  for (const bench::ThreadStats& t : threads0) before[t.name] = t;
  std::printf(
      "\nengine threads over the interval (CPU in clock ticks, so coarse):\n\n"
      "| thread | CPU-s | wake-ups/s |\n|---|---|---|\n");
  for (const bench::ThreadStats& t : threads1) {
    const bench::ThreadStats& b = before[t.name];
    std::printf("| %s | %.2f | %.1f |\n", t.name.c_str(), t.cpu_seconds - b.cpu_seconds,
                static_cast<double>(t.wakeups - b.wakeups) / seconds);
  }
  return 0;
}

}  // namespace
}  // namespace inferscope

int main(int argc, char** argv) { return inferscope::Main(argc, argv); }
