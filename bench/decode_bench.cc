// Micro-benchmarks of the wire protocol v1: decoding a 256-event payload with WireDecoder, the same
// payload through msgpack-c's parser with a visitor that does nothing (the floor of a decoder built
// on it), and encoding one with the C++ client's BatchEncoder. Reports events/s.
//
// `decode_bench --fixed N [many]` instead decodes N messages and exits, for instruction counts that
// do not depend on timing: (Ir(N2) - Ir(N1)) / ((N2 - N1) * 256) under `valgrind --tool=callgrind`
// is the cost of one event.

#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <msgpack.hpp>

#include "clients/cpp/publisher.h"
#include "pipeline/clock.h"
#include "pipeline/event.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "sources/wire_decoder.h"

namespace inferscope {
namespace {

constexpr int64_t kNow = 1'700'000'000'000;
constexpr int kEventsPerMessage = 256;

const char* const kInstances[] = {"vllm-0", "vllm-1", "vllm-2",   "vllm-3",
                                  "tgi-0",  "tgi-1",  "sglang-0", "sglang-1"};
const char* const kModels[] = {"llama-3-70b", "qwen2-72b"};

// 256 events: mostly request outcomes with the usual optional fields, one gauge in eight.
void AddEvent(client::BatchEncoder& encoder, int i) {
  if (i % 8 == 7) {
    encoder.AddGauge(kInstances[i % 8], kModels[i % 2], "kv_cache_usage", 0.5 + i * 1e-3, kNow);
    return;
  }
  client::RequestOutcome r;
  r.instance = kInstances[i % 8];
  r.model = kModels[i % 2];
  r.e2e_ms = 800.5 + i;
  r.ttft_ms = 95.25 + i;
  r.tpot_ms = 14.5;
  r.prompt_tokens = 1000 + i;
  r.output_tokens = 200 + i;
  r.cached_tokens = 128;
  r.cost_usd = 0.0012;
  r.time_ms = kNow + i;
  encoder.AddRequest(r);
}

std::vector<std::string> MakePayloads(int messages) {
  client::BatchEncoder encoder("bench-publisher");
  std::vector<std::string> payloads;
  for (int m = 0; m < messages; ++m) {
    for (int i = 0; i < kEventsPerMessage; ++i) AddEvent(encoder, i);
    payloads.emplace_back(encoder.Finish());
  }
  return payloads;
}

// The end-to-end harness's workload (bench/e2e_throughput.cc): request outcomes with ttft, tpot,
// e2e and token counts over 2000 (instance, model) groups, 500 instances, in a scattered order.
std::vector<std::string> MakeManySeriesPayloads(int messages) {
  constexpr int kGroups = 2000;
  client::BatchEncoder encoder("bench-publisher");
  std::vector<std::string> instances, models, payloads;
  for (int g = 0; g < kGroups; ++g) {
    instances.push_back("bench-node-" + std::to_string(g / 4));
    models.push_back("model-" + std::to_string(g % 4));
  }
  for (int m = 0; m < messages; ++m) {
    for (int j = 0; j < kEventsPerMessage; ++j) {
      const uint64_t i = static_cast<uint64_t>(m) * kEventsPerMessage + j;
      const size_t g = (i * 7919) % kGroups;
      client::RequestOutcome r;
      r.instance = instances[g];
      r.model = models[g];
      r.ttft_ms = 100 + static_cast<double>(i % 977) / 3;
      r.tpot_ms = 20 + static_cast<double>(i % 331) / 7;
      r.prompt_tokens = static_cast<uint32_t>(50 + i % 2000);
      r.output_tokens = static_cast<uint32_t>(1 + i % 700);
      r.e2e_ms = *r.ttft_ms + *r.tpot_ms * *r.output_tokens;
      r.time_ms = kNow - 60'000 + static_cast<int64_t>(i % 60'000);
      encoder.AddRequest(r);
    }
    payloads.emplace_back(encoder.Finish());
  }
  return payloads;
}

// Payloads whose sequence numbers are bumped in place: re-encoding the events with an increasing
// seq would cost time inside the loop, and cycling through a pool of payloads as they are would
// look like duplicates. BatchEncoder writes seq as a fixed-width uint64.
class SeqPayload {
 public:
  explicit SeqPayload(bool many_series = false)
      : payloads_(many_series ? MakeManySeriesPayloads(16) : MakePayloads(1)),
        seq_at_(payloads_[0].find("\xa3seq\xcf") + 5) {}
  const std::string& Next() {
    ++seq_;
    std::string& payload = payloads_[seq_ % payloads_.size()];
    for (int b = 0; b < 8; ++b) payload[seq_at_ + b] = static_cast<char>(seq_ >> (56 - 8 * b));
    return payload;
  }
  const std::string& payload() const { return payloads_[0]; }

