// Pagination of the list endpoints: every page bounded by `limit`, the cursor walks the whole list
// without skipping or repeating, bad `limit` and `cursor` are 400s.

#include <gtest/gtest.h>
#include <httplib.h>

#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "alerting/silence.h"
#include "query/handlers.h"
#include "query/server.h"
#include "state/alert_store.h"
#include "state/silence_store.h"
#include "state/state_store.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using nlohmann::json;

constexpr int kInstances = 250;  // names of different lengths: key order is not lexical order
constexpr int kAlerts = 25;

class QueryPaginationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StateStoreOptions options;
    options.path = dir_.str();
    auto opened = StateStore::Open(options, &metrics_);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    store_ = std::move(opened).value();

    std::vector<WindowSummary> panes;
    for (int i = 0; i < kInstances; ++i) {
      for (const char* metric : {"ttft_ms", "e2e_ms"}) {
        WindowSummary pane;
        pane.series = {interner_.Intern("node-" + std::to_string(i)), interner_.Intern("m"),
                       interner_.Intern(metric)};
        pane.start_ms = 600'000;
        pane.end_ms = 610'000;
        pane.max_event_time_ms = 609'999;
        pane.agg.Add(1.0, 600'000);
        pane.agg.AddEvent(false);
        panes.push_back(std::move(pane));
      }
    }
    ASSERT_TRUE(store_->WritePanes(panes, interner_, 620'000).ok());

    // kAlerts alerts, several sharing a detection time (ties are ordered by fingerprint); alert 0
    // has 5 state changes in its history.
    std::vector<Alert> alerts;
    for (int i = 0; i < kAlerts; ++i) {
      Alert a;
      a.rule = "r";
      a.instance = "node-" + std::to_string(i);
      a.metric = "ttft_ms";
      a.stat = "p95";
      a.fingerprint = AlertFingerprint(a.rule, a.instance, a.model, a.metric, a.stat);
      a.detected_at_ms = 1'000'000 + (i / 3) * 1'000;
      a.state = AlertState::kFiring;
      alerts.push_back(a);
    }
    for (int k = 1; k <= 4; ++k) {
      Alert a = alerts[0];
      a.detected_at_ms = 2'000'000 + k * 1'000;
      a.state = k % 2 == 0 ? AlertState::kFiring : AlertState::kResolved;
      alerts.push_back(a);
    }
    ASSERT_TRUE(StoreAlerts(*store_, alerts).ok());
    first_fingerprint_ = FingerprintHex(alerts[0].fingerprint);

    silence_store_ = std::make_unique<StateSilenceStore>(store_.get());
    silences_ = std::make_unique<SilenceRegistry>(silence_store_.get(), &clock_);
    for (int i = 0; i < 7; ++i) {
      Silence s;
      s.matchers = {{"instance", "node-" + std::to_string(i)}};
      s.starts_at_ms = clock_.NowMs();
      s.ends_at_ms = clock_.NowMs() + 3'600'000;
      ASSERT_TRUE(silences_->Add(s).ok());
    }

    server_ = std::make_unique<QueryServer>(
        QueryServer::Options{}, store_.get(), &metrics_, &clock_, [] { return json::object(); },
        std::vector<Registry::Entry>{});
    server_->SetSilences(silences_.get());
    ASSERT_TRUE(server_->Start().ok());
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
  }

  json Get(const std::string& path, int expected_status = 200) {
    auto res = client_->Get(path.c_str());
    EXPECT_TRUE(res) << path;
    if (!res) return json();
    EXPECT_EQ(res->status, expected_status) << path << ": " << res->body;
    return json::parse(res->body, nullptr, false);
  }

  // Follows next_cursor from `path` (which has a '?') and returns every page.
  std::vector<json> Pages(const std::string& path, size_t max_pages = 100) {
    std::vector<json> pages;
    std::string cursor;
    while (pages.size() < max_pages) {
      json page = Get(path + (cursor.empty() ? "" : "&cursor=" + cursor));
      pages.push_back(page);
      if (!page.contains("next_cursor")) {
        ADD_FAILURE() << "no next_cursor in " << path << ": " << page.dump().substr(0, 300);
        break;
      }
      if (page["next_cursor"].is_null()) break;
      cursor = page["next_cursor"].get<std::string>();
    }
    return pages;
  }

  testing::TempDir dir_;
  MetricsRegistry metrics_;
  Interner interner_;
  ManualClock clock_{1'750'000'000'000};
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<StateSilenceStore> silence_store_;
  std::unique_ptr<SilenceRegistry> silences_;
  std::unique_ptr<QueryServer> server_;
  std::unique_ptr<httplib::Client> client_;
  std::string first_fingerprint_;
};

TEST_F(QueryPaginationTest, InstancesArePagedWithTheDefaultLimit) {
  json page = Get("/v1/instances");
  ASSERT_TRUE(page.is_object());
  EXPECT_EQ(page["instances"].size(), kDefaultPageLimit);  // 100 of 250, not all of them
  ASSERT_TRUE(page["next_cursor"].is_string()) << page.dump().substr(0, 300);
}

TEST_F(QueryPaginationTest, InstanceCursorWalksEveryInstanceOnce) {
  std::vector<json> pages = Pages("/v1/instances?limit=40");
  ASSERT_EQ(pages.size(), 7u);  // 6 × 40 + 10
  std::set<std::string> seen;
  for (size_t p = 0; p < pages.size(); ++p) {
    const json& list = pages[p]["instances"];
    EXPECT_EQ(list.size(), p + 1 < pages.size() ? 40u : 10u);
    for (const json& inst : list) {
      EXPECT_TRUE(seen.insert(inst["id"].get<std::string>()).second) << "repeated " << inst["id"];
      ASSERT_EQ(inst["models"].size(), 1u);
      EXPECT_EQ(inst["models"][0]["metrics"], json({"e2e_ms", "ttft_ms"}));
    }
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(kInstances));
  EXPECT_TRUE(pages.back()["next_cursor"].is_null());
}

TEST_F(QueryPaginationTest, BadLimitOrCursorIsA400NamingIt) {
  for (const char* limit : {"0", "1001", "abc", "-1", ""}) {
    json e = Get(std::string("/v1/instances?limit=") + limit, 400);
    EXPECT_EQ(e["error"]["code"], "VALIDATION_ERROR");
    EXPECT_EQ(e["error"]["details"]["parameter"], "limit") << limit;
  }
  for (const char* path : {"/v1/instances?cursor=zz", "/v1/alerts?cursor=abc",
                           "/v1/silences?cursor=0g", "/v1/alerts?cursor=6869"}) {
    json e = Get(path, 400);
    EXPECT_EQ(e["error"]["details"]["parameter"], "cursor") << path << " " << e.dump();
  }
  EXPECT_EQ(Get("/v1/instances?limit=1000")["instances"].size(), static_cast<size_t>(kInstances));
}

TEST_F(QueryPaginationTest, AlertPagesKeepTheNewestFirstOrder) {
  std::vector<json> pages = Pages("/v1/alerts?limit=10");
  ASSERT_EQ(pages.size(), 3u);
  std::vector<std::pair<int64_t, std::string>> order;
  for (const json& page : pages) {
    EXPECT_EQ(page["matched"], kAlerts);
    for (const json& a : page["alerts"]) {
      order.emplace_back(a["detected_at"].get<int64_t>(), a["fingerprint"].get<std::string>());
    }
  }
  ASSERT_EQ(order.size(), static_cast<size_t>(kAlerts));
  // The same list as one page, in the same order.
  json all = Get("/v1/alerts?limit=1000");
  ASSERT_EQ(all["alerts"].size(), static_cast<size_t>(kAlerts));
  EXPECT_TRUE(all["next_cursor"].is_null());
  for (size_t i = 0; i < order.size(); ++i) {
    EXPECT_EQ(order[i].second, all["alerts"][i]["fingerprint"]) << i;
  }
  // Filters apply before paging.
  std::vector<json> resolved = Pages("/v1/alerts?limit=1&state=resolved");
  EXPECT_EQ(resolved.size(), 1u);
}

TEST_F(QueryPaginationTest, AlertHistoryIsPaged) {
  std::vector<json> pages = Pages("/v1/alerts/" + first_fingerprint_ + "?limit=2");
  ASSERT_EQ(pages.size(), 3u);  // 5 changes: 2 + 2 + 1
  std::vector<int64_t> times;
  for (const json& page : pages) {
    for (const json& h : page["history"]) times.push_back(h["detected_at"].get<int64_t>());
  }
  EXPECT_EQ(times, (std::vector<int64_t>{1'000'000, 2'001'000, 2'002'000, 2'003'000, 2'004'000}));

  // Another alert's history holds only its own change; a cursor of the first alert's history
  // does not page it.
  json list = Get("/v1/alerts?limit=1000");
  std::string other;
  for (const json& a : list["alerts"]) {
    if (a["fingerprint"] != first_fingerprint_) other = a["fingerprint"].get<std::string>();
  }
  ASSERT_FALSE(other.empty());
  json own = Get("/v1/alerts/" + other);
  ASSERT_EQ(own["history"].size(), 1u) << own.dump();
  EXPECT_EQ(own["history"][0]["fingerprint"], other);
  const std::string cursor = pages[0]["next_cursor"].get<std::string>();
  json refused = Get("/v1/alerts/" + other + "?cursor=" + cursor, 400);
  EXPECT_EQ(refused["error"]["details"]["parameter"], "cursor") << refused.dump();
}

TEST_F(QueryPaginationTest, SilencesArePagedById) {
  std::vector<json> pages = Pages("/v1/silences?limit=3");
  ASSERT_EQ(pages.size(), 3u);
  std::vector<std::string> ids;
  for (const json& page : pages) {
    for (const json& s : page["silences"]) ids.push_back(s["id"].get<std::string>());
  }
  ASSERT_EQ(ids.size(), 7u);
  EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), 7u);
}

}  // namespace
}  // namespace inferscope
