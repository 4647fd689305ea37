// Forgetting backends (routing/README.md, "Forgetting backends"): a learned backend silent for
// limits.backend_ttl is removed and its slot freed, a model left without backends is removed, a
// backend silent for limits.backend_idle keeps only the idle share of traffic and may be evicted
// from a full table by a newcomer, catalogue backends stay known, and a restored checkpoint does
// not bring removed backends back. Event time only: nothing here sleeps.

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <string>

#include "pipeline/metrics.h"
#include "routing/learner.h"
#include "tests/routing/routing_test_util.h"

namespace inferscope::routing {
namespace {

using testing::Draw;
using testing::TrueBackend;

constexpr int64_t kT0 = 1'700'000'000'000;
constexpr int64_t kMinute = 60'000;

double WeightOf(const RoutingWeights& w, const std::string& backend) {
  for (const RoutingWeights::Entry& e : w.backends) {
    if (e.backend == backend) return e.weight;
  }
  return -1;
}

std::set<std::string> Names(const RoutingWeights& w) {
  std::set<std::string> out;
  for (const RoutingWeights::Entry& e : w.backends) out.insert(e.backend);
  return out;
}

// The reviewer's scenario (review-ingest-streams.md, section 3): 32 short-lived pods of model
// `llama` (successive deploys with pod-hash names) report 20 requests each, once; then only
// `pod-new` serves, one request a second. Returns the time of the last outcome.
int64_t DeadPodsThenANewOne(RoutingLearner& learner, int64_t until, std::mt19937_64& rng) {
  for (int k = 0; k < 32; ++k) {
    const TrueBackend pod{.name = "pod-" + std::to_string(k), .ttft_ms = 50};
    for (int i = 0; i < 20; ++i) learner.Observe(Draw(pod, "llama", kT0 + k, rng));
  }
  const TrueBackend fresh{.name = "pod-new", .ttft_ms = 20};
  int64_t t = kT0 + 2'000;
  for (; t <= until; t += 1'000) learner.Observe(Draw(fresh, "llama", t, rng));
  return t - 1'000;
}

TEST(ExpiryTest, DeadPodsExpireAfterTheTtlAndTheNewPodGetsTheTraffic) {
  MetricsRegistry metrics;
  RoutingLearner learner(RoutingOptions{}, &metrics);  // backend_ttl 10 min
  std::mt19937_64 rng(7);
  const int64_t t = DeadPodsThenANewOne(learner, kT0 + 11 * kMinute, rng);

  auto w = learner.Weights("llama", Strategy::kBalanced, t);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(Names(*w), std::set<std::string>{"pod-new"}) << "the 32 dead pods are forgotten";
  EXPECT_DOUBLE_EQ(WeightOf(*w, "pod-new"), 1.0);
  Decision d;
  learner.Select("llama", {}, Strategy::kBalanced, t, &d);
  ASSERT_TRUE(d.ok);
  EXPECT_EQ(d.backend_name, "pod-new");
  EXPECT_EQ(d.num_ranked, 1u);
  for (int k = 0; k < 32; ++k) {
    EXPECT_FALSE(learner.Estimate("llama", "pod-" + std::to_string(k), t).ok()) << k;
  }
  EXPECT_EQ(learner.num_backends(learner.FindModel("llama")), 1u);
  // The freed slots take new backends again.
  learner.Observe(Draw(TrueBackend{.name = "pod-next"}, "llama", t + 1, rng));
  EXPECT_TRUE(learner.Estimate("llama", "pod-next", t + 1).ok());
  EXPECT_EQ(metrics.GetCounter("inferscope_routing_removed_total", "",
                               {{"what", "backend"}, {"reason", "expired"}})
                    ->value() +
                metrics
                    .GetCounter("inferscope_routing_removed_total", "",
                                {{"what", "backend"}, {"reason", "evicted"}})
                    ->value(),
            32u);
}

// Long before the TTL, the newcomer is not refused for good: once a pod has been silent for
// backend_idle while its peers (here the refused newcomer) had outcomes, the newcomer takes its
// slot, and the silent pods keep only the idle share (probe_fraction, together) of the traffic.
TEST(ExpiryTest, BeforeTheTtlTheNewPodEvictsAnIdleOneAndTheIdleOnesKeepOnlyTheIdleShare) {
  MetricsRegistry metrics;
  RoutingLearner learner(RoutingOptions{}, &metrics);  // backend_idle 1 min, probe_fraction 0.02
  std::mt19937_64 rng(8);
  const int64_t t = DeadPodsThenANewOne(learner, kT0 + 5 * kMinute, rng);

  auto w = learner.Weights("llama", Strategy::kBalanced, t);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->backends.size(), 32u);
  EXPECT_GE(WeightOf(*w, "pod-new"), 0.98 - 1e-9);
  EXPECT_LT(WeightOf(*w, "pod-0"), 0) << "the least recently seen pod was evicted";
  double idle = 0;
  for (const RoutingWeights::Entry& e : w->backends) {
    if (e.backend == "pod-new") continue;
    EXPECT_TRUE(e.idle) << e.backend;
    idle += e.weight;
  }
  EXPECT_NEAR(idle, 0.02, 1e-9);
  auto shares = testing::Shares(learner, "llama", {}, Strategy::kBalanced, t, 2'000);
  EXPECT_GT(shares["pod-new"], 0.95);
  EXPECT_EQ(metrics
                .GetCounter("inferscope_routing_removed_total", "",
                            {{"what", "backend"}, {"reason", "evicted"}})
                ->value(),
            1u);
  // The newcomer was refused for backend_idle (1 min) after pod-0's last outcome (its peers had
  // the 150 outcomes, 3 / probe_fraction, at once: the other pods' 620).
  EXPECT_EQ(learner.stats().refused_backends, 58u);
}

// Silence means something only when the peers serve: in a model with little traffic (fewer than
// 3 / probe_fraction = 150 outcomes of the others since), a quiet backend is not idle, however
// long the silence, so a low-traffic model does not concentrate on whichever backend answered last.
TEST(ExpiryTest, ABackendIsNotIdleWhileItsPeersHadFewOutcomes) {
  RoutingLearner learner(RoutingOptions{});
  std::mt19937_64 rng(17);
  const TrueBackend a{.name = "a", .ttft_ms = 100}, b{.name = "b", .ttft_ms = 100};
  learner.Observe(Draw(b, "m", kT0, rng));
  int64_t t = kT0;
  for (int i = 0; i < 140; ++i, t += 2'000) learner.Observe(Draw(a, "m", t, rng));  // 4.7 min
  auto w = learner.Weights("m", Strategy::kLowestLatency, t);
  ASSERT_TRUE(w.ok());
  for (const RoutingWeights::Entry& e : w->backends) EXPECT_FALSE(e.idle) << e.backend;
  EXPECT_GT(WeightOf(*w, "b"), 0.1);
  for (int i = 0; i < 20; ++i, t += 2'000) learner.Observe(Draw(a, "m", t, rng));
  w = learner.Weights("m", Strategy::kLowestLatency, t);
  ASSERT_TRUE(w.ok());
  EXPECT_NEAR(WeightOf(*w, "b"), 0.02, 1e-9) << "160 outcomes of its peer: idle now";
}

// A backend that went silent and then reports again is a full candidate again at once.
TEST(ExpiryTest, AnIdleBackendThatReportsAgainCompetesAgain) {
  RoutingLearner learner(RoutingOptions{});
  std::mt19937_64 rng(9);
  const TrueBackend a{.name = "a", .ttft_ms = 100}, b{.name = "b", .ttft_ms = 100},
      c{.name = "c", .ttft_ms = 100};
  int64_t t = kT0;
  for (; t < kT0 + 30'000; t += 100) {
    for (const TrueBackend* x : {&a, &b, &c}) learner.Observe(Draw(*x, "m", t, rng));
  }
  for (; t < kT0 + 3 * kMinute; t += 100) {  // c goes quiet
    for (const TrueBackend* x : {&a, &b}) learner.Observe(Draw(*x, "m", t, rng));
  }
  auto w = learner.Weights("m", Strategy::kLowestLatency, t);
  ASSERT_TRUE(w.ok());
  EXPECT_NEAR(WeightOf(*w, "c"), 0.02, 1e-9);
  // Not yet past the TTL: c is still known, with its capabilities and evidence.
  EXPECT_TRUE(learner.Estimate("m", "c", t).ok());
  for (int i = 0; i < 20; ++i, t += 100) {
    for (const TrueBackend* x : {&a, &b, &c}) learner.Observe(Draw(*x, "m", t, rng));
  }
  w = learner.Weights("m", Strategy::kLowestLatency, t);
  ASSERT_TRUE(w.ok());
  for (const RoutingWeights::Entry& e : w->backends) EXPECT_FALSE(e.idle) << e.backend;
  EXPECT_GT(WeightOf(*w, "c"), 0.1);
}

// Gauges say a backend is there: one that gets no requests but reports its gauges is neither
// idle nor expired.
TEST(ExpiryTest, GaugesKeepABackendWithoutRequestsKnown) {
  RoutingLearner learner(RoutingOptions{});
  std::mt19937_64 rng(10);
  const TrueBackend a{.name = "a"};
  int64_t t = kT0;
  learner.Observe(Draw(TrueBackend{.name = "quiet"}, "m", t, rng));
  for (; t < kT0 + 15 * kMinute; t += 500) {
    learner.Observe(Draw(a, "m", t, rng));
    learner.ObserveGauge({.backend = "quiet",
                          .model = "m",
                          .name = "num_requests_running",
                          .value = 0,
                          .time_ms = t});
  }
  auto w = learner.Weights("m", Strategy::kBalanced, t);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(Names(*w), (std::set<std::string>{"a", "quiet"}));
  for (const RoutingWeights::Entry& e : w->backends) EXPECT_FALSE(e.idle) << e.backend;
}

TEST(ExpiryTest, AFullTableAdmitsANewcomerOnlyInPlaceOfAnIdleBackend) {
  RoutingOptions options;
  options.limits.max_backends_per_model = 3;
  RoutingLearner learner(options);
  std::mt19937_64 rng(11);
  const TrueBackend a{.name = "a"}, b{.name = "b"}, c{.name = "c"}, d{.name = "d"};
  int64_t t = kT0;
  for (; t < kT0 + 10'000; t += 100) {
    for (const TrueBackend* x : {&a, &b, &c}) learner.Observe(Draw(*x, "m", t, rng));
  }
  // c goes quiet; d arrives 30 s later: c is not idle yet (backend_idle 1 min), d is refused.
  for (; t < kT0 + 40'000; t += 100) {
    for (const TrueBackend* x : {&a, &b}) learner.Observe(Draw(*x, "m", t, rng));
  }
  learner.Observe(Draw(d, "m", t, rng));
  EXPECT_FALSE(learner.Estimate("m", "d", t).ok());
  EXPECT_EQ(learner.stats().refused_backends, 1u);
  for (; t < kT0 + 80'000; t += 100) {
    for (const TrueBackend* x : {&a, &b}) learner.Observe(Draw(*x, "m", t, rng));
  }
  // Now c has been silent for more than a minute while a and b served: d takes its slot.
  learner.Observe(Draw(d, "m", t, rng));
  EXPECT_TRUE(learner.Estimate("m", "d", t).ok());
  EXPECT_FALSE(learner.Estimate("m", "c", t).ok());
  EXPECT_EQ(learner.stats().refused_backends, 1u);
  EXPECT_EQ(learner.stats().evicted_backends, 1u);
  // With no idle backend left, the next newcomer is refused.
  learner.Observe(Draw(TrueBackend{.name = "e"}, "m", t + 1, rng));
  EXPECT_FALSE(learner.Estimate("m", "e", t + 1).ok());
  EXPECT_EQ(learner.stats().refused_backends, 2u);
}

// The catalogue lists backends statically (like an Envoy STATIC cluster): a catalogue backend is
// never removed and keeps its capabilities, but silent it gets only the idle share while its
// peers serve; a learned one beside it is forgotten after the TTL.
TEST(ExpiryTest, CatalogueBackendsStayKnownButSilentGetOnlyTheIdleShare) {
  RoutingOptions options;
  options.models.push_back({"m", {testing::Spec("cat-a", kVision), testing::Spec("cat-b")}});
  RoutingLearner learner(options);
  std::mt19937_64 rng(12);
  const TrueBackend b{.name = "cat-b", .ttft_ms = 200};
  int64_t t = kT0;
  learner.Observe(Draw(TrueBackend{.name = "learned"}, "m", t, rng));
  for (; t < kT0 + 12 * kMinute; t += 500) learner.Observe(Draw(b, "m", t, rng));
  auto w = learner.Weights("m", Strategy::kBalanced, t);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(Names(*w), (std::set<std::string>{"cat-a", "cat-b"}));
  EXPECT_NEAR(WeightOf(*w, "cat-a"), 0.02, 1e-9) << "never seen: idle since the first event";
  EXPECT_TRUE(learner.Estimate("m", "cat-a", t).ok());
  // It keeps its capabilities: a vision request can only go to it.
  Decision d;
  learner.Select("m", {.required_capabilities = kVision}, Strategy::kBalanced, t, &d);
  ASSERT_TRUE(d.ok);
  EXPECT_EQ(d.backend_name, "cat-a");
  // A model of the catalogue is not removed when its learned backends go.
  learner.Observe(Draw(TrueBackend{.name = "x"}, "other", t, rng));
  EXPECT_NE(learner.FindModel("m"), RoutingLearner::kNoModel);
}

TEST(ExpiryTest, AModelLeftWithoutBackendsIsRemovedAndFreesItsSlot) {
  MetricsRegistry metrics;
  RoutingOptions options;
  options.limits.max_models = 1;
  RoutingLearner learner(options, &metrics);
  std::mt19937_64 rng(13);
  learner.Observe(Draw(TrueBackend{.name = "a"}, "old", kT0, rng));
  int64_t t = kT0 + 1'000;
  // Events of a second model are refused while the first one is there, and move event time.
  for (; t < kT0 + 10 * kMinute; t += 10'000) {
    learner.Observe(Draw(TrueBackend{.name = "b"}, "new", t, rng));
  }
  EXPECT_EQ(learner.FindModel("new"), RoutingLearner::kNoModel);
  const uint64_t refused = learner.stats().refused_models;
  EXPECT_GT(refused, 50u);
  learner.Observe(Draw(TrueBackend{.name = "b"}, "new", kT0 + 10 * kMinute, rng));
  EXPECT_EQ(learner.FindModel("old"), RoutingLearner::kNoModel);
  EXPECT_NE(learner.FindModel("new"), RoutingLearner::kNoModel);
  EXPECT_EQ(learner.stats().refused_models, refused);
  EXPECT_EQ(learner.num_models(), 1u);
  Decision d;
  learner.Select("old", {}, Strategy::kBalanced, kT0 + 10 * kMinute, &d);
  EXPECT_EQ(d.reason, NoBackendReason::kUnknownModel);
  EXPECT_FALSE(learner.Weights("old", Strategy::kBalanced, kT0 + 10 * kMinute).ok());
  EXPECT_EQ(metrics
                .GetCounter("inferscope_routing_removed_total", "",
                            {{"what", "model"}, {"reason", "expired"}})
                ->value(),
            1u);
}

// The checkpoint record carries when each backend was last seen: a table restored from a
// checkpoint taken before the expiry still expires the dead pods; one taken after it does not
// bring them back.
TEST(ExpiryTest, ARestoredTableExpiresAndDoesNotResurrectDeadBackends) {
  std::mt19937_64 rng(14);
  RoutingLearner before(RoutingOptions{});
  const int64_t t1 = DeadPodsThenANewOne(before, kT0 + 30'000, rng);
  const std::string early = before.SnapshotModel(before.FindModel("llama"));

  RoutingLearner restored(RoutingOptions{});
  ASSERT_TRUE(restored.RestoreModel(early).ok());
  EXPECT_EQ(restored.num_backends(restored.FindModel("llama")), 32u);
  const TrueBackend fresh{.name = "pod-new", .ttft_ms = 20};
  int64_t t = t1 + 1'000;
  for (; t <= kT0 + 11 * kMinute; t += 1'000) restored.Observe(Draw(fresh, "llama", t, rng));
  auto w = restored.Weights("llama", Strategy::kBalanced, t);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(Names(*w), std::set<std::string>{"pod-new"});

  const std::string late = restored.SnapshotModel(restored.FindModel("llama"));
  EXPECT_EQ(late.find("pod-0\""), std::string::npos) << late.substr(0, 300);
  RoutingLearner again(RoutingOptions{});
  ASSERT_TRUE(again.RestoreModel(late).ok());
  w = again.Weights("llama", Strategy::kBalanced, t);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(Names(*w), std::set<std::string>{"pod-new"});
  Decision d;
  again.Select("llama", {}, Strategy::kBalanced, t, &d);
  ASSERT_TRUE(d.ok);
  EXPECT_EQ(d.backend_name, "pod-new");
}

// A record written before the learner saved the last-seen time: it is derived from the newest
// evidence (the last outcome or gauge), so such a restored backend expires too.
TEST(ExpiryTest, ARecordWithoutLastSeenExpiresFromItsNewestEvidence) {
  std::mt19937_64 rng(15);
  RoutingLearner before(RoutingOptions{});
  before.Observe(Draw(TrueBackend{.name = "dead"}, "m", kT0, rng));
  before.Observe(Draw(TrueBackend{.name = "live"}, "m", kT0 + 1'000, rng));
  std::string record = before.SnapshotModel(before.FindModel("m"));
  for (size_t at = record.find("\"seen\":"); at != std::string::npos;
       at = record.find("\"seen\":")) {
    const size_t end = record.find_first_of(",}", at);
    record.erase(at, end - at + (record[end] == ',' ? 1 : 0));
  }
  ASSERT_EQ(record.find("seen"), std::string::npos);
  RoutingLearner restored(RoutingOptions{});
  ASSERT_TRUE(restored.RestoreModel(record).ok());
  const int64_t t = kT0 + 10 * kMinute + 500;  // dead's TTL passed, live's not yet
  restored.Observe(Draw(TrueBackend{.name = "live"}, "m", t, rng));
  EXPECT_FALSE(restored.Estimate("m", "dead", t).ok());
  EXPECT_TRUE(restored.Estimate("m", "live", t).ok());
}

TEST(ExpiryTest, AZeroTtlKeepsEveryBackend) {
  RoutingOptions options;
  options.limits.backend_ttl_ms = 0;
  options.limits.backend_idle_ms = 0;
  RoutingLearner learner(options);
  std::mt19937_64 rng(16);
  learner.Observe(Draw(TrueBackend{.name = "a"}, "m", kT0, rng));
  learner.Observe(Draw(TrueBackend{.name = "b"}, "m", kT0 + 60 * kMinute, rng));
  EXPECT_TRUE(learner.Estimate("m", "a", kT0 + 60 * kMinute).ok());
  EXPECT_FALSE(options.limits.Validate().ok() == false);
  options.limits.backend_ttl_ms = 30'000;
  options.limits.backend_idle_ms = 60'000;
  EXPECT_FALSE(options.limits.Validate().ok()) << "backend_idle beyond backend_ttl";
}

}  // namespace
}  // namespace inferscope::routing
