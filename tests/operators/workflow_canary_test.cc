// workflow_canary on synthetic panes of a fleet of four instances of one model: a helpful change
// completes early, a harmful one rolls back with its evidence, a guard's regression rolls back, a
// neutral change completes "no_effect" at the end of the canary, silence fails, and a restart
// (operator checkpoint + registry reloaded from RocksDB) continues the canary to its verdict.

#include "operators/workflow_canary.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "pipeline/checkpoint.h"
#include "pipeline/clock.h"
#include "pipeline/config.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "state/checkpoint_store.h"
#include "state/state_store.h"
#include "state/workflow_store.h"
#include "tests/test_util.h"
#include "workflows/workflow.h"

namespace inferscope {
namespace {

using nlohmann::json;

constexpr int64_t kPaneMs = 10'000;
constexpr int64_t kT0 = 1'750'000'000'000;  // the first pane's start
constexpr int kBaselinePanes = 30;
constexpr int kRequestsPerPane = 40;
constexpr int kInstances = 4;

// What the changed instance (vllm-0) does after the change, as factors on its medians, and its
// error ratio.
struct Effect {
  double ttft = 1;
  double e2e = 1;
  double errors = 0.01;
};

ConfigNode Options(const std::string& yaml) {
  return ConfigNode("topology.yaml", YAML::Load(yaml), "operators[1].options");
}

class Fleet {
 public:
  Fleet(WorkflowRegistry* registry, Interner* interner, uint64_t seed)
      : registry_(registry), interner_(interner), rng_(seed) {
    for (int i = 0; i < kInstances; ++i) {
      instances_.push_back(interner_->Intern("vllm-" + std::to_string(i)));
    }
    model_ = interner_->Intern("llama");
    other_model_ = interner_->Intern("mistral");
    ttft_ = interner_->Intern("ttft_ms");
    e2e_ = interner_->Intern("e2e_ms");
  }

  std::unique_ptr<WorkflowCanaryOperator> Open(const std::string& yaml = "{}") {
    Result<std::unique_ptr<WorkflowCanaryOperator>> op =
        WorkflowCanaryOperator::Create(Options(yaml));
    EXPECT_TRUE(op.ok()) << op.status().ToString();
    StageContext ctx;
    ctx.name = "canary";
    ctx.interner = interner_;
    ctx.metrics = &metrics_;
    ctx.services.Provide(registry_);
    EXPECT_TRUE((*op)->Open(ctx).ok());
    return std::move(op).value();
  }

  // One pane of every instance (ttft_ms and e2e_ms), and one of another model's instance that
  // must not count as a peer; vllm-0 gets `effect` when `changed`.
  void Step(WorkflowCanaryOperator& op, int pane, bool changed, const Effect& effect) {
    OutputBatch in, out;
    const int64_t start = kT0 + pane * kPaneMs;
    auto& panes = in.Mutable<kind::PaneSummary>();
    for (int i = 0; i <= kInstances; ++i) {
      const bool me = i == 0 && changed;
      const StringId instance = i < kInstances ? instances_[i] : instances_[1];
      const StringId model = i < kInstances ? model_ : other_model_;
      const double slow = i == kInstances ? 5 : 1;  // the other model is much slower
      const double errors = me ? effect.errors : 0.01;
      for (StringId metric : {ttft_, e2e_}) {
        const double median =
            (metric == ttft_ ? 120.0 * (me ? effect.ttft : 1) : 900.0 * (me ? effect.e2e : 1)) *
            slow;
        WindowSummary s;
        s.series = {instance, model, metric};
        s.start_ms = start;
        s.end_ms = start + kPaneMs;
        s.max_event_time_ms = s.end_ms - 1;
        for (int r = 0; r < kRequestsPerPane; ++r) {
          s.agg.Add(median * std::exp(0.35 * normal_(rng_)), start + r);
          s.agg.AddEvent(uniform_(rng_) < errors);
        }
        panes.push_back(std::move(s));
      }
    }
    in.watermark_ms = start + kPaneMs;
    ASSERT_TRUE(op.ProcessResults(in, out).ok());
    EXPECT_TRUE(out.kinds().Without(KindSet::Of<kind::WorkflowChange>()).empty());
    for (const WorkflowChange& c : out.Get<kind::WorkflowChange>()) changes_.push_back(c);
  }

