#include "pipeline/silence.h"

#include <gtest/gtest.h>

#include <cmath>

#include "pipeline/alert_store.h"
#include "pipeline/state_store.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using nlohmann::json;

TEST(GlobMatchTest, StarAndQuestionMark) {
  EXPECT_TRUE(GlobMatch("vllm-*", "vllm-12"));
  EXPECT_TRUE(GlobMatch("*", ""));
  EXPECT_TRUE(GlobMatch("v?lm-1", "vllm-1"));
  EXPECT_TRUE(GlobMatch("*-1*", "vllm-12"));
  EXPECT_FALSE(GlobMatch("vllm-*", "tgi-1"));
  EXPECT_FALSE(GlobMatch("vllm", "vllm-1"));
  EXPECT_TRUE(GlobMatch("a*b*c", "axxbyyc"));
  EXPECT_FALSE(GlobMatch("a*b*c", "axxbyy"));
}

TEST(SilenceFromJsonTest, ValidatesFields) {
  auto parse = [](const char* text) { return SilenceFromJson(json::parse(text), 1000); };
  Result<Silence> ok =
      parse(R"({"matchers": {"instance": "vllm-*"}, "duration": "1h", "comment": "deploy"})");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->starts_at_ms, 1000);
  EXPECT_EQ(ok->ends_at_ms, 1000 + 3'600'000);
  EXPECT_EQ(ok->matchers.size(), 1u);
  EXPECT_FALSE(parse(R"({"matchers": {"host": "x"}, "duration": "1h"})").ok());
  EXPECT_FALSE(parse(R"({"matchers": {}, "duration": "1h"})").ok());
  EXPECT_FALSE(parse(R"({"matchers": {"instance": "x"}})").ok());
  EXPECT_FALSE(
      parse(R"({"matchers": {"instance": "x"}, "starts_at": 5000, "ends_at": 4000})").ok());
  EXPECT_FALSE(parse(R"({"matchers": {"instance": "x"}, "duration": "1h", "extra": 1})").ok());
}

TEST(SilenceRegistryTest, MatchesPersistsAndReloads) {
  testing::TempDir dir;
  StateStoreOptions options;
  options.path = dir.str() + "/state";
  ManualClock clock(10'000);
  std::string id;
  Alert alert;
  alert.instance = "vllm-3";
  alert.rule = "high_ttft";
  alert.severity = Severity::kCritical;
  {
    Result<std::unique_ptr<StateStore>> store = StateStore::Open(options, nullptr);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    SilenceRegistry registry(store->get(), &clock);
    ASSERT_TRUE(registry.Load().ok());
    Silence s;
    s.matchers = {{"instance", "vllm-*"}, {"severity", "critical"}};
    s.starts_at_ms = 5'000;
    s.ends_at_ms = 20'000;
    Result<Silence> added = registry.Add(s);
    ASSERT_TRUE(added.ok());
    id = added->id;
    EXPECT_EQ(id.size(), 16u);
    EXPECT_EQ(registry.Match(alert, 10'000), id);
    EXPECT_FALSE(registry.Match(alert, 20'000).has_value()) << "ends_at is exclusive";
    alert.severity = Severity::kWarning;
    EXPECT_FALSE(registry.Match(alert, 10'000).has_value());
    alert.severity = Severity::kCritical;
    EXPECT_TRUE(registry.Remove("nope").code() == Status::Code::kNotFound);
  }
  Result<std::unique_ptr<StateStore>> store = StateStore::Open(options, nullptr);
  ASSERT_TRUE(store.ok());
  SilenceRegistry registry(store->get(), &clock);
  ASSERT_TRUE(registry.Load().ok());
  ASSERT_EQ(registry.List().size(), 1u);
  EXPECT_EQ(registry.List()[0].id, id);
  EXPECT_EQ(registry.Match(alert, 10'000), id);
  ASSERT_TRUE(registry.Remove(id).ok());
  SilenceRegistry reloaded(store->get(), &clock);
  ASSERT_TRUE(reloaded.Load().ok());
  EXPECT_TRUE(reloaded.List().empty());
}

TEST(AlertStoreTest, LatestAndHistoryRoundTrip) {
  testing::TempDir dir;
  StateStoreOptions options;
  options.path = dir.str() + "/state";
  Result<std::unique_ptr<StateStore>> store = StateStore::Open(options, nullptr);
  ASSERT_TRUE(store.ok());
  Alert a;
  a.fingerprint = AlertFingerprint("r", "i", "m", "ttft_ms", "p95");
  a.rule = "r";
  a.instance = "i";
  a.model = "m";
  a.metric = "ttft_ms";
  a.stat = "p95";
  a.type = AnomalyType::kThreshold;
  a.severity = Severity::kWarning;
  a.value = 2500;
  a.lower = std::nan("");
  a.detected_at_ms = 100;
  Alert resolved = a;
  resolved.state = AlertState::kResolved;
  resolved.detected_at_ms = 200;
  resolved.silenced = true;
  std::vector<Alert> both = {a, resolved};
  ASSERT_TRUE(StoreAlerts(**store, both).ok());
  Result<std::optional<Alert>> latest = LoadAlert(**store, a.fingerprint);
  ASSERT_TRUE(latest.ok() && latest->has_value());
  EXPECT_EQ((*latest)->state, AlertState::kResolved);
  EXPECT_TRUE((*latest)->silenced);
  EXPECT_EQ((*latest)->value, 2500);
  EXPECT_TRUE(std::isnan((*latest)->lower));
  std::vector<AlertState> history;
  ASSERT_TRUE(ScanAlertHistory(**store, 0, [&](const Alert& x) {
                history.push_back(x.state);
                return true;
              }).ok());
  EXPECT_EQ(history, (std::vector<AlertState>{AlertState::kFiring, AlertState::kResolved}));
  int count = 0;
  ASSERT_TRUE(ScanAlerts(**store, [&](const Alert&) { return ++count > 0; }).ok());
  EXPECT_EQ(count, 1);
}

}  // namespace
}  // namespace inferscope
