#include "state/alert_store.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "state/state_store.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

TEST(AlertStoreTest, LatestAndHistoryRoundTrip) {
  testing::TempDir dir;
  StateStoreOptions options;
  options.path = dir.str() + "/state";
  Result<std::unique_ptr<StateStore>> store = StateStore::Open(options, nullptr);
  ASSERT_TRUE(store.ok());
  Alert a;
  a.fingerprint = AlertFingerprint("high_ttft", "vllm-1", "llama", "ttft_ms", "p95");
  a.rule = "high_ttft";
  a.instance = "vllm-1";
  a.model = "llama";
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
