#include "alerting/alert_json.h"

#include <gtest/gtest.h>

#include <cmath>

namespace inferscope {
namespace {

TEST(AlertJsonTest, RoundTripsEveryFieldAndWritesNonFiniteNumbersAsNull) {
  Alert a;
  a.fingerprint = AlertFingerprint("high_ttft", "vllm-1", "llama", "ttft_ms", "p95");
  a.state = AlertState::kResolved;
  a.type = AnomalyType::kLevelShift;
  a.severity = Severity::kCritical;
  a.rule = "high_ttft";
  a.instance = "vllm-1";
  a.model = "llama";
  a.metric = "ttft_ms";
  a.stat = "p95";
  a.value = 2500;
  a.expected = 800;
  a.lower = std::nan("");
  a.upper = 1200;
  a.score = 0.75;
  a.window_start_ms = 10'000;
  a.window_end_ms = 20'000;
  a.event_time_ms = 19'999;
  a.detected_at_ms = 21'000;
  a.active_since_ms = 5'000;
  a.message = "p95 above 1200";
  a.silenced = true;

  nlohmann::json j = AlertToJson(a);
  EXPECT_EQ(j["fingerprint"], FingerprintHex(a.fingerprint));
  EXPECT_EQ(j["state"], "resolved");
  EXPECT_TRUE(j["lower"].is_null());
  EXPECT_EQ(j["window"]["end"], 20'000);
  // The stream payload's fields too (docs/ALERTS.md: the API's alert is the stream payload).
  EXPECT_EQ(j["v"], 1);
  EXPECT_EQ(j["series"], a.instance + "/" + a.model + "/" + a.metric);
  EXPECT_EQ(j["window_start"], 10'000);
  EXPECT_EQ(j["window_end"], 20'000);
  EXPECT_TRUE(j["limit"].is_null()) << "no limit set: null, as for detectors";

  Result<Alert> back = AlertFromJson(j);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->fingerprint, a.fingerprint);
  EXPECT_EQ(back->state, a.state);
  EXPECT_EQ(back->type, a.type);
  EXPECT_EQ(back->severity, a.severity);
  EXPECT_EQ(back->rule, a.rule);
  EXPECT_EQ(back->stat, a.stat);
  EXPECT_EQ(back->value, a.value);
  EXPECT_TRUE(std::isnan(back->lower));
  EXPECT_TRUE(std::isnan(back->limit));
  a.limit = 3000;
  Result<Alert> with_limit = AlertFromJson(AlertToJson(a));
  ASSERT_TRUE(with_limit.ok());
  EXPECT_EQ(with_limit->limit, 3000);
  EXPECT_EQ(back->window_start_ms, a.window_start_ms);
  EXPECT_EQ(back->active_since_ms, a.active_since_ms);
  EXPECT_EQ(back->message, a.message);
  EXPECT_TRUE(back->silenced);
}

TEST(AlertJsonTest, MissingOrMistypedFieldsAreCorruption) {
  EXPECT_EQ(AlertFromJson(nlohmann::json::array()).status().code(), Status::Code::kCorruption);
  nlohmann::json j = AlertToJson(Alert{});
  j.erase("rule");
  EXPECT_EQ(AlertFromJson(j).status().code(), Status::Code::kCorruption);
  j = AlertToJson(Alert{});
  j["state"] = "sleeping";
  EXPECT_EQ(AlertFromJson(j).status().code(), Status::Code::kCorruption);
  j = AlertToJson(Alert{});
  j["window"] = 3;
  EXPECT_EQ(AlertFromJson(j).status().code(), Status::Code::kCorruption);
}

}  // namespace
}  // namespace inferscope
