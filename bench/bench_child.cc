#include "bench/bench_child.h"

#include <dirent.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>

#include "cli/builtins.h"
#include "cli/engine.h"

namespace inferscope::bench {
namespace {

// utime + stime of a /proc/.../stat file, in seconds (0 if unreadable).
double StatCpuSeconds(const std::string& path) {
  std::ifstream f(path);
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  size_t close = text.rfind(')');
  if (close == std::string::npos || close + 2 > text.size()) return 0;
  std::istringstream rest(text.substr(close + 2));
  std::string field;
  // Fields after the command: state(3) ... utime(14) stime(15).
  unsigned long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stoul(field);
    if (i == 15) stime = std::stoul(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

}  // namespace

double ProcessCpuSeconds(pid_t pid) {
  clockid_t clock;
  timespec ts;
  if (clock_getcpuclockid(pid, &clock) == 0 && clock_gettime(clock, &ts) == 0) {
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
  }
  return StatCpuSeconds("/proc/" + std::to_string(pid) + "/stat");
}

std::vector<ThreadStats> ThreadStatsOf(pid_t pid) {
  std::map<std::string, ThreadStats> by_name;
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    std::ifstream comm(entry.path() / "comm");
    std::string name;
    std::getline(comm, name);
    ThreadStats& t = by_name[name];
    t.name = name;
    t.cpu_seconds += StatCpuSeconds((entry.path() / "stat").string());
    std::ifstream status(entry.path() / "status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("voluntary_ctxt_switches:", 0) == 0) {
        t.wakeups += std::strtoull(line.c_str() + 24, nullptr, 10);
      }
    }
  }
  std::vector<ThreadStats> out;
  for (auto& [name, t] : by_name) out.push_back(t);
  return out;
}

Child Spawn(const std::vector<std::string>& argv) {
  int in[2], out[2];
  if (pipe(in) != 0 || pipe(out) != 0) std::exit(2);
  Child c;
  c.pid = fork();
  if (c.pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    close(in[1]);
    close(out[0]);
    std::vector<char*> a;
    for (const std::string& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    execv("/proc/self/exe", a.data());
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  c.to_child = in[1];
  c.from_child = fdopen(out[0], "r");
  // The engine logs to stdout too: the endpoint is the line that starts with "endpoint ".
  char line[1024];
  do {
    if (std::fgets(line, sizeof(line), c.from_child) == nullptr) {
      std::fprintf(stderr, "child did not start\n");
      std::exit(2);
    }
  } while (std::strncmp(line, "endpoint ", 9) != 0);
  c.endpoint = line + 9;
  while (!c.endpoint.empty() && c.endpoint.back() == '\n') c.endpoint.pop_back();
  return c;
}

uint64_t Finish(Child& c) {
  close(c.to_child);
  char line[1024];
  uint64_t count = 0;
  while (std::fgets(line, sizeof(line), c.from_child) != nullptr) {
    if (std::strncmp(line, "count ", 6) == 0) count = std::strtoull(line + 6, nullptr, 10);
  }
  std::fclose(c.from_child);
  waitpid(c.pid, nullptr, 0);
  return count;
}

TopologySpec LoadTopologyOrExit(const std::string& path) {
  Result<TopologySpec> spec = LoadTopologyFile(path);
  if (!spec.ok()) {
    std::fprintf(stderr, "%s\n", spec.status().ToString().c_str());
    std::exit(2);
  }
  return std::move(spec).value();
}

std::string TempStateDir(const std::string& prefix) {
  std::string dir =
      (std::filesystem::temp_directory_path() / (prefix + "-" + std::to_string(getpid()))).string();
  std::filesystem::remove_all(dir);
  return dir;
}

std::unique_ptr<Engine> StartEngine(TopologySpec& spec, const std::string& state_dir) {
  // (YAML::Node copies share their data: writing through a copy edits the spec.)
  for (auto* stages : {&spec.sources, &spec.sinks}) {
    for (auto& s : *stages) {
      YAML::Node options = s.options.node();
      if (options["endpoint"]) options["endpoint"] = "tcp://127.0.0.1:*";
    }
  }
  Registry registry;
  RegisterBuiltins(registry);
  Result<std::unique_ptr<Engine>> built = Engine::Build(spec, registry, {state_dir, "127.0.0.1:0"});
  if (!built.ok() || !(*built)->Start().ok()) {
    std::fprintf(stderr, "engine failed: %s\n",
                 built.ok() ? "start" : built.status().ToString().c_str());
    std::exit(2);
  }
  return std::move(built).value();
}

int EngineChild(const std::string& topology) {
  TopologySpec spec = LoadTopologyOrExit(topology);
  const std::string state = TempStateDir("inferscope-bench");
  std::unique_ptr<Engine> built = StartEngine(spec, state);
  Engine& engine = *built;
  std::printf("endpoint %s\n", engine.Endpoint(spec.sources[0].name).c_str());
  std::fflush(stdout);
  char c;
  while (read(0, &c, 1) > 0) {
  }
  const uint64_t events = engine.metrics().CounterValue("inferscope_operator_queue_events_total");
  engine.Stop();
  built.reset();
  std::filesystem::remove_all(state);
  std::printf("count %lu\n", static_cast<unsigned long>(events));
  return 0;
}

}  // namespace inferscope::bench
