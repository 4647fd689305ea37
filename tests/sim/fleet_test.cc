// The fleet: trace replay, pacing, routing, load faults, and its errors; fault specs and trace
// files.

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <numeric>

#include "tests/sim/sim_test_util.h"
#include "tests/test_util.h"

namespace inferscope::sim {
namespace {

using testing::Instance;
using testing::Poisson;
using testing::Recorder;
using testing::RunFleet;

// The first 1,999 requests of the Azure conversation trace (tests/data/README.md).
std::vector<TraceRecord> ConvExcerpt() {
  Result<std::vector<TraceRecord>> r =
      ReadAzureTrace(inferscope::testing::SourceDir() + "/tests/data/azure_conv_2023_head2000.csv");
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : std::vector<TraceRecord>{};
}

TEST(TraceReplayTest, ReproducesRequestCountAndTokenSumsExactly) {
  std::vector<TraceRecord> records = ConvExcerpt();
  ASSERT_EQ(records.size(), 1999u);
  uint64_t context = 0, generated = 0;
  for (const TraceRecord& r : records) {
    context += r.context_tokens;
    generated += r.generated_tokens;
  }
  // Independently of the reader: the sums of the file's columns (python: csv module).
  EXPECT_EQ(context, 2'209'141u);
  EXPECT_EQ(generated, 529'711u);
  Recorder rec;
  ServingParams p;  // no injected errors, no timeouts: every request completes
  p.timeout_s = 1e6;
  auto fleet = RunFleet(&rec, {Instance("vllm-0", p), Instance("vllm-1", p)},
                        std::make_unique<TraceArrivals>(records), 0);
  ASSERT_NE(fleet, nullptr);
  ASSERT_EQ(rec.arrivals.size(), records.size());
  ASSERT_EQ(rec.requests.size(), records.size());
  uint64_t prompt_in = 0, out = 0;
  for (const RequestOutcome& o : rec.requests) {
    EXPECT_TRUE(o.ok()) << ErrorName(o.error);
    prompt_in += o.prompt_tokens;
    out += o.output_tokens;
  }
  EXPECT_EQ(prompt_in, context);
  EXPECT_EQ(out, generated);
  // Arrival times are the trace's, relative to its first request.
  for (size_t i = 0; i < records.size(); ++i) {
    EXPECT_DOUBLE_EQ(rec.arrivals[i].first.arrival_ms,
                     static_cast<double>(records[i].time_us - records[0].time_us) / 1000.0);
  }
  EXPECT_NEAR(rec.arrivals.back().first.arrival_ms, 423'184.1, 0.1);  // 18:22:49.864 - 18:15:46.680
}

// Paced at speed 20, the trace's arrivals reach the sink at wall offsets of their trace offsets
// / 20, and event times advance 20x faster than the wall clock.
TEST(TraceReplayTest, PacerScalesArrivalSpacingByOneOverSpeed) {
  std::vector<TraceRecord> records = ConvExcerpt();
  records.resize(300);
  struct WallRecorder final : OutcomeSink {
    double wall_ms = 0;
    std::vector<std::pair<double, double>> arrivals;  // (sim ms, wall ms when delivered)
    void OnRequest(const RequestOutcome&) override {}
    void OnGauge(const GaugeSample&) override {}
    void OnArrival(const Request& r, uint32_t) override {
      arrivals.emplace_back(r.arrival_ms, wall_ms);
    }
  } rec;
  FleetOptions fo;
  auto fleet = Fleet::Create(fo, {Instance()}, {}, std::make_unique<TraceArrivals>(records),
                             std::make_unique<RoundRobinRouter>(), &rec);
  ASSERT_TRUE(fleet.ok()) << fleet.status().ToString();
  Pacer pacer(fleet->get(), 20, 1'700'000'000'000);
  for (int w = 0; w < 200'000; ++w) {  // a wall clock ticking in 1 ms steps
    rec.wall_ms = w;
    if (!pacer.Advance(w)) break;
  }
  ASSERT_EQ(rec.arrivals.size(), records.size());
  for (size_t i = 1; i < rec.arrivals.size(); ++i) {
    const auto [sim, wall] = rec.arrivals[i];
    EXPECT_LE(sim / 20, wall);
    EXPECT_GT(sim / 20, wall - 1) << "delivered in the first wall tick at or after sim / speed";
    const double trace_gap = rec.arrivals[i].first - rec.arrivals[i - 1].first;
    const double wall_gap = rec.arrivals[i].second - rec.arrivals[i - 1].second;
    EXPECT_NEAR(wall_gap, trace_gap / 20, 1.0);
  }
  EXPECT_EQ(pacer.EventTimeMs(60'000), 1'700'000'060'000);
  EXPECT_DOUBLE_EQ(pacer.WallOffsetMs(60'000), 3'000);
  // With a warm-up of 60 s before the wall clock's start, that is where event time starts.
  Pacer after_warmup(fleet->get(), 20, 1'700'000'000'000, 60'000);
  EXPECT_EQ(after_warmup.EventTimeMs(60'000), 1'700'000'000'000);
  EXPECT_EQ(after_warmup.EventTimeMs(120'000.7), 1'700'000'060'000);
  EXPECT_DOUBLE_EQ(after_warmup.WallOffsetMs(120'000), 3'000);
}

TEST(FleetTest, RoundRobinSplitsEachModelsRequestsEvenly) {
  Recorder rec;
  auto fleet =
      RunFleet(&rec, StandardFleet(4, 2, 1), std::make_unique<PoissonArrivals>(Poisson(20)), 300);
  ASSERT_NE(fleet, nullptr);
  std::vector<int> per_instance(fleet->size());
  for (const auto& [r, i] : rec.arrivals) {
    ++per_instance[i];
    EXPECT_EQ(fleet->model_of(i), r.model) << "routed to an instance of its model";
  }
  // Per model, round robin: counts differ by at most one.
  for (uint32_t m = 0; m < fleet->models().size(); ++m) {
    int lo = 1 << 30, hi = 0;
    for (size_t i = 0; i < fleet->size(); ++i) {
      if (fleet->model_of(i) != m) continue;
      lo = std::min(lo, per_instance[i]);
      hi = std::max(hi, per_instance[i]);
    }
    EXPECT_LE(hi - lo, 1) << fleet->models()[m];
  }
}

// The routing interface: a policy sees each candidate's load and can use it.
TEST(FleetTest, RoutersSeeInstanceLoad) {
  struct LeastLoaded final : Router {
    uint64_t picks = 0, saw_load = 0;
    std::string_view Name() const override { return "least_loaded"; }
    size_t Pick(const Request&, std::span<const InstanceView> c) override {
      ++picks;
      size_t best = 0;
      for (size_t i = 0; i < c.size(); ++i) {
        if (c[i].running + c[i].waiting > 0 || c[i].kv_usage > 0) ++saw_load;
        EXPECT_EQ(c[i].max_num_seqs, 256u);
        EXPECT_FALSE(c[i].name.empty());
        if (c[i].running + c[i].waiting < c[best].running + c[best].waiting) best = i;
      }
      return best;
    }
  };
  // vllm-1 is 3x slower: a load-aware router sends it less, round robin the same.
  std::vector<InstanceOptions> inst = {Instance("vllm-0"), Instance("vllm-1")};
  std::vector<Fault> slow = {*ParseFault("slow_gpu:vllm-1:0s-1h:3")};
  auto router = std::make_unique<LeastLoaded>();
  LeastLoaded* seen = router.get();
  Recorder rec;
  auto fleet = RunFleet(&rec, inst, std::make_unique<PoissonArrivals>(Poisson(4)), 600, slow,
                        std::move(router));  // owns the router
  ASSERT_NE(fleet, nullptr);
  EXPECT_EQ(seen->picks, rec.arrivals.size());
  EXPECT_GT(seen->saw_load, seen->picks) << "views carry running/waiting/kv usage";
  int to_slow = 0;
  for (const auto& [r, i] : rec.arrivals) to_slow += i == 1 ? 1 : 0;
  EXPECT_LT(to_slow, static_cast<int>(rec.arrivals.size()) * 0.4);
}

TEST(FleetTest, LoadDoubleOnAnInstanceDoublesItsShareOnly) {
  std::vector<InstanceOptions> inst = {Instance("vllm-0"), Instance("vllm-1"), Instance("vllm-2"),
                                       Instance("vllm-3")};
  Recorder rec;
  auto fleet = RunFleet(&rec, inst, std::make_unique<PoissonArrivals>(Poisson(8)), 1200,
                        {*ParseFault("load_double:vllm-1:5m-15m")});
  ASSERT_NE(fleet, nullptr);
  std::vector<double> in(4), out(4);
  for (const auto& [r, i] : rec.arrivals) {
    (r.arrival_ms >= 300'000 && r.arrival_ms < 900'000 ? in : out)[i] += 1;
  }
  EXPECT_NEAR(in[1] / in[0], 2.0, 0.15);
  EXPECT_NEAR(in[2] / in[0], 1.0, 0.02) << "the others keep their share";
  EXPECT_NEAR(out[1] / out[0], 1.0, 0.02);
  EXPECT_EQ(rec.arrivals.size(), fleet->requests());
}

TEST(FleetTest, FleetWideLoadDoubleCopiesEveryArrival) {
  std::vector<TraceRecord> records = ConvExcerpt();
  Recorder rec;
  ServingParams p;
  p.timeout_s = 1e6;
  auto fleet = RunFleet(&rec, {Instance("vllm-0", p), Instance("vllm-1", p)},
                        std::make_unique<TraceArrivals>(records), 0,
                        {*ParseFault("load_double:fleet:0s-1h")});
  ASSERT_NE(fleet, nullptr);
  EXPECT_EQ(fleet->arrivals(), records.size());
  EXPECT_EQ(rec.arrivals.size(), 2 * records.size());
  EXPECT_EQ(rec.requests.size(), 2 * records.size());
}

TEST(FleetTest, CreateRefusesBadFleets) {
  auto create = [](std::vector<InstanceOptions> inst, std::vector<Fault> faults) {
    return Fleet::Create(FleetOptions{}, std::move(inst), std::move(faults),
                         std::make_unique<PoissonArrivals>(Poisson(1)),
                         std::make_unique<RoundRobinRouter>(), nullptr)
        .status();
  };
  EXPECT_EQ(create({}, {}).message(), "a fleet needs at least one instance");
  EXPECT_EQ(create({Instance(), Instance()}, {}).message(),
            "instance vllm-0 serves llama-3.1-8b-instruct twice");
  EXPECT_EQ(create({Instance()}, {*ParseFault("slow_gpu:tgi-*:1s-2s")}).message(),
            "fault slow_gpu:tgi-*: matches no instance of the fleet");
  ServingParams bad;
  bad.max_num_seqs = 0;
  EXPECT_EQ(create({Instance("vllm-0", bad)}, {}).message(),
            "instance vllm-0: max_num_seqs must be >= 1");
  EXPECT_TRUE(create({Instance()}, {*ParseFault("load_double:*:1s-2s")}).ok());
}

TEST(FleetTest, StandardFleetNamesInstancesByEngine) {
  std::vector<InstanceOptions> f = StandardFleet(6, 2, 1);
  ASSERT_EQ(f.size(), 12u);
  EXPECT_EQ(f[0].name, "vllm-0");
  EXPECT_EQ(f[2].name, "sglang-1");
  EXPECT_EQ(f[4].engine, "tgi");
  EXPECT_EQ(f[4].params.max_num_seqs, 128u) << "TGI's --max-concurrent-requests";
  EXPECT_EQ(f[0].model, "llama-3.1-8b-instruct");
  EXPECT_EQ(f[1].model, "mistral-7b-instruct");
  EXPECT_GT(f[6].params.step_base_ms, 1.3 * FindModel(f[6].model)->params.step_base_ms)
      << "vllm-3 is a weaker node";
  for (const InstanceOptions& o : f) EXPECT_TRUE(o.Validate().ok());
}

TEST(FaultSpecTest, ParsesKindsInstancesTimesAndFactors) {
  Result<Fault> f = ParseFault("kv_cache_small:vllm-0:60s-180s");
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->kind, FaultKind::kKvCacheSmall);
  EXPECT_EQ(f->instance, "vllm-0");
  EXPECT_EQ(f->start_ms, 60'000);
  EXPECT_EQ(f->end_ms, 180'000);
  EXPECT_EQ(f->factor, 0.1);
  f = ParseFault("slow_gpu:tgi-*:1m-1h:4.5");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->factor, 4.5);
  EXPECT_TRUE(f->Matches("tgi-2"));
  EXPECT_FALSE(f->Matches("vllm-2"));
  EXPECT_TRUE(f->ActiveAt(60'000));
  EXPECT_FALSE(f->ActiveAt(3'600'000));
  EXPECT_TRUE(ParseFault("error_burst:*:500ms-2s:1").ok());
  EXPECT_TRUE(ParseFault("load_double:fleet:0s-10m").ok());
  EXPECT_TRUE(ParseFault("prefix_cache_off:sglang-1:10s-20s").ok());
  EXPECT_EQ(ParseFault("slot_limit_low:x:0s-1s")->factor, 0.0625);
}

TEST(FaultSpecTest, ErrorsSayWhatIsWrong) {
  auto message = [](std::string_view spec) { return ParseFault(spec).status().message(); };
  EXPECT_EQ(message("slow_gpu:vllm-0"),
            "fault 'slow_gpu:vllm-0': expected kind:instance:START-END[:factor], e.g. "
            "slow_gpu:vllm-0:60s-180s");
  EXPECT_EQ(message("fast_gpu:vllm-0:1s-2s"),
            "fault 'fast_gpu:vllm-0:1s-2s': unknown kind 'fast_gpu' (expected one of "
            "kv_cache_small, slot_limit_low, slow_gpu, prefix_cache_off, error_burst, "
            "load_double, down, latency_drift, brownout, price_change, quality_drop, flapping)");
  EXPECT_EQ(message("slow_gpu::1s-2s"),
            "fault 'slow_gpu::1s-2s': the instance is empty (a name, a glob such as vllm-*, or *)");
  EXPECT_EQ(message("slow_gpu:a:60-180"),
            "fault 'slow_gpu:a:60-180': START and END must be durations with a unit (ms, s, m, "
            "h), e.g. 60s-3m, got '60-180'");
  EXPECT_EQ(message("slow_gpu:a:60s"),
            "fault 'slow_gpu:a:60s': expected START-END, e.g. 60s-180s, got '60s'");
  EXPECT_EQ(message("slow_gpu:a:2m-1m"), "fault 'slow_gpu:a:2m-1m': END must be after START");
  EXPECT_EQ(message("slow_gpu:a:1s-2s:0"),
            "fault 'slow_gpu:a:1s-2s:0': the factor must be a number > 0, got '0'");
  EXPECT_EQ(message("slow_gpu:a:1s-2s:3x"),
            "fault 'slow_gpu:a:1s-2s:3x': the factor must be a number > 0, got '3x'");
  EXPECT_EQ(message("error_burst:a:1s-2s:1.5"),
            "fault 'error_burst:a:1s-2s:1.5': error_burst's factor is a probability in (0, 1], "
            "got '1.5'");
  EXPECT_EQ(message("prefix_cache_off:a:1s-2s:2"),
            "fault 'prefix_cache_off:a:1s-2s:2': prefix_cache_off takes no factor");
  EXPECT_EQ(message("slow_gpu:a:1s-2s:2:9"),
            "fault 'slow_gpu:a:1s-2s:2:9': expected kind:instance:START-END[:factor], got too "
            "many ':'");
}

TEST(TraceParseTest, ReadsCrlfAndLfAndSevenFractionDigits) {
  Result<std::vector<TraceRecord>> r = ParseAzureTrace(
      "TIMESTAMP,ContextTokens,GeneratedTokens\r\n2023-11-16 18:15:46.6805900,374,44\r\n"
      "2023-11-16 18:15:50,396,109\n",
      "t.csv");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].time_us, 1'700'158'546'680'590);  // date -d '2023-11-16 18:15:46Z' +%s
  EXPECT_EQ((*r)[0].context_tokens, 374u);
  EXPECT_EQ((*r)[0].generated_tokens, 44u);
  EXPECT_EQ((*r)[1].time_us - (*r)[0].time_us, 3'319'410);
}

TEST(TraceParseTest, MalformedLinesFailWithFileAndLine) {
  auto message = [](std::string_view body) {
    return ParseAzureTrace(
               "TIMESTAMP,ContextTokens,GeneratedTokens\r\n"
               "2023-11-16 18:15:46.6805900,374,44\r\n" +
                   std::string(body),
               "conv.csv")
        .status()
        .message();
  };
  EXPECT_EQ(message("2023-11-16 18:15:47,1\r\n"),
            "conv.csv:3: expected 3 comma-separated fields "
            "TIMESTAMP,ContextTokens,GeneratedTokens");
  EXPECT_EQ(message("2023-11-16 18:15:47,1,2,3\r\n"),
            "conv.csv:3: expected 3 comma-separated fields "
            "TIMESTAMP,ContextTokens,GeneratedTokens");
  EXPECT_EQ(message("2023-13-16 18:15:47,1,2\r\n"),
            "conv.csv:3: TIMESTAMP: expected YYYY-MM-DD HH:MM:SS[.fffffff], got "
            "'2023-13-16 18:15:47'");
  EXPECT_EQ(message("2023-11-16 18:15:47,0,2\r\n"),
            "conv.csv:3: ContextTokens: expected an integer >= 1, got '0'");
  EXPECT_EQ(message("2023-11-16 18:15:47,5,-2\r\n"),
            "conv.csv:3: GeneratedTokens: expected an integer >= 1, got '-2'");
  EXPECT_EQ(message("2023-11-16 18:15:47,5,2\r\n\r\n2023-11-16 18:15:48,5,2\r\n"),
            "conv.csv:4: empty line");
  EXPECT_EQ(message("2023-11-16 18:15:47,5,2\r\n2023-11-16 18:15:45,5,2\r\n"),
            "conv.csv:4: TIMESTAMP goes backwards (earlier than the line before)");
  EXPECT_EQ(ParseAzureTrace("time,ctx,gen\n", "x.csv").status().message(),
            "x.csv:1: expected the header 'TIMESTAMP,ContextTokens,GeneratedTokens'");
  EXPECT_EQ(ParseAzureTrace("", "x.csv").status().message(),
            "x.csv:1: empty file (expected the header 'TIMESTAMP,ContextTokens,GeneratedTokens')");
  Result<std::vector<TraceRecord>> missing = ReadAzureTrace("/nonexistent/trace.csv");
  EXPECT_EQ(missing.status().code(), Status::Code::kIOError);
}

}  // namespace
}  // namespace inferscope::sim
