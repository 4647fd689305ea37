#include "tests/integration/engine_fixture.h"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <random>
#include <regex>
#include <utility>

#include "state/state_store.h"

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

namespace {

// Binds a loopback TCP socket to `port` (0: one the kernel chooses) and closes it; the port bound,
// or 0 when the bind failed.
int BindLoopback(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  int bound = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    socklen_t len = sizeof(addr);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    bound = ntohs(addr.sin_port);
  }
  ::close(fd);
  return bound;
}

}  // namespace

int FreePort() { return BindLoopback(0); }

int RestartablePort() {
  int low = 32768;  // Linux's default start of the ephemeral range
  std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range");
  range >> low;
  low = std::clamp(low, 2048, 65535);
  std::random_device seed;
  std::mt19937 rng(seed());
  std::uniform_int_distribution<int> pick(std::max(1024, low - 10'000), low - 1);
  for (int attempt = 0; attempt < 200; ++attempt) {
    if (const int port = BindLoopback(pick(rng)); port != 0) return port;
  }
  return FreePort();
}

std::map<std::string, StoredResult> ReadStore(const std::string& path) {
  StateStoreOptions options;
  options.path = path;
  options.create_if_missing = false;
  auto store = StateStore::Open(options, nullptr);
  EXPECT_TRUE(store.ok()) << store.status().ToString();
  std::map<std::string, StoredResult> out;
  if (!store.ok()) return out;
  std::vector<SeriesInfo> series;
  EXPECT_TRUE((*store)->ListSeries([&](const SeriesInfo& s) { series.push_back(s); }).ok());
  for (const SeriesInfo& s : series) {
    Status st =
        (*store)->ScanPanes(s.instance, s.model, s.metric, 0, INT64_MAX, [&](const StoredPane& p) {
          const Aggregate& a = p.agg;
          out[s.instance + "/" + s.model + "/" + s.metric + "@" + std::to_string(p.start_ms)] = {
              a.count,
              a.events,
              a.errors,
              a.sum,
              a.min,
              a.max,
              a.count ? a.sketch.Quantile(0.5) : 0,
              a.count ? a.sketch.Quantile(0.99) : 0};
          return Status::Ok();
        });
    EXPECT_TRUE(st.ok()) << st.ToString();
  }
  return out;
}

void ExpectSamePanes(const std::map<std::string, StoredResult>& got,
                     const std::map<std::string, StoredResult>& want) {
  EXPECT_EQ(got.size(), want.size());
  for (const auto& [key, w] : want) {
    auto it = got.find(key);
    if (it == got.end()) {
      ADD_FAILURE() << "missing pane " << key;
      continue;
    }
    const StoredResult& g = it->second;
    SCOPED_TRACE(key);
    EXPECT_EQ(g.count, w.count);
    EXPECT_EQ(g.events, w.events);
    EXPECT_EQ(g.errors, w.errors);
    EXPECT_DOUBLE_EQ(g.sum, w.sum);
    EXPECT_EQ(g.min, w.min);
    EXPECT_EQ(g.max, w.max);
    EXPECT_EQ(g.p50, w.p50);
    EXPECT_EQ(g.p99, w.p99);
  }
  for (const auto& [key, g] : got) {
    if (want.count(key) == 0) ADD_FAILURE() << "unexpected pane " << key;
  }
}

nlohmann::json GetJson(httplib::Client& http, const std::string& path, int* status) {
  auto res = http.Get(path.c_str());
  if (!res) return nlohmann::json();
  if (status != nullptr) *status = res->status;
  return nlohmann::json::parse(res->body, nullptr, false);
}

nlohmann::json SummaryWindows(httplib::Client& http, const std::string& instance,
                              const std::string& model, const std::string& metric, int64_t from,
                              int64_t to) {
  std::string model_param = model;
  for (size_t p = 0; (p = model_param.find('/', p)) != std::string::npos; p += 3) {
    model_param.replace(p, 1, "%2F");
  }
  nlohmann::json j = GetJson(
      http, "/v1/instances/" + instance + "/summary?model=" + model_param + "&metric=" + metric +
                "&window=1s&from=" + std::to_string(from) + "&to=" + std::to_string(to));
  nlohmann::json out = nlohmann::json::array();
  if (!j.is_object() || !j.contains("windows")) return out;
  for (const nlohmann::json& w : j["windows"]) {
    if (w["count"].get<int64_t>() > 0) out.push_back(w);
  }
  return out;
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
