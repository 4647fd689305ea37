#pragma once

// Helpers shared by the benchmarks that measure a receiving process's CPU (small_messages,
// idle_cost): the benchmark re-executes itself as a child (a raw libzmq receiver, or the engine on
// a topology), reads the child's endpoint from its stdout, and reads its CPU from /proc.
//
// Protocol with a child: it prints "endpoint ADDR" once ready, runs until its stdin closes, then
// prints "count N" and exits.

#include <sys/types.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace inferscope {
class Engine;
struct TopologySpec;
}  // namespace inferscope

namespace inferscope::bench {

// CPU time of every thread of `pid`, exited ones included (clock_getcpuclockid: nanosecond
// resolution), in seconds; falls back to utime + stime of /proc/PID/stat (clock ticks).
double ProcessCpuSeconds(pid_t pid);

// What one thread name of a process has cost so far (threads of the same name summed).
struct ThreadStats {
  std::string name;        // /proc/PID/task/TID/comm
  double cpu_seconds = 0;  // utime + stime (clock ticks, so coarse)
  uint64_t wakeups = 0;    // voluntary context switches: times it slept and was woken
};
// Per thread name of `pid`, in name order (threads alive now only).
std::vector<ThreadStats> ThreadStatsOf(pid_t pid);

struct Child {
  pid_t pid = -1;
  int to_child = -1;  // its stdin
  FILE* from_child = nullptr;
  std::string endpoint;
};

// Runs /proc/self/exe with `argv` and waits for its "endpoint " line (other lines, such as the
// engine's log, are skipped). Exits the process if the child does not start.
Child Spawn(const std::vector<std::string>& argv);

// Closes the child's stdin, reads the count it prints, waits for it to exit.
uint64_t Finish(Child& c);

// The topology file at `path`; prints the error and exits with 2 when it does not load.
TopologySpec LoadTopologyOrExit(const std::string& path);

// A fresh (emptied) state directory under the system's temp directory: PREFIX-PID.
std::string TempStateDir(const std::string& prefix);

// The engine built from `spec` and started, with every endpoint of its sources and sinks moved to
// 127.0.0.1:* (ephemeral: a benchmark never collides with a running engine), the query server on
// 127.0.0.1:0 and its state in `state_dir`. Prints the error and exits with 2 when it fails.
std::unique_ptr<Engine> StartEngine(TopologySpec& spec, const std::string& state_dir);

// Child: the engine on `topology` with every endpoint of its sources and sinks on 127.0.0.1:*
// (ephemeral), the query server on 127.0.0.1:0 and a temporary state directory. Prints the endpoint
// of its first source, runs until stdin closes, then prints the events its operators received.
// Returns the exit code.
int EngineChild(const std::string& topology);

}  // namespace inferscope::bench
