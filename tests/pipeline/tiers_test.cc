// Storage tiers as the runtime knows them (pipeline/tiers.h): the tier list, its validation, the
// query read plan, and the topology's `state:` section. What the StateStore does with them
// (rollups, retention): tests/state/retention_test.cc.

#include "pipeline/tiers.h"

#include <gtest/gtest.h>

#include <atomic>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "pipeline/registry.h"
#include "pipeline/topology.h"

namespace inferscope {
namespace {

constexpr int64_t kSecond = 1'000;
constexpr int64_t kMinute = 60 * kSecond;
constexpr int64_t kHour = 60 * kMinute;
constexpr int64_t kDay = 24 * kHour;
// An hour boundary in 2023, so every tier's buckets are aligned from here.
constexpr int64_t kBase = 472'223 * kHour;

TEST(TierSpecTest, RetentionExpiryAndName) {
  const TierSpec minutes{kMinute, 7 * kDay};
  EXPECT_EQ(minutes.EffectiveRetentionMs(), 7 * kDay);
  EXPECT_EQ(minutes.ExpiredThroughMs(kBase), kBase - 7 * kDay);
  EXPECT_EQ(minutes.Name(), "1m");
  const TierSpec forever{kHour, 0};
  EXPECT_EQ(forever.EffectiveRetentionMs(), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(forever.ExpiredThroughMs(kBase), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(forever.Name(), "1h");
  EXPECT_EQ(TierSpec{}.Name(), "pane");
}

TEST(TierSpecTest, DefaultTiersAreValidAndFinestFirst) {
  const std::vector<TierSpec> tiers = DefaultTiers();
  ASSERT_EQ(tiers, (std::vector<TierSpec>{
                       {10 * kSecond, 6 * kHour}, {kMinute, 7 * kDay}, {kHour, 90 * kDay}}));
  TierProblem problem;
  EXPECT_TRUE(ValidateTiers(tiers, kMinute, 10 * kSecond, &problem).ok());
  // A rollup delay the 6 h of the finest tier cannot wait for: the problem names tier 0.
  Status s = ValidateTiers(tiers, 7 * kHour, 10 * kSecond, &problem);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(problem.index, 0);
  EXPECT_EQ(problem.field, "retention");
  std::vector<TierSpec> too_many(kMaxTiers + 1, TierSpec{kSecond, 0});
  EXPECT_FALSE(ValidateTiers(too_many, 0, 0).ok());
}

TEST(TierPlanTest, NoEligibleTierPlansNothing) {
  const std::vector<TierSpec> tiers = {{10 * kSecond, 0}, {kMinute, 0}};
  // 15 s steps: neither 10 s nor 1 m divides them.
  EXPECT_TRUE(
      PlanTierRead(tiers, {INT64_MAX, 0}, kBase, kBase + kMinute, 15 * kSecond, INT64_MAX).empty());
  // Tier 0 of unknown resolution (panes of any length) is always eligible.
  EXPECT_EQ(
      PlanTierRead({TierSpec{}}, {INT64_MAX}, kBase, kBase + kMinute, 15 * kSecond, INT64_MAX),
      (std::vector<TierSegment>{{0, kBase, kBase + kMinute}}));
}

TEST(TierPlanTest, PicksTheCoarsestTierThatDividesTheStepAndIsRolledUp) {
  const std::vector<TierSpec> tiers = {
      {10 * kSecond, 6 * kHour}, {kMinute, 7 * kDay}, {kHour, 90 * kDay}};
  const std::vector<int64_t> rolled = {INT64_MAX, kBase + 5 * kHour + 10 * kMinute,
                                       kBase + 5 * kHour};
  using S = TierSegment;
  // Hourly steps: the hour tier as far as it is rolled up, then minutes, then panes.
  EXPECT_EQ(PlanTierRead(tiers, rolled, kBase, kBase + 6 * kHour, kHour, INT64_MAX),
            (std::vector<S>{{2, kBase, kBase + 5 * kHour},
                            {1, kBase + 5 * kHour, kBase + 5 * kHour + 10 * kMinute},
                            {0, kBase + 5 * kHour + 10 * kMinute, kBase + 6 * kHour}}));
  // A range that is rolled up entirely: one tier.
  EXPECT_EQ(PlanTierRead(tiers, rolled, kBase, kBase + 2 * kHour, kHour, INT64_MAX),
            (std::vector<S>{{2, kBase, kBase + 2 * kHour}}));
  // 2 min steps: the hour tier does not divide them.
  EXPECT_EQ(PlanTierRead(tiers, rolled, kBase, kBase + 2 * kHour, 2 * kMinute, INT64_MAX),
            (std::vector<S>{{1, kBase, kBase + 2 * kHour}}));
  // 30 s steps: only panes.
  EXPECT_EQ(PlanTierRead(tiers, rolled, kBase, kBase + kHour, 30 * kSecond, INT64_MAX),
            (std::vector<S>{{0, kBase, kBase + kHour}}));
  // A resolution cap.
  EXPECT_EQ(PlanTierRead(tiers, rolled, kBase, kBase + kHour, kHour, kMinute),
            (std::vector<S>{{1, kBase, kBase + kHour}}));
  // Nothing rolled up yet: panes.
  EXPECT_EQ(PlanTierRead(tiers, {INT64_MAX, 0, 0}, kBase, kBase + kHour, kHour, INT64_MAX),
            (std::vector<S>{{0, kBase, kBase + kHour}}));
}

TEST(TierSpecTest, ValidationNamesTheTierAndField) {
  EXPECT_TRUE(ValidateTiers(DefaultTiers(), kMinute, 10 * kSecond).ok());
  auto message = [](std::vector<TierSpec> tiers) {
    return ValidateTiers(tiers, kMinute, 10 * kSecond).message();
  };
  EXPECT_NE(message({{10 * kSecond, kHour}, {45 * kSecond, kDay}}).find("tiers[1].resolution"),
            std::string::npos);
  EXPECT_NE(message({{10 * kSecond, kDay}, {kMinute, kHour}}).find("tiers[1].retention"),
            std::string::npos);
  EXPECT_NE(message({{10 * kSecond, 2 * kMinute}, {kHour, kDay}}).find("tiers[0].retention"),
            std::string::npos);
  EXPECT_NE(message({{10 * kSecond, 5 * kSecond}}).find("shorter than one bucket"),
            std::string::npos);
  EXPECT_FALSE(ValidateTiers({}, 0, 0).ok());
  EXPECT_EQ(FormatDurationMs(10 * kSecond), "10s");
  EXPECT_EQ(FormatDurationMs(90 * kMinute), "90m");
  EXPECT_EQ(FormatDurationMs(7 * kDay), "7d");
  EXPECT_EQ(FormatDurationMs(1500), "1500ms");
}

// Stand-ins so that topology validation can be tested without the real stages.
struct FakeSource final : Source {
  static constexpr std::string_view kName = "fake_source";
  static constexpr std::string_view kDescription = "emits nothing";
  static Result<std::unique_ptr<FakeSource>> Create(const ConfigNode&) {
    return std::make_unique<FakeSource>();
  }
  Status Open(const StageContext&) override { return Status::Ok(); }
  Status Run(SourceOutput&, const std::atomic<bool>&) override { return Status::Ok(); }
};
struct FakeWindows final : Operator {
  static constexpr std::string_view kName = "window_aggregate";
  static constexpr std::string_view kDescription = "emits nothing";
  static Result<std::unique_ptr<FakeWindows>> Create(const ConfigNode&) {
    return std::make_unique<FakeWindows>();
  }
  Status Open(const StageContext&) override { return Status::Ok(); }
  KindSet Emits() const override { return KindSet::Of<kind::PaneSummary>(); }
  Status Process(const EventBatch&, OutputBatch&) override { return Status::Ok(); }
};
struct FakeSink final : Sink {
  static constexpr std::string_view kName = "fake_sink";
  static constexpr std::string_view kDescription = "drops everything";
  static Result<std::unique_ptr<FakeSink>> Create(const ConfigNode&) {
    return std::make_unique<FakeSink>();
  }
  Status Open(const StageContext&) override { return Status::Ok(); }
  KindSet Accepts() const override { return KindSet::Of<kind::PaneSummary>(); }
  Status Write(const OutputBatch&) override { return Status::Ok(); }
};

constexpr char kTopology[] = R"(name: t
state:
  path: /tmp/x
  tiers:
    - {resolution: 10s, retention: 6h}
    - {resolution: 1m,  retention: 7d}
    - {resolution: 1h,  retention: forever}
  rollup_delay: 2m
  maintenance_interval: 5s
sources:
  - {name: in, type: fake_source}
operators:
  - name: win
    type: window_aggregate
    inputs: [in]
    options: {pane: 10s}
sinks:
  - {name: out, type: fake_sink, inputs: [win]}
)";

Status CheckTopology(const std::string& text) {
  Result<TopologySpec> spec = ParseTopology(text, "t.yaml");
  if (!spec.ok()) return spec.status();
  Registry registry;
  registry.AddSource<FakeSource>();
  registry.AddOperator<FakeWindows>();
  registry.AddSink<FakeSink>();
  return ValidateTopology(*spec, registry);
}

std::string Replace(std::string text, const std::string& from, const std::string& to) {
  size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return text.replace(at, from.size(), to);
}

TEST(StateTopologyTest, ParsesTiersDelayAndInterval) {
  Result<TopologySpec> spec = ParseTopology(kTopology, "t.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->state_tiers,
            (std::vector<TierSpec>{{10 * kSecond, 6 * kHour}, {kMinute, 7 * kDay}, {kHour, 0}}));
  EXPECT_EQ(spec->rollup_delay_ms, 2 * kMinute);
  EXPECT_EQ(spec->maintenance_interval_ms, 5 * kSecond);
  EXPECT_TRUE(CheckTopology(kTopology).ok()) << CheckTopology(kTopology).ToString();

  Result<TopologySpec> defaults = ParseTopology("name: d\nstate: {path: /tmp/y}\n", "d.yaml");
  ASSERT_TRUE(defaults.ok()) << defaults.status().ToString();
  EXPECT_EQ(defaults->state_tiers, DefaultTiers());
  EXPECT_EQ(defaults->rollup_delay_ms, kMinute);
  EXPECT_EQ(defaults->maintenance_interval_ms, 10 * kSecond);
}

TEST(StateTopologyTest, ErrorsNameFileLineColumnAndField) {
  Status s = CheckTopology(
      Replace(kTopology, "{resolution: 1m,  retention: 7d}", "{resolution: 45s, retention: 7d}"));
  EXPECT_NE(s.message().find("t.yaml:6:"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("state.tiers[1].resolution"), std::string::npos) << s.ToString();

  s = CheckTopology(Replace(kTopology, "retention: 7d", "retention: 1h"));
  EXPECT_NE(s.message().find("t.yaml:6:"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("state.tiers[1].retention"), std::string::npos) << s.ToString();

  s = CheckTopology(Replace(kTopology, "retention: 6h", "retention: soon"));
  EXPECT_NE(s.message().find("state.tiers[0].retention: expected a duration"), std::string::npos)
      << s.ToString();

  s = CheckTopology(Replace(kTopology, "{resolution: 10s, retention: 6h}",
                            "{resolution: 10s, retention: 6h, resolutoin: 1s}"));
  EXPECT_NE(s.message().find("resolutoin"), std::string::npos) << s.ToString();

  s = CheckTopology(Replace(kTopology, "rollup_delay: 2m", "rollup_delay: 7h"));
  EXPECT_NE(s.message().find("state.tiers[0].retention"), std::string::npos) << s.ToString();

  // The finest tier is the panes: its resolution must be the window operator's pane.
  s = CheckTopology(Replace(kTopology, "options: {pane: 10s}", "options: {pane: 5s}"));
  EXPECT_NE(s.message().find("t.yaml:16:"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("operators[0].options.pane: 5s differs from state.tiers[0]"),
            std::string::npos)
      << s.ToString();
}

}  // namespace
}  // namespace inferscope