  // Creates and approves a workflow on vllm-0 (canary 60 panes), runs the baseline, applies the
  // change at the end of it.
  std::string Start(WorkflowCanaryOperator& op, json extra = json::object()) {
    json body = {{"instance", "vllm-0"},
                 {"model", "llama"},
                 {"change", {{"--max-num-seqs", "512"}}},
                 {"baseline", "5m"},
                 {"canary", "10m"}};
    body.update(extra);
    Result<Workflow> w = registry_->Create(*WorkflowFromRequest(body));
    EXPECT_TRUE(w.ok());
    EXPECT_TRUE(registry_->Approve(w->id, "test").ok());
    for (int p = 0; p < kBaselinePanes; ++p) Step(op, p, false, {});
    EXPECT_TRUE(registry_->MarkApplied(w->id, kT0 + kBaselinePanes * kPaneMs, "test").ok());
    return w->id;
  }

  // Runs after-panes from `from` until the workflow leaves APPLIED or `to` panes passed; returns
  // the pane index reached.
  int Run(WorkflowCanaryOperator& op, const std::string& id, int from, int to,
          const Effect& effect) {
    int p = from;
    for (; p < to && registry_->Get(id)->state == WorkflowState::kApplied; ++p) {
      Step(op, kBaselinePanes + p, true, effect);
    }
    return p;
  }

  MetricsRegistry metrics_;
  std::vector<WorkflowChange> changes_;  // what the operator emitted

