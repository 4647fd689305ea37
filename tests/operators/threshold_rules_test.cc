#include "operators/threshold_rules.h"

#include <gtest/gtest.h>

namespace inferscope {
namespace {

ConfigNode Parse(const std::string& yaml) {
  return ConfigNode("rules.yaml", YAML::Load(yaml), "options");
}

constexpr char kRules[] = R"(
rules:
  - name: high_ttft
    metric: ttft_ms
    stat: p95
    levels: {warning: 100, critical: 500}
    keep_firing_for: 2s
    hysteresis: 0.1
)";

class ThresholdRulesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<std::unique_ptr<ThresholdRulesOperator>> op =
        ThresholdRulesOperator::Create(Parse(kRules));
    ASSERT_TRUE(op.ok()) << op.status().ToString();
    op_ = std::move(op).value();
    StageContext ctx;
    ctx.name = "rules";
    ctx.interner = &interner_;
    ctx.metrics = &metrics_;
    ctx.clock = &clock_;
    ASSERT_TRUE(op_->Open(ctx).ok());
  }

  // One 1 s pane of ttft_ms on node-1/m where every value is `value`.
  OutputBatch Pane(int64_t start_ms, double value, const char* instance = "node-1") {
    OutputBatch in;
    WindowSummary s;
    s.series = {interner_.Intern(instance), interner_.Intern("m"), interner_.Intern("ttft_ms")};
    s.start_ms = start_ms;
    s.end_ms = start_ms + 1000;
    s.max_event_time_ms = start_ms + 999;
    for (int i = 0; i < 10; ++i) s.agg.Add(value, start_ms + i);
    in.Add<kind::PaneSummary>(std::move(s));
    in.watermark_ms = start_ms + 1000;
    return in;
  }

  std::vector<Alert> Feed(int64_t start_ms, double value) {
    OutputBatch out;
    EXPECT_TRUE(op_->ProcessResults(Pane(start_ms, value), out).ok());
    const std::span<const Alert> alerts = out.Get<kind::Alert>();
    return {alerts.begin(), alerts.end()};
  }

  Interner interner_;
  MetricsRegistry metrics_;
  ManualClock clock_{42};
  std::unique_ptr<ThresholdRulesOperator> op_;
};

TEST_F(ThresholdRulesTest, FiresEscalatesAndResolvesBelowTheBand) {
  EXPECT_TRUE(Feed(0, 50).empty());
  std::vector<Alert> a = Feed(1000, 200);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].state, AlertState::kFiring);
  EXPECT_EQ(a[0].severity, Severity::kWarning);
  EXPECT_EQ(a[0].type, AnomalyType::kThreshold);
  EXPECT_EQ(a[0].rule, "high_ttft");
  EXPECT_EQ(a[0].instance, "node-1");
  EXPECT_EQ(a[0].stat, "p95");
  EXPECT_NEAR(a[0].value, 200, 200 * 0.02);
  EXPECT_EQ(a[0].expected, 100);
  EXPECT_EQ(a[0].upper, 100);
  EXPECT_EQ(a[0].limit, 100) << "the warning level's threshold";
  EXPECT_EQ(a[0].window_start_ms, 1000);
  EXPECT_EQ(a[0].window_end_ms, 2000);
  EXPECT_EQ(a[0].detected_at_ms, 42);
  EXPECT_EQ(a[0].fingerprint, AlertFingerprint("high_ttft", "node-1", "m", "ttft_ms", "p95"));
  a = Feed(2000, 600);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].severity, Severity::kCritical);
  EXPECT_EQ(a[0].limit, 500) << "a critical alert shows the critical threshold";
  EXPECT_EQ(a[0].expected, 100) << "expected stays the lowest level";
  // 95 is below 100 but inside the 10 % band: the alert keeps firing however long it stays.
  for (int64_t t = 3000; t < 10'000; t += 1000) EXPECT_TRUE(Feed(t, 95).empty()) << t;
  // Clearly below (<= 90) for keep_firing_for (2 s): resolved at the third clear evaluation.
  EXPECT_TRUE(Feed(10'000, 50).empty());
  EXPECT_TRUE(Feed(11'000, 50).empty());
  a = Feed(12'000, 50);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].state, AlertState::kResolved);
  EXPECT_EQ(a[0].severity, Severity::kCritical);
  EXPECT_EQ(a[0].limit, 500) << "a resolution shows the limit of the severity it fired with";
}

TEST_F(ThresholdRulesTest, OnlyTheRuleWindowLengthIsJudged) {
  OutputBatch in = Pane(0, 1000);
  in.Mutable<kind::PaneSummary>()[0].start_ms =
      -59'000;  // a 60 s window: not the pane length of this stream
  OutputBatch pane = Pane(0, 1000);
  in.Add<kind::PaneSummary>(pane.Get<kind::PaneSummary>()[0]);
  OutputBatch out;
  ASSERT_TRUE(op_->ProcessResults(in, out).ok());
  ASSERT_EQ(out.Get<kind::Alert>().size(), 1u);
  EXPECT_EQ(out.Get<kind::Alert>()[0].window_start_ms, 0);
}

TEST(ThresholdRulesParseTest, ErrorsNameTheFieldAndLine) {
  auto error = [](const std::string& yaml) {
    Result<std::unique_ptr<ThresholdRulesOperator>> op =
        ThresholdRulesOperator::Create(Parse(yaml));
    return op.ok() ? std::string("OK") : op.status().message();
  };
  EXPECT_NE(error("rules:\n  - name: a\n    metric: x\n    stat: p97\n    levels: {warning: 1}\n")
                .find("rules.yaml:4:11: options.rules[0].stat"),
            std::string::npos);
  EXPECT_NE(error("rules:\n  - name: a\n    metric: x\n    levels: {warning: 5, critical: 2}\n")
                .find("higher threshold"),
            std::string::npos);
  EXPECT_NE(
      error("rules:\n  - name: a\n    metric: x\n    levels: {loud: 5}\n").find("levels.loud"),
      std::string::npos);
  EXPECT_NE(error("rules:\n  - {name: a, metric: x, levels: {warning: 1}}\n  - {name: a, metric: "
                  "y, levels: {warning: 1}}\n")
                .find("duplicate rule name"),
            std::string::npos);
  EXPECT_NE(error("rules: []\n").find("at least one rule"), std::string::npos);
  EXPECT_NE(error("rules:\n  - {name: a, metric: x, levels: {warning: 1}, fore: 1s}\n")
                .find("unknown field"),
            std::string::npos);
  EXPECT_EQ(error("rules:\n  - {name: a, metric: x, op: '<', levels: {warning: 5, critical: 2}, "
                  "for: 1m}\n"),
            "OK");
}

}  // namespace
}  // namespace inferscope
