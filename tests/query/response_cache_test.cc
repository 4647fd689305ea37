// The query server's response cache (query/response_cache.h) through real HTTP on 127.0.0.1: it
// never answers from a view older than the store's, keys separate what must be separate, it stays
// within its size, and errors are never cached.

#include "query/response_cache.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "query/server.h"
#include "state/state_store.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using nlohmann::json;

constexpr int64_t kPaneMs = 10'000;
constexpr std::string_view kLookups = "inferscope_query_cache_lookups_total";
constexpr char kReadToken[] = "reader-0123456789abcdef";
constexpr char kAdminToken[] = "admin-0123456789abcdefg";
constexpr char kWriteToken[] = "writer-0123456789abcdef";
constexpr char kSummary[] = "/v1/instances/node-1/summary?model=llama&metric=ttft_ms&window=1m";
constexpr char kSummary10s[] = "/v1/instances/node-1/summary?model=llama&metric=ttft_ms&window=10s";

class ResponseCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StateStoreOptions options;
    options.path = dir_.str() + "/state";
    options.tiers = {{kPaneMs, 0}, {60'000, 0}};
    options.clock = &clock_;
    auto opened = StateStore::Open(options, &metrics_);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    primary_ = std::move(opened).value();
  }

  // One pane of node-1/`model`/ttft_ms at `start_ms` holding `values`, written with `watermark`.
  void WritePane(const std::string& model, int64_t start_ms, std::vector<double> values,
                 int64_t watermark) {
    WindowSummary pane;
    pane.series = {interner_.Intern("node-1"), interner_.Intern(model),
                   interner_.Intern("ttft_ms")};
    pane.start_ms = start_ms;
    pane.end_ms = start_ms + kPaneMs;
    pane.max_event_time_ms = start_ms + kPaneMs - 1;
    for (double v : values) {
      pane.agg.Add(v, start_ms);
      pane.agg.AddEvent(false);
    }
    Status s = primary_->WritePanes(std::vector<WindowSummary>{pane}, interner_, watermark);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  void StartServer(StateStore* store, QueryServer::Options options = {}) {
    server_ = std::make_unique<QueryServer>(
        options, store, &metrics_, &clock_, [] { return json::object(); },
        std::vector<Registry::Entry>{});
    Status s = server_->Start();
    ASSERT_TRUE(s.ok()) << s.ToString();
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
  }

  json Get(const std::string& path, int expected_status, const std::string& token = "") {
    httplib::Headers headers;
    if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
    auto res = client_->Get(path.c_str(), headers);
    EXPECT_TRUE(res) << path;
    if (!res) return json();
    EXPECT_EQ(res->status, expected_status) << path << ": " << res->body;
    EXPECT_EQ(res->get_header_value("Content-Type"), "application/json") << path;
    return json::parse(res->body, nullptr, /*allow_exceptions=*/false);
  }

  // The value of an unlabelled gauge in /metrics (-1 when absent).
  double Gauge(const std::string& name) {
    auto res = client_->Get("/metrics");
    if (!res) return -1;
    const size_t at = res->body.find("\n" + name + " ");
    if (at == std::string::npos) return -1;
    return std::stod(res->body.substr(at + name.size() + 2));
  }

  uint64_t Lookups(const std::string& result) const {
    return metrics_.CounterValue(kLookups, {{"result", result}});
  }

  testing::TempDir dir_;
  MetricsRegistry metrics_;
  Interner interner_;
  ManualClock clock_{1'000'000};
  std::unique_ptr<StateStore> primary_;
  std::unique_ptr<QueryServer> server_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(ResponseCacheTest, RepeatedRequestIsServedFromTheCacheWithTheCurrentAsOf) {
  WritePane("llama", 660'000, {1, 2, 3}, 720'000);
  ASSERT_NO_FATAL_FAILURE(StartServer(primary_.get()));
  const json first = Get(kSummary, 200);
  EXPECT_EQ(Lookups("miss"), 1u);
  EXPECT_EQ(Get(kSummary, 200), first);
  EXPECT_EQ(Lookups("hit"), 1u);
  // The same parameters in another order are the same request.
  EXPECT_EQ(Get("/v1/instances/node-1/summary?window=1m&metric=ttft_ms&model=llama", 200), first);
  EXPECT_EQ(Lookups("hit"), 2u);

  // A write that only moves the watermark (within the same minute) keeps the answer but not its
  // "as_of".
  ASSERT_TRUE(primary_->WritePanes(std::vector<WindowSummary>{}, interner_, 725'000).ok());
  json moved = Get(kSummary, 200);
  EXPECT_EQ(Lookups("hit"), 3u);
  EXPECT_EQ(moved["as_of"], 725'000);
  moved["as_of"] = first["as_of"];
  EXPECT_EQ(moved, first);

  // Into the next minute: another window.
  ASSERT_TRUE(primary_->WritePanes(std::vector<WindowSummary>{}, interner_, 785'000).ok());
  const json next = Get(kSummary, 200);
  EXPECT_EQ(Lookups("stale"), 1u);
  EXPECT_EQ(next["windows"][0]["start"], 720'000);
  EXPECT_EQ(next["windows"][0]["count"], 0);

  const std::string series = "/v1/series?instance=node-1&model=llama&metric=ttft_ms&step=10s";
  const json points = Get(series, 200);
  EXPECT_EQ(Get(series, 200), points);
  EXPECT_EQ(Lookups("hit"), 4u);
}

TEST_F(ResponseCacheTest, AWriteToTheStoreIsSeenByTheNextRequest) {
  WritePane("llama", 660'000, {1, 2, 3}, 720'000);
  ASSERT_NO_FATAL_FAILURE(StartServer(primary_.get()));
  EXPECT_EQ(Get(kSummary, 200)["windows"][0]["count"], 3);
  EXPECT_EQ(Get(kSummary, 200)["windows"][0]["count"], 3);
  // A late pane of the same minute, with the same watermark.
  WritePane("llama", 670'000, {4, 5}, 720'000);
  EXPECT_EQ(Get(kSummary, 200)["windows"][0]["count"], 5);
  // A pane replaced (upsert).
  WritePane("llama", 670'000, {4}, 720'000);
  EXPECT_EQ(Get(kSummary, 200)["windows"][0]["count"], 4);
}

TEST_F(ResponseCacheTest, AQueryNodeAnswersFromTheNewViewAfterACatchUp) {
  WritePane("llama", 660'000, {1, 2, 3}, 720'000);
  StateStoreOptions options;
  options.path = dir_.str() + "/state";
  options.secondary_path = dir_.str() + "/node";
  options.clock = &clock_;
  auto opened = StateStore::Open(options, &metrics_);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  std::unique_ptr<StateStore> secondary = std::move(opened).value();
  ASSERT_NO_FATAL_FAILURE(StartServer(secondary.get()));

  EXPECT_EQ(Get(kSummary, 200)["windows"][0]["count"], 3);
  EXPECT_EQ(Get(kSummary, 200)["windows"][0]["count"], 3);
  EXPECT_EQ(Lookups("hit"), 1u);

  // The engine writes a pane of the same minute without moving the watermark: until the node
  // catches up it answers from its view, then from the new one.
  WritePane("llama", 670'000, {4, 5}, 720'000);
  EXPECT_EQ(Get(kSummary, 200)["windows"][0]["count"], 3);
  ASSERT_TRUE(secondary->CatchUp().ok());
  EXPECT_EQ(Get(kSummary, 200)["windows"][0]["count"], 5);

  // A catch-up that brought nothing that reads answer keeps the cached answer.
  const uint64_t hits = Lookups("hit");
  ASSERT_TRUE(secondary->CatchUp().ok());
  EXPECT_EQ(Get(kSummary, 200)["windows"][0]["count"], 5);
  EXPECT_EQ(Lookups("hit"), hits + 1);

  // A restarted engine (a new MANIFEST): the node reopens and recomputes.
  primary_.reset();
  SetUp();
  WritePane("llama", 680'000, {6}, 720'000);
  Result<CatchUpReport> report = secondary->CatchUp();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report->reopened);
  EXPECT_EQ(Get(kSummary, 200)["windows"][0]["count"], 6);
  server_->Stop();
}

TEST_F(ResponseCacheTest, ARecentPaneLeavesAnOlderRangeCachedAndAWriteInsideItDoesNot) {
  WritePane("llama", 660'000, {1, 2, 3}, 720'000);
  ASSERT_NO_FATAL_FAILURE(StartServer(primary_.get()));
  const json first = Get(kSummary, 200);  // the minute [660 s, 720 s)
  EXPECT_EQ(first["windows"][0]["count"], 3);
  EXPECT_EQ(Lookups("miss"), 1u);

  // A pane of the next minute changes the view but not the minute asked for: served from the
  // cache, byte for byte what the handler answers (compared with an uncached spelling below).
  WritePane("llama", 720'000, {9}, 725'000);
  json carried = Get(kSummary, 200);
  EXPECT_EQ(Lookups("hit"), 1u);
  EXPECT_EQ(metrics_.CounterValue("inferscope_query_cache_carried_total"), 1u);
  EXPECT_EQ(carried["as_of"], 725'000);
  carried["as_of"] = first["as_of"];
  EXPECT_EQ(carried, first);
  // The entry now belongs to the new view: no second carry.
  Get(kSummary, 200);
  EXPECT_EQ(Lookups("hit"), 2u);
  EXPECT_EQ(metrics_.CounterValue("inferscope_query_cache_carried_total"), 1u);
  auto cached = client_->Get(kSummary);
  auto computed = client_->Get(std::string(kSummary) + "&from=660000&to=720000");
  ASSERT_TRUE(cached && computed);
  EXPECT_EQ(cached->body, computed->body);

  // A pane inside the minute (late, same watermark): recomputed.
  const uint64_t stale = Lookups("stale");
  WritePane("llama", 710'000, {4}, 725'000);
  EXPECT_EQ(Get(kSummary, 200)["windows"][0]["count"], 4);
  EXPECT_EQ(Lookups("stale"), stale + 1);
  // A new series of any instance changes what the series index answers: every answer recomputed.
  Get(kSummary, 200);
  WindowSummary pane;
  pane.series = {interner_.Intern("node-2"), interner_.Intern("llama"),
                 interner_.Intern("ttft_ms")};
  pane.start_ms = 730'000;
  pane.end_ms = 740'000;
  pane.agg.Add(1, 730'000);
  ASSERT_TRUE(primary_->WritePanes(std::vector<WindowSummary>{pane}, interner_, 725'000).ok());
  EXPECT_EQ(Get(kSummary, 200)["windows"][0]["count"], 4);
  EXPECT_EQ(Lookups("stale"), stale + 2);
}

TEST_F(ResponseCacheTest, ARollupStalesOnlyTheAnswersPastItsPreviousCursor) {
  // Tiers 10 s and 1 min (rolled up 60 s after a minute's end).
  for (int64_t start = 600'000; start < 720'000; start += kPaneMs) {
    WritePane("llama", start, {1}, 720'000);
  }
  ASSERT_NO_FATAL_FAILURE(StartServer(primary_.get()));
  const std::string early =
      "/v1/series?instance=node-1&model=llama&metric=ttft_ms&step=1m&from=600000&to=660000";
  const std::string late =
      "/v1/series?instance=node-1&model=llama&metric=ttft_ms&step=1m&from=660000&to=720000";
  EXPECT_EQ(Get(early, 200)["tier"], "10s");
  EXPECT_EQ(Get(early, 200)["tier"], "10s");
  EXPECT_EQ(Lookups("hit"), 1u);

  // The 1-minute tier is rolled up through 660 s: the plan of the early minute changes.
  Result<MaintenanceReport> report = primary_->RunMaintenance();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  ASSERT_EQ(primary_->RolledThroughMs(1), 660'000);
  const json rolled = Get(early, 200);
  EXPECT_EQ(rolled["tier"], "1m");
  EXPECT_EQ(rolled["points"][0]["count"], 6);
  EXPECT_EQ(Lookups("stale"), 1u);
  EXPECT_EQ(Get(late, 200)["tier"], "10s");

  // Through 720 s: the late minute's plan changes, the early one's (ending at the previous
  // cursor) does not.
  WritePane("llama", 720'000, {1}, 780'000);
  report = primary_->RunMaintenance();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  ASSERT_EQ(primary_->RolledThroughMs(1), 720'000);
  const uint64_t hits = Lookups("hit");
  json again = Get(early, 200);
  EXPECT_EQ(again["as_of"], 780'000);
  again["as_of"] = rolled["as_of"];
  EXPECT_EQ(again, rolled);
  EXPECT_EQ(Lookups("hit"), hits + 1);
  EXPECT_EQ(Get(late, 200)["tier"], "1m");
  EXPECT_EQ(Lookups("stale"), 2u);
}

TEST_F(ResponseCacheTest, AQueryNodeKeepsOlderRangesAcrossACatchUpOfRecentPanes) {
  WritePane("llama", 660'000, {1, 2, 3}, 720'000);
  StateStoreOptions options;
  options.path = dir_.str() + "/state";
  options.secondary_path = dir_.str() + "/node";
  options.clock = &clock_;
  auto opened = StateStore::Open(options, &metrics_);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  std::unique_ptr<StateStore> secondary = std::move(opened).value();
  ASSERT_NO_FATAL_FAILURE(StartServer(secondary.get()));
  const json first = Get(kSummary, 200);
  EXPECT_EQ(first["windows"][0]["count"], 3);

  // Two batches of the next minute in one catch-up: the node learns from the engine's view log
  // that both start at or after 720 s.
  const uint64_t before = secondary->ViewVersion();
  WritePane("llama", 720'000, {9}, 725'000);
  WritePane("llama", 730'000, {8}, 735'000);
  ASSERT_TRUE(secondary->CatchUp().ok());
  EXPECT_EQ(secondary->ViewVersion(), before + 1);
  EXPECT_EQ(secondary->EarliestChangeSince(before, before + 1), 720'000);
  json carried = Get(kSummary, 200);
  EXPECT_EQ(metrics_.CounterValue("inferscope_query_cache_carried_total"), 1u);
  EXPECT_EQ(carried["as_of"], 735'000);
  carried["as_of"] = first["as_of"];
  EXPECT_EQ(carried, first);

  // A late pane of the minute asked for: recomputed after the catch-up that brings it.
  WritePane("llama", 700'000, {4}, 735'000);
  WritePane("llama", 740'000, {4}, 745'000);
  ASSERT_TRUE(secondary->CatchUp().ok());
  EXPECT_EQ(secondary->EarliestChangeSince(before + 1, before + 2), 700'000);
  EXPECT_EQ(Get(kSummary, 200)["windows"][0]["count"], 4);
  EXPECT_EQ(metrics_.CounterValue("inferscope_query_cache_carried_total"), 1u);

  // A restarted engine: the node reopens, and every answer is recomputed.
  const uint64_t stale = Lookups("stale");
  primary_.reset();
  SetUp();
  WritePane("llama", 750'000, {6}, 755'000);
  Result<CatchUpReport> report = secondary->CatchUp();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report->reopened);
  EXPECT_EQ(secondary->EarliestChangeSince(before + 2, before + 3), StateStore::kWholeViewChanged);
  EXPECT_EQ(Get(kSummary, 200)["windows"][0]["count"], 4);
  EXPECT_EQ(Lookups("stale"), stale + 1);
  server_->Stop();
}

TEST_F(ResponseCacheTest, ExpiryByTheClockIsNotHiddenByTheCache) {
  // Panes kept 30 s after their end.
  primary_.reset();
  StateStoreOptions options;
  options.path = dir_.str() + "/expiring";
  options.tiers = {{kPaneMs, 30'000}};
  options.clock = &clock_;
  auto opened = StateStore::Open(options, &metrics_);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  primary_ = std::move(opened).value();
  clock_.Set(690'000);
  WritePane("llama", 660'000, {1}, 720'000);
  WritePane("llama", 700'000, {2, 3}, 720'000);
  ASSERT_NO_FATAL_FAILURE(StartServer(primary_.get()));
  const std::string path = std::string(kSummary) + "&from=660000&to=720000";
  EXPECT_EQ(Get(path, 200)["windows"][0]["count"], 3);
  clock_.Set(699'999);  // [660 s, 670 s) expires at 670 s + 30 s
  EXPECT_EQ(Get(path, 200)["windows"][0]["count"], 3);
  EXPECT_EQ(Lookups("hit"), 1u);
  clock_.Set(700'000);
  const json later = Get(path, 200);
  EXPECT_EQ(later["windows"][0]["count"], 2);
  EXPECT_GT(later["complete_from"].get<int64_t>(), 660'000);
}

TEST_F(ResponseCacheTest, KeysSeparateQueriesAndScopesButNotAccess) {
  WritePane("llama", 660'000, {1, 2, 3}, 720'000);
  WritePane("mistral", 660'000, {7}, 720'000);
  QueryServer::Options options;
  options.access.tokens = {{"reader", kReadToken, static_cast<uint8_t>(Scope::kRead)},
                           {"admin", kAdminToken, static_cast<uint8_t>(Scope::kAdmin)},
                           {"writer", kWriteToken, static_cast<uint8_t>(Scope::kWrite)}};
  ASSERT_NO_FATAL_FAILURE(StartServer(primary_.get(), options));

  EXPECT_EQ(Get(kSummary, 200, kReadToken)["windows"][0]["count"], 3);
  const std::string mistral = "/v1/instances/node-1/summary?model=mistral&metric=ttft_ms&window=1m";
  EXPECT_EQ(Get(mistral, 200, kReadToken)["windows"][0]["count"], 1);
  EXPECT_EQ(Get("/v1/instances/node-1/summary?metric=ttft_ms&window=1m", 200,
                kReadToken)["windows"][0]["count"],
            4);
  EXPECT_EQ(Lookups("miss"), 3u);
  // Another scope: its own entry.
  EXPECT_EQ(Get(kSummary, 200, kAdminToken)["windows"][0]["count"], 3);
  EXPECT_EQ(Lookups("miss"), 4u);
  EXPECT_EQ(Lookups("hit"), 0u);
  EXPECT_EQ(Get(kSummary, 200, kReadToken)["windows"][0]["count"], 3);
  EXPECT_EQ(Lookups("hit"), 1u);

  // A cached answer is still behind authentication and scopes.
  json denied = Get(kSummary, 401);
  EXPECT_EQ(denied["error"]["code"], "UNAUTHORIZED");
  denied = Get(kSummary, 403, kWriteToken);
  EXPECT_EQ(denied["error"]["code"], "FORBIDDEN");
  EXPECT_EQ(Lookups("hit"), 1u);
}

TEST_F(ResponseCacheTest, BadRequestsGetTheirErrorsAndAreNotCached) {
  WritePane("llama", 660'000, {1, 2, 3}, 720'000);
  ASSERT_NO_FATAL_FAILURE(StartServer(primary_.get()));
  Get(kSummary, 200);
  for (int i = 0; i < 2; ++i) {
    json e = Get("/v1/instances/node-1/summary?model=llama&metric=ttft_ms&window=7s", 400);
    EXPECT_EQ(e["error"]["code"], "VALIDATION_ERROR");
    EXPECT_EQ(e["error"]["details"]["parameter"], "window");
    e = Get(std::string(kSummary) + "&windw=1m", 400);
    EXPECT_EQ(e["error"]["details"]["parameter"], "windw");
    e = Get("/v1/instances/node-9/summary?metric=ttft_ms", 404);
    EXPECT_EQ(e["error"]["code"], "NOT_FOUND");
    EXPECT_TRUE(e["timestamp"].is_string());
  }
  EXPECT_EQ(Lookups("hit"), 0u);
  // The instance appears: the 404 was not kept.
  WindowSummary pane;
  pane.series = {interner_.Intern("node-9"), interner_.Intern("llama"),
                 interner_.Intern("ttft_ms")};
  pane.start_ms = 660'000;
  pane.end_ms = 670'000;
  pane.agg.Add(1, 660'000);
  ASSERT_TRUE(primary_->WritePanes(std::vector<WindowSummary>{pane}, interner_, 720'000).ok());
  EXPECT_EQ(Get("/v1/instances/node-9/summary?metric=ttft_ms", 200)["windows"][0]["count"], 1);
}

TEST_F(ResponseCacheTest, StaysWithinItsSizeAndCountsEvictions) {
  for (int k = 0; k < 6; ++k) WritePane("llama", 600'000 + k * kPaneMs, {1.0 * k}, 720'000);
  QueryServer::Options options;
  options.response_cache_bytes = 2'500;  // two or three answers
  ASSERT_NO_FATAL_FAILURE(StartServer(primary_.get(), options));
  std::vector<json> first;
  for (int k = 0; k < 6; ++k) {
    const std::string path = std::string(kSummary10s) +
                             "&from=" + std::to_string(600'000 + k * 10'000) +
                             "&to=" + std::to_string(610'000 + k * 10'000);
    first.push_back(Get(path, 200));
    EXPECT_EQ(first.back()["windows"][0]["count"], 1) << path;
  }
  const uint64_t evicted = metrics_.CounterValue("inferscope_query_cache_evictions_total");
  EXPECT_GE(evicted, 3u);
  EXPECT_EQ(Gauge("inferscope_query_cache_entries") + static_cast<double>(evicted), 6.0);
  EXPECT_LE(Gauge("inferscope_query_cache_bytes"), 2'500.0);
  // Evicted answers are recomputed, the same.
  for (int k = 0; k < 6; ++k) {
    const std::string path = std::string(kSummary10s) +
                             "&from=" + std::to_string(600'000 + k * 10'000) +
                             "&to=" + std::to_string(610'000 + k * 10'000);
    EXPECT_EQ(Get(path, 200), first[static_cast<size_t>(k)]);
  }
  auto res = client_->Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_NE(res->body.find("inferscope_query_cache_bytes "), std::string::npos);
  EXPECT_NE(res->body.find("inferscope_query_cache_lookups_total{result=\"hit\"}"),
            std::string::npos);
}

TEST(ResponseCacheUnitTest, EvictsLeastRecentlyUsedWithinMaxBytes) {
  MetricsRegistry metrics;
  const size_t entry = ResponseCache::kEntryOverheadBytes + 1 + 100;
  ResponseCache cache(3 * entry, &metrics);
  const std::string body(100, 'x');
  const ResponseCache::View view{7, 0, 0};
  for (const char* key : {"a", "b", "c"}) cache.Insert(key, 7, {}, body);
  std::string out;
  EXPECT_TRUE(cache.Lookup("a", view, &out));  // "b" is now the least recently used
  cache.Insert("d", 7, {}, body);
  EXPECT_EQ(cache.entries(), 3u);
  EXPECT_LE(cache.bytes(), 3 * entry);
  EXPECT_FALSE(cache.Lookup("b", view, &out));
  EXPECT_TRUE(cache.Lookup("a", view, &out));
  EXPECT_TRUE(cache.Lookup("c", view, &out));
  EXPECT_TRUE(cache.Lookup("d", view, &out));
  EXPECT_EQ(metrics.CounterValue("inferscope_query_cache_evictions_total"), 1u);
  // Another view, another watermark range or a clock past the answer's: not served.
  EXPECT_FALSE(cache.Lookup("a", {8, 0, 0}, &out));
  cache.Insert("w", 7, {100, 200, 50, false}, body);
  EXPECT_TRUE(cache.Lookup("w", {7, 199, 49}, &out));
  EXPECT_FALSE(cache.Lookup("w", {7, 200, 49}, &out));
  EXPECT_FALSE(cache.Lookup("w", {7, 99, 49}, &out));
  EXPECT_FALSE(cache.Lookup("w", {7, 150, 50}, &out));
  // Without a store to ask, an entry of an earlier view is not served in a later one.
  cache.Insert("v", 7, {}, body);
  EXPECT_FALSE(cache.Lookup("v", {8, 0, 0}, &out));
  // An older answer does not replace a newer one; one larger than the cache is not kept.
  cache.Insert("w", 6, {}, "old");
  EXPECT_TRUE(cache.Lookup("w", {7, 150, 0}, &out));
  EXPECT_EQ(out, body);
  cache.Insert("big", 7, {}, std::string(4 * entry, 'y'));
  EXPECT_FALSE(cache.Lookup("big", view, &out));
  EXPECT_EQ(metrics.CounterValue("inferscope_query_cache_uncached_total"), 1u);
}

TEST(ResponseCacheUnitTest, SplicesTheCurrentAsOf) {
  MetricsRegistry metrics;
  ResponseCache cache(1 << 20, &metrics);
  CacheValidity splice;
  splice.splice_as_of = true;
  cache.Insert("k", 1, splice, R"({"as_of":123,"x":[1]})");
  std::string out;
  ASSERT_TRUE(cache.Lookup("k", {1, 98765, 0}, &out));
  EXPECT_EQ(out, R"({"as_of":98765,"x":[1]})");
  // A body that does not start with "as_of" is not cached when it should be spliced.
  cache.Insert("j", 1, splice, R"({"x":1,"as_of":5})");
  EXPECT_FALSE(cache.Lookup("j", {1, 5, 0}, &out));
}

}  // namespace
}  // namespace inferscope
