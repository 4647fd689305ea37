// Query-time windows over storage tiers: which tier answers, that every tier gives the same
// answer, retention as the HTTP API shows it (ManualClock), and the parameter errors.

#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "query/handlers.h"
#include "query/server.h"
#include "state/state_store.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using nlohmann::json;

constexpr int64_t kSecond = 1'000;
constexpr int64_t kMinute = 60 * kSecond;
constexpr int64_t kHour = 60 * kMinute;
constexpr int64_t kDay = 24 * kHour;
constexpr int64_t kBase = 472'223 * kHour;  // an hour boundary in 2023
constexpr int64_t kSpan = 3 * kHour;        // data over [kBase, kBase + 3 h)

class TieredQueryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StateStoreOptions options;
    options.path = dir_.str();
    options.tiers = DefaultTiers();  // 10s/6h, 1m/7d, 1h/90d
    options.rollup_delay_ms = kMinute;
    options.clock = &clock_;
    auto opened = StateStore::Open(options, &metrics_);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    store_ = std::move(opened).value();

    // One value per pane: 1, 2, 3, ... so every window's count, sum, min and max are known.
    std::vector<WindowSummary> panes;
    int k = 0;
    for (int64_t start = kBase; start < kBase + kSpan; start += 10 * kSecond, ++k) {
      WindowSummary pane;
      pane.series = {interner_.Intern("node-1"), interner_.Intern("llama"),
                     interner_.Intern("ttft_ms")};
      pane.start_ms = start;
      pane.end_ms = start + 10 * kSecond;
      pane.max_event_time_ms = start;
      pane.agg.Add(k + 1, start);
      pane.agg.AddEvent(k % 10 == 0);
      panes.push_back(std::move(pane));
    }
    ASSERT_TRUE(store_->WritePanes(panes, interner_, kBase + kSpan + kMinute).ok());
    clock_.Set(kBase + kSpan + kMinute);
    Result<MaintenanceReport> report = store_->RunMaintenance();
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    ASSERT_EQ(store_->RolledThroughMs(2), kBase + kSpan);

    server_ = std::make_unique<QueryServer>(
        QueryServer::Options{}, store_.get(), &metrics_, &clock_, [] { return json::object(); },
        std::vector<Registry::Entry>{});
    Status s = server_->Start();
    ASSERT_TRUE(s.ok()) << s.ToString();
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
  }

  json Get(const std::string& path, int want_status = 200) {
    auto res = client_->Get(path);
    EXPECT_TRUE(res) << path;
    if (!res) return json();
    EXPECT_EQ(res->status, want_status) << path << ": " << res->body;
    return json::parse(res->body, nullptr, false);
  }

  static std::string Range(int64_t from, int64_t to) {
    return "&from=" + std::to_string(from) + "&to=" + std::to_string(to);
  }

  // Expected count and sum of the values of panes starting in [from, to) (values are k + 1).
  static std::pair<int64_t, double> Expected(int64_t from, int64_t to) {
    from = std::max(from, kBase);
    to = std::min(to, kBase + kSpan);
    if (to <= from) return {0, 0};
    int64_t first = (from - kBase) / (10 * kSecond) + 1;
    int64_t last = (to - kBase) / (10 * kSecond);
    return {last - first + 1, static_cast<double>((first + last) * (last - first + 1)) / 2};
  }

  testing::TempDir dir_;
  ManualClock clock_{kBase};
  MetricsRegistry metrics_;
  Interner interner_;
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<QueryServer> server_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(TieredQueryTest, SummaryPicksTheCoarsestExactTierAndSaysWhich) {
  struct Case {
    std::string window;
    std::string tier;
    int64_t resolution_ms;
  };
  for (const Case& c :
       {Case{"1h", "1h", kHour}, Case{"1m", "1m", kMinute}, Case{"5m", "1m", kMinute},
        Case{"30s", "10s", 10 * kSecond}, Case{"90s", "10s", 10 * kSecond}}) {
    SCOPED_TRACE(c.window);
    json body = Get("/v1/instances/node-1/summary?metric=ttft_ms&window=" + c.window +
                    Range(kBase, kBase + 2 * kHour));
    EXPECT_EQ(body["tier"], c.tier);
    EXPECT_EQ(body["resolution_ms"], c.resolution_ms);
    ASSERT_EQ(body["tiers"].size(), 1u) << body["tiers"];
    EXPECT_EQ(body["tiers"][0]["tier"], c.tier);
    EXPECT_EQ(body["from"], kBase);
    EXPECT_EQ(body["to"], kBase + 2 * kHour);
    EXPECT_EQ(body["complete_from"], kBase);
    for (const json& w : body["windows"]) {
      auto [count, sum] = Expected(w["start"], w["end"]);
      EXPECT_EQ(w["count"], count) << w;
      EXPECT_EQ(w["sum"], sum) << w;
      EXPECT_EQ(w["min"], static_cast<double>((w["start"].get<int64_t>() - kBase) / 10'000 + 1));
    }
  }
}

TEST_F(TieredQueryTest, EveryTierGivesTheSameAnswer) {
  std::vector<json> answers;
  for (const char* resolution : {"10s", "1m", "1h"}) {
    json body = Get("/v1/instances/node-1/summary?window=1h&resolution=" + std::string(resolution) +
                    Range(kBase, kBase + kSpan));
    EXPECT_EQ(body["tier"], resolution);
    answers.push_back(body["windows"]);
  }
  ASSERT_EQ(answers[0].size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    for (const char* field :
         {"count", "sum", "min", "max", "events", "errors", "p50", "p90", "p99"}) {
      EXPECT_EQ(answers[1][i][field], answers[0][i][field]) << field;
      EXPECT_EQ(answers[2][i][field], answers[0][i][field]) << field;
    }
    EXPECT_NEAR(answers[2][i]["mean"].get<double>(), answers[0][i]["mean"].get<double>(), 1e-9);
  }
}

TEST_F(TieredQueryTest, RecentDataNotYetRolledUpComesFromFinerTiers) {
  // Panes after the rolled-up range: the hour tier answers the first three hours, panes the rest.
  std::vector<WindowSummary> panes;
  WindowSummary pane;
  pane.series = {interner_.Intern("node-1"), interner_.Intern("llama"),
                 interner_.Intern("ttft_ms")};
  pane.start_ms = kBase + kSpan + 20 * kSecond;
  pane.end_ms = pane.start_ms + 10 * kSecond;
  pane.max_event_time_ms = pane.start_ms;
  pane.agg.Add(5000, pane.start_ms);
  panes.push_back(pane);
  ASSERT_TRUE(store_->WritePanes(panes, interner_, kBase + kSpan + kMinute).ok());

  json body = Get("/v1/instances/node-1/summary?window=1h" + Range(kBase, kBase + 4 * kHour));
  EXPECT_EQ(body["tier"], "1h");
  ASSERT_EQ(body["tiers"].size(), 2u) << body["tiers"];
  EXPECT_EQ(
      body["tiers"][0],
      json({{"tier", "1h"}, {"resolution_ms", kHour}, {"from", kBase}, {"to", kBase + kSpan}}));
  EXPECT_EQ(body["tiers"][1]["tier"], "10s");
  EXPECT_EQ(body["tiers"][1]["from"], kBase + kSpan);
  ASSERT_EQ(body["windows"].size(), 4u);
  EXPECT_EQ(body["windows"][3]["count"], 1);
  EXPECT_EQ(body["windows"][3]["max"], 5000.0);
  EXPECT_EQ(body["windows"][2]["count"], 360);
}

TEST_F(TieredQueryTest, ExpiredDataIsAbsentFromAnswers) {
  const std::string panes_only =
      "/v1/instances/node-1/summary?window=1h&resolution=10s" + Range(kBase, kBase + kSpan);
  const std::string minutes =
      "/v1/instances/node-1/summary?window=1h&resolution=1m" + Range(kBase, kBase + kSpan);
  const std::string hours = "/v1/instances/node-1/summary?window=1h" + Range(kBase, kBase + kSpan);

  // 6 h after the end of the first hour: its panes are gone, the later ones are still there.
  clock_.Set(kBase + kHour + 6 * kHour);
  json body = Get(panes_only);
  EXPECT_EQ(body["windows"][0]["count"], 0);
  EXPECT_EQ(body["windows"][1]["count"], 360);
  EXPECT_EQ(body["complete_from"], kBase + kHour);
  body = Get(minutes);
  EXPECT_EQ(body["windows"][0]["count"], 360);
  EXPECT_EQ(body["complete_from"], kBase);

  // 7 days on, minutes are gone; hours remain.
  clock_.Set(kBase + kSpan + 7 * kDay);
  body = Get(minutes);
  for (const json& w : body["windows"]) EXPECT_EQ(w["count"], 0);
  EXPECT_EQ(body["complete_from"], kBase + kSpan);
  body = Get(hours);
  EXPECT_EQ(body["tier"], "1h");
  EXPECT_EQ(body["windows"][2]["count"], 360);

  // 90 days on, everything is gone; maintenance drops the series, so the instance is unknown.
  clock_.Set(kBase + kSpan + 90 * kDay);
  body = Get(hours);
  for (const json& w : body["windows"]) EXPECT_EQ(w["count"], 0);
  ASSERT_TRUE(store_->RunMaintenance().ok());
  body = Get(hours, 404);
  EXPECT_EQ(body["error"]["code"], "NOT_FOUND");
}

TEST_F(TieredQueryTest, SeriesReturnsOnePointPerStep) {
  json body = Get("/v1/series?instance=node-1&model=llama&metric=ttft_ms&step=10m" +
                  Range(kBase, kBase + kHour));
  EXPECT_EQ(body["tier"], "1m");
  EXPECT_EQ(body["step_ms"], 10 * kMinute);
  ASSERT_EQ(body["points"].size(), 6u);
  for (const json& p : body["points"]) {
    auto [count, sum] = Expected(p["start"], p["end"]);
    EXPECT_EQ(p["count"], count);
    EXPECT_EQ(p["sum"], sum);
  }
  // Defaults: 60 steps ending at the watermark rounded down to a step.
  body = Get("/v1/series?instance=node-1&step=1m");
  EXPECT_EQ(body["to"], kBase + kSpan + kMinute);
  EXPECT_EQ(body["from"], kBase + kSpan + kMinute - 60 * kMinute);
  EXPECT_EQ(body["points"].size(), 60u);
}

// GET /v1/series?window=: the point at each step boundary t is [t - window, t), merged from the
// stored buckets of the coarsest tier whose resolution divides both the step and the window.
TEST_F(TieredQueryTest, SeriesWindowSlidesByTheStep) {
  struct Case {
    std::string step, window, tier;
    int64_t step_ms, window_ms;
  };
  for (const Case& c : {Case{"1m", "5m", "1m", kMinute, 5 * kMinute},
                        Case{"10s", "1m", "10s", 10 * kSecond, kMinute},
                        Case{"1m", "90s", "10s", kMinute, 90 * kSecond},
                        Case{"10m", "1m", "1m", 10 * kMinute, kMinute},  // window < step
                        Case{"1h", "2h", "1h", kHour, 2 * kHour}}) {
    SCOPED_TRACE(c.step + " " + c.window);
    // The range starts at the data: the first windows reach back before it (empty panes there).
    json body = Get("/v1/series?instance=node-1&metric=ttft_ms&step=" + c.step +
                    "&window=" + c.window + Range(kBase, kBase + kSpan));
    EXPECT_EQ(body["tier"], c.tier);
    EXPECT_EQ(body["window"], c.window);
    EXPECT_EQ(body["window_ms"], c.window_ms);
    EXPECT_EQ(body["step_ms"], c.step_ms);
    ASSERT_EQ(body["points"].size(), static_cast<size_t>(kSpan / c.step_ms));
    int64_t end = kBase + c.step_ms;
    for (const json& p : body["points"]) {
      EXPECT_EQ(p["end"], end);
      EXPECT_EQ(p["start"], end - c.window_ms);
      auto [count, sum] = Expected(end - c.window_ms, end);
      EXPECT_EQ(p["count"], count) << p;
      if (count > 0) {
        EXPECT_EQ(p["sum"], sum);
        // Values are 1, 2, 3... per pane: the window's extremes are its first and last pane's.
        EXPECT_EQ(p["max"], (std::max(kBase, end) - kBase) / (10 * kSecond));
        EXPECT_EQ(p["min"], (std::max(kBase, end - c.window_ms) - kBase) / (10 * kSecond) + 1);
      }
      end += c.step_ms;
    }
  }
  // No window: one step per point, as before (and the reply says window = step).
  json plain = Get("/v1/series?instance=node-1&step=10m" + Range(kBase, kBase + kHour));
  json same = Get("/v1/series?instance=node-1&step=10m&window=10m" + Range(kBase, kBase + kHour));
  EXPECT_EQ(plain["window"], "10m");
  EXPECT_EQ(plain["points"], same["points"]);
  EXPECT_EQ(plain["tier"], same["tier"]);
}

TEST_F(TieredQueryTest, SeriesWindowErrorsAre400) {
  struct Case {
    std::string path;
    std::string parameter;
  };
  const std::string series = "/v1/series?instance=node-1";
  for (const Case& c : {
           Case{series + "&step=1m&window=25s", "window"},   // not a multiple of the pane
           Case{series + "&step=1m&window=soon", "window"},  // not a duration
           Case{series + "&step=1m&window=0s", "window"},    // not positive
           Case{series + "&step=1m&window=90s&resolution=1m", "resolution"},  // 1m ∤ 90s
           Case{series + "&step=10s&window=2d", "window"},  // 17,339 buckets of 10 s > 10,000
       }) {
    SCOPED_TRACE(c.path);
    json body = Get(c.path, 400);
    EXPECT_EQ(body["error"]["code"], "VALIDATION_ERROR");
    EXPECT_EQ(body["error"]["details"]["parameter"], c.parameter) << body;
  }
  json body = Get(series + "&step=10s&window=2d", 400);
  EXPECT_EQ(body["error"]["details"]["buckets"], 17'339);  // 59 steps + 2 d, of 10 s
  EXPECT_EQ(body["error"]["details"]["max_buckets"], kMaxWindowsPerRequest);
  // 200 points over a 1 d window of 10 s buckets: 8,839 buckets, merged in about 2 × 8,839 + 200
  // (once 200 × 8,640 = 1,728,000, over the former bound). Point i holds panes 1 .. i + 1.
  body = Get(series + "&metric=ttft_ms&step=10s&window=1d" + Range(kBase, kBase + 2000 * kSecond));
  ASSERT_EQ(body["points"].size(), 200u);
  for (size_t i = 0; i < 200; ++i) {
    EXPECT_EQ(body["points"][i]["count"], i + 1);
    EXPECT_EQ(body["points"][i]["max"], i + 1);
    EXPECT_EQ(body["points"][i]["min"], 1);
  }
  // g = gcd(10 s, 1 d) = 10 s: only the 10 s tier answers (6 h retention), although the window is
  // 1 d and reaches back before `from`. 30 min past the 10 s tier's retention of kBase, every
  // point's window starts before complete_from: all of them are partial, and only complete_from
  // says so.
  clock_.Set(kBase + 6 * kHour + 30 * kMinute);
  body = Get(series + "&metric=ttft_ms&step=10s&window=1d" + Range(kBase, kBase + kHour));
  EXPECT_EQ(body["tier"], "10s");
  EXPECT_EQ(body["complete_from"], kBase + 30 * kMinute);
  ASSERT_EQ(body["points"].size(), 360u);
  EXPECT_EQ(body["points"][0]["start"], kBase + 10 * kSecond - kDay);
  EXPECT_EQ(body["points"][0]["end"], kBase + 10 * kSecond);
}

// SlidingMerge (block suffixes and prefixes) equals the direct merge of each window's
// sub-windows, for overlapping and disjoint windows and partial last blocks.
TEST(SlidingMergeTest, EqualsTheDirectMerge) {
  for (const auto& [stride, width] : {std::pair<int64_t, int64_t>{1, 5},
                                      {2, 3},
                                      {3, 7},
                                      {1, 1},
                                      {4, 4},
                                      {5, 2},
                                      {6, 6},
                                      {2, 9},
                                      {7, 8}}) {
    for (int64_t points : {1, 2, 5, 17}) {
      SCOPED_TRACE(std::to_string(stride) + " " + std::to_string(width) + " " +
                   std::to_string(points));
      const int64_t n = (points - 1) * stride + width;
      std::vector<Aggregate> subs(static_cast<size_t>(n));
      for (int64_t k = 0; k < n; ++k) {
        // Sub-window k holds the values k and 1000 + k (distinct sums, mins and maxes).
        subs[static_cast<size_t>(k)].Add(static_cast<double>(k), 1000 + k);
        subs[static_cast<size_t>(k)].Add(static_cast<double>(1000 + k), 1000 + k);
      }
      std::vector<Aggregate> scratch = subs;
      const std::vector<Aggregate> got = SlidingMerge(scratch, points, stride, width);
      ASSERT_EQ(got.size(), static_cast<size_t>(points));
      for (int64_t i = 0; i < points; ++i) {
        Aggregate want;
        for (int64_t k = i * stride; k < i * stride + width; ++k) {
          want.Merge(subs[static_cast<size_t>(k)]);
        }
        const Aggregate& g = got[static_cast<size_t>(i)];
        EXPECT_EQ(g.count, want.count) << i;
        EXPECT_EQ(g.sum, want.sum) << i;
        EXPECT_EQ(g.min, want.min) << i;
        EXPECT_EQ(g.max, want.max) << i;
        EXPECT_EQ(g.last, want.last) << i;
      }
      if (width > stride) {
        EXPECT_LE(SlidingMergeCount(points, stride, width), 2 * n + points);
      }
    }
  }
}

// Not a test: a timing run of SlidingMerge against the former direct merge (points × width) for
// 200 points of a 1 d window at a 10 s step. Run with --gtest_also_run_disabled_tests; it prints
// and asserts nothing about time.
TEST(SlidingMergeTest, DISABLED_TimingRun) {
  for (const double spread : {1.0, 4.0}) {  // lognormal sigma: realistic, wide-range sketches
    const int64_t points = 200, stride = 1, width = 8640;
    const int64_t n = (points - 1) * stride + width;
    std::vector<Aggregate> subs(static_cast<size_t>(n));
    std::mt19937_64 rng(1);
    std::lognormal_distribution<double> value(3.0, spread);
    for (Aggregate& a : subs) {
      for (int i = 0; i < 50; ++i) a.Add(value(rng), 0);
    }
    std::vector<Aggregate> scratch = subs;
    const auto t0 = std::chrono::steady_clock::now();
    const std::vector<Aggregate> fast = SlidingMerge(scratch, points, stride, width);
    const auto t1 = std::chrono::steady_clock::now();
    std::vector<Aggregate> direct(static_cast<size_t>(points));
    for (int64_t i = 0; i < points; ++i) {
      for (int64_t k = i; k < i + width; ++k) {
        direct[static_cast<size_t>(i)].Merge(subs[static_cast<size_t>(k)]);
      }
    }
    const auto t2 = std::chrono::steady_clock::now();
    auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
    std::printf("sigma %.0f: SlidingMerge %.1f ms (%lld merges), direct %.1f ms (%lld merges)\n",
                spread, ms(t1 - t0),
                static_cast<long long>(SlidingMergeCount(points, stride, width)), ms(t2 - t1),
                static_cast<long long>(points * width));
    EXPECT_EQ(fast[199].count, direct[199].count);
  }
}

// A stored bucket with no length (WritePanes accepts end == start) once divided `step % 0` in the
// mismatch error path and killed the process with SIGFPE; now it is a store error (500) and the
// server keeps answering.
TEST_F(TieredQueryTest, ZeroLengthBucketIsAnErrorNotACrash) {
  WindowSummary pane;
  pane.series = {interner_.Intern("node-2"), interner_.Intern("llama"),
                 interner_.Intern("ttft_ms")};
  pane.start_ms = kBase + 5 * kMinute;
  pane.end_ms = pane.start_ms;
  pane.max_event_time_ms = pane.start_ms;
  pane.agg.Add(1, pane.start_ms);
  ASSERT_TRUE(
      store_
          ->WritePanes(std::span<const WindowSummary>(&pane, 1), interner_, kBase + kSpan + kMinute)
          .ok());
  for (const char* window : {"5m", "1m"}) {
    SCOPED_TRACE(window);
    json body =
        Get("/v1/series?instance=node-2&metric=ttft_ms&step=1m&window=" + std::string(window) +
                "&resolution=10s" + Range(kBase, kBase + kHour),
            500);
    EXPECT_EQ(body["error"]["code"], "INTERNAL_ERROR") << body;
    EXPECT_NE(body["error"]["message"].get<std::string>().find("has no length"), std::string::npos)
        << body;
  }
  json ok = Get("/v1/series?instance=node-1&metric=ttft_ms&step=1m&window=5m" +
                Range(kBase, kBase + kHour));
  EXPECT_EQ(ok["points"].size(), 60u);
}

TEST_F(TieredQueryTest, ParameterErrorsAre400WithTheErrorShape) {
  struct Case {
    std::string path;
    std::string parameter;
  };
  for (const Case& c : {
           Case{"/v1/series?step=1m", "instance"},
           Case{"/v1/series?instance=node-1&step=15s", "step"},
           Case{"/v1/series?instance=node-1&step=often", "step"},
           Case{"/v1/series?instance=node-1&step=1m&from=yesterday", "from"},
           Case{"/v1/series?instance=node-1&step=1m&resolution=7s", "resolution"},
           Case{"/v1/series?instance=node-1&step=1m&resolution=1h", "resolution"},
           Case{"/v1/instances/node-1/summary?window=25s", "window"},
           Case{"/v1/instances/node-1/summary?window=1m&resolution=soon", "resolution"},
       }) {
    SCOPED_TRACE(c.path);
    json body = Get(c.path, 400);
    EXPECT_EQ(body["error"]["code"], "VALIDATION_ERROR");
    EXPECT_EQ(body["error"]["details"]["parameter"], c.parameter);
    EXPECT_TRUE(body["error"]["message"].is_string());
    EXPECT_TRUE(body["timestamp"].is_string());
  }
  json body = Get("/v1/series?instance=nobody&step=1m", 404);
  EXPECT_EQ(body["error"]["code"], "NOT_FOUND");
}

}  // namespace
}  // namespace inferscope
