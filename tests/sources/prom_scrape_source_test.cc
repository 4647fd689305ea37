// The prometheus_scrape source in process against a real cpp-httplib server on 127.0.0.1 (port
// read back): every target of many is scraped and each scrape is reported once (the due-time heap
// and the hand-over to the fetch threads), and a file_sd change drops a target (its schedule, its
// up count and its health entry) and adds another while the kept target keeps being scraped.

#include <gtest/gtest.h>
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "pipeline/clock.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "pipeline/source_health.h"
#include "sources/prom_scrape_source.h"
#include "tests/sources/collecting_output.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

constexpr char kPage[] =
    "# TYPE vllm:num_requests_running gauge\n"
    "vllm:num_requests_running{model_name=\"m\"} 4\n";

// A server on 127.0.0.1 answering every path with kPage and counting the requests per path.
class CountingServer {
 public:
  CountingServer() {
    // One request per connection: cpp-httplib's server holds a pool thread per open keep-alive
    // connection, and more targets than pool threads would wait for one.
    server_.set_keep_alive_max_count(1);
    server_.Get(R"(/.*)", [this](const httplib::Request& req, httplib::Response& res) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++requests_[req.path];
      }
      res.set_content(kPage, "text/plain; version=0.0.4");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~CountingServer() {
    server_.stop();
    thread_.join();
  }
  int port() const { return port_; }
  int Requests(const std::string& path) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = requests_.find(path);
    return it == requests_.end() ? 0 : it->second;
  }
  int Total() {
    std::lock_guard<std::mutex> lock(mu_);
    int n = 0;
    for (const auto& [path, count] : requests_) n += count;
    return n;
  }

 private:
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  std::mutex mu_;
  std::map<std::string, int> requests_;
};

using testing::CollectingOutput;

// The source with its engine services, run on a thread of its own.
struct Harness {
  explicit Harness(PromScrapeSource::Options o) : source(std::move(o)) {
    ctx.name = "scrape";
    ctx.interner = &interner;
    ctx.metrics = &metrics;
    ctx.clock = &SystemClock::Instance();
    ctx.services.Provide(&health);
  }
  ~Harness() { Stop(); }
  bool Start() {
    if (!source.Open(ctx).ok()) return false;
    run = std::thread([this] { EXPECT_TRUE(source.Run(out, stop).ok()); });
    return true;
  }
  void Stop() {
    if (!run.joinable()) return;
    stop = true;
    run.join();
    source.Close();
  }
  // `up` events per instance name.
  std::map<std::string, int> UpEvents() {
    std::map<std::string, int> n;
    for (const Event& e : out.events()) {
      if (interner.Name(e.metric) == "up") ++n[std::string(interner.Name(e.instance))];
    }
    return n;
  }
  double TargetsUp() {
    return metrics.GetGauge("inferscope_scrape_targets_up", "", {{"stage", "scrape"}})->value();
  }

  Interner interner;
  MetricsRegistry metrics;
  SourceHealth health;
  StageContext ctx;
  PromScrapeSource source;
  CollectingOutput out;
  std::atomic<bool> stop{false};
  std::thread run;
};

