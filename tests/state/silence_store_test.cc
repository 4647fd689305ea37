#include "state/silence_store.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "alerting/silence.h"
#include "state/state_store.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

TEST(StateSilenceStoreTest, RegistryMatchesPersistsAndReloads) {
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
    StateSilenceStore silences(store->get());
    SilenceRegistry registry(&silences, &clock);
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
  StateSilenceStore silences(store->get());
  SilenceRegistry registry(&silences, &clock);
  ASSERT_TRUE(registry.Load().ok());
  ASSERT_EQ(registry.List().size(), 1u);
  EXPECT_EQ(registry.List()[0].id, id);
  EXPECT_EQ(registry.Match(alert, 10'000), id);
  ASSERT_TRUE(registry.Remove(id).ok());
  SilenceRegistry reloaded(&silences, &clock);
  ASSERT_TRUE(reloaded.Load().ok());
  EXPECT_TRUE(reloaded.List().empty());
}

TEST(StateSilenceStoreTest, PutScanDelete) {
  testing::TempDir dir;
  StateStoreOptions options;
  options.path = dir.str() + "/state";
  Result<std::unique_ptr<StateStore>> store = StateStore::Open(options, nullptr);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  StateSilenceStore silences(store->get());
  ASSERT_TRUE(silences.Put("b", R"({"x":2})").ok());
  ASSERT_TRUE(silences.Put("a", R"({"x":1})").ok());
  ASSERT_TRUE(silences.Put("b", R"({"x":3})").ok());  // replaces
  std::vector<std::pair<std::string, std::string>> seen;
  auto scan = [&] {
    seen.clear();
    return silences.Scan([&](std::string_view id, std::string_view value) {
      seen.emplace_back(id, value);
      return true;
    });
  };
  ASSERT_TRUE(scan().ok());
  using Seen = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(seen, (Seen{{"a", R"({"x":1})"}, {"b", R"({"x":3})"}}));
  ASSERT_TRUE(silences.Delete("a").ok());
  ASSERT_TRUE(silences.Delete("never-stored").ok());
  ASSERT_TRUE(scan().ok());
  EXPECT_EQ(seen, (Seen{{"b", R"({"x":3})"}}));
}

// An expired silence stays listed for 120 h (as in Alertmanager), then goes from the registry and
// the store, so expired silences never fill the registry.
TEST(StateSilenceStoreTest, SilencesLongExpiredAreDeleted) {
  testing::TempDir dir;
  StateStoreOptions options;
  options.path = dir.str() + "/state";
  ManualClock clock(10'000);
  Result<std::unique_ptr<StateStore>> store = StateStore::Open(options, nullptr);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  StateSilenceStore silences(store->get());
  auto count_stored = [&] {
    int n = 0;
    EXPECT_TRUE(silences.Scan([&](std::string_view, std::string_view) { return ++n > 0; }).ok());
    return n;
  };
  Silence s;
  s.matchers = {{"instance", "vllm-*"}};
  s.starts_at_ms = 5'000;
  s.ends_at_ms = 20'000;
  {
    SilenceRegistry registry(&silences, &clock);
    ASSERT_TRUE(registry.Load().ok());
    ASSERT_TRUE(registry.Add(s).ok());
    clock.Set(20'000 + SilenceRegistry::kExpiredRetentionMs);  // expired, still within retention
    s.ends_at_ms = clock.NowMs() + 60'000;
    ASSERT_TRUE(registry.Add(s).ok());
    EXPECT_EQ(registry.List().size(), 2u);
    clock.Advance(1);
    s.ends_at_ms = clock.NowMs() + 60'000;
    ASSERT_TRUE(registry.Add(s).ok());
    EXPECT_EQ(registry.List().size(), 2u) << "the first one is past its retention";
    EXPECT_EQ(count_stored(), 2);
  }
  // A restart drops what expired meanwhile.
  clock.Advance(60'000 + SilenceRegistry::kExpiredRetentionMs + 1);
  SilenceRegistry reloaded(&silences, &clock);
  ASSERT_TRUE(reloaded.Load().ok());
  EXPECT_TRUE(reloaded.List().empty());
  EXPECT_EQ(count_stored(), 0);
}

}  // namespace
}  // namespace inferscope
