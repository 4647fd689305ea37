#include <signal.h>

#include <spdlog/spdlog.h>

#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "cli/builtins.h"
#include "cli/commands.h"
#include "cli/engine.h"
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

int CheckTopologyCommand(const std::string& path) {
  Result<std::unique_ptr<Engine>> engine = BuildFromFile(path, {});
  if (!engine.ok()) {
    std::cerr << "error: " << engine.status().message() << "\n";
    return 1;
  }
  std::cout << path << ": OK\n";
  return 0;
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

  if (args.duration_s > 0) {
    timespec timeout{};
    timeout.tv_sec = static_cast<time_t>(args.duration_s);
    timeout.tv_nsec = static_cast<long>((args.duration_s - std::floor(args.duration_s)) * 1e9);
    sigtimedwait(&signals, nullptr, &timeout);
  } else {
    int sig = 0;
    sigwait(&signals, &sig);
  }
  spdlog::info("stopping: draining queues and flushing open windows");
  engine.Stop();
  return 0;
}

}  // namespace inferscope