TEST(PromScrapeSourceTest, EveryTargetOfManyIsScrapedAndEachScrapeReportedOnce) {
  CountingServer server;
  ASSERT_GT(server.port(), 0);
  constexpr int kTargets = 40;
  PromScrapeSource::Options o;
  for (int i = 0; i < kTargets; ++i) {
    ScrapeTargetConfig t;
    t.url = "http://127.0.0.1:" + std::to_string(server.port()) + "/t/" + std::to_string(i);
    t.instance = "i" + std::to_string(i);
    o.targets.push_back(t);
  }
  o.interval_ms = 100;
  o.timeout_ms = 5000;
  o.concurrency = 3;  // fewer fetch threads than targets due at once
  Harness h(o);
  ASSERT_TRUE(h.Start());
  ASSERT_TRUE(testing::WaitFor([&] {
    for (int i = 0; i < kTargets; ++i) {
      if (server.Requests("/t/" + std::to_string(i)) < 3) return false;
    }
    return h.TargetsUp() == kTargets;
  }));
  h.Stop();

  // Every scrape that came back was counted and gave exactly one `up` event of its target; a
  // fetch still in flight when the source stopped is the only one the server saw and the source
  // did not report.
  const uint64_t scrapes =
      h.metrics.CounterValue("inferscope_scrapes_total", {{"stage", "scrape"}});
  EXPECT_LE(scrapes, static_cast<uint64_t>(server.Total()));
  EXPECT_GE(scrapes + o.concurrency, static_cast<uint64_t>(server.Total()));
  const std::map<std::string, int> up = h.UpEvents();
  int up_total = 0;
  for (int i = 0; i < kTargets; ++i) {
    const int requests = server.Requests("/t/" + std::to_string(i));
    const auto it = up.find("i" + std::to_string(i));
    ASSERT_NE(it, up.end()) << i;
    EXPECT_LE(it->second, requests) << i;
    EXPECT_GE(it->second + 1, requests) << i;
    up_total += it->second;
  }
  EXPECT_EQ(static_cast<uint64_t>(up_total), scrapes);
  const std::vector<SourceHealth::Target> health = h.health.Snapshot();
  EXPECT_EQ(health.size(), static_cast<size_t>(kTargets));
  for (const SourceHealth::Target& t : health) {
    EXPECT_TRUE(t.up) << t.target;
    EXPECT_EQ(t.failures, 0u) << t.target;
    EXPECT_GT(t.last_attempt_ms, 0) << t.target;
  }
}

TEST(PromScrapeSourceTest, FileSdChangeDropsAndAddsTargets) {
  CountingServer server;
  ASSERT_GT(server.port(), 0);
  testing::TempDir dir;
  const std::string sd = dir.str() + "/targets.yaml";
  const std::string host = "127.0.0.1:" + std::to_string(server.port());
  auto write_sd = [&](const std::vector<std::string>& paths) {
    std::ofstream f(sd);
    for (const std::string& p : paths) {
      f << "- targets: ['" << host << "']\n  labels: {__metrics_path__: '" << p
        << "', instance: 'inst" << p.substr(1) << "'}\n";
    }
  };
  write_sd({"/a", "/b"});
  PromScrapeSource::Options o;
  o.file_sd = sd;
  o.file_sd_refresh_ms = 100;
  o.interval_ms = 100;
  o.timeout_ms = 5000;
  o.concurrency = 2;
  Harness h(o);
  ASSERT_TRUE(h.Start());
  ASSERT_TRUE(testing::WaitFor([&] {
    return server.Requests("/a") >= 2 && server.Requests("/b") >= 2 && h.TargetsUp() == 2;
  }));

  write_sd({"/a", "/c"});
  // A later modification time than the first file's, whatever the file system's resolution.
  std::filesystem::last_write_time(sd,
                                   std::filesystem::last_write_time(sd) + std::chrono::seconds(2));
  ASSERT_TRUE(testing::WaitFor([&] {
    return server.Requests("/c") >= 2 && h.health.Snapshot().size() == 2 && h.TargetsUp() == 2;
  }));
  // /b is gone: at most a fetch already in flight at the change still reaches the server while /a
  // is scraped three more times.
  const int b = server.Requests("/b");
  const int a = server.Requests("/a");
  ASSERT_TRUE(testing::WaitFor([&] { return server.Requests("/a") >= a + 3; }));
  EXPECT_LE(server.Requests("/b"), b + 1);
  h.Stop();

  std::vector<std::string> urls;
  for (const SourceHealth::Target& t : h.health.Snapshot()) urls.push_back(t.target);
  std::sort(urls.begin(), urls.end());
  EXPECT_EQ(urls, (std::vector<std::string>{"http://" + host + "/a", "http://" + host + "/c"}));
  const std::map<std::string, int> up = h.UpEvents();
  EXPECT_GE(up.count("insta") ? up.at("insta") : 0, a + 2);
  EXPECT_GE(up.count("instc") ? up.at("instc") : 0, 1);
  EXPECT_EQ(h.metrics.CounterValue("inferscope_scrape_file_sd_errors_total", {{"stage", "scrape"}}),
            0u);
}

}  // namespace
}  // namespace inferscope
