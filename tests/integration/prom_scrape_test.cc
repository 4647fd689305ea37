// The prometheus_scrape source end to end: `inferscope run` as a subprocess scrapes a real HTTP
// server in the test (cpp-httplib on 127.0.0.1, port read back) that serves a vLLM page whose
// counters move with each scrape (including a counter reset), the real SGLang fixture page, a
// garbage page, and a target where nothing listens. The windows come out through the HTTP API;
// the down targets are in /v1/health.

#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>

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

constexpr char kTopology[] = R"(name: scrape
state:
  path: STATE
query:
  listen: 127.0.0.1:0
sources:
  - name: scrape
    type: prometheus_scrape
    options:
      interval: 200ms
      timeout: 2s
      jitter: 0
      concurrency: 2
      targets:
        - {url: "http://127.0.0.1:PORT/vllm", instance: vllm-a, engine: vllm}
        - {url: "http://127.0.0.1:PORT/sglang", instance: sglang-a}
        - {url: "http://127.0.0.1:PORT/garbage", instance: junk-a}
        - {url: "http://127.0.0.1:DOWNPORT/metrics", instance: down-a}
operators:
  - name: windows
    type: window_aggregate
    inputs: [scrape]
    options:
      pane: 1s
      out_of_orderness: 500ms
      idle_timeout: 0
sinks:
  - name: state
    type: rocksdb_state
    inputs: [windows]
)";

// The k-th vLLM page (k = 0, 1, ...; frozen from kPages - 1 on). Counters restart at k = 6 (a
// server restart): preemptions 3 per scrape, then 2 at the reset, then 3 again; TTFT count 10 per
// scrape (5 at the reset) with a sum of 0.1 s per request, so every interval's mean is 100 ms; its
// buckets put 3 in 10 requests in (0, 50 ms] and the rest in (50, 100 ms].
constexpr int kPages = 12;
constexpr int kReset = 6;
constexpr double kExpectedPreemptions = 5 * 3 + 2 + 5 * 3;  // increases of k = 1..11

std::string VllmPage(int k) {
  const int preempt = k < kReset ? 3 * k : 3 * (k - kReset) + 2;
  const int count = k < kReset ? 10 * k : 10 * (k - kReset) + 5;
  const int tokens = k < kReset ? 500 * k : 500 * (k - kReset) + 250;
  char page[2048];
  std::snprintf(page, sizeof(page),
                "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
                "# TYPE vllm:num_requests_running gauge\n"
                "vllm:num_requests_running{model_name=\"m\"} 4.0\n"
                "# TYPE vllm:kv_cache_usage_perc gauge\n"
                "vllm:kv_cache_usage_perc{model_name=\"m\"} 0.5\n"
                "# TYPE vllm:num_preemptions_total counter\n"
                "vllm:num_preemptions_total{model_name=\"m\"} %d.0\n"
                "# TYPE vllm:generation_tokens_total counter\n"
                "vllm:generation_tokens_total{model_name=\"m\"} %d.0\n"
                "# TYPE vllm:time_to_first_token_seconds histogram\n"
                "vllm:time_to_first_token_seconds_bucket{le=\"0.05\",model_name=\"m\"} %d.0\n"
                "vllm:time_to_first_token_seconds_bucket{le=\"0.1\",model_name=\"m\"} %d.0\n"
                "vllm:time_to_first_token_seconds_bucket{le=\"+Inf\",model_name=\"m\"} %d.0\n"
                "vllm:time_to_first_token_seconds_sum{model_name=\"m\"} %d.%d\n"
                "vllm:time_to_first_token_seconds_count{model_name=\"m\"} %d.0\n",
                preempt, tokens, count * 3 / 10, count, count, count / 10, count % 10, count);
  return page;
}

