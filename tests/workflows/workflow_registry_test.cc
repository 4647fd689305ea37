#include "workflows/workflow.h"

#include <gtest/gtest.h>

#include <string>

#include "pipeline/clock.h"

namespace inferscope {
namespace {

using nlohmann::json;

json Request() {
  return {{"instance", "vllm-0"},
          {"model", "llama"},
          {"change", {{"--max-num-seqs", 512}, {"--enable-prefix-caching", true}}},
          {"description", "more slots"},
          {"target", {{"metric", "ttft_ms"}, {"quantile", 0.9}}},
          {"baseline", "5m"},
          {"canary", 60000}};
}

TEST(WorkflowRequestTest, ParsesFieldsAndDefaults) {
  Result<Workflow> w = WorkflowFromRequest(Request());
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->instance, "vllm-0");
  EXPECT_EQ(w->engine, "vllm") << "engine defaults to the instance name's prefix";
  ASSERT_EQ(w->change.size(), 2u);
  EXPECT_EQ(w->change[0].first, "--enable-prefix-caching");
  EXPECT_EQ(w->change[0].second, "true");
  EXPECT_EQ(w->change[1].second, "512");
  EXPECT_EQ(w->target.metric, "ttft_ms");
  EXPECT_DOUBLE_EQ(w->target.quantile, 0.9);
  EXPECT_TRUE(w->target.lower_is_better);
  ASSERT_EQ(w->guards.size(), 2u) << "default guards: e2e_ms p95 and error_ratio";
  EXPECT_EQ(w->guards[0].metric, "e2e_ms");
  EXPECT_DOUBLE_EQ(w->guards[0].quantile, 0.95);
  EXPECT_EQ(w->guards[1].metric, "error_ratio");
  EXPECT_EQ(w->baseline_ms, 300'000);
  EXPECT_EQ(w->canary_ms, 60'000);
  EXPECT_FALSE(w->auto_approve);
}

TEST(WorkflowRequestTest, ErrorsNameTheField) {
  auto error_of = [](json body) {
    Result<Workflow> w = WorkflowFromRequest(body);
    EXPECT_FALSE(w.ok());
    return w.ok() ? std::string() : w.status().message();
  };
  json b = Request();
  b.erase("instance");
  EXPECT_EQ(error_of(b).rfind("instance:", 0), 0u) << error_of(b);
  b = Request();
  b["model"] = 3;
  EXPECT_EQ(error_of(b).rfind("model:", 0), 0u);
  b = Request();
  b["colour"] = "red";
  EXPECT_EQ(error_of(b).rfind("colour:", 0), 0u);
  b = Request();
  b["target"]["quantile"] = 1.5;
  EXPECT_EQ(error_of(b).rfind("target.quantile:", 0), 0u);
  b = Request();
  b["target"]["direction"] = "sideways";
  EXPECT_EQ(error_of(b).rfind("target.direction:", 0), 0u);
  b = Request();
  b["guards"] = json::array({{{"metric", "e2e_ms"}, {"speed", 1}}});
  EXPECT_EQ(error_of(b).rfind("guards[0].speed:", 0), 0u) << error_of(b);
  b = Request();
  b["guards"] = json::array({{{"metric", "ttft_ms"}}});
  EXPECT_EQ(error_of(b).rfind("guards:", 0), 0u) << "the target cannot guard itself";
  b = Request();
  b["canary"] = "soon";
  EXPECT_EQ(error_of(b).rfind("canary:", 0), 0u);
  b = Request();
  b["baseline"] = 10;
  EXPECT_EQ(error_of(b).rfind("baseline:", 0), 0u) << "at least 1 s";
  b = Request();
  b["change"] = json::array();
  EXPECT_EQ(error_of(b).rfind("change:", 0), 0u);
  b = Request();
  b["auto_approve"] = "yes";
  EXPECT_EQ(error_of(b).rfind("auto_approve:", 0), 0u);
}

TEST(WorkflowRegistryTest, WalksTheStateMachineAndRecordsHistory) {
  ManualClock clock(1'000);
  WorkflowRegistry registry(nullptr, &clock);
  ASSERT_TRUE(registry.Load().ok());
  Result<Workflow> w = registry.Create(*WorkflowFromRequest(Request()));
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->id.size(), 16u);
  EXPECT_EQ(w->state, WorkflowState::kPendingApproval);
  const uint64_t v0 = registry.version();

  clock.Advance(10);
  EXPECT_EQ(registry.MarkApplied(w->id, 5, "ops").status().code(),
            Status::Code::kFailedPrecondition)
      << "a change is not applied before it is approved";
  Result<Workflow> approved = registry.Approve(w->id, "alice");
  ASSERT_TRUE(approved.ok());
  EXPECT_EQ(approved->state, WorkflowState::kApproved);
  EXPECT_GT(registry.version(), v0);
  EXPECT_EQ(registry.Approve(w->id, "alice").status().code(), Status::Code::kFailedPrecondition);

  clock.Advance(10);
  Result<Workflow> applied = registry.MarkApplied(w->id, 777, "ops");
  ASSERT_TRUE(applied.ok());
  EXPECT_EQ(applied->applied_at_ms, 777);
  ASSERT_TRUE(registry.RecordProgress(w->id, 0.25, {{"fraction", 0.25}}).ok());
  EXPECT_DOUBLE_EQ(registry.Get(w->id)->progress, 0.25);
  EXPECT_EQ(registry.Reject(w->id, "bob", "too late").status().code(),
            Status::Code::kFailedPrecondition)
      << "an applied change is judged, not rejected";

  clock.Advance(10);
  Result<Workflow> done = registry.Finish(w->id, WorkflowState::kCompleted, "improved",
                                          {{"fraction", 0.5}}, "ttft_ms improved");
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->verdict, "improved");
  EXPECT_DOUBLE_EQ(done->progress, 0.5);
  ASSERT_EQ(done->history.size(), 4u);
  EXPECT_EQ(done->history[0].state, WorkflowState::kPendingApproval);
  EXPECT_EQ(done->history[1].state, WorkflowState::kApproved);
  EXPECT_EQ(done->history[1].by, "api:alice");
  EXPECT_EQ(done->history[1].at_ms, 1'010);
  EXPECT_EQ(done->history[2].state, WorkflowState::kApplied);
  EXPECT_EQ(done->history[3].state, WorkflowState::kCompleted);
  EXPECT_EQ(done->history[3].at_ms, 1'030);
  EXPECT_TRUE(registry.Active().empty());
  EXPECT_EQ(registry.Finish(w->id, WorkflowState::kFailed, "", json::object(), "x").status().code(),
            Status::Code::kFailedPrecondition)
      << "terminal states are final";
  EXPECT_EQ(registry.RecordProgress(w->id, 1, json::object()).code(),
            Status::Code::kFailedPrecondition);
  EXPECT_EQ(registry.Approve("0000000000000000", "x").status().code(), Status::Code::kNotFound);
}

TEST(WorkflowRegistryTest, AutoApproveRejectAndLegalTransitions) {
  ManualClock clock(1'000);
  WorkflowRegistry registry(nullptr, &clock);
  Workflow req = *WorkflowFromRequest(Request());
  req.auto_approve = true;
  Result<Workflow> w = registry.Create(req);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->state, WorkflowState::kApproved);
  ASSERT_EQ(w->history.size(), 2u);
  Result<Workflow> rejected = registry.Reject(w->id, "bob", "changed our mind");
  ASSERT_TRUE(rejected.ok());
  EXPECT_EQ(rejected->state, WorkflowState::kRejected);
  EXPECT_EQ(rejected->reason, "changed our mind");
  EXPECT_EQ(registry.Approve(w->id, "x").status().code(), Status::Code::kFailedPrecondition);

  // Every pair against the documented machine.
  using S = WorkflowState;
  int legal = 0;
  for (size_t a = 0; a < kNumWorkflowStates; ++a) {
    for (size_t b = 0; b < kNumWorkflowStates; ++b) {
      legal += IsLegalTransition(static_cast<S>(a), static_cast<S>(b)) ? 1 : 0;
    }
  }
  EXPECT_EQ(legal, 8);
  EXPECT_TRUE(IsLegalTransition(S::kApproved, S::kFailed));
  EXPECT_FALSE(IsLegalTransition(S::kPendingApproval, S::kApplied));
  EXPECT_FALSE(IsLegalTransition(S::kCompleted, S::kRolledBack));
}

TEST(WorkflowRegistryTest, TerminalWorkflowsExpireAfterRetention) {
  ManualClock clock(1'000);
  WorkflowRegistry registry(nullptr, &clock);
  Result<Workflow> done = registry.Create(*WorkflowFromRequest(Request()));
  Result<Workflow> open = registry.Create(*WorkflowFromRequest(Request()));
  ASSERT_TRUE(done.ok() && open.ok());
  ASSERT_TRUE(registry.Reject(done->id, "x", "").ok());
  clock.Advance(WorkflowRegistry::kTerminalRetentionMs + 1);
  ASSERT_TRUE(registry.Create(*WorkflowFromRequest(Request())).ok());
  EXPECT_FALSE(registry.Get(done->id).has_value()) << "past retention, deleted at Create";
  EXPECT_TRUE(registry.Get(open->id).has_value()) << "active workflows never expire";
  EXPECT_EQ(registry.size(), 2u);
}

TEST(WorkflowRegistryTest, JsonRoundTrip) {
  ManualClock clock(1'000);
  WorkflowRegistry registry(nullptr, &clock);
  Result<Workflow> w = registry.Create(*WorkflowFromRequest(Request()));
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(registry.Approve(w->id, "a").ok());
  ASSERT_TRUE(registry.MarkApplied(w->id, 1234, "a").ok());
  const Workflow got = *registry.Get(w->id);
  json j = WorkflowToJson(got);
  EXPECT_EQ(j["state"], "APPLIED");
  EXPECT_EQ(j["stage"], "canary");
  EXPECT_EQ(j["applied_at"], 1234);
  EXPECT_EQ(j["change"]["--max-num-seqs"], "512");
  Result<Workflow> back = WorkflowFromStored(json::parse(j.dump()));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(WorkflowToJson(*back), j);
  EXPECT_EQ(WorkflowFromStored(json::array()).status().code(), Status::Code::kCorruption);
}

}  // namespace
}  // namespace inferscope
