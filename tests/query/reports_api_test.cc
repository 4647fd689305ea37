// GET /v1/reports/comparison and /v1/reports/trend (JSON, CSV, Markdown, errors), the dashboard's
// embedded files, and `inferscope report` against a real server over a real RocksDB store.

#include <sys/wait.h>

#include <gtest/gtest.h>
#include <httplib.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "pipeline/interner.h"
#include "pipeline/summary.h"
#include "query/dashboard_assets.h"
#include "query/handlers.h"
#include "query/server.h"
#include "state/state_store.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using nlohmann::json;

constexpr int64_t kPaneMs = 10'000;
constexpr int64_t kWatermark = 1'200'000;  // 00:20:00; the default 5m window is [00:15, 00:20)
constexpr char kWeird[] = "we|ird,\"name\"";

class ReportsApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StateStoreOptions options;
    options.path = dir_.str();
    auto opened = StateStore::Open(options, &metrics_);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    store_ = std::move(opened).value();

    // 60 panes over [00:10, 00:20): the previous 5 minutes and the current 5 minutes.
    for (int k = 0; k < 60; ++k) {
      const int64_t start = 600'000 + k * kPaneMs;
      const bool current = start >= 900'000;
      for (int j = 0; j < 10; ++j) {
        const int64_t t = start + j;
        // fast/m1: ttft 10..19 ms, e2e 100..109, 50 output tokens, 100 prompt, $0.001; no errors.
        Add("fast", "m1", "ttft_ms", start, 10 + j, t);
        Add("fast", "m1", "tpot_ms", start, 5, t);
        Add("fast", "m1", "e2e_ms", start, 100 + j, t, false);
        Add("fast", "m1", "output_tokens", start, 50, t);
        Add("fast", "m1", "prompt_tokens", start, 100, t);
        Add("fast", "m1", "cost_usd", start, 0.001, t);
        // slow/m1: ttft 100..109, e2e 1000..1009 with one error per pane, 20 output tokens.
        Add("slow", "m1", "ttft_ms", start, 100 + j, t);
        Add("slow", "m1", "tpot_ms", start, 20, t);
        Add("slow", "m1", "e2e_ms", start, 1000 + j, t, j == 0);
        Add("slow", "m1", "output_tokens", start, 20, t);
        Add("slow", "m1", "prompt_tokens", start, 100, t);
        // trend-1/m3: ttft 95..104 before 00:15, 195..204 after: worse, same request rate.
        Add("trend-1", "m3", "ttft_ms", start, (current ? 195 : 95) + j, t);
        Add("trend-1", "m3", "e2e_ms", start, 500 + j, t, false);
        // steady/m3: the same distribution in both spans.
        Add("steady", "m3", "ttft_ms", start, 40 + j, t);
        Add("steady", "m3", "e2e_ms", start, 400 + j, t, false);
        if (current && k % 6 == 0) Add(kWeird, "m2", "e2e_ms", start, 300 + j, t, false);
      }
    }
    ASSERT_TRUE(store_->WritePanes(panes_, interner_, kWatermark).ok());
    QueryServer::Options o;
    server_ = std::make_unique<QueryServer>(
        o, store_.get(), &metrics_, &clock_, [] { return json::object(); },
        std::vector<Registry::Entry>{});
    ASSERT_TRUE(server_->Start().ok());
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
  }

  // One value (and, when `error` is given, one request event) into the pane of its series.
  void Add(const std::string& instance, const std::string& model, const std::string& metric,
           int64_t start, double value, int64_t t, std::optional<bool> error = std::nullopt) {
    const SeriesKey key{interner_.Intern(instance), interner_.Intern(model),
                        interner_.Intern(metric)};
    auto [it, added] =
        index_.try_emplace({key.instance, key.model, key.metric, start}, panes_.size());
    if (added) panes_.emplace_back();
    WindowSummary* pane = &panes_[it->second];
    if (added) {
      pane->series = key;
      pane->start_ms = start;
      pane->end_ms = start + kPaneMs;
      pane->max_event_time_ms = start + kPaneMs - 1;
    }
    pane->agg.Add(value, t);
    if (error) pane->agg.AddEvent(*error);
  }

  httplib::Result Get(const std::string& path) { return client_->Get(path.c_str()); }

  json GetJson(const std::string& path, int status = 200) {
    auto res = Get(path);
    EXPECT_TRUE(res) << path;
    if (!res) return json();
    EXPECT_EQ(res->status, status) << path << ": " << res->body;
    EXPECT_EQ(res->get_header_value("Content-Type"), "application/json") << path;
    return json::parse(res->body, nullptr, false);
  }

  // The one error shape, naming `parameter` when given.
  void ExpectError(const std::string& path, int status, const std::string& parameter = "") {
    json body = GetJson(path, status);
    ASSERT_TRUE(body.is_object() && body.contains("error")) << path << ": " << body;
    EXPECT_EQ(body["error"]["code"], status == 404 ? "NOT_FOUND" : "VALIDATION_ERROR") << body;
    EXPECT_TRUE(body["error"]["message"].is_string());
    EXPECT_TRUE(body["timestamp"].is_string());
    if (!parameter.empty()) {
      EXPECT_EQ(body["error"]["details"]["parameter"], parameter) << body;
    }
  }

  static const json& Row(const json& report, const std::string& metric, const std::string& stat) {
    for (const json& row : report["rows"]) {
      if (row["metric"] == metric && row["stat"] == stat) return row;
    }
    static const json none;
    ADD_FAILURE() << "no row " << metric << " " << stat;
    return none;
  }

  testing::TempDir dir_;
  MetricsRegistry metrics_;
  Interner interner_;
  ManualClock clock_{1'750'000'000'000};
  std::unique_ptr<StateStore> store_;
  std::vector<WindowSummary> panes_;
  std::map<std::tuple<StringId, StringId, StringId, int64_t>, size_t> index_;  // into panes_
  std::unique_ptr<QueryServer> server_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(ReportsApiTest, ComparisonOfInstancesMarksTheBetterOne) {
  json r = GetJson("/v1/reports/comparison?instances=fast,slow");
  ASSERT_TRUE(r.is_object()) << r;
  EXPECT_EQ(r["report"], "comparison");
  EXPECT_EQ(r["by"], "instances");
  EXPECT_EQ(r["from"], 900'000);
  EXPECT_EQ(r["to"], kWatermark);
  ASSERT_EQ(r["subjects"].size(), 2u);
  EXPECT_EQ(r["subjects"][0]["name"], "fast");
  EXPECT_EQ(r["subjects"][0]["requests"], 300);
  EXPECT_EQ(r["subjects"][1]["errors"], 30);
  ASSERT_EQ(r["rows"].size(), 13u);

  // ttft: fast's values are 10..19, slow's 100..109 (1 % sketch accuracy, clamped to [min, max]).
  const json& p50 = Row(r, "ttft_ms", "p50");
  EXPECT_NEAR(p50["values"]["fast"].get<double>(), 14.5, 0.8);
  EXPECT_NEAR(p50["values"]["slow"].get<double>(), 104.5, 1.5);
  EXPECT_EQ(p50["best"], json::array({"fast"}));
  EXPECT_EQ(p50["better"], "lower");
  const json& p99 = Row(r, "ttft_ms", "p99");
  EXPECT_LE(p99["values"]["fast"].get<double>(), 19.0);  // never above the max
  EXPECT_EQ(Row(r, "e2e_ms", "p95")["best"], json::array({"fast"}));
  // Same request rate: no better one.
  const json& rps = Row(r, "requests_per_s", "rate");
  EXPECT_DOUBLE_EQ(rps["values"]["fast"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(rps["values"]["slow"].get<double>(), 1.0);
  EXPECT_EQ(rps["best"], json::array());
  // Output tokens: higher is better.
  const json& tokens = Row(r, "output_tokens_per_s", "rate");
  EXPECT_DOUBLE_EQ(tokens["values"]["fast"].get<double>(), 50.0);
  EXPECT_DOUBLE_EQ(tokens["values"]["slow"].get<double>(), 20.0);
  EXPECT_EQ(tokens["best"], json::array({"fast"}));
  const json& errors = Row(r, "error_rate", "ratio");
  EXPECT_DOUBLE_EQ(errors["values"]["fast"].get<double>(), 0.0);
  EXPECT_DOUBLE_EQ(errors["values"]["slow"].get<double>(), 0.1);
  EXPECT_EQ(errors["best"], json::array({"fast"}));
  // Cost is known for fast only ($0.3 for 45,000 tokens): nothing to compare against.
  const json& cost = Row(r, "cost_per_1k_tokens", "mean");
  EXPECT_NEAR(cost["values"]["fast"].get<double>(), 0.3 / 45'000 * 1000, 1e-12);
  EXPECT_TRUE(cost["values"]["slow"].is_null());
  EXPECT_EQ(cost["best"], json::array());
}

TEST_F(ReportsApiTest, ComparisonOfModelsMergesTheirInstances) {
  json r = GetJson("/v1/reports/comparison?models=m1,m3&window=10m");
  ASSERT_TRUE(r.is_object()) << r;
  EXPECT_EQ(r["by"], "models");
  EXPECT_EQ(r["from"], 600'000);
  EXPECT_EQ(r["subjects"][0]["series"], 2);       // fast and slow
  EXPECT_EQ(r["subjects"][0]["requests"], 1200);  // 2 instances × 60 panes × 10
  EXPECT_EQ(r["subjects"][1]["requests"], 1200);
  // m1's ttft: half 10..19, half 100..109; its p99 is slow's.
  EXPECT_NEAR(Row(r, "ttft_ms", "p99")["values"]["m1"].get<double>(), 109, 2);
  EXPECT_NEAR(Row(r, "ttft_ms", "p50")["values"]["m3"].get<double>(), 95, 60);
  // A `to` earlier than the data: no requests, no values.
  json empty = GetJson("/v1/reports/comparison?models=m1,m3&to=600000");
  EXPECT_TRUE(Row(empty, "ttft_ms", "p50")["values"]["m1"].is_null()) << empty;
  EXPECT_EQ(Row(empty, "requests_per_s", "rate")["values"]["m1"], 0.0);
}

TEST_F(ReportsApiTest, ComparisonAsCsv) {
  // A name with a comma: one name per repeated parameter.
  auto res = Get(std::string("/v1/reports/comparison?format=csv&instances=fast&instances=slow&"
                             "instances=") +
                 httplib::detail::encode_query_param(kWeird));
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/csv; charset=utf-8");
  std::vector<std::string> lines;
  for (size_t start = 0; start < res->body.size();) {
    size_t nl = res->body.find('\n', start);
    ASSERT_NE(nl, std::string::npos) << "every line ends with a newline";
    lines.push_back(res->body.substr(start, nl - start));
    start = nl + 1;
  }
  ASSERT_EQ(lines.size(), 14u) << res->body;  // header + 13 rows
  // The name with a comma and quotes is one quoted field (RFC 4180).
  EXPECT_EQ(lines[0], "metric,stat,unit,better,fast,slow,\"we|ird,\"\"name\"\"\",best");
  EXPECT_EQ(lines[1].substr(0, 22), "ttft_ms,p50,ms,lower,1");
  EXPECT_EQ(lines[1].substr(lines[1].rfind(',')), ",fast");
  EXPECT_EQ(lines[10], "requests_per_s,rate,1/s,higher,1,1,0.1667,fast;slow");
  EXPECT_EQ(lines[12], "error_rate,ratio,,lower,0,0.1,0,\"fast;we|ird,\"\"name\"\"\"");
}

TEST_F(ReportsApiTest, ComparisonAsMarkdown) {
  auto res = Get(std::string("/v1/reports/comparison?format=markdown&instances=slow&instances=") +
                 httplib::detail::encode_query_param(kWeird));
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/markdown; charset=utf-8");
  const std::string& md = res->body;
  EXPECT_NE(md.find("| metric | slow | we\\|ird,\"name\" |\n|---|---:|---:|\n"), std::string::npos)
      << md;
  // The weird instance has e2e only: its ttft is "–", and slow is not marked (nothing to beat).
  EXPECT_NE(md.find("| ttft_ms p50 (ms) | 10"), std::string::npos) << md;
  EXPECT_NE(md.find(" | – |\n"), std::string::npos) << md;
  // e2e: the weird one (300..309 ms) is better than slow (1000..1009 ms).
  const size_t e2e = md.find("| e2e_ms p50 (ms) |");
  ASSERT_NE(e2e, std::string::npos) << md;
  const std::string line = md.substr(e2e, md.find('\n', e2e) - e2e);
  EXPECT_NE(line.find("| **30"), std::string::npos) << line;
  EXPECT_NE(line.find("✓ |"), std::string::npos) << line;
  EXPECT_EQ(line.find("**10"), std::string::npos) << line;
}

TEST_F(ReportsApiTest, ComparisonErrors) {
  ExpectError("/v1/reports/comparison", 400, "instances");
  ExpectError("/v1/reports/comparison?instances=fast,slow&models=m1,m3", 400);
  ExpectError("/v1/reports/comparison?instances=fast", 400, "instances");
  ExpectError("/v1/reports/comparison?instances=fast,fast", 400, "instances");
  ExpectError("/v1/reports/comparison?instances=fast,,slow", 400, "instances");
  ExpectError("/v1/reports/comparison?instances=fast&instances=fast", 400, "instances");
  ExpectError("/v1/reports/comparison?instances=fast,slow&instances=m1", 404, "instances");
  ExpectError("/v1/reports/comparison?instances=fast,slow&windw=5m", 400, "windw");
  ExpectError("/v1/reports/comparison?instances=fast,slow&window=5x", 400, "window");
  ExpectError("/v1/reports/comparison?instances=fast,slow&window=25h", 400, "window");
  ExpectError("/v1/reports/comparison?instances=fast,slow&to=yesterday", 400, "to");
  ExpectError("/v1/reports/comparison?instances=fast,slow&format=xml", 400, "format");
  // Errors are JSON whatever the format asked for.
  ExpectError("/v1/reports/comparison?instances=fast,nobody&format=csv", 404, "instances");
  ExpectError("/v1/reports/comparison?models=m1,m9&format=markdown", 404, "models");
}

TEST_F(ReportsApiTest, TrendFindsASignificantChangeAndNoneWhereThereIsNone) {
  json r = GetJson("/v1/reports/trend?instance=trend-1");
  ASSERT_TRUE(r.is_object()) << r;
  EXPECT_EQ(r["report"], "trend");
  EXPECT_EQ(r["window_ms"], 300'000);
  EXPECT_EQ(r["period_ms"], 300'000);
  EXPECT_EQ(r["current"]["from"], 900'000);
  EXPECT_EQ(r["previous"]["from"], 600'000);
  EXPECT_EQ(r["previous"]["to"], 900'000);
  EXPECT_EQ(r["current"]["requests"], 300);
  const json& p50 = Row(r, "ttft_ms", "p50");
  EXPECT_NEAR(p50["previous"].get<double>(), 99.5, 2);
  EXPECT_NEAR(p50["current"].get<double>(), 199.5, 3);
  EXPECT_NEAR(p50["change_pct"].get<double>(), 100, 5);
  EXPECT_EQ(p50["test"], "mann_whitney");
  EXPECT_GT(p50["z"].get<double>(), 10);  // the current values are all larger
  EXPECT_LT(p50["p_value"].get<double>(), 1e-10);
  EXPECT_EQ(p50["significant"], true);
  EXPECT_EQ(p50["verdict"], "worse");
  // Same e2e and the same request count: no change.
  EXPECT_EQ(Row(r, "e2e_ms", "p95")["verdict"], "unchanged");
  const json& rps = Row(r, "requests_per_s", "rate");
  EXPECT_EQ(rps["test"], "poisson_rate");
  EXPECT_EQ(rps["significant"], false);
  EXPECT_DOUBLE_EQ(rps["z"].get<double>(), 0);
  // No output tokens or cost for trend-1: no value, no test.
  EXPECT_TRUE(Row(r, "cost_per_1k_tokens", "mean")["current"].is_null());
  EXPECT_TRUE(Row(r, "cost_per_1k_tokens", "mean")["significant"].is_null());

  json steady = GetJson("/v1/reports/trend?instance=steady&model=m3");
  const json& s = Row(steady, "ttft_ms", "p99");
  EXPECT_EQ(s["test"], "mann_whitney");
  EXPECT_EQ(s["significant"], false);
  EXPECT_NEAR(s["p_value"].get<double>(), 1.0, 1e-9);
  EXPECT_EQ(s["verdict"], "unchanged");
}

TEST_F(ReportsApiTest, TrendErrorRateAndPeriod) {
  // slow/m1 has 10 % errors throughout: no change against 5 minutes earlier; against 20 minutes
  // earlier (no data) there is no test.
  json r = GetJson("/v1/reports/trend?model=m1&window=2m&period=5m");
  ASSERT_TRUE(r.is_object()) << r;
  EXPECT_EQ(r["series"], 2);
  EXPECT_EQ(r["previous"]["from"], kWatermark - 300'000 - 120'000);
  const json& err = Row(r, "error_rate", "ratio");
  EXPECT_EQ(err["test"], "two_proportion");
  EXPECT_DOUBLE_EQ(err["current"].get<double>(), 0.05);  // m1 = fast + slow
  EXPECT_EQ(err["significant"], false);
  json none = GetJson("/v1/reports/trend?model=m1&window=5m&period=20m");
  EXPECT_TRUE(Row(none, "ttft_ms", "p50")["previous"].is_null()) << none;
  EXPECT_TRUE(Row(none, "ttft_ms", "p50")["test"].is_null());
  EXPECT_TRUE(Row(none, "error_rate", "ratio")["test"].is_null());
  EXPECT_EQ(Row(none, "ttft_ms", "p50")["verdict"], "unchanged");
}

TEST_F(ReportsApiTest, TrendAsCsvAndMarkdown) {
  auto csv = Get("/v1/reports/trend?instance=trend-1&format=csv&alpha=0.01");
  ASSERT_TRUE(csv);
  ASSERT_EQ(csv->status, 200) << csv->body;
  EXPECT_EQ(csv->get_header_value("Content-Type"), "text/csv; charset=utf-8");
  EXPECT_EQ(csv->body.substr(0, csv->body.find('\n')),
            "metric,stat,unit,better,previous,current,change,change_pct,test,z,p_value,"
            "significant,verdict");
  const size_t row = csv->body.find("\nttft_ms,p95,ms,lower,");
  ASSERT_NE(row, std::string::npos) << csv->body;
  const std::string line = csv->body.substr(row + 1, csv->body.find('\n', row + 1) - row - 1);
  EXPECT_NE(line.find(",mann_whitney,"), std::string::npos) << line;
  EXPECT_EQ(line.substr(line.size() - 11), ",true,worse") << line;
  EXPECT_NE(csv->body.find("\ncost_per_1k_tokens,mean,USD,lower,,,,,,,,,unchanged\n"),
            std::string::npos)
      << csv->body;

  auto md = Get("/v1/reports/trend?instance=trend-1&format=md");
  ASSERT_TRUE(md);
  ASSERT_EQ(md->status, 200) << md->body;
  EXPECT_EQ(md->get_header_value("Content-Type"), "text/markdown; charset=utf-8");
  EXPECT_NE(md->body.find("## Trend of instance trend-1\n"), std::string::npos) << md->body;
  EXPECT_NE(md->body.find("| metric | previous | current | change | p-value | verdict |"),
            std::string::npos);
  const size_t p50 = md->body.find("| ttft_ms p50 (ms) |");
  ASSERT_NE(p50, std::string::npos) << md->body;
  const std::string l = md->body.substr(p50, md->body.find('\n', p50) - p50);
  EXPECT_NE(l.find("| **worse** |"), std::string::npos) << l;
  EXPECT_NE(l.find("(+10"), std::string::npos) << l;  // about +100 %
}

TEST_F(ReportsApiTest, TrendErrors) {
  ExpectError("/v1/reports/trend", 400, "instance");
  ExpectError("/v1/reports/trend?instance=fast&window=5m&period=1m", 400, "period");
  ExpectError("/v1/reports/trend?instance=fast&period=31d", 400, "period");
  ExpectError("/v1/reports/trend?instance=fast&alpha=1", 400, "alpha");
  ExpectError("/v1/reports/trend?instance=fast&alpha=0.05x", 400, "alpha");
  ExpectError("/v1/reports/trend?instance=fast&instances=a", 400, "instances");
  ExpectError("/v1/reports/trend?instance=fast&format=pdf", 400, "format");
  ExpectError("/v1/reports/trend?instance=nobody&format=csv", 404, "instance");
  ExpectError("/v1/reports/trend?instance=fast&model=m3", 404, "instance");
}

TEST_F(ReportsApiTest, DashboardFilesAreEmbeddedAndServed) {
  // Every file of query/dashboard/ is embedded, byte for byte.
  std::vector<std::string> paths;
  for (const EmbeddedFile& f : EmbeddedFiles()) {
    paths.emplace_back(f.path);
    EXPECT_EQ(f.data,
              testing::ReadFile(testing::SourceDir() + "/query/dashboard/" + std::string(f.path)))
        << f.path;
  }
  for (const char* want : {"index.html", "app.js", "app.css", "vendor/uPlot.iife.min.js",
                           "vendor/uPlot.min.css", "vendor/uPlot.LICENSE"}) {
    EXPECT_NE(std::find(paths.begin(), paths.end(), want), paths.end()) << want;
  }
  auto index = Get("/");
  ASSERT_TRUE(index);
  EXPECT_EQ(index->status, 200);
  EXPECT_EQ(index->get_header_value("Content-Type"), "text/html; charset=utf-8");
  EXPECT_NE(index->body.find("<script src=\"/ui/app.js\"></script>"), std::string::npos);
  EXPECT_NE(index->get_header_value("Content-Security-Policy").find("script-src 'self'"),
            std::string::npos);
  auto js = Get("/ui/vendor/uPlot.iife.min.js");
  ASSERT_TRUE(js);
  EXPECT_EQ(js->status, 200);
  EXPECT_EQ(js->get_header_value("Content-Type"), "text/javascript; charset=utf-8");
  EXPECT_EQ(js->body.substr(0, 50), "/*! https://github.com/leeoniya/uPlot (v1.6.32) */");
  EXPECT_EQ(Get("/ui/app.css")->get_header_value("Content-Type"), "text/css; charset=utf-8");
  ExpectError("/ui/missing.js", 404);
  ExpectError("/ui/../CMakeLists.txt", 404);
}

TEST_F(ReportsApiTest, DashboardNeedsNoTokenButTheApiDoes) {
  server_->Stop();
  QueryServer::Options o;
  o.access.tokens = {{"reader", "s3cret-token-0123456789", static_cast<uint8_t>(Scope::kRead)}};
  server_ = std::make_unique<QueryServer>(
      o, store_.get(), &metrics_, &clock_, [] { return json::object(); },
      std::vector<Registry::Entry>{});
  ASSERT_TRUE(server_->Start().ok());
  client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
  EXPECT_EQ(Get("/")->status, 200);
  EXPECT_EQ(Get("/ui/app.js")->status, 200);
  EXPECT_EQ(Get("/v1/reports/comparison?instances=fast,slow")->status, 401);
  auto ok = client_->Get("/v1/reports/comparison?instances=fast,slow",
                         {{"Authorization", "Bearer s3cret-token-0123456789"}});
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
}

// `inferscope report` prints what the API answers; an API error is its message and exit code 1.
TEST_F(ReportsApiTest, ReportCommandPrintsTheReport) {
  auto run = [&](const std::string& args, int* code) {
    const std::string cmd = testing::InferscopeBinary() + " report " + args +
                            " --url http://127.0.0.1:" + std::to_string(server_->port()) + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    std::string out;
    char buf[4096];
    for (size_t n; p != nullptr && (n = fread(buf, 1, sizeof(buf), p)) > 0;) out.append(buf, n);
    const int status = p != nullptr ? pclose(p) : -1;
    *code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return out;
  };
  int code = -1;
  std::string out = run("comparison --instances fast,slow --format csv", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(out, Get("/v1/reports/comparison?instances=fast,slow&format=csv")->body);
  out = run("trend --instance trend-1", &code);  // Markdown by default
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(out, Get("/v1/reports/trend?instance=trend-1&format=markdown")->body);
  out = run("trend --instance trend-1 --format json --window 1m", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(json::parse(out, nullptr, false)["window_ms"], 60'000) << out;
  out = run("comparison --instances fast,nobody", &code);
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("report: HTTP 404 NOT_FOUND: unknown instance 'nobody'"), std::string::npos)
      << out;
}

}  // namespace
}  // namespace inferscope
