#include "alerting/silence.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "pipeline/clock.h"

namespace inferscope {
namespace {

using nlohmann::json;

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

TEST(SilenceRegistryTest, MatchesInMemoryWithoutAStore) {
  ManualClock clock(10'000);
  SilenceRegistry registry(nullptr, &clock);
  ASSERT_TRUE(registry.Load().ok());
  Alert alert;
  alert.instance = "vllm-3";
  alert.rule = "high_ttft";
  alert.severity = Severity::kCritical;
  Silence s;
  s.matchers = {{"instance", "vllm-*"}, {"rule", "high_*"}};
  s.starts_at_ms = 5'000;
  s.ends_at_ms = 20'000;
  Result<Silence> added = registry.Add(s);
  ASSERT_TRUE(added.ok()) << added.status().ToString();
  EXPECT_EQ(added->created_at_ms, 10'000);
  EXPECT_EQ(registry.Match(alert, 10'000), added->id);
  EXPECT_FALSE(registry.Match(alert, 4'999).has_value()) << "not started yet";
  alert.rule = "low_ttft";
  EXPECT_FALSE(registry.Match(alert, 10'000).has_value()) << "every matcher must match";
  ASSERT_TRUE(registry.Get(added->id).has_value());
  ASSERT_TRUE(registry.Remove(added->id).ok());
  EXPECT_TRUE(registry.List().empty());
  EXPECT_EQ(registry.Remove(added->id).code(), Status::Code::kNotFound);
}

TEST(SilenceRegistryTest, RefusesSilencesWithoutMatchersOrWithAnEmptyRange) {
  ManualClock clock(0);
  SilenceRegistry registry(nullptr, &clock);
  Silence none;
  none.ends_at_ms = 10;
  EXPECT_EQ(registry.Add(none).status().code(), Status::Code::kInvalidArgument);
  Silence empty_range;
  empty_range.matchers = {{"instance", "x"}};
  empty_range.starts_at_ms = 10;
  empty_range.ends_at_ms = 10;
  EXPECT_EQ(registry.Add(empty_range).status().code(), Status::Code::kInvalidArgument);
}

}  // namespace
}  // namespace inferscope
