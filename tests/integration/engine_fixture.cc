#include "tests/integration/engine_fixture.h"

#include <fstream>
#include <regex>
#include <utility>

namespace inferscope::testing {

std::string Substitute(std::string text, const std::map<std::string, std::string>& values) {
  for (const auto& [from, to] : values) {
    for (size_t at = text.find(from); at != std::string::npos;
         at = text.find(from, at + to.size())) {
      text.replace(at, from.size(), to);
    }
  }
  return text;
}

std::string DefaultTopologyOnFreePorts() {
  const std::string topology = ReadFile(SourceDir() + "/topologies/inference-fleet.yaml");
  const std::string zmq =
      std::regex_replace(topology, std::regex(R"(tcp://127\.0\.0\.1:\d+)"), "tcp://127.0.0.1:*");
  return std::regex_replace(zmq, std::regex(R"(listen: 127\.0\.0\.1:\d+)"), "listen: 127.0.0.1:0");
}

EngineProcess::EngineProcess(const TempDir& dir, Options options) {
  const std::string base = dir.str() + "/" + options.name;
  const std::string topology = base + ".yaml";
  std::ofstream(topology) << options.topology;
  ready_ = base + ".ready.json";
  log_ = base + ".log";
  std::vector<std::string> argv = {InferscopeBinary(), "run",          "--topology",
                                   topology,           "--ready-file", ready_};
  argv.insert(argv.end(), options.extra_args.begin(), options.extra_args.end());
  process_ = std::make_unique<Subprocess>(argv, log_);
}

bool EngineProcess::WaitReady(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto left = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                 std::chrono::steady_clock::now());
  };
  if (!WaitFor([&] { return !ReadFile(ready_).empty() || !process_->Running(); }, left())) {
    return false;
  }
  const std::string ready = ReadFile(ready_);
  if (ready.empty()) return false;  // the engine exited
  info_ = nlohmann::json::parse(ready, nullptr, false);
  if (!info_.is_object() || !info_.contains("http") || !info_["http"].is_string()) return false;
  if (HttpUrl().empty()) return process_->Running();  // a topology without a query API
  http_ = std::make_unique<httplib::Client>(HttpUrl());
  return WaitFor(
             [&] {
               if (!process_->Running()) return true;
               auto res = http_->Get("/v1/health");
               return res && res->status == 200;
             },
             left()) &&
         process_->Running();
}

std::string EngineProcess::Endpoint(const std::string& stage) const {
  return info_["endpoints"][stage].get<std::string>();
}

std::string EngineProcess::HttpUrl() const { return info_["http"].get<std::string>(); }

int EngineProcess::Stop(int signal) {
  process_->Signal(signal);
  return process_->Wait();
}

}  // namespace inferscope::testing
