// The routing_learn operator: options with file:line errors, raw events in → weights per
// (model, strategy) out when they change, failover off a failing backend, event-time handling
// (out-of-order, too old), unknown models, the shared learner, and what a restart does.

#include "operators/routing_learn.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>

#include <yaml-cpp/yaml.h>

#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "pipeline/summary.h"
#include "state/checkpoint_store.h"
#include "state/state_store.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using routing::GateState;
using routing::RoutingWeights;
using routing::Strategy;

constexpr int64_t kT0 = 1'700'000'000'000;
constexpr int64_t kMinute = 60'000;

class RoutingLearnTest : public ::testing::Test {
 protected:
  std::unique_ptr<RoutingLearnOperator> Make(const std::string& yaml) {
    auto made = RoutingLearnOperator::Create(ConfigNode("t.yaml", YAML::Load(yaml), "options"));
    EXPECT_TRUE(made.ok()) << made.status().ToString();
    if (!made.ok()) return nullptr;
    std::unique_ptr<RoutingLearnOperator> op = std::move(made).value();
    StageContext ctx;
    ctx.name = "routing";
    ctx.interner = &interner_;
    ctx.metrics = &metrics_;
    ctx.services.Provide(&registry_);
    EXPECT_TRUE(op->Open(ctx).ok());
    return op;
  }

  Event Request(const std::string& backend, int64_t t, ErrorKind error = ErrorKind::kNone,
                const std::string& model = "llama") {
    Event e;
    e.kind = EventKind::kRequest;
    e.time_ms = t;
    e.instance = interner_.Intern(backend);
    e.model = interner_.Intern(model);
    e.error = error;
    e.present = kHasTtft | kHasTpot | kHasE2e | kHasOutputTokens | kHasPromptTokens;
    e.ttft_ms = error == ErrorKind::kNone ? 100 : 5;
    e.tpot_ms = 20;
    e.e2e_ms = error == ErrorKind::kNone ? 100 + 20 * 100 : 5;
    e.prompt_tokens = 500;
    e.output_tokens = 100;
    return e;
  }

  // Feeds one batch; returns the weights emitted.
  std::vector<RoutingWeights> Feed(RoutingLearnOperator& op, std::vector<Event> events) {
    EventBatch batch;
    batch.events = std::move(events);
    OutputBatch out;
    EXPECT_TRUE(op.Process(batch, out).ok());
    auto got = out.Get<kind::RoutingWeights>();
    return {got.begin(), got.end()};
  }

  // The executor's timer tick; returns the weights emitted.
  std::vector<RoutingWeights> Tick(RoutingLearnOperator& op) {
    OutputBatch out;
    tick_ms_ += 1'000;  // processing time: past check_interval every tick
    EXPECT_TRUE(op.OnTimer(tick_ms_, out).ok());
    auto got = out.Get<kind::RoutingWeights>();
    return {got.begin(), got.end()};
  }

  // Steady traffic: one outcome per backend every 10 ms for `ms`, from `t`, with a timer tick
  // every 100 ms; returns the end time.
  int64_t Steady(RoutingLearnOperator& op, int64_t t, int64_t ms,
                 std::vector<RoutingWeights>* seen = nullptr) {
    for (int64_t end = t + ms; t < end; t += 10) {
      auto w = Feed(op, {Request("b0", t), Request("b1", t), Request("b2", t), Request("b3", t)});
      if ((t / 10) % 10 == 0) {
        auto ticked = Tick(op);
        w.insert(w.end(), ticked.begin(), ticked.end());
      }
      if (seen) seen->insert(seen->end(), w.begin(), w.end());
    }
    return t;
  }

  static double WeightOf(const RoutingWeights& w, const std::string& backend) {
    for (const auto& e : w.backends) {
      if (e.backend == backend) return e.weight;
    }
    return -1;
  }

  uint64_t CounterValue(const std::string& name, const Labels& labels) {
    return metrics_.GetCounter(name, "", labels)->value();
  }