TEST(PromScrapeTest, ScrapesRatesResetsAndReportsDownTargets) {
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
  server.Get("/garbage", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("<html><body>not metrics</body></html>\n", "text/html");
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
  EngineProcess engine(dir, Substitute(kTopology, {{"STATE", dir.str() + "/state"},
                                                   {"DOWNPORT", std::to_string(FreePort())},
                                                   {"PORT", std::to_string(port)}}));
  ASSERT_TRUE(engine.WaitReady()) << engine.Log();
  httplib::Client http(engine.HttpUrl());
  const int64_t to = start_ms + 3'600'000;

  // Every increase of the preemption counter arrives exactly once, the reset counted as the new
  // value: the panes' sums add up to the served increases, whatever the scrape timing.
  double preemptions = 0;
  json w;
  ASSERT_TRUE(WaitFor(
      [&] {
        w = testing::SummaryWindows(http, "vllm-a", "m", "num_preemptions", start_ms, to);
        preemptions = 0;
        for (const json& p : w) preemptions += p["sum"].get<double>();
        return vllm_requests.load() > kPages && preemptions == kExpectedPreemptions;
      },
      std::chrono::seconds(30)))
      << "preemptions " << preemptions << " " << w.dump() << "\n"
      << engine.Log();

  // The histogram mean: 100 ms in every interval, across the reset.
  w = testing::SummaryWindows(http, "vllm-a", "m", "ttft_mean_ms", start_ms, to);
  ASSERT_FALSE(w.empty());
  double ttft_count = 0;
  for (const json& p : w) {
    EXPECT_NEAR(p["min"].get<double>(), 100, 1e-6) << p.dump();
    EXPECT_NEAR(p["max"].get<double>(), 100, 1e-6) << p.dump();
    ttft_count += p["count"].get<double>();
    // Means are exact observations, not buckets.
    EXPECT_FALSE(p["bucket_bounded"].get<bool>()) << p.dump();
  }
  EXPECT_EQ(ttft_count, kPages - 1);  // one mean per interval in which requests finished
  // The same histogram's buckets (kHistogram events): every request of every interval exactly
  // once across the reset, and bucket-bounded quantiles equal to Prometheus' histogram_quantile
  // over the window's buckets within the width of the bucket holding them (50 ms).
  w = testing::SummaryWindows(http, "vllm-a", "m", "ttft_ms", start_ms, to);
  ASSERT_FALSE(w.empty());
  double requests = 0;
  for (const json& p : w) {
    requests += p["count"].get<double>();
    const double n = p["count"].get<double>();
    // The API says these quantiles are bucket-bounded.
    EXPECT_TRUE(p["bucket_bounded"].get<bool>()) << p.dump();
    // The window's requests: about 30 % in the first bucket (rounded down per scrape).
    auto histogram_quantile = [n](double q, double first) {
      const double rank = q * n;
      if (rank <= first) return 50 * rank / first;
      return 50 + 50 * (rank - first) / (n - first);
    };
    for (const char* q : {"p50", "p90", "p99"}) {
      const double qv = q[1] == '5' ? 0.5 : q[2] == '0' ? 0.9 : 0.99;
      const double got = p[q].get<double>();
      const double expected = histogram_quantile(qv, 0.3 * n);
      EXPECT_LE(std::abs(got - expected), 50) << q << " " << p.dump();
      // At most 30 % of any window's requests are in (0, 50 ms], so p50..p99 fall in the
      // (50, 100 ms] bucket, as histogram_quantile puts them (less the sketch's 1 %).
      EXPECT_GE(got, 50 * 0.99) << q << " " << p.dump();
      EXPECT_LE(got, 100 * 1.01) << q << " " << p.dump();
    }
    EXPECT_LE(p["max"].get<double>(), 100) << "the highest bucket bound";
  }
  EXPECT_EQ(requests, 10 * (kReset - 1) + 5 + 10 * (kPages - 1 - kReset));
  // Gauges as they are; generation tokens as a positive rate.
  w = testing::SummaryWindows(http, "vllm-a", "m", "kv_cache_usage", start_ms, to);
  ASSERT_FALSE(w.empty());
  for (const json& p : w) EXPECT_DOUBLE_EQ(p["mean"].get<double>(), 0.5);
  w = testing::SummaryWindows(http, "vllm-a", "m", "num_requests_running", start_ms, to);
  ASSERT_FALSE(w.empty());
  EXPECT_DOUBLE_EQ(w[0]["max"].get<double>(), 4);
  w = testing::SummaryWindows(http, "vllm-a", "m", "generation_tokens_per_s", start_ms, to);
  ASSERT_FALSE(w.empty());
  EXPECT_GT(w[0]["max"].get<double>(), 0);

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

  // Up and down: the up gauge per target, and the down targets with their reasons in /v1/health.
  w = testing::SummaryWindows(http, "vllm-a", "_", "up", start_ms, to);
  ASSERT_FALSE(w.empty());
  EXPECT_DOUBLE_EQ(w[0]["min"].get<double>(), 1);
  w = testing::SummaryWindows(http, "down-a", "_", "up", start_ms, to);
  ASSERT_FALSE(w.empty());
  EXPECT_DOUBLE_EQ(w[0]["max"].get<double>(), 0);
  w = testing::SummaryWindows(http, "junk-a", "_", "up", start_ms, to);
  ASSERT_FALSE(w.empty());
  EXPECT_DOUBLE_EQ(w[0]["max"].get<double>(), 0);

  json health = GetJson(http, "/v1/health");
  ASSERT_TRUE(health.contains("scrape")) << health.dump();
  EXPECT_EQ(health["status"], "ok");
  EXPECT_EQ(health["scrape"]["targets"], 4);
  EXPECT_EQ(health["scrape"]["up"], 2);
  ASSERT_EQ(health["scrape"]["down"].size(), 2u) << health.dump();
  for (const json& d : health["scrape"]["down"]) {
    const std::string instance = d["instance"];
    const std::string error = d["last_error"];
    if (instance == "down-a") {
      EXPECT_EQ(error.rfind("connect:", 0), 0u) << error;
    } else {
      EXPECT_EQ(instance, "junk-a");
      EXPECT_EQ(error.rfind("garbage:", 0), 0u) << error;
    }
    EXPECT_GE(d["failures"].get<int>(), 1);
  }

  // The engine's own metrics count the failures by reason.
  auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(
      metrics->body.find("inferscope_scrape_errors_total{stage=\"scrape\",reason=\"connect\"}"),
      std::string::npos)
      << metrics->body.substr(0, 2000);
  EXPECT_NE(metrics->body.find("inferscope_scrape_counter_resets_total{stage=\"scrape\"}"),
            std::string::npos);

  EXPECT_EQ(engine.Stop(), 0) << engine.Log();
}

}  // namespace
}  // namespace inferscope