 private:
  WorkflowRegistry* registry_;
  Interner* interner_;
  std::mt19937_64 rng_;
  std::normal_distribution<double> normal_;
  std::uniform_real_distribution<double> uniform_;
  std::vector<StringId> instances_;
  StringId model_ = 0, other_model_ = 0, ttft_ = 0, e2e_ = 0;
};

class WorkflowCanaryTest : public ::testing::Test {
 protected:
  ManualClock clock_{1'000};
  WorkflowRegistry registry_{nullptr, &clock_};
  Interner interner_;
};

TEST_F(WorkflowCanaryTest, HelpfulChangeCompletesEarly) {
  Fleet fleet(&registry_, &interner_, 1);
  auto op = fleet.Open();
  const std::string id = fleet.Start(*op);
  EXPECT_EQ(op->tracked(), 1u);
  const int reached = fleet.Run(*op, id, 0, 60, {.ttft = 0.7});
  const Workflow w = *registry_.Get(id);
  ASSERT_EQ(w.state, WorkflowState::kCompleted) << WorkflowToJson(w).dump(2);
  EXPECT_EQ(w.verdict, "improved");
  EXPECT_LT(reached, 60) << "a clear improvement does not wait for the whole canary";
  EXPECT_LT(w.progress, 1.0);
  const json& t = w.evidence["target"];
  EXPECT_EQ(t["metric"], "ttft_ms");
  EXPECT_EQ(t["verdict"], "improved");
  EXPECT_TRUE(t["peer_adjusted"].get<bool>()) << "three peers of the same model";
  EXPECT_LT(t["z"].get<double>(), -t["boundary"].get<double>());
  EXPECT_NEAR(t["ratio"].get<double>(), 0.7, 0.1);
  EXPECT_NEAR(t["before"].get<double>(), 120, 15);
  EXPECT_EQ(t["n_before"].get<uint64_t>(), uint64_t{kBaselinePanes * kRequestsPerPane})
      << "the baseline is the 30 panes before the change, not the other model's";
  ASSERT_EQ(w.evidence["guards"].size(), 2u);
  EXPECT_NE(w.evidence["guards"][0]["verdict"], "regressed");
  EXPECT_EQ(w.history.back().by, "canary");
  EXPECT_EQ(op->tracked(), 0u) << "finished workflows are dropped";
  // Every state change was emitted for the stream, in order, the verdict with the last.
  ASSERT_EQ(fleet.changes_.size(), 4u);
  EXPECT_EQ(fleet.changes_[0].state, WorkflowState::kPendingApproval);
  EXPECT_EQ(fleet.changes_[1].state, WorkflowState::kApproved);
  EXPECT_EQ(fleet.changes_[2].state, WorkflowState::kApplied);
  EXPECT_EQ(fleet.changes_[3].state, WorkflowState::kCompleted);
  EXPECT_EQ(fleet.changes_[3].verdict, "improved");
  EXPECT_EQ(fleet.changes_[3].instance, "vllm-0");
  EXPECT_LT(fleet.changes_[2].seq, fleet.changes_[3].seq);
}

TEST_F(WorkflowCanaryTest, HarmfulChangeRollsBackWithEvidence) {
  Fleet fleet(&registry_, &interner_, 2);
  auto op = fleet.Open();
  const std::string id = fleet.Start(*op);
  fleet.Run(*op, id, 0, 60, {.ttft = 1.5});
  const Workflow w = *registry_.Get(id);
  ASSERT_EQ(w.state, WorkflowState::kRolledBack) << WorkflowToJson(w).dump(2);
  EXPECT_EQ(w.verdict, "regressed");
  EXPECT_NE(w.reason.find("ttft_ms"), std::string::npos) << w.reason;
  const json& t = w.evidence["target"];
  EXPECT_EQ(t["verdict"], "regressed");
  EXPECT_GT(t["z"].get<double>(), t["boundary"].get<double>());
  EXPECT_LT(t["p_value"].get<double>(), 0.001);
  EXPECT_GT(t["after"].get<double>(), t["before"].get<double>() * 1.3);
  EXPECT_GT(t["n_after"].get<uint64_t>(), 0u);
  EXPECT_TRUE(w.evidence.contains("fraction"));
}

TEST_F(WorkflowCanaryTest, GuardRegressionRollsBack) {
  Fleet fleet(&registry_, &interner_, 3);
  auto op = fleet.Open();
  const std::string id = fleet.Start(*op);
  // ttft unchanged, e2e 40 % slower: the target has no verdict, the guard regresses.
  fleet.Run(*op, id, 0, 60, {.ttft = 1.0, .e2e = 1.4});
  const Workflow w = *registry_.Get(id);
  ASSERT_EQ(w.state, WorkflowState::kRolledBack) << WorkflowToJson(w).dump(2);
  EXPECT_NE(w.reason.find("e2e_ms"), std::string::npos) << w.reason;
  EXPECT_EQ(w.reason.find("ttft_ms"), std::string::npos) << w.reason;
  EXPECT_EQ(w.evidence["guards"][0]["metric"], "e2e_ms");
  EXPECT_EQ(w.evidence["guards"][0]["verdict"], "regressed");
}

TEST_F(WorkflowCanaryTest, ErrorRatioGuardRollsBackAnImprovementThatFails) {
  Fleet fleet(&registry_, &interner_, 4);
  auto op = fleet.Open();
  // A target that only moves a little, errors ×8: the error guard decides first.
  const std::string id = fleet.Start(*op);
  fleet.Run(*op, id, 0, 60, {.ttft = 0.97, .errors = 0.08});
  const Workflow w = *registry_.Get(id);
  ASSERT_EQ(w.state, WorkflowState::kRolledBack) << WorkflowToJson(w).dump(2);
  EXPECT_NE(w.reason.find("error_ratio"), std::string::npos) << w.reason;
  const json& g = w.evidence["guards"][1];
  EXPECT_EQ(g["metric"], "error_ratio");
  EXPECT_NEAR(g["before"].get<double>(), 0.01, 0.006);
  EXPECT_GT(g["after"].get<double>(), 0.04);
}

TEST_F(WorkflowCanaryTest, NeutralChangeCompletesWithNoEffectAtTheEnd) {
  Fleet fleet(&registry_, &interner_, 5);
  auto op = fleet.Open();
  const std::string id = fleet.Start(*op);
  const int reached = fleet.Run(*op, id, 0, 80, {});
  const Workflow w = *registry_.Get(id);
  ASSERT_EQ(w.state, WorkflowState::kCompleted) << WorkflowToJson(w).dump(2);
  EXPECT_EQ(w.verdict, "no_effect");
  EXPECT_EQ(reached, 60) << "decided at the end of the 10 min canary";
  EXPECT_DOUBLE_EQ(w.progress, 1.0);
}

TEST_F(WorkflowCanaryTest, WithoutPeersJudgesAgainstTheBaselineAlone) {
  Fleet fleet(&registry_, &interner_, 11);
  auto op = fleet.Open("{peers: false}");
  const std::string id = fleet.Start(*op);
  fleet.Run(*op, id, 0, 60, {.ttft = 0.7});
  const Workflow w = *registry_.Get(id);
  ASSERT_EQ(w.state, WorkflowState::kCompleted) << WorkflowToJson(w).dump(2);
  EXPECT_FALSE(w.evidence["target"]["peer_adjusted"].get<bool>());
  EXPECT_FALSE(w.evidence["guards"][1]["peer_adjusted"].get<bool>());
  EXPECT_NEAR(w.evidence["target"]["ratio"].get<double>(), 0.7, 0.1);
}

TEST_F(WorkflowCanaryTest, ProgressIsRecordedAtEachLook) {
  Fleet fleet(&registry_, &interner_, 6);
  auto op = fleet.Open();
  const std::string id = fleet.Start(*op);
  fleet.Run(*op, id, 0, 6, {});
  const Workflow w = *registry_.Get(id);
  ASSERT_EQ(w.state, WorkflowState::kApplied);
  EXPECT_NEAR(w.progress, 0.1, 1e-9) << "6 of 60 panes";
  EXPECT_EQ(w.evidence["target"]["verdict"], "continue");
  EXPECT_EQ(op->looks(), 6u);
}

TEST_F(WorkflowCanaryTest, NoDataFromTheInstanceFails) {
  Fleet fleet(&registry_, &interner_, 7);
  auto op = fleet.Open("{no_data_timeout: 1m}");
  const std::string id = fleet.Start(*op);
  // The fleet goes on publishing; vllm-0 does not (only the other model's panes and the peers').
  for (int p = 0; p < 10 && registry_.Get(id)->state == WorkflowState::kApplied; ++p) {
    OutputBatch in, out;
    WindowSummary s;
    s.series = {*interner_.Find("vllm-1"), *interner_.Find("llama"), *interner_.Find("ttft_ms")};
    s.start_ms = kT0 + (kBaselinePanes + p) * kPaneMs;
    s.end_ms = s.start_ms + kPaneMs;
    s.agg.Add(100, s.start_ms);
    in.Add<kind::PaneSummary>(s);
    in.watermark_ms = s.end_ms;
    ASSERT_TRUE(op->ProcessResults(in, out).ok());
  }
  const Workflow w = *registry_.Get(id);
  ASSERT_EQ(w.state, WorkflowState::kFailed) << WorkflowToJson(w).dump(2);
  EXPECT_NE(w.reason.find("no pane of vllm-0/llama ttft_ms"), std::string::npos) << w.reason;
}

TEST_F(WorkflowCanaryTest, RejectedBeforeApplyIsDropped) {
  Fleet fleet(&registry_, &interner_, 8);
  auto op = fleet.Open();
  Result<Workflow> w = registry_.Create(
      *WorkflowFromRequest({{"instance", "vllm-0"}, {"model", "llama"}, {"baseline", "1m"}}));
  ASSERT_TRUE(w.ok());
  fleet.Step(*op, 0, false, {});
  EXPECT_EQ(op->tracked(), 1u) << "the baseline is collected while approval is pending";
  ASSERT_TRUE(registry_.Reject(w->id, "x", "no").ok());
  fleet.Step(*op, 1, false, {});
  EXPECT_EQ(op->tracked(), 0u);
}

TEST_F(WorkflowCanaryTest, OptionErrorsNameTheField) {
  auto error = [](const std::string& yaml) {
    Result<std::unique_ptr<WorkflowCanaryOperator>> op =
        WorkflowCanaryOperator::Create(Options(yaml));
    EXPECT_FALSE(op.ok()) << yaml;
    return op.ok() ? std::string() : op.status().message();
  };
  EXPECT_NE(error("{alpha: 0.7}").find("alpha"), std::string::npos);
  EXPECT_NE(error("{min_samples: 1}").find("min_samples"), std::string::npos);
  EXPECT_NE(error("{no_data_timeout: 10ms}").find("no_data_timeout"), std::string::npos);
  EXPECT_NE(error("{max_workflows: 0}").find("max_workflows"), std::string::npos);
  EXPECT_NE(error("{colour: red}").find("colour"), std::string::npos);
  EXPECT_NE(error("{alpha: 0.7}").find("topology.yaml:"), std::string::npos)
      << error("{alpha: 0.7}");
}

TEST_F(WorkflowCanaryTest, NeedsTheRegistry) {
  auto op = WorkflowCanaryOperator::Create(Options("{}"));
  ASSERT_TRUE(op.ok());
  StageContext ctx;
  ctx.name = "canary";
  ctx.interner = &interner_;
  EXPECT_EQ((*op)->Open(ctx).code(), Status::Code::kInvalidArgument);
}

// The engine restarts in the middle of the canary: the registry reloads the workflow from RocksDB,
// the operator restores its sketches from the checkpoint, and the canary reaches the same verdict
// it would have without the restart.
TEST(WorkflowCanaryRestartTest, ContinuesAfterARestartMidCanary) {
  testing::TempDir dir;
  StateStoreOptions options;
  options.path = dir.str() + "/state";
  ManualClock clock(1'000);
  Interner interner;
  std::string id;
  int reached = 0;
  uint64_t n_after_before_restart = 0;
  {
    Result<std::unique_ptr<StateStore>> store = StateStore::Open(options, nullptr);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    StateWorkflowStore workflows(store->get());
    WorkflowRegistry registry(&workflows, &clock);
    ASSERT_TRUE(registry.Load().ok());
    Fleet fleet(&registry, &interner, 9);
    auto op = fleet.Open();
    id = fleet.Start(*op);
    // A small effect, so that no verdict comes before the restart.
    reached = fleet.Run(*op, id, 0, 3, {.ttft = 0.85});
    ASSERT_EQ(registry.Get(id)->state, WorkflowState::kApplied);
    n_after_before_restart = registry.Get(id)->evidence["target"]["n_after"].get<uint64_t>();
    EXPECT_EQ(n_after_before_restart, uint64_t{3 * kRequestsPerPane});
    std::vector<CheckpointRecord> records;
    CheckpointCollector writer("op", "canary", &records);
    ASSERT_TRUE(op->Checkpoint(writer).ok());
    ASSERT_EQ(records.size(), 1u);
    ASSERT_TRUE(WriteCheckpointRecords(**store, records).ok());
    records.clear();
    ASSERT_TRUE(op->Checkpoint(writer).ok());
    EXPECT_TRUE(records.empty()) << "nothing changed since the last checkpoint";
  }
  Result<std::unique_ptr<StateStore>> store = StateStore::Open(options, nullptr);
  ASSERT_TRUE(store.ok());
  StateWorkflowStore workflows(store->get());
  WorkflowRegistry registry(&workflows, &clock);
  ASSERT_TRUE(registry.Load().ok());
  ASSERT_EQ(registry.Get(id)->state, WorkflowState::kApplied) << "the workflow survived";
  Fleet fleet(&registry, &interner, 10);
  auto op = fleet.Open();
  ASSERT_TRUE(op->Restore(StateCheckpointReader("op", "canary", store->get())).ok());
  // One more pane: the look counts the after-panes from before the restart too.
  fleet.Run(*op, id, reached, reached + 1, {.ttft = 0.85});
  const Workflow mid = *registry.Get(id);
  ASSERT_EQ(mid.state, WorkflowState::kApplied) << "a 15 % effect needs more than 4 panes";
  EXPECT_EQ(mid.evidence["target"]["n_after"].get<uint64_t>(),
            n_after_before_restart + kRequestsPerPane);
  EXPECT_EQ(mid.evidence["target"]["n_before"].get<uint64_t>(),
            uint64_t{kBaselinePanes * kRequestsPerPane})
      << "the baseline came back from the checkpoint";
  fleet.Run(*op, id, reached + 1, 60, {.ttft = 0.85});
  const Workflow w = *registry.Get(id);
  ASSERT_EQ(w.state, WorkflowState::kCompleted) << WorkflowToJson(w).dump(2);
  EXPECT_EQ(w.verdict, "improved");

  // The finished workflow's checkpoint record goes with the next checkpoint.
  std::vector<CheckpointRecord> records;
  CheckpointCollector writer("op", "canary", &records);
  ASSERT_TRUE(op->Checkpoint(writer).ok());
  ASSERT_EQ(records.size(), 1u);
  EXPECT_FALSE(records[0].value.has_value()) << "the finished workflow's record is deleted";
}

}  // namespace
}  // namespace inferscope
