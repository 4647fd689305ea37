#pragma once

#include <chrono>
#include <csignal>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <httplib.h>

#include <nlohmann/json.hpp>

#include "tests/test_util.h"

namespace inferscope::testing {

// `text` with every occurrence of each key of `values` replaced by its value (topology templates:
// "STATE", "ENDPOINT", ...).
std::string Substitute(std::string text, const std::map<std::string, std::string>& values);

// The shipped default topology (topologies/inference-fleet.yaml) with every ZeroMQ endpoint and
// the HTTP listen address on ports the kernel chooses (read back from the ready file), so tests
// run in parallel with each other and with `make demo`.
std::string DefaultTopologyOnFreePorts();

// A loopback TCP port where nothing listens: bound, then closed (for programs that cannot bind
// port 0 and report it, such as Prometheus' --web.listen-address).
int FreePort();

// A free loopback TCP port below the kernel's ephemeral range (net.ipv4.ip_local_port_range), for
// a server stopped and started again on the same port: the kernel never hands such a port to
// another socket's bind to port 0 or outgoing connection in between (a port of that range was
// taken by a parallel test between an engine's stop and its restart: "Address already in use").
int RestartablePort();

// One stored pane of a series, as the store holds it.
struct StoredResult {
  uint64_t count, events, errors;
  double sum, min, max, p50, p99;
};

// Every stored pane of every series of the state directory `path` (opened after the engine
// stopped), keyed by "instance/model/metric@start"; failures are reported as test failures.
std::map<std::string, StoredResult> ReadStore(const std::string& path);

// Expects `got` to hold exactly the panes of `want`, each with equal counts, sums, extremes and
// quantiles.
void ExpectSamePanes(const std::map<std::string, StoredResult>& got,
                     const std::map<std::string, StoredResult>& want);

// GET `path` as JSON: null when there is no response, a discarded value when the body is not JSON;
// the HTTP status in `status` when given.
nlohmann::json GetJson(httplib::Client& http, const std::string& path, int* status = nullptr);

// The 1 s windows of /v1/instances/{instance}/summary for `model` (a '/' escaped) and `metric`
// over [from, to) that hold values (the API lists empty ones too, with null statistics).
nlohmann::json SummaryWindows(httplib::Client& http, const std::string& instance,
                              const std::string& model, const std::string& metric, int64_t from,
                              int64_t to);

// The integration tests' one way to run the engine: `inferscope run` as a subprocess on a topology
// written to a file, started with a ready file, and waited for until that file is written and
// /v1/health answers.
//
// Lifecycle: the constructor writes `<dir>/<name>.yaml` and starts the process (stdout and stderr
// to `<dir>/<name>.log`, the ready file `<dir>/<name>.ready.json`); WaitReady; then use it; Stop
// (or the destructor, which kills it). Give each run in one directory its own `name` (a restart on
// the same state: "engine-1", "engine-2").
class EngineProcess {
 public:
  struct Options {
    Options(std::string topology, std::string name = "engine",
            std::vector<std::string> extra_args = {})
        : topology(std::move(topology)), name(std::move(name)), extra_args(std::move(extra_args)) {}
    std::string topology;                 // the YAML, final (see Substitute)
    std::string name;                     // names the run's files
    std::vector<std::string> extra_args;  // more `inferscope run` flags (--state-dir, --listen)
  };

  EngineProcess(const TempDir& dir, Options options);
  EngineProcess(const TempDir& dir, std::string topology)
      : EngineProcess(dir, Options{std::move(topology)}) {}
  EngineProcess(const EngineProcess&) = delete;
  EngineProcess& operator=(const EngineProcess&) = delete;

  // Waits until the ready file is written and /v1/health answers 200 (when the topology has a
  // query API); false (Log() says why) when the process exited first or `timeout` passed.
  [[nodiscard]] bool WaitReady(std::chrono::milliseconds timeout = std::chrono::seconds(20));

  // What the ready file says (after WaitReady): {"http": ..., "endpoints": {stage: endpoint}}.
  const nlohmann::json& info() const { return info_; }
  std::string Endpoint(const std::string& stage) const;
  std::string HttpUrl() const;
  // A client of the query API (after WaitReady; only with a query API: HttpUrl() not empty).
  httplib::Client& http() { return *http_; }
  std::string Log() const { return ReadFile(log_); }
  Subprocess& process() { return *process_; }
  // Sends `signal` and waits for the exit; returns the exit code (see Subprocess::Wait).
  int Stop(int signal = SIGTERM);

 private:
  std::string ready_;
  std::string log_;
  nlohmann::json info_;
  std::unique_ptr<httplib::Client> http_;
  std::unique_ptr<Subprocess> process_;
};

}  // namespace inferscope::testing
