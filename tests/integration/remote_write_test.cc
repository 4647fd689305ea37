// The prometheus_remote_write source with a real Prometheus (Debian's `prometheus`, as a
// subprocess): a fixture HTTP server in the test (cpp-httplib on 127.0.0.1, port read back) serves
// a vLLM page whose counters and histogram move with each scrape (a counter reset included) and
// the real SGLang fixture page; Prometheus scrapes both every second and remote-writes into
// `inferscope run`; the engine's windows (HTTP API) match the pages: gauges as served, the
// preemption increases exactly, the TTFT histogram mean, the token rate. Skipped, with a message,
// only when no prometheus binary is installed (scripts/install-deps.sh installs one).

#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "tests/integration/engine_fixture.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using nlohmann::json;
using testing::EngineProcess;
using testing::FreePort;
using testing::GetJson;
using testing::ReadFile;
using testing::Substitute;
using testing::TempDir;
using testing::WaitFor;

constexpr char kTopology[] = R"(name: remote-write
state:
  path: STATE
query:
  listen: 127.0.0.1:0
sources:
  - name: rw
    type: prometheus_remote_write
    options:
      listen: 127.0.0.1:0
      flush_delay: 300ms
operators:
  - name: windows
    type: window_aggregate
    inputs: [rw]
    options:
      pane: 1s
      out_of_orderness: 3s
      idle_timeout: 0
sinks:
  - name: state
    type: rocksdb_state
    inputs: [windows]
)";

constexpr char kPrometheusConfig[] = R"(global:
  scrape_interval: 1s
  scrape_timeout: 900ms
scrape_configs:
  - job_name: vllm
    metrics_path: /vllm
    static_configs:
      - targets: ['127.0.0.1:PORT']
        labels: {instance: vllm-a}
  - job_name: sglang
    metrics_path: /sglang
    static_configs:
      - targets: ['127.0.0.1:PORT']
        labels: {instance: sglang-a}
remote_write:
  - url: RWURL/api/v1/write
    metadata_config: {send: false}
    queue_config: {batch_send_deadline: 200ms, max_shards: 2, min_backoff: 50ms, max_backoff: 500ms}
)";

// The k-th vLLM page (frozen from kPages - 1 on): preemptions +3 per scrape, reset at k = kReset
// to 2; TTFT +10 requests per scrape (5 at the reset) of 0.1 s each; generation tokens +500.
constexpr int kPages = 10;
constexpr int kReset = 5;
constexpr double kExpectedPreemptions = 4 * 3 + 2 + 4 * 3;  // increases of k = 1..9

std::string VllmPage(int k) {
  const int preempt = k < kReset ? 3 * k : 3 * (k - kReset) + 2;
  const int count = k < kReset ? 10 * k : 10 * (k - kReset) + 5;
  const int tokens = k < kReset ? 500 * k : 500 * (k - kReset) + 250;
  char page[2048];
  std::snprintf(page, sizeof(page),
                "# TYPE vllm:num_requests_running gauge\n"
                "vllm:num_requests_running{model_name=\"m\"} 4.0\n"
                "# TYPE vllm:kv_cache_usage_perc gauge\n"
                "vllm:kv_cache_usage_perc{model_name=\"m\"} 0.5\n"
                "# TYPE vllm:num_preemptions_total counter\n"
                "vllm:num_preemptions_total{model_name=\"m\"} %d.0\n"
                "# TYPE vllm:generation_tokens_total counter\n"
                "vllm:generation_tokens_total{model_name=\"m\"} %d.0\n"
                "# TYPE vllm:time_to_first_token_seconds histogram\n"
                "vllm:time_to_first_token_seconds_bucket{le=\"0.1\",model_name=\"m\"} %d.0\n"
                "vllm:time_to_first_token_seconds_bucket{le=\"+Inf\",model_name=\"m\"} %d.0\n"
                "vllm:time_to_first_token_seconds_sum{model_name=\"m\"} %d.%d\n"
                "vllm:time_to_first_token_seconds_count{model_name=\"m\"} %d.0\n",
                preempt, tokens, count, count, count / 10, count % 10, count);
  return page;
}

std::string PrometheusBinary() {
  for (const char* p : {"/usr/bin/prometheus", "/usr/local/bin/prometheus"}) {
    if (::access(p, X_OK) == 0) return p;
  }
  return "";
}

