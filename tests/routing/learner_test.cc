#include "routing/learner.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <random>

#include "routing_test_util.h"

namespace inferscope::routing {
namespace {

using testing::Draw;
using testing::Shares;
using testing::TrueBackend;

void Feed(RoutingLearner& learner, std::string_view model,
          std::initializer_list<const TrueBackend*> backends, int64_t from, int64_t to,
          std::mt19937_64& rng) {
  for (int64_t t = from; t < to; ++t) {
    for (const TrueBackend* b : backends) learner.Observe(Draw(*b, model, t, rng));
  }
}

// fast: fast, low quality, expensive; smart: slow, high quality, mid price; cheap: mid, mid, cheap.
struct Fleet {
  TrueBackend fast{
      .name = "fast", .ttft_ms = 50, .tpot_ms = 10, .quality = 0.55, .cost_usd = 0.010};
  TrueBackend smart{
      .name = "smart", .ttft_ms = 150, .tpot_ms = 30, .quality = 0.95, .cost_usd = 0.006};
  TrueBackend cheap{
      .name = "cheap", .ttft_ms = 100, .tpot_ms = 20, .quality = 0.70, .cost_usd = 0.001};
};

std::string Favourite(const std::map<std::string, double>& shares) {
  std::string best;
  double w = -1;
  for (const auto& [name, share] : shares) {
    if (share > w) best = name, w = share;
  }
  return best;
}

TEST(StrategyTest, EachStrategyPicksWhatItsWeightsImply) {
  RoutingLearner learner(RoutingOptions{});
  std::mt19937_64 rng(11);
  Fleet f;
  Feed(learner, "m", {&f.fast, &f.smart, &f.cheap}, 0, 400, rng);
  const int64_t now = 400;
  const auto latency = Shares(learner, "m", {}, Strategy::kLowestLatency, now, 2000);
  const auto quality = Shares(learner, "m", {}, Strategy::kHighestQuality, now, 2000);
  const auto cost = Shares(learner, "m", {}, Strategy::kCostEffective, now, 2000);
  EXPECT_EQ(Favourite(latency), "fast");
  EXPECT_GT(latency.at("fast"), 0.9);
  EXPECT_EQ(Favourite(quality), "smart");
  EXPECT_GT(quality.at("smart"), 0.9);
  EXPECT_EQ(Favourite(cost), "cheap");
  EXPECT_GT(cost.at("cheap"), 0.9);

  // The components say why: fast has the latency score 1, smart the quality score 1, cheap the
  // cost score 1, and the weights are the strategy's.
  Decision d;
  learner.Select("m", {}, Strategy::kLowestLatency, now, &d);
  ASSERT_TRUE(d.ok);
  EXPECT_DOUBLE_EQ(d.weights.latency, 0.7);
  EXPECT_DOUBLE_EQ(d.weights.quality, 0.2);
  EXPECT_DOUBLE_EQ(d.weights.cost, 0.1);
  ASSERT_EQ(d.num_ranked, 3u);
  for (uint32_t i = 0; i < d.num_ranked; ++i) {
    const BackendScore& s = d.ranked[i];
    if (s.name == "fast") {
      EXPECT_NEAR(s.latency_score, 1.0, 0.01);
    }
    if (s.name == "smart") {
      EXPECT_NEAR(s.quality_score, 1.0, 0.01);
    }
    if (s.name == "cheap") {
      EXPECT_NEAR(s.cost_score, 1.0, 0.01);
    }
    EXPECT_NEAR(s.score, 0.7 * s.latency_score + 0.2 * s.quality_score + 0.1 * s.cost_score, 1e-9);
  }
  EXPECT_GE(d.ranked[0].weight, d.ranked[1].weight);
  EXPECT_GE(d.ranked[1].weight, d.ranked[2].weight);
}

TEST(StrategyTest, BalancedAndAdaptiveWeights) {
  const StrategyWeights b = FixedWeights(Strategy::kBalanced);
  EXPECT_DOUBLE_EQ(b.latency + b.quality + b.cost, 1.0);
  const StrategyWeights idle = AdaptiveWeights(500, 200, 0, 0.1);
  EXPECT_DOUBLE_EQ(idle.latency, b.latency);
  const StrategyWeights loaded = AdaptiveWeights(500, 200, 0, 0.9);
  EXPECT_GT(loaded.latency, 0.5);
  const StrategyWeights interactive = AdaptiveWeights(200, 32, 0, 0.1);
  EXPECT_GT(interactive.latency, b.latency);
  const StrategyWeights long_output = AdaptiveWeights(500, 2000, 0, 0.1);
  EXPECT_GT(long_output.cost, b.cost);
  const StrategyWeights hard = AdaptiveWeights(16000, 200, kCode, 0.1);
  EXPECT_GT(hard.quality, b.quality);
  for (const StrategyWeights& w : {loaded, interactive, long_output, hard}) {
    EXPECT_NEAR(w.latency + w.quality + w.cost, 1.0, 1e-9);
  }
  // In the learner: a short interactive request under adaptive leans toward latency.
  RoutingLearner learner(RoutingOptions{});
  std::mt19937_64 rng(2);
  Fleet f;
  Feed(learner, "m", {&f.fast, &f.smart, &f.cheap}, 0, 200, rng);
  Decision d;
  learner.Select("m", {.prompt_tokens = 100, .expected_output_tokens = 16}, Strategy::kAdaptive,
                 200, &d);
  ASSERT_TRUE(d.ok);
  EXPECT_GT(d.weights.latency, 0.33);
}

TEST(CapabilityTest, VisionRequestsOnlyGoToVisionBackends) {
  RoutingOptions options;
  options.models.push_back({"m",
                            {testing::Spec("text-fast"), testing::Spec("vision-1", kVision),
                             testing::Spec("vision-2", kVision | kCode, 4096)}});
  RoutingLearner learner(options);
  std::mt19937_64 rng(4);
  TrueBackend fast{.name = "text-fast", .ttft_ms = 20}, v1{.name = "vision-1", .ttft_ms = 300},
      v2{.name = "vision-2", .ttft_ms = 400};
  TrueBackend learned{.name = "learned-fast", .ttft_ms = 10};  // not in the catalogue
  Feed(learner, "m", {&fast, &v1, &v2, &learned}, 0, 200, rng);
  EXPECT_EQ(learner.num_backends(learner.FindModel("m")), 4u);
  const auto vision =
      Shares(learner, "m", {.required_capabilities = kVision}, Strategy::kLowestLatency, 200, 3000);
  EXPECT_EQ(vision.count("text-fast") + vision.count("learned-fast"), 0u);
  EXPECT_GT(vision.at("vision-1"), 0.5);
  Decision d;
  learner.Select("m", {.required_capabilities = kVision}, Strategy::kLowestLatency, 200, &d);
  EXPECT_EQ(d.capable, 2u);
  EXPECT_EQ(d.incapable, 2u);
  // Context length: a 6k-token vision request fits only vision-1.
  const auto long_vision = Shares(
      learner, "m",
      {.prompt_tokens = 5000, .expected_output_tokens = 1000, .required_capabilities = kVision},
      Strategy::kLowestLatency, 200, 2000);
  EXPECT_EQ(long_vision.size(), 1u);
  EXPECT_NEAR(long_vision.at("vision-1"), 1.0, 1e-9);
  // Exact check within a bucket: 4000 + 200 tokens exceeds vision-2's 4096 although the
  // bucket's lower bound (2048 + 128) does not.
  for (int i = 0; i < 500; ++i) {
    learner.Select("m",
                   {.prompt_tokens = 4000,
                    .expected_output_tokens = 200,
                    .required_capabilities = kVision | kCode},
                   Strategy::kLowestLatency, 200, &d);
    EXPECT_FALSE(d.ok);
    EXPECT_EQ(d.reason, NoBackendReason::kNoCapableBackend);
  }
  // Nobody has audio: no backend, with the reason.
  learner.Select("m", {.required_capabilities = kAudio}, Strategy::kBalanced, 200, &d);
  EXPECT_FALSE(d.ok);
  EXPECT_EQ(d.reason, NoBackendReason::kNoCapableBackend);
  EXPECT_EQ(FormatReasoning(d).substr(0, 30), "no backend: no_capable_backend");
  learner.Select("nope", {}, Strategy::kBalanced, 200, &d);
  EXPECT_EQ(d.reason, NoBackendReason::kUnknownModel);
}

TEST(LoadTest, BestBackendAtFullSlotsIsNotAlwaysChosen) {
  RoutingOptions options;
  options.models.push_back({"m", {testing::Spec("a"), testing::Spec("b")}});
  RoutingLearner learner(options);
  std::mt19937_64 rng(6);
  TrueBackend a{.name = "a", .ttft_ms = 80, .tpot_ms = 18},
      b{.name = "b", .ttft_ms = 100, .tpot_ms = 20};
  Feed(learner, "m", {&a, &b}, 0, 300, rng);
  EXPECT_GT(Shares(learner, "m", {}, Strategy::kLowestLatency, 300, 2000)["a"], 0.9);
  // a reports every slot taken and a queue as long again; b is idle.
  auto gauge = [&](std::string_view backend, std::string_view name, double v) {
    learner.ObserveGauge(
        {.backend = backend, .model = "m", .name = name, .value = v, .time_ms = 300});
  };
  gauge("a", "max_num_seqs", 64);
  gauge("a", "num_requests_running", 64);
  gauge("a", "num_requests_waiting", 64);
  gauge("b", "max_num_seqs", 64);
  gauge("b", "num_requests_running", 4);
  gauge("b", "num_requests_waiting", 0);
  const auto loaded = Shares(learner, "m", {}, Strategy::kLowestLatency, 310, 2000);
  EXPECT_GT(loaded.at("b"), 0.9);
  const auto est = learner.Estimate("m", "a", 310);
  EXPECT_DOUBLE_EQ(est->in_flight, 128);
  EXPECT_DOUBLE_EQ(est->slots, 64);
}

TEST(LoadTest, OwnSendsBetweenGaugesPreventHerding) {
  // A router that follows the decisions and reports its sends: the best backend (4 slots) fills
  // up and traffic spills over instead of herding onto it.
  RoutingOptions options;
  options.models.push_back({"m", {testing::Spec("a"), testing::Spec("b")}});
  for (BackendSpec& b : options.models[0].backends) b.max_concurrency = 4;
  options.estimator.recompute_interval_ms = 0;
  RoutingLearner learner(options);
  std::mt19937_64 rng(8);
  TrueBackend a{.name = "a", .ttft_ms = 80}, b{.name = "b", .ttft_ms = 100};
  Feed(learner, "m", {&a, &b}, 0, 300, rng);
  for (uint32_t i = 0; i < 2; ++i) {  // the fed outcomes were not our sends: start at zero
    learner.NoteSent(learner.FindModel("m"), i, 300);
  }
  const RoutingLearner::ModelId m = learner.FindModel("m");
  std::map<std::string, int> sent;
  Decision d;
  for (int i = 0; i < 40; ++i) {  // 40 requests in flight at once, none completes
    learner.Select(m, {}, Strategy::kLowestLatency, 301 + i, &d);
    ASSERT_TRUE(d.ok);
    ++sent[std::string(d.backend_name)];
    learner.NoteSent(m, d.backend, 301 + i);
  }
  EXPECT_GT(sent["b"], 10);
  EXPECT_GT(sent["a"], 10);
}

TEST(LoadTest, ALateGaugeCountsTheSendsAndOutcomesAfterItsSampleTime) {
  // A gauge sampled at t = 1000 arrives at t = 3000 (a scrape delay). The sends and outcomes
  // between 1000 and 3000 are not in it: in-flight = gauge + those sends - those outcomes.
  RoutingOptions options;
  options.models.push_back({"m", {testing::Spec("a"), testing::Spec("b")}});
  RoutingLearner learner(options);
  const RoutingLearner::ModelId m = learner.FindModel("m");
  for (int64_t t = 500; t < 3000; t += 250) learner.NoteSent(m, 0, t);  // 10 sends, 7 after 1000
  Outcome o;
  o.backend = "a";
  o.model = "m";
  o.time_ms = 2000;  // one of them completed after the sample
  o.ttft_ms = 100;
  o.tpot_ms = 10;
  o.e2e_ms = 1000;
  learner.Observe(o);
  learner.ObserveGauge(
      {.backend = "a", .model = "m", .name = "num_requests_running", .value = 3, .time_ms = 1000});
  learner.ObserveGauge(
      {.backend = "a", .model = "m", .name = "num_requests_waiting", .value = 0, .time_ms = 1000});
  learner.NoteSent(m, 0, 3000);  // after the gauge arrived
  Decision d;
  learner.Select(m, {}, Strategy::kLowestLatency, 3001, &d);  // updates the load
  const auto est = learner.Estimate("m", "a", 3001);
  ASSERT_TRUE(est.ok());
  EXPECT_DOUBLE_EQ(est->in_flight, 3 + 7 + 1 - 1);
}

TEST(LoadTest, ALateGaugeCountsOutOfOrderOutcomesAfterItsSampleTimeToo) {
  // The count of outcomes after a gauge's sample time stops early while they arrived in order;
  // outcomes of several publishers arrive out of order, and then every one is looked at.
  RoutingOptions options;
  options.models.push_back({"m", {testing::Spec("a"), testing::Spec("b")}});
  RoutingLearner learner(options);
  const RoutingLearner::ModelId m = learner.FindModel("m");
  for (int64_t t = 100; t < 600; t += 100) learner.NoteSent(m, 0, t);  // 5 sends, 2 after 300
  Outcome o;
  o.backend = "a";
  o.model = "m";
  o.ttft_ms = 100;
  o.tpot_ms = 10;
  o.e2e_ms = 1000;
  for (int64_t t : {400, 200, 500, 250}) {  // 2 after 300, out of order
    o.time_ms = t;
    learner.Observe(o);
  }
  learner.ObserveGauge(
      {.backend = "a", .model = "m", .name = "num_requests_running", .value = 3, .time_ms = 300});
  Decision d;
  learner.Select(m, {}, Strategy::kLowestLatency, 600, &d);
  const auto est = learner.Estimate("m", "a", 600);
  ASSERT_TRUE(est.ok());
  EXPECT_DOUBLE_EQ(est->in_flight, 3 + 2 - 2);
}

TEST(LoadTest, LatencyEstimatesScaleWithTheLoadARequestMeets) {
  // A backend's per-token time grows with its batch (continuous batching): the learner learns
  // the elasticity from outcomes observed at different loads and scales its estimate by the load
  // a request meets now.
  RoutingOptions options;
  options.models.push_back({"m", {testing::Spec("a"), testing::Spec("b")}});
  options.estimator.recompute_interval_ms = 0;
  RoutingLearner learner(options);
  std::mt19937_64 rng(21);
  std::normal_distribution<double> z;
  auto gauge = [&](std::string_view backend, double running, int64_t t) {
    learner.ObserveGauge({.backend = backend,
                          .model = "m",
                          .name = "num_requests_running",
                          .value = running,
                          .time_ms = t});
    learner.ObserveGauge({.backend = backend,
                          .model = "m",
                          .name = "num_requests_waiting",
                          .value = 0,
                          .time_ms = t});
  };
  int64_t t = 0;
  for (int round = 0; round < 60; ++round) {
    const double load = (round % 2 == 0) ? 10 : 60;
    for (int i = 0; i < 20; ++i, t += 50) {
      gauge("a", load, t);
      gauge("b", load, t);
      for (const char* name : {"a", "b"}) {
        Outcome o;
        o.backend = name;
        o.model = "m";
        o.time_ms = t;
        o.ttft_ms = 100 * std::exp(0.05 * z(rng));
        o.tpot_ms = 20 * (1 + load / 50) * std::exp(0.05 * z(rng));  // x1.2 at 10, x2.2 at 60
        o.e2e_ms = o.ttft_ms + o.tpot_ms * 100;
        learner.Observe(o);
      }
    }
  }
  Decision d;
  gauge("a", 90, t);
  gauge("b", 0, t);
  learner.Select(learner.FindModel("m"), {}, Strategy::kLowestLatency, t + 1, &d);
  const auto busy = learner.Estimate("m", "a", t + 1);
  const auto idle = learner.Estimate("m", "b", t + 1);
  ASSERT_TRUE(busy.ok() && idle.ok());
  // The evidence was observed at ~35 in flight on average: at 90 a's tpot is higher, at 0 b's is
  // lower (the truth: x2.2 / x1.45 = 1.5 and x1 / x1.45 = 0.7).
  EXPECT_GT(busy->tpot_load_factor, 1.3);
  EXPECT_LT(idle->tpot_load_factor, 0.85);
  EXPECT_EQ(d.backend_name, "b");
}

TEST(HealthTest, ASilentEjectedBackendIsNotProbedUntilItsGaugesResume) {
  RoutingOptions options;
  options.models.push_back({"m", {testing::Spec("a"), testing::Spec("b")}});
  RoutingLearner learner(options);
  std::mt19937_64 rng(22);
  TrueBackend a{.name = "a", .ttft_ms = 80}, b{.name = "b", .ttft_ms = 100};
  auto gauge = [&](std::string_view backend, int64_t t) {
    learner.ObserveGauge({.backend = backend,
                          .model = "m",
                          .name = "num_requests_running",
                          .value = 1,
                          .time_ms = t});
  };
  int64_t t = 0;
  for (; t < 10'000; t += 100) {
    learner.Observe(Draw(a, "m", t, rng));
    learner.Observe(Draw(b, "m", t, rng));
    if (t % 1000 == 0) gauge("a", t), gauge("b", t);
  }
  // a goes down: its requests fail and its scrape fails (no gauges).
  a.error_rate = 1;
  for (int i = 0; i < 5; ++i, t += 10) learner.Observe(Draw(a, "m", t, rng));
  ASSERT_EQ(learner.Estimate("m", "a", t)->gate, GateState::kEjected);
  for (; t < 50'000; t += 100) {  // past the 30 s ejection
    learner.Observe(Draw(b, "m", t, rng));
    if (t % 1000 == 0) gauge("b", t);
  }
  EXPECT_EQ(Shares(learner, "m", {}, Strategy::kLowestLatency, t, 2000)["a"], 0);
  ASSERT_EQ(learner.Estimate("m", "a", t)->gate, GateState::kProbing);  // (Select advanced it)
  gauge("a", t);  // its scrape answers again: now it is probed
  EXPECT_GT(Shares(learner, "m", {}, Strategy::kLowestLatency, t + 10, 2000)["a"], 0.005);
}

TEST(HealthTest, AFlappingBackendIsProbedOnlyAfterAnUpPeriodLongerThanItsLastDownPeriod) {
  RoutingOptions options;
  options.models.push_back({"m", {testing::Spec("a"), testing::Spec("b")}});
  options.gate.base_ejection_ms = 5'000;
  RoutingLearner learner(options);
  std::mt19937_64 rng(23);
  TrueBackend a{.name = "a", .ttft_ms = 80}, b{.name = "b", .ttft_ms = 100};
  auto gauge = [&](std::string_view backend, int64_t t) {
    learner.ObserveGauge({.backend = backend,
                          .model = "m",
                          .name = "num_requests_running",
                          .value = 1,
                          .time_ms = t});
  };
  // a's scrape: up 0-10 s, silent 10-25 s, up 25-40 s, silent 40-55 s, up from 55 s (it flaps:
  // the up-period between its two silences was 15 s). b is steady.
  auto a_up = [](int64_t t) { return t <= 10'000 || (t >= 25'000 && t <= 40'000) || t >= 55'000; };
  int64_t t = 0;
  auto run = [&](int64_t until) {
    for (; t < until; t += 100) {
      learner.Observe(Draw(b, "m", t, rng));
      if (a_up(t)) learner.Observe(Draw(a, "m", t, rng));
      if (t % 1000 == 0) {
        gauge("b", t);
        if (a_up(t)) gauge("a", t);
      }
    }
  };
  run(56'000);
  // a fails 5 in a row just after it came back: ejected for 5 s.
  a.error_rate = 1;
  for (int i = 0; i < 5; ++i, t += 10) learner.Observe(Draw(a, "m", t, rng));
  ASSERT_EQ(learner.Estimate("m", "a", t)->gate, GateState::kEjected);
  a.error_rate = 0;
  auto run_b = [&](int64_t until) {  // a is not sent anything, its gauges keep coming
    for (; t < until; t += 100) {
      learner.Observe(Draw(b, "m", t, rng));
      if (t % 1000 == 50) gauge("a", t), gauge("b", t);  // (t is at 50 past the 100 ms)
    }
  };
  run_b(65'000);  // past the ejection; its gauges are fresh, but it has been up for 10 s only
  EXPECT_EQ(Shares(learner, "m", {}, Strategy::kLowestLatency, t, 2000)["a"], 0);
  ASSERT_EQ(learner.Estimate("m", "a", t)->gate, GateState::kProbing);
  run_b(72'000);  // up for 16 s (gauges up to 71.05 s) > its last 15 s down-period: probed
  EXPECT_EQ(GateStateName(learner.Estimate("m", "a", t)->gate), "probing");
  EXPECT_GT(Shares(learner, "m", {}, Strategy::kLowestLatency, t, 2000)["a"], 0.005);
}

TEST(QualityTest, LateQualityFeedbackCountsForQualityOnly) {
  RoutingOptions options;
  options.models.push_back({"m", {testing::Spec("a"), testing::Spec("b")}});
  RoutingLearner learner(options);
  for (int i = 0; i < 50; ++i) {
    learner.ObserveQuality("m", "a", 0.9, 1000 + i);
    learner.ObserveQuality("m", "b", 0.3, 1000 + i);
  }
  learner.ObserveQuality("m", "a", 1.5, 2000);  // out of range: ignored
  EXPECT_EQ(learner.stats().outcomes, 0u);
  const auto a = learner.Estimate("m", "a", 2000);
  ASSERT_TRUE(a.ok());
  EXPECT_NEAR(a->quality, 0.9, 1e-9);
  EXPECT_NEAR(a->quality_samples, 50, 1.0);
  EXPECT_EQ(a->error_samples, 0);
  EXPECT_EQ(Favourite(Shares(learner, "m", {}, Strategy::kHighestQuality, 2000, 500)), "a");
}

TEST(ConfidenceTest, TheRequestsPredictionErrorTempersTheConfidence) {
  // Two backends whose expected latencies are well known and 10 % apart: the faster is almost
  // surely the better on average (p_best ~1), but for one request with a per-token spread of
  // 0.3 it is the better only somewhat more often than not.
  auto confidence = [](double prediction_noise) {
    RoutingOptions options;
    options.models.push_back({"m", {testing::Spec("a"), testing::Spec("b")}});
    options.estimator.prediction_noise = prediction_noise;
    options.estimator.residual_noise = 0;  // the fixed noise alone
    options.estimator.temperature = 0.05;
    RoutingLearner learner(options);
    std::mt19937_64 rng(23);
    TrueBackend a{.name = "a", .ttft_ms = 90, .tpot_ms = 18}, b{.name = "b", .ttft_ms = 100};
    for (int64_t t = 0; t < 2000; ++t) {
      learner.Observe(Draw(a, "m", t, rng));
      learner.Observe(Draw(b, "m", t, rng));
    }
    Decision d;
    learner.Select(learner.FindModel("m"), {}, Strategy::kLowestLatency, 2000, &d);
    EXPECT_EQ(d.backend_name, "a");
    return d.confidence;
  };
  const double mean_only = confidence(0);
  const double one_request = confidence(1);
  EXPECT_GT(mean_only, 0.95);
  EXPECT_GT(one_request, 0.55);
  EXPECT_LT(one_request, 0.85);
}

TEST(ConfidenceTest, TheLearnedResidualsSetTheRequestsPredictionError) {
  // The same two backends (per-token spread 0.3), but the realised e2e of each request is
  // either nearly what the estimates predict for it (residual sd 0.02) or far off (sd 1). The
  // fixed noise (residual_noise 0) sees only the per-token spread, so it gives about the same
  // confidence in both; the learned residuals make it near the expected scores' P(best) when
  // requests land where predicted, and lower when they do not.
  auto confidence = [](double residual_noise, double e2e_sigma) {
    RoutingOptions options;
    options.models.push_back({"m", {testing::Spec("a"), testing::Spec("b")}});
    options.estimator.residual_noise = residual_noise;
    options.estimator.temperature = 0.05;
    RoutingLearner learner(options);
    std::mt19937_64 rng(23);
    std::normal_distribution<double> z;
    TrueBackend a{.name = "a", .ttft_ms = 90, .tpot_ms = 18}, b{.name = "b", .ttft_ms = 100};
    for (int64_t t = 0; t < 2000; ++t) {
      for (const TrueBackend* x : {&a, &b}) {
        Outcome o = Draw(*x, "m", t, rng);
        o.e2e_ms = (x->ttft_ms + x->tpot_ms * static_cast<double>(o.output_tokens)) *
                   std::exp(e2e_sigma * z(rng));
        learner.Observe(o);
      }
    }
    Decision d;
    learner.Select(learner.FindModel("m"), {}, Strategy::kLowestLatency, 2000, &d);
    EXPECT_EQ(d.backend_name, "a");
    return d.confidence;
  };
  const double fixed_tight = confidence(0, 0.02), fixed_wide = confidence(0, 1);
  EXPECT_NEAR(fixed_tight, fixed_wide, 0.02);  // e2e only moves the load estimate a little
  const double tight = confidence(1.2, 0.02), wide = confidence(1.2, 1);
  EXPECT_GT(tight, 0.9);
  EXPECT_GT(tight, fixed_tight + 0.1);
  EXPECT_LT(wide, fixed_wide - 0.05);
  EXPECT_GT(wide, 0.5);
}

TEST(ConfidenceTest, AHeldBackendThatIsUpAgainCompetesForTheConfidence) {
  // "a" (twice as fast as b and c) is ejected by 5 server errors. While it is held, b and c get
  // the traffic; whether one of them is the best backend now depends on whether "a" is up: with
  // its gauges fresh it may be (it competes in the confidence's draws), with its scrape silent it
  // is taken as down (left out, as before).
  auto request_p_best = [](bool a_gauges_fresh) {
    RoutingOptions options;
    options.models.push_back({"m", {testing::Spec("a"), testing::Spec("b"), testing::Spec("c")}});
    RoutingLearner learner(options);
    std::mt19937_64 rng(5);
    TrueBackend a{.name = "a", .ttft_ms = 50, .tpot_ms = 10}, b{.name = "b"}, c{.name = "c"};
    int64_t t = 0;
    for (; t < 20'000; t += 10) {
      for (const TrueBackend* x : {&a, &b, &c}) learner.Observe(Draw(*x, "m", t, rng));
      if (t % 1000 == 0) {
        for (const char* name : {"a", "b", "c"}) {
          learner.ObserveGauge({name, "m", "num_requests_running", 2, t});
        }
      }
    }
    for (int i = 0; i < 5; ++i) {
      Outcome o = Draw(a, "m", t, rng);
      o.error = ErrorKind::kServerError;
      learner.Observe(o);
    }
    for (; t < 35'000; t += 1000) {
      for (const char* name : {"a", "b", "c"}) {
        if (name[0] != 'a' || a_gauges_fresh) {
          learner.ObserveGauge({name, "m", "num_requests_running", 2, t});
        }
      }
    }
    Decision d;
    learner.Select(learner.FindModel("m"), {}, Strategy::kLowestLatency, t, &d);
    EXPECT_TRUE(d.ok);
    EXPECT_NE(d.backend_name, "a");
    EXPECT_EQ(d.num_gated, 1u);
    double sum = 0;
    for (uint32_t i = 0; i < d.num_ranked; ++i) sum += d.ranked[i].p_best_request;
    return sum;
  };
  EXPECT_GT(request_p_best(false), 0.99);  // b or c is surely the best of what is up
  EXPECT_LT(request_p_best(true), 0.5);    // "a", up again, is more likely the best
}

TEST(ConfidenceTest, AHeldBackendWhoseScrapeWentQuietDoesNotCompete) {
  // As above, but "a"'s gauges (every 1 s, like b's and c's) stop 4 s before the decision: still
  // within gauge_max_age (10 s), yet four sample intervals older than b's and c's newest, so not
  // evidence of being up — it must not lower the confidence. With its gauges as fresh as theirs
  // (within two intervals) it competes.
  auto request_p_best = [](int64_t a_gauges_stop_ms) {
    RoutingOptions options;
    options.models.push_back({"m", {testing::Spec("a"), testing::Spec("b"), testing::Spec("c")}});
    RoutingLearner learner(options);
    std::mt19937_64 rng(5);
    TrueBackend a{.name = "a", .ttft_ms = 50, .tpot_ms = 10}, b{.name = "b"}, c{.name = "c"};
    int64_t t = 0;
    for (; t < 20'000; t += 10) {
      for (const TrueBackend* x : {&a, &b, &c}) learner.Observe(Draw(*x, "m", t, rng));
      if (t % 1000 == 0) {
        for (const char* name : {"a", "b", "c"}) {
          learner.ObserveGauge({name, "m", "num_requests_running", 2, t});
        }
      }
    }
    for (int i = 0; i < 5; ++i) {
      Outcome o = Draw(a, "m", t, rng);
      o.error = ErrorKind::kServerError;
      learner.Observe(o);
    }
    for (; t <= 35'000; t += 1000) {
      for (const char* name : {"a", "b", "c"}) {
        if (name[0] != 'a' || t < a_gauges_stop_ms) {
          learner.ObserveGauge({name, "m", "num_requests_running", 2, t});
        }
      }
    }
    t -= 1000;  // the decision at the newest gauge's time
    Decision d;
    learner.Select(learner.FindModel("m"), {}, Strategy::kLowestLatency, t, &d);
    EXPECT_TRUE(d.ok);
    EXPECT_NE(d.backend_name, "a");
    EXPECT_EQ(d.num_gated, 1u);
    double sum = 0;
    for (uint32_t i = 0; i < d.num_ranked; ++i) sum += d.ranked[i].p_best_request;
    return sum;
  };
  // a's last gauge at 31 s, b's and c's at 35 s: 4 s (4 intervals) behind, 4 s old (< 10 s).
  EXPECT_GT(request_p_best(32'000), 0.99);
  // a's last gauge at 34 s: one interval behind: it competes, and is more likely the best.
  EXPECT_LT(request_p_best(35'000), 0.5);
}

TEST(LoadTest, PendingPrefillRaisesTheTtftOfTheBackendItWasSentTo) {
  // Two identical backends. A router sends a 20,000-token prompt to "a": until "a" has prefilled
  // it (at the rate its evidence implies, ~5 tokens/ms here), a request's first token there
  // waits behind it, so "b" is the faster; once drained, they are equal again.
  RoutingOptions options;
  options.models.push_back({"m", {testing::Spec("a"), testing::Spec("b")}});
  RoutingLearner learner(options);
  const RoutingLearner::ModelId m = learner.FindModel("m");
  std::mt19937_64 rng(11);
  TrueBackend a{.name = "a"}, b{.name = "b"};
  int64_t t = 0;
  Decision d;
  for (; t < 20'000; t += 10) {
    learner.Observe(Draw(a, "m", t, rng));
    learner.Observe(Draw(b, "m", t, rng));
    if (t % 500 == 0) {  // the router's own sends of typical prompts (prefilled well before next)
      learner.Select(m, {}, Strategy::kLowestLatency, t, &d);
      learner.NoteSent(m, 0, t, 500);
      learner.NoteSent(m, 1, t, 500);
    }
  }
  learner.Select(m, {}, Strategy::kLowestLatency, t, &d);
  const auto before_a = learner.Estimate("m", "a", t);
  ASSERT_TRUE(before_a.ok());
  EXPECT_NEAR(before_a->ttft_load_factor, 1.0, 0.25);
  learner.NoteSent(m, 0, t, 20'000);
  t += 10;
  const std::map<std::string, double> shares =
      Shares(learner, "m", {}, Strategy::kLowestLatency, t, 500);
  EXPECT_GT(shares.count("b") ? shares.at("b") : 0.0, 0.9);
  const auto a_now = learner.Estimate("m", "a", t);
  const auto b_now = learner.Estimate("m", "b", t);
  ASSERT_TRUE(a_now.ok() && b_now.ok());
  EXPECT_GT(a_now->ttft_load_factor, 10 * b_now->ttft_load_factor);
  // 20,000 tokens at ~5 per ms: drained within ~4 s.
  t += 10'000;
  learner.Select(m, {}, Strategy::kLowestLatency, t, &d);
  const auto a_later = learner.Estimate("m", "a", t);
  ASSERT_TRUE(a_later.ok());
  EXPECT_NEAR(a_later->ttft_load_factor, 1.0, 0.25);
}

TEST(DriftTest, FollowsABackendThatGetsSlower) {
  RoutingOptions options;
  options.estimator.half_life_ms = 10'000;
  RoutingLearner learner(options);
  std::mt19937_64 rng(9);
  TrueBackend a{.name = "a", .ttft_ms = 60}, b{.name = "b", .ttft_ms = 100};
  int64_t t = 0;
  for (; t < 60'000; t += 50) {
    learner.Observe(Draw(a, "m", t, rng));
    learner.Observe(Draw(b, "m", t, rng));
  }
  EXPECT_EQ(Favourite(Shares(learner, "m", {}, Strategy::kLowestLatency, t, 1000)), "a");
  a.ttft_ms = 200;
  a.tpot_ms = 40;
  for (const int64_t end = t + 30'000; t < end; t += 50) {  // 3 half-lives of the new truth
    learner.Observe(Draw(a, "m", t, rng));
    learner.Observe(Draw(b, "m", t, rng));
  }
  EXPECT_GT(Shares(learner, "m", {}, Strategy::kLowestLatency, t, 1000)["b"], 0.95);
}

TEST(PriceTest, ObservedCostOverridesTheListPrice) {
  RoutingOptions options;
  options.models.push_back({"m", {testing::Spec("a"), testing::Spec("b")}});
  options.models[0].backends[0].price_per_1k_input = 0.001;
  options.models[0].backends[0].price_per_1k_output = 0.002;
  options.models[0].backends[1].price_per_1k_input = 0.002;
  options.models[0].backends[1].price_per_1k_output = 0.004;
  RoutingLearner learner(options);
  std::mt19937_64 rng(10);
  TrueBackend a{.name = "a"}, b{.name = "b"};
  Feed(learner, "m", {&a, &b}, 0, 100, rng);
  EXPECT_GT(Shares(learner, "m", {}, Strategy::kCostEffective, 100, 2000)["a"], 0.85);
  // a's provider raises its price fivefold: observed costs say so.
  a.cost_usd = 5 * (0.001 * 500 + 0.002 * 200) / 1000;
  b.cost_usd = (0.002 * 500 + 0.004 * 200) / 1000;
  Feed(learner, "m", {&a, &b}, 100, 200, rng);
  EXPECT_GT(Shares(learner, "m", {}, Strategy::kCostEffective, 200, 2000)["b"], 0.85);
}

TEST(BoundsTest, ModelsAndBackendsBeyondTheLimitsAreRefusedAndCounted) {
  RoutingOptions options;
  options.limits.max_models = 2;
  options.limits.max_backends_per_model = 3;
  MetricsRegistry metrics;
  RoutingLearner learner(options, &metrics);
  std::mt19937_64 rng(12);
  const std::array<std::string, 6> names = {"x0", "x1", "x2", "x3", "x4", "x5"};
  for (int m = 0; m < 5; ++m) {
    for (int b = 0; b < 6; ++b) {
      TrueBackend x{.name = names[b]};
      learner.Observe(Draw(x, names[m], 0, rng));
    }
  }
  EXPECT_EQ(learner.num_models(), 2u);
  EXPECT_EQ(learner.num_backends(0), 3u);
  EXPECT_EQ(learner.stats().refused_models, 18u);   // 3 models × 6 outcomes
  EXPECT_EQ(learner.stats().refused_backends, 6u);  // 2 models × 3 backends
  EXPECT_EQ(metrics.CounterValue("inferscope_routing_refused_total", {{"reason", "model_limit"}}),
            18u);
  EXPECT_EQ(metrics.CounterValue("inferscope_routing_refused_total", {{"reason", "backend_limit"}}),
            6u);
  EXPECT_EQ(metrics.CounterValue("inferscope_routing_outcomes_total"), 6u);
}

TEST(WeightsTest, PublishedWhenTheyChangeMeaningfully) {
  RoutingOptions options;
  options.models.push_back({"m", {testing::Spec("a"), testing::Spec("b")}});
  options.publish.min_interval_ms = 1000;
  RoutingLearner learner(options);
  std::mt19937_64 rng(13);
  TrueBackend a{.name = "a", .ttft_ms = 100}, b{.name = "b", .ttft_ms = 100};
  Feed(learner, "m", {&a, &b}, 0, 200, rng);
  const RoutingLearner::ModelId m = learner.FindModel("m");
  RoutingWeights w;
  EXPECT_TRUE(learner.PublishIfChanged(m, Strategy::kBalanced, 200, &w));  // first
  ASSERT_EQ(w.backends.size(), 2u);
  EXPECT_NEAR(w.backends[0].weight + w.backends[1].weight, 1.0, 1e-9);
  EXPECT_FALSE(learner.PublishIfChanged(m, Strategy::kBalanced, 300, &w));  // rate-limited
  // An ejection is published at once, whatever the interval.
  for (int i = 0; i < 5; ++i) {
    Outcome o = Draw(a, "m", 400, rng);
    o.error = ErrorKind::kTimeout;
    learner.Observe(o);
  }
  EXPECT_TRUE(learner.PublishIfChanged(m, Strategy::kBalanced, 400, &w));
  EXPECT_EQ(w.backends[0].gate, GateState::kEjected);
  EXPECT_DOUBLE_EQ(w.backends[0].weight, 0.0);
  EXPECT_DOUBLE_EQ(w.backends[1].weight, 1.0);
  EXPECT_FALSE(learner.PublishIfChanged(m, Strategy::kBalanced, 5000, &w));  // nothing moved

  RoutingWeights x = w, y = w;
  x.backends[0].gate = GateState::kHealthy;
  x.backends[0].weight = 0.5;
  x.backends[1].weight = 0.5;
  EXPECT_NEAR(TotalVariation(x, y), 0.5, 1e-12);
  EXPECT_TRUE(WeightsChanged(x, y, 0.9));  // gated: a change whatever the distance
  y.backends[0].gate = GateState::kHealthy;
  y.backends[0].weight = 0.47;
  y.backends[1].weight = 0.53;
  EXPECT_FALSE(WeightsChanged(x, y, 0.05));
  y.backends[0].weight = 0.44;
  y.backends[1].weight = 0.56;
  EXPECT_TRUE(WeightsChanged(x, y, 0.05));
  EXPECT_FALSE(learner.Weights("unknown", Strategy::kBalanced, 0).ok());
}

TEST(SelectTest, DeterministicForASeedAndRefreshedByEventTimeOnly) {
  auto run = [] {
    RoutingLearner learner(RoutingOptions{});
    std::mt19937_64 rng(14);
    TrueBackend a{.name = "a", .ttft_ms = 100}, b{.name = "b", .ttft_ms = 110};
    std::string picks;
    Decision d;
    for (int64_t t = 0; t < 500; ++t) {
      learner.Observe(Draw(a, "m", t, rng));
      learner.Observe(Draw(b, "m", t, rng));
      learner.Select("m", {}, Strategy::kBalanced, t, &d);
      picks += d.backend_name;
    }
    return picks;
  };
  EXPECT_EQ(run(), run());
}

TEST(OptionsTest, ParsesTheCatalogueAndTuning) {
  const std::string yaml = R"(
half_life: 20s
quality_half_life: 5m
posterior_draws: 128
learned_capabilities: [code]
health: {consecutive_errors: 3, base_ejection_time: 10s, panic_threshold: 30}
publish: {min_change: 0.1, min_interval: 250ms}
limits: {max_models: 10, backend_ttl: 30m, backend_idle: 2m}
models:
  - name: llama
    backends:
      - {name: vllm-0, engine: vllm, capabilities: [vision, tools], max_context: 8192,
         price_per_1k_input: 0.1, price_per_1k_output: 0.2, weight: 2, max_concurrency: 128}
      - {name: openai}
)";
  RoutingOptions o;
  ASSERT_TRUE(ParseRoutingOptions(ConfigNode("t.yaml", YAML::Load(yaml), "options"), &o).ok());
  EXPECT_EQ(o.estimator.half_life_ms, 20'000);
  EXPECT_EQ(o.estimator.quality_half_life_ms, 300'000);
  EXPECT_EQ(o.estimator.posterior_draws, 128);
  EXPECT_EQ(o.learned_capabilities, kCode);
  EXPECT_EQ(o.gate.consecutive_errors, 3);
  EXPECT_EQ(o.gate.base_ejection_ms, 10'000);
  EXPECT_DOUBLE_EQ(o.gate.panic_threshold_percent, 30);
  EXPECT_EQ(o.publish.min_interval_ms, 250);
  EXPECT_EQ(o.limits.max_models, 10);
  EXPECT_EQ(o.limits.backend_ttl_ms, 1'800'000);
  EXPECT_EQ(o.limits.backend_idle_ms, 120'000);
  ASSERT_EQ(o.models.size(), 1u);
  ASSERT_EQ(o.models[0].backends.size(), 2u);
  const BackendSpec& b = o.models[0].backends[0];
  EXPECT_EQ(b.engine, "vllm");
  EXPECT_EQ(b.capabilities, kVision | kTools);
  EXPECT_EQ(b.max_context, 8192u);
  EXPECT_DOUBLE_EQ(b.price_per_1k_output, 0.2);
  EXPECT_DOUBLE_EQ(b.static_weight, 2);
  EXPECT_FALSE(o.models[0].backends[1].has_price());
  EXPECT_EQ(CapabilityMaskToString(b.capabilities), "vision,tools");
}

TEST(OptionsTest, ErrorsNameFileLineAndField) {
  auto error = [](const std::string& yaml) {
    RoutingOptions o;
    return ParseRoutingOptions(ConfigNode("t.yaml", YAML::Load(yaml), "options"), &o).message();
  };
  EXPECT_NE(error("models:\n  - name: m\n    backends:\n      - {name: a, capabilities: [x]}\n")
                .find("t.yaml:4:"),
            std::string::npos);
  EXPECT_NE(error("models:\n  - name: m\n    backends:\n      - {name: a, capabilities: [x]}\n")
                .find("options.models[0].backends[0].capabilities: unknown capability 'x'"),
            std::string::npos);
  EXPECT_NE(error("health:\n  consecutive_errors: 0\n").find("t.yaml:2:"), std::string::npos);
  EXPECT_NE(error("limits:\n  backend_ttl: 30s\n")
                .find("limits.backend_ttl must be 0 (never) or >= "
                      "limits.backend_idle"),
            std::string::npos);
  EXPECT_NE(error("limits:\n  backend_ttl: 30s\n").find("t.yaml:2:"), std::string::npos);
  EXPECT_NE(error("limits: {backend_idle: -1s}\n").find("backend_idle"), std::string::npos);
  EXPECT_NE(error("models:\n  - name: m\n    backends:\n      - {name: a, price_per_1k_input: 1}\n")
                .find("give both"),
            std::string::npos);
  EXPECT_NE(error("models:\n  - name: m\n  - name: m\n").find("listed twice"), std::string::npos);
  EXPECT_NE(error("models:\n  - name: m\n    backend: []\n").find("backend"), std::string::npos);
  EXPECT_NE(error("half_life: 1m\nquality_half_life: 10s\n").find("quality_half_life"),
            std::string::npos);
  EXPECT_NE(error("health: {typo: 1}\n").find("typo"), std::string::npos);
}

// load_choices: a burst at one instant (no outcome in between, the decision table unchanged) is
// spread by the live in-flight counts over two identical backends instead of following the
// weights' coin flips.
TEST(LoadChoicesTest, BurstOnIdenticalBackendsIsSpreadByLiveLoad) {
  auto burst_gap = [](int64_t load_choices) {
    RoutingOptions o;
    o.estimator.load_choices = load_choices;
    RoutingLearner learner(o);
    std::mt19937_64 rng(5);
    const TrueBackend a{.name = "a", .ttft_ms = 100, .tpot_ms = 20};
    const TrueBackend b{.name = "b", .ttft_ms = 100, .tpot_ms = 20};
    Feed(learner, "m", {&a, &b}, 0, 400, rng);
    const RoutingLearner::ModelId model = learner.FindModel("m");
    int64_t sent[2] = {0, 0};
    Decision d;
    for (int i = 0; i < 200; ++i) {
      learner.Select(model, {}, Strategy::kLowestLatency, 400, &d);
      EXPECT_TRUE(d.ok);
      learner.NoteSent(model, d.backend, 400);
      ++sent[d.backend];
    }
    return std::abs(sent[0] - sent[1]);
  };
  EXPECT_LE(burst_gap(4), 6);
  EXPECT_EQ(burst_gap(1), burst_gap(1));  // deterministic
}

}  // namespace
}  // namespace inferscope::routing
