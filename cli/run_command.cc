#include <signal.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "cli/builtins.h"
#include "cli/commands.h"
#include "cli/engine.h"
#include "cli/progress.h"
#include "cli/status_log.h"
#include "pipeline/config.h"
#include "pipeline/json_text.h"

namespace inferscope {
namespace {

Status WriteFileAtomically(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) return Status::IOError("cannot write " + tmp);
    out << text << '\n';
    if (!out) return Status::IOError("cannot write " + tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return Status::IOError("cannot rename " + tmp + ": " + ec.message());
  return Status::Ok();
}

Result<std::unique_ptr<Engine>> BuildFromFile(const std::string& path,
                                              const Engine::Overrides& overrides) {
  Result<TopologySpec> spec = LoadTopologyFile(path);
  if (!spec.ok()) return spec.status();
  Registry registry;
  RegisterBuiltins(registry);
  return Engine::Build(*spec, registry, overrides);
}

}  // namespace

int CheckTopologyCommand(const std::vector<std::string>& paths) {
  Progress progress(paths.size() > 1);
  size_t bad = 0;
  for (size_t i = 0; i < paths.size(); ++i) {
    if (progress.Due()) {
      progress.Show("check-topology: " + std::to_string(i) + "/" + std::to_string(paths.size()) +
                    " files, " + std::to_string(bad) + " bad");
    }
    Result<std::unique_ptr<Engine>> engine = BuildFromFile(paths[i], {});
    progress.Done();
    if (!engine.ok()) {
      std::cerr << "error: " << engine.status().message() << "\n";
      ++bad;
      continue;
    }
    std::cout << paths[i] << ": OK\n";
  }
  if (paths.size() > 1) {
    std::cerr << "check-topology: " << paths.size() - bad << " of " << paths.size()
              << " files valid\n";
  }
  return bad == 0 ? 0 : 1;
}

void WaitForStop(const sigset_t& signals, double duration_s) {
  if (duration_s > 0) {
    timespec timeout{};
    timeout.tv_sec = static_cast<time_t>(duration_s);
    timeout.tv_nsec = static_cast<long>((duration_s - std::floor(duration_s)) * 1e9);
    sigtimedwait(&signals, nullptr, &timeout);
  } else {
    int sig = 0;
    sigwait(&signals, &sig);
  }
}

int RunCommand(const RunArgs& args) {
  // Signals are taken synchronously by this thread; every other thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  Engine::Overrides overrides{args.state_dir, args.listen, args.metrics_max_publishers};
  Result<std::unique_ptr<Engine>> built = BuildFromFile(args.topology, overrides);
  if (!built.ok()) {
    spdlog::error("{}", built.status().message());
    return 2;
  }
  Engine& engine = **built;
  if (Status st = engine.Start(); !st.ok()) {
    spdlog::error("{}", st.ToString());
    return 1;
  }
  if (!args.ready_file.empty()) {
    if (Status st = WriteFileAtomically(args.ready_file, ToJsonText(engine.Describe())); !st.ok()) {
      spdlog::error("{}", st.ToString());
      engine.Stop();
      return 1;
    }
  }
  if (!engine.HttpUrl().empty()) spdlog::info("query API at {}", engine.HttpUrl());
  StatusLogOptions status_options;
  status_options.interval_ms = ParseDurationMs(args.status_interval).value_or(0);  // checked
  status_options.publisher_idle_ms = ParseDurationMs(args.publisher_idle).value_or(60'000);
  if (status_options.publisher_idle_ms > 0) {
    status_options.check_ms =
        std::clamp<int64_t>(status_options.publisher_idle_ms, 10, status_options.check_ms);
  }
  if (Status st = status_options.Validate(); !st.ok()) {
    spdlog::error("{}", st.message());
    engine.Stop();
    return 2;
  }
  StateStore* state = engine.state();
  StatusLog status_log(status_options, &engine.metrics(), &SystemClock::Instance(),
                       [state] { return state != nullptr ? state->Watermark() : int64_t{0}; });
  status_log.Start();

  WaitForStop(signals, args.duration_s);
  status_log.Stop();
  spdlog::info("stopping: draining queues and flushing open windows");
  engine.Stop();
  return 0;
}

}  // namespace inferscope