  int64_t tick_ms_ = 0;
  Interner interner_;
  MetricsRegistry metrics_;
  routing::RoutingRegistry registry_;
};

TEST_F(RoutingLearnTest, OptionErrorsNameFileLineAndField) {
  auto bad = RoutingLearnOperator::Create(
      ConfigNode("t.yaml", YAML::Load("half_life: 30s\nstrategie: [balanced]\n"), "options"));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("t.yaml:2"), std::string::npos) << bad.status().message();
  EXPECT_NE(bad.status().message().find("strategie"), std::string::npos);

  bad = RoutingLearnOperator::Create(
      ConfigNode("t.yaml", YAML::Load("strategies: [balanced, fastest]\n"), "options"));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("t.yaml:1"), std::string::npos) << bad.status().message();
  EXPECT_NE(bad.status().message().find("fastest"), std::string::npos);

  bad = RoutingLearnOperator::Create(
      ConfigNode("t.yaml", YAML::Load("health: {consecutive_errors: 0}\n"), "options"));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("consecutive_errors"), std::string::npos)
      << bad.status().message();

  // Estimator options documented in routing/README.md were refused as unknown fields.
  auto tuned = RoutingLearnOperator::Create(ConfigNode(
      "t.yaml", YAML::Load("prediction_noise: 0.7\nresidual_noise: 1.2\nload_choices: 2\n"),
      "options"));
  EXPECT_TRUE(tuned.ok()) << tuned.status().message();
  bad = RoutingLearnOperator::Create(
      ConfigNode("t.yaml", YAML::Load("load_choices: 9\n"), "options"));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("load_choices"), std::string::npos)
      << bad.status().message();
}