TEST(RemoteWriteTest, RealPrometheusScrapesAndRemoteWritesIntoTheEngine) {
  const std::string prometheus = PrometheusBinary();
  if (prometheus.empty()) {
    GTEST_SKIP() << "no prometheus binary (/usr/bin/prometheus or /usr/local/bin/prometheus); "
                    "scripts/install-deps.sh installs it";
  }
  httplib::Server server;
  std::atomic<int> vllm_requests{0};
  server.Get("/vllm", [&](const httplib::Request&, httplib::Response& res) {
    const int k = std::min(vllm_requests.fetch_add(1), kPages - 1);
    res.set_content(VllmPage(k), "text/plain; version=0.0.4");
  });
  const std::string sglang =
      ReadFile(testing::SourceDir() + "/tests/data/prometheus/sglang-metrics.txt");
  ASSERT_FALSE(sglang.empty());
  server.Get("/sglang", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content(sglang, "text/plain; version=0.0.4");
  });
  const int port = server.bind_to_any_port("127.0.0.1");
  ASSERT_GT(port, 0);
  std::thread serving([&] { server.listen_after_bind(); });
  struct StopServer {
    httplib::Server& server;
    std::thread& thread;
    ~StopServer() {
      server.stop();
      thread.join();
    }
  } stop_server{server, serving};

  const int64_t start_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count() /
                           1000 * 1000;
  TempDir dir;
  EngineProcess engine(dir, Substitute(kTopology, {{"STATE", dir.str() + "/state"}}));
  ASSERT_TRUE(engine.WaitReady()) << engine.Log();
  const std::string rw_url = engine.Endpoint("rw");
  ASSERT_EQ(rw_url.rfind("http://127.0.0.1:", 0), 0u) << rw_url;

  // Prometheus, with its own storage and a free port.
  const std::string config = dir.str() + "/prometheus.yml";
  {
    std::ofstream f(config);
    f << Substitute(kPrometheusConfig, {{"PORT", std::to_string(port)}, {"RWURL", rw_url}});
  }
  std::filesystem::create_directories(dir.path() / "prom-data");
  const std::string prom_log = dir.str() + "/prometheus.log";
  testing::Subprocess prom(
      {prometheus, "--config.file=" + config, "--storage.tsdb.path=" + dir.str() + "/prom-data",
       "--web.listen-address=127.0.0.1:" + std::to_string(FreePort()), "--log.level=warn"},
      prom_log);

  httplib::Client http(engine.HttpUrl());
  const int64_t to = start_ms + 3'600'000;
  // Every increase of the preemption counter arrives once, the reset counted as the new value.
  double preemptions = 0;
  json w;
  ASSERT_TRUE(WaitFor(
      [&] {
        w = testing::SummaryWindows(http, "vllm-a", "m", "num_preemptions", start_ms, to);
        preemptions = 0;
        for (const json& p : w) preemptions += p["sum"].get<double>();
        return vllm_requests.load() > kPages && preemptions == kExpectedPreemptions;
      },
      std::chrono::seconds(60)))
      << "preemptions " << preemptions << " after " << vllm_requests.load() << " scrapes "
      << w.dump() << "\nprometheus:\n"
      << ReadFile(prom_log) << "\nengine:\n"
      << engine.Log();

  // The histogram mean (Δsum / Δcount): 100 ms in every interval, across the reset.
  w = testing::SummaryWindows(http, "vllm-a", "m", "ttft_mean_ms", start_ms, to);
  ASSERT_FALSE(w.empty());
  double ttft_count = 0;
  for (const json& p : w) {
    EXPECT_NEAR(p["min"].get<double>(), 100, 1e-6) << p.dump();
    EXPECT_NEAR(p["max"].get<double>(), 100, 1e-6) << p.dump();
    ttft_count += p["count"].get<double>();
  }
  EXPECT_EQ(ttft_count, kPages - 1);
  // The token rate: 500 per scrape over Prometheus' 1 s interval (its scrape times jitter by a
  // few ms; the reset's increase is 250).
  w = testing::SummaryWindows(http, "vllm-a", "m", "generation_tokens_per_s", start_ms, to);
  ASSERT_FALSE(w.empty());
  double max_rate = 0;
  for (const json& p : w) max_rate = std::max(max_rate, p["max"].get<double>());
  EXPECT_GT(max_rate, 400);
  EXPECT_LT(max_rate, 625);
  w = testing::SummaryWindows(http, "vllm-a", "m", "kv_cache_usage", start_ms, to);
  ASSERT_FALSE(w.empty());
  for (const json& p : w) EXPECT_DOUBLE_EQ(p["mean"].get<double>(), 0.5);
  w = testing::SummaryWindows(http, "vllm-a", "m", "num_requests_running", start_ms, to);
  ASSERT_FALSE(w.empty());
  for (const json& p : w) EXPECT_DOUBLE_EQ(p["mean"].get<double>(), 4);

  // The real SGLang page: its gauges under the page's model label.
  const std::string llama = "meta-llama/Llama-3.1-8B-Instruct";
  w = testing::SummaryWindows(http, "sglang-a", llama, "num_requests_running", start_ms, to);
  ASSERT_FALSE(w.empty()) << GetJson(http, "/v1/instances").dump();
  EXPECT_DOUBLE_EQ(w[0]["mean"].get<double>(), 162);
  w = testing::SummaryWindows(http, "sglang-a", llama, "num_requests_waiting", start_ms, to);
  ASSERT_FALSE(w.empty());
  EXPECT_DOUBLE_EQ(w[0]["mean"].get<double>(), 2826);
  w = testing::SummaryWindows(http, "sglang-a", llama, "kv_cache_usage", start_ms, to);
  ASSERT_FALSE(w.empty());
  EXPECT_DOUBLE_EQ(w[0]["mean"].get<double>(), 0.28);

  // The engine's metrics: requests accepted, none refused; Prometheus' own series (up,
  // scrape_duration_seconds...) counted as unmapped.
  auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find(
                "inferscope_remote_write_requests_total{stage=\"rw\",result=\"bad_protobuf\"} 0"),
            std::string::npos)
      << metrics->body.substr(0, 3000);
  EXPECT_EQ(
      metrics->body.find("inferscope_remote_write_requests_total{stage=\"rw\",result=\"ok\"} 0"),
      std::string::npos);

  prom.Signal(SIGTERM);
  prom.Wait();
  EXPECT_EQ(engine.Stop(), 0) << engine.Log();
}

}  // namespace
}  // namespace inferscope
