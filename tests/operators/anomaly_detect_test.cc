#include "operators/anomaly_detect.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

namespace inferscope {
namespace {

ConfigNode Parse(const std::string& yaml) {
  return ConfigNode("anomalies.yaml", YAML::Load(yaml), "options");
}

TEST(AnomalyDetectTest, SpikeAfterWarmUpFiresAndResolves) {
  Result<std::unique_ptr<AnomalyDetectOperator>> made = AnomalyDetectOperator::Create(
      Parse("metrics: [ttft_ms]\nstats: [mean]\ndetector: {warmup_points: 20}\n"));
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  std::unique_ptr<AnomalyDetectOperator> op = std::move(made).value();
  Interner interner;
  MetricsRegistry metrics;
  ManualClock clock(7);
  StageContext ctx;
  ctx.name = "anomalies";
  ctx.interner = &interner;
  ctx.metrics = &metrics;
  ctx.clock = &clock;
  ASSERT_TRUE(op->Open(ctx).ok());
  auto feed = [&](int64_t start, double value) {
    OutputBatch in, out;
    WindowSummary s;
    s.series = {interner.Intern("node-1"), interner.Intern("m"), interner.Intern("ttft_ms")};
    s.start_ms = start;
    s.end_ms = start + 1000;
    s.agg.Add(value, start);
    in.Add<kind::PaneSummary>(s);
    in.watermark_ms = start + 1000;
    EXPECT_TRUE(op->ProcessResults(in, out).ok());
    const std::span<const Alert> alerts = out.Get<kind::Alert>();
    return std::vector<Alert>(alerts.begin(), alerts.end());
  };
  int64_t t = 0;
  for (int i = 0; i < 60; ++i, t += 1000) {
    ASSERT_TRUE(feed(t, 100 + (i % 5)).empty()) << "false alert at point " << i;
  }
  std::vector<Alert> fired = feed(t, 1000);
  t += 1000;
  ASSERT_EQ(fired.size(), 1u);
  EXPECT_EQ(fired[0].state, AlertState::kFiring);
  EXPECT_EQ(fired[0].type, AnomalyType::kSpike);
  EXPECT_EQ(fired[0].rule, "anomalies");
  EXPECT_GT(fired[0].score, 0.7);
  EXPECT_NEAR(fired[0].expected, 102, 5);
  std::vector<Alert> resolved;
  for (int i = 0; i < 10 && resolved.empty(); ++i, t += 1000) resolved = feed(t, 101);
  ASSERT_EQ(resolved.size(), 1u);
  EXPECT_EQ(resolved[0].state, AlertState::kResolved);
  EXPECT_EQ(resolved[0].fingerprint, fired[0].fingerprint);
  EXPECT_EQ(op->detectors(), 1u);
}

}  // namespace
}  // namespace inferscope