 private:
  std::vector<std::string> payloads_;
  size_t seq_at_;
  uint64_t seq_ = 0;
};

// state.range(0): 0 = 8 instances and 2 models in a fixed cycle; 1 = the e2e harness's workload.
void BM_Decode256(benchmark::State& state) {
  SeqPayload payloads(state.range(0) != 0);
  Interner interner;
  ManualClock clock(kNow);
  MetricsRegistry metrics;
  WireDecoder decoder(WireDecoderOptions{}, interner, clock, &metrics, "bench");
  EventBatch batch;
  batch.events.reserve(kEventsPerMessage);
  for (auto _ : state) {
    const std::string& payload = payloads.Next();
    batch.Clear();
    DecodeResult r = decoder.Decode(payload, batch);
    benchmark::DoNotOptimize(r);
    benchmark::DoNotOptimize(batch.events.data());
  }
  const std::string& payload = payloads.payload();
  if (decoder.events() != static_cast<uint64_t>(state.iterations()) * kEventsPerMessage) {
    state.SkipWithError("events were rejected");
  }
  state.SetItemsProcessed(state.iterations() * kEventsPerMessage);
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(payload.size()));
  state.counters["payload_bytes"] = static_cast<double>(payload.size());
}
BENCHMARK(BM_Decode256)->Arg(0)->Arg(1);

// msgpack-c's parser over the same payload with a visitor that does nothing: what any decoder
// built on msgpack-c costs at least (the reason WireDecoder has its own cursor).
void BM_MsgpackCNullVisitor256(benchmark::State& state) {
  const std::string payload = MakePayloads(1)[0];
  for (auto _ : state) {
    msgpack::null_visitor visitor;
    size_t off = 0;
    bool ok = msgpack::parse(payload.data(), payload.size(), off, visitor);
    benchmark::DoNotOptimize(ok);
    benchmark::DoNotOptimize(off);
  }
  state.SetItemsProcessed(state.iterations() * kEventsPerMessage);
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(payload.size()));
}
BENCHMARK(BM_MsgpackCNullVisitor256);

void BM_Encode256(benchmark::State& state) {
  client::BatchEncoder encoder("bench-publisher");
  size_t bytes = 0;
  for (auto _ : state) {
    for (int i = 0; i < kEventsPerMessage; ++i) AddEvent(encoder, i);
    std::string_view payload = encoder.Finish();
    bytes += payload.size();
    benchmark::DoNotOptimize(payload.data());
  }
  state.SetItemsProcessed(state.iterations() * kEventsPerMessage);
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
}
BENCHMARK(BM_Encode256);

// --fixed N [many]: decodes N messages (of BM_Decode256/0, or /1 with "many"), for instruction
// counting. Returns 1 if any event was rejected.
int RunFixed(long messages, bool many_series) {
  SeqPayload payloads(many_series);
  Interner interner;
  ManualClock clock(kNow);
  MetricsRegistry metrics;
  WireDecoder decoder(WireDecoderOptions{}, interner, clock, &metrics, "bench");
  EventBatch batch;
  batch.events.reserve(kEventsPerMessage);
  for (long m = 0; m < messages; ++m) {
    batch.Clear();
    DecodeResult r = decoder.Decode(payloads.Next(), batch);
    benchmark::DoNotOptimize(r);
    benchmark::DoNotOptimize(batch.events.data());
  }
  std::printf("decoded %ld messages, %llu events\n", messages,
              static_cast<unsigned long long>(decoder.events()));
  return decoder.events() == static_cast<uint64_t>(messages) * kEventsPerMessage ? 0 : 1;
}

}  // namespace
}  // namespace inferscope

int main(int argc, char** argv) {
  if ((argc == 3 || argc == 4) && std::strcmp(argv[1], "--fixed") == 0) {
    return inferscope::RunFixed(std::strtol(argv[2], nullptr, 10),
                                argc == 4 && std::strcmp(argv[3], "many") == 0);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