TEST_F(RoutingLearnTest, PublishesPerStrategyAndMovesTrafficOffAFailingBackend) {
  auto op = Make("strategies: [balanced, lowest_latency]\n");
  ASSERT_NE(op, nullptr);
  std::vector<RoutingWeights> seen;
  int64_t t = Steady(*op, kT0, 3'000, &seen);
  ASSERT_FALSE(seen.empty());
  std::set<Strategy> strategies;
  for (const auto& w : seen) {
    EXPECT_EQ(w.model, "llama");
    EXPECT_EQ(w.backends.size(), 4u);
    strategies.insert(w.strategy);
  }
  EXPECT_EQ(strategies, (std::set<Strategy>{Strategy::kBalanced, Strategy::kLowestLatency}));

  // b2 turns into server errors: the gate ejects it after 5 in a row and the weights that follow
  // (at once, not after publish.min_interval) give it nothing.
  std::vector<RoutingWeights> after;
  int failures = 0;
  for (; failures < 10; ++failures, t += 10) {
    auto w = Feed(*op, {Request("b0", t), Request("b1", t),
                        Request("b2", t, ErrorKind::kServerError), Request("b3", t)});
    after.insert(after.end(), w.begin(), w.end());
    const bool moved = std::any_of(w.begin(), w.end(), [&](const RoutingWeights& x) {
      return x.strategy == Strategy::kBalanced && WeightOf(x, "b2") <= 0.02;
    });
    if (moved) break;
  }
  EXPECT_LT(failures, 5) << "moved after the 5th consecutive failure (index 4) at the latest";
  const RoutingWeights& last = after.back();
  EXPECT_LE(WeightOf(last, "b2"), 0.02);
  auto gate = std::find_if(last.backends.begin(), last.backends.end(),
                           [](const auto& e) { return e.backend == "b2"; });
  ASSERT_NE(gate, last.backends.end());
  EXPECT_EQ(gate->gate, GateState::kEjected);
  EXPECT_GE(CounterValue("inferscope_routing_publications_total", {{"stage", "routing"}}),
            seen.size() + after.size());
  EXPECT_GT(
      CounterValue("inferscope_routing_updates_total", {{"stage", "routing"}, {"kind", "request"}}),
      1000u);
  EXPECT_GE(CounterValue("inferscope_routing_ejections_total", {{"reason", "consecutive_errors"}}),
            1u);
}

TEST_F(RoutingLearnTest, SharesItsLearnerThroughTheRegistry) {
  auto op = Make("{}");
  ASSERT_NE(op, nullptr);
  ASSERT_EQ(registry_.Get(), op->router());
  EXPECT_EQ(registry_.stage(), "routing");
  const int64_t t = Steady(*op, kT0, 500);
  EXPECT_EQ(registry_.Get()->now_ms(), t - 10);
  routing::Decision d;
  registry_.Get()->With(
      [&](routing::RoutingLearner& l) { l.Select("llama", {}, Strategy::kBalanced, t, &d); });
  EXPECT_TRUE(d.ok);
  EXPECT_EQ(d.num_ranked, 4u);
}

TEST_F(RoutingLearnTest, LateEventsCountDecayedAndTooOldOnesAreDropped) {
  auto op = Make("max_event_age: 1m\n");
  ASSERT_NE(op, nullptr);
  const int64_t t = Steady(*op, kT0, 200);
  // An out-of-order outcome within max_event_age is taken (the learner weighs it by its age);
  // one older than that is dropped and counted; neither moves "now" back.
  Feed(*op, {Request("b0", t - 30'000, ErrorKind::kServerError)});
  Feed(*op, {Request("b0", t - 61'000, ErrorKind::kServerError)});
  EXPECT_EQ(CounterValue("inferscope_routing_events_dropped_total",
                         {{"stage", "routing"}, {"reason", "too_old"}}),
            1u);
  EXPECT_EQ(op->router()->now_ms(), t - 10);
  auto est =
      op->router()->With([&](routing::RoutingLearner& l) { return l.Estimate("llama", "b0", t); });
  ASSERT_TRUE(est.ok());
  EXPECT_GT(est->error_rate, 0.0);
}

TEST_F(RoutingLearnTest, OneFarFutureEventDoesNotMoveNow) {
  auto op = Make("max_future_skew: 5s\n");
  ASSERT_NE(op, nullptr);
  const int64_t t = Steady(*op, kT0, 200);
  const int64_t now = op->router()->now_ms();
  // A publisher with a clock a day ahead: its event is taken (at now + 5 s) and counted, now
  // stays where the stream is.
  Feed(*op, {Request("b0", t + 86'400'000)});
  EXPECT_EQ(op->router()->now_ms(), now);
  EXPECT_EQ(CounterValue("inferscope_routing_events_future_total", {{"stage", "routing"}}), 1u);
  // The stream goes on at its own times, and a failing backend is still ejected in event time.
  Feed(*op, {Request("b0", t + 1'000)});
  EXPECT_EQ(op->router()->now_ms(), t + 1'000);
  for (int i = 0; i < 5; ++i) Feed(*op, {Request("b1", t + 1'010 + i, ErrorKind::kServerError)});
  auto est =
      op->router()->With([&](routing::RoutingLearner& l) { return l.Estimate("llama", "b1", t); });
  ASSERT_TRUE(est.ok());
  EXPECT_EQ(est->gate, GateState::kEjected);
  EXPECT_EQ(op->router()->now_ms(), t + 1'014);
}

TEST_F(RoutingLearnTest, ARestartFromTheCheckpointContinuesTheWeights) {
  auto op = Make("strategies: [lowest_latency]\n");
  ASSERT_NE(op, nullptr);
  int64_t t = Steady(*op, kT0, 3'000);
  // b2 fails: ejected, its weight goes to 0.
  for (int i = 0; i < 5; ++i) Feed(*op, {Request("b2", t + i, ErrorKind::kServerError)});
  t += 10;
  testing::TempDir dir;
  StateStoreOptions options;
  options.path = dir.str();
  auto store = StateStore::Open(options, nullptr);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  std::vector<CheckpointRecord> records;
  CheckpointCollector writer("op", "routing", &records);
  ASSERT_TRUE(op->Checkpoint(writer).ok());
  ASSERT_EQ(records.size(), 2u);  // the model and "now"
  ASSERT_TRUE(WriteCheckpointRecords(**store, records).ok());
  records.clear();
  ASSERT_TRUE(op->Checkpoint(writer).ok());
  EXPECT_TRUE(records.empty()) << "no events since: nothing to write";

  auto weights = [&](RoutingLearnOperator& o) {
    return o.router()->With([&](routing::RoutingLearner& l) {
      return l.Weights("llama", Strategy::kLowestLatency, t);
    });
  };
  auto before = weights(*op);
  ASSERT_TRUE(before.ok());
  // The restarted operator, without new input: the same now, gate and weights (within the
  // posterior draws' noise); a cold one knows nothing.
  auto restarted = Make("strategies: [lowest_latency]\n");
  ASSERT_NE(restarted, nullptr);
  ASSERT_TRUE(restarted->Restore(StateCheckpointReader("op", "routing", store->get())).ok());
  EXPECT_EQ(restarted->router()->now_ms(), op->router()->now_ms());
  auto after = weights(*restarted);
  ASSERT_TRUE(after.ok());
  ASSERT_EQ(after->backends.size(), before->backends.size());
  for (size_t i = 0; i < before->backends.size(); ++i) {
    EXPECT_EQ(after->backends[i].backend, before->backends[i].backend);
    EXPECT_NEAR(after->backends[i].weight, before->backends[i].weight, 0.05)
        << before->backends[i].backend;
    EXPECT_EQ(after->backends[i].gate, before->backends[i].gate);
  }
  EXPECT_EQ(after->backends[2].gate, GateState::kEjected);
  auto cold = Make("strategies: [lowest_latency]\n");
  EXPECT_FALSE(weights(*cold).ok());
}

TEST_F(RoutingLearnTest, TheTimerChecksEveryCheckInterval) {
  auto op = Make("strategies: [balanced]\ncheck_interval: 500ms\n");
  ASSERT_NE(op, nullptr);
  Feed(*op, {Request("a", kT0)});
  OutputBatch out;
  ASSERT_TRUE(op->OnTimer(10'000, out).ok());
  EXPECT_EQ(out.Get<kind::RoutingWeights>().size(), 1u) << "the first tick checks";
  Feed(*op, {Request("b", kT0 + 2'000)});  // a new backend: the weights change
  OutputBatch early, late;
  ASSERT_TRUE(op->OnTimer(10'400, early).ok());
  EXPECT_TRUE(early.Get<kind::RoutingWeights>().empty()) << "within check_interval";
  ASSERT_TRUE(op->OnTimer(10'500, late).ok());
  ASSERT_EQ(late.Get<kind::RoutingWeights>().size(), 1u);
  EXPECT_EQ(late.Get<kind::RoutingWeights>()[0].backends.size(), 2u);
}

TEST_F(RoutingLearnTest, UnknownModelsAreLearnedUpToTheLimit) {
  auto op = Make("limits: {max_models: 1}\nstrategies: [balanced]\n");
  ASSERT_NE(op, nullptr);
  EXPECT_TRUE(Feed(*op, {Request("a", kT0, ErrorKind::kNone, "m1")}).empty())
      << "published on the timer";
  auto first = Tick(*op);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].model, "m1");
  Feed(*op, {Request("a", kT0 + 1, ErrorKind::kNone, "m2")});
  EXPECT_TRUE(Tick(*op).empty());
  EXPECT_EQ(CounterValue("inferscope_routing_refused_total", {{"reason", "model_limit"}}), 1u);
}

// Without a checkpoint to restore (a first start, or a lost store): a restarted operator starts
// without evidence and without ejections; a backend that still fails is ejected again after
// consecutive_errors failures.
TEST_F(RoutingLearnTest, ARestartForgetsAndReEjectsWithinConsecutiveErrors) {
  auto op = Make("strategies: [balanced]\n");
  ASSERT_NE(op, nullptr);
  int64_t t = Steady(*op, kT0, 1'000);
  for (int i = 0; i < 6; ++i, t += 10) Feed(*op, {Request("b2", t, ErrorKind::kServerError)});
  op.reset();

  auto restarted = Make("strategies: [balanced]\n");
  ASSERT_NE(restarted, nullptr);
  EXPECT_EQ(registry_.Get(), restarted->router());
  Feed(*restarted, {Request("b0", t), Request("b1", t),
                    Request("b2", t + 1, ErrorKind::kServerError), Request("b3", t)});
  auto first = Tick(*restarted);
  ASSERT_FALSE(first.empty());
  EXPECT_GT(WeightOf(first.back(), "b2"), 0.02) << "the ejection was not restored";
  int failures = 1;
  bool moved = false;
  for (t += 10; failures < 10 && !moved; ++failures, t += 10) {
    auto w = Feed(*restarted, {Request("b0", t), Request("b1", t),
                               Request("b2", t, ErrorKind::kServerError), Request("b3", t)});
    moved = std::any_of(w.begin(), w.end(),
                        [&](const RoutingWeights& x) { return WeightOf(x, "b2") <= 0.02; });
  }
  EXPECT_TRUE(moved);
  EXPECT_LE(failures, 5);
}

// The review's scenario (review-ingest-streams.md, section 3) through the operator: 32
// short-lived pods of `llama` report 20 requests each once, then only `pod-new` serves (one request
// a second), and a model `old` was seen once. After limits.backend_ttl (10 min of event time) the
// dead pods and the model are forgotten: the last publications list only pod-new (and nothing for
// `old`), select answers pod-new, and the removals are counted.
TEST_F(RoutingLearnTest, DeadPodsAndModelsAreForgottenAfterTheTtl) {
  auto op = Make("strategies: [balanced]\n");
  ASSERT_NE(op, nullptr);
  Feed(*op, {Request("x", kT0, ErrorKind::kNone, "old")});
  for (int k = 0; k < 32; ++k) {
    Feed(*op, std::vector<Event>(20, Request("pod-" + std::to_string(k), kT0 + k)));
  }
  std::vector<RoutingWeights> seen;
  int64_t t = kT0 + 2'000;
  for (; t <= kT0 + 11 * kMinute; t += 1'000) {
    auto w = Feed(*op, {Request("pod-new", t)});
    seen.insert(seen.end(), w.begin(), w.end());
    if ((t / 1'000) % 10 == 0) {
      auto ticked = Tick(*op);
      seen.insert(seen.end(), ticked.begin(), ticked.end());
    }
  }
  auto ticked = Tick(*op);
  seen.insert(seen.end(), ticked.begin(), ticked.end());
  const RoutingWeights* llama = nullptr;
  const RoutingWeights* old = nullptr;
  for (const RoutingWeights& w : seen) (w.model == "llama" ? llama : old) = &w;
  ASSERT_NE(llama, nullptr);
  ASSERT_EQ(llama->backends.size(), 1u);
  EXPECT_EQ(llama->backends[0].backend, "pod-new");
  EXPECT_DOUBLE_EQ(llama->backends[0].weight, 1.0);
  ASSERT_NE(old, nullptr);
  EXPECT_EQ(old->model, "old");
  EXPECT_TRUE(old->backends.empty()) << "a removed model is published without backends";

  routing::Decision d;
  registry_.Get()->With([&](routing::RoutingLearner& l) {
    l.Select("llama", {}, Strategy::kBalanced, op->router()->now_ms(), &d);
  });
  ASSERT_TRUE(d.ok);
  EXPECT_EQ(d.backend_name, "pod-new");
  EXPECT_EQ(CounterValue("inferscope_routing_removed_total",
                         {{"what", "backend"}, {"reason", "evicted"}}),
            1u);
  EXPECT_EQ(CounterValue("inferscope_routing_removed_total",
                         {{"what", "backend"}, {"reason", "expired"}}),
            32u);  // 31 pods and old's x
  EXPECT_EQ(
      CounterValue("inferscope_routing_removed_total", {{"what", "model"}, {"reason", "expired"}}),
      1u);
  // pod-new was refused until pod-0 had been idle for backend_idle (1 min), then took its slot.
  EXPECT_EQ(CounterValue("inferscope_routing_refused_total", {{"reason", "backend_limit"}}), 58u);
}

// Expiry across restarts, through a real RocksDB checkpoint store: a table restored from a
// checkpoint taken before the TTL passed still expires the dead pods; the checkpoint taken after
// it rewrites the model's record without them and deletes the removed model's record, so the next
// restart does not resurrect them.
TEST_F(RoutingLearnTest, ExpiryHoldsAcrossRestarts) {
  testing::TempDir dir;
  StateStoreOptions options;
  options.path = dir.str();
  auto store = StateStore::Open(options, nullptr);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto checkpoint = [&](RoutingLearnOperator& o) {
    std::vector<CheckpointRecord> records;
    CheckpointCollector writer("op", "routing", &records);
    ASSERT_TRUE(o.Checkpoint(writer).ok());
    ASSERT_TRUE(WriteCheckpointRecords(**store, records).ok());
  };
  auto restart = [&]() {
    auto o = Make("strategies: [balanced]\n");
    EXPECT_TRUE(o->Restore(StateCheckpointReader("op", "routing", store->get())).ok());
    return o;
  };
  auto backends = [&](RoutingLearnOperator& o, const std::string& model) {
    std::set<std::string> names;
    o.router()->With([&](routing::RoutingLearner& l) {
      auto w = l.Weights(model, Strategy::kBalanced, o.router()->now_ms());
      if (!w.ok()) return;
      for (const auto& e : w->backends) names.insert(e.backend);
    });
    return names;
  };

  auto op = Make("strategies: [balanced]\n");
  ASSERT_NE(op, nullptr);
  Feed(*op, {Request("x", kT0, ErrorKind::kNone, "old")});
  for (int k = 0; k < 32; ++k) {
    Feed(*op, std::vector<Event>(20, Request("pod-" + std::to_string(k), kT0 + k)));
  }
  int64_t t = kT0 + 2'000;
  for (; t <= kT0 + 30'000; t += 1'000) Feed(*op, {Request("pod-new", t)});
  checkpoint(*op);  // before the TTL: the 32 pods and `old` are in it
  op.reset();

  auto restarted = restart();
  ASSERT_NE(restarted, nullptr);
  EXPECT_EQ(backends(*restarted, "llama").size(), 32u);
  EXPECT_EQ(backends(*restarted, "old").size(), 1u);
  for (; t <= kT0 + 11 * kMinute; t += 1'000) {
    Feed(*restarted, {Request("pod-new", t)});
    if ((t / 1'000) % 10 == 0) Tick(*restarted);
  }
  Tick(*restarted);
  EXPECT_EQ(backends(*restarted, "llama"), std::set<std::string>{"pod-new"});
  EXPECT_TRUE(backends(*restarted, "old").empty());
  checkpoint(*restarted);  // after the TTL
  restarted.reset();

  auto again = restart();
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(backends(*again, "llama"), std::set<std::string>{"pod-new"});
  EXPECT_EQ(again->router()->With([](routing::RoutingLearner& l) { return l.FindModel("old"); }),
            routing::RoutingLearner::kNoModel);
  routing::Decision d;
  again->router()->With([&](routing::RoutingLearner& l) {
    l.Select("llama", {}, Strategy::kBalanced, again->router()->now_ms(), &d);
  });
  ASSERT_TRUE(d.ok);
  EXPECT_EQ(d.backend_name, "pod-new");
}

}  // namespace
}  // namespace inferscope
