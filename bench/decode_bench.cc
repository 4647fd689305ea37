// Micro-benchmarks of the wire protocol v1: decoding a 256-event payload with WireDecoder and
// encoding one with the C++ client's BatchEncoder. Reports events/s.

#include <benchmark/benchmark.h>

#include <string>
#include <vector>

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

void BM_Decode256(benchmark::State& state) {
  // Consecutive sequence numbers, so every message is in order (cycling through a pool of
  // payloads would look like duplicates).
  const std::vector<std::string> payloads = MakePayloads(1);
  Interner interner;
  ManualClock clock(kNow);
  MetricsRegistry metrics;
  WireDecoder decoder(WireDecoderOptions{}, interner, clock, &metrics, "bench");
  EventBatch batch;
  batch.events.reserve(kEventsPerMessage);
  // Re-encode the same events with increasing seq on the fly would cost time inside the loop;
  // instead patch the 8-byte seq in place (BatchEncoder writes it as a fixed-width uint64).
  std::string payload = payloads[0];
  const size_t seq_at = payload.find("\xa3seq\xcf") + 5;
  uint64_t seq = 0;
  for (auto _ : state) {
    ++seq;
    for (int b = 0; b < 8; ++b) payload[seq_at + b] = static_cast<char>(seq >> (56 - 8 * b));
    batch.Clear();
    DecodeResult r = decoder.Decode(payload, batch);
    benchmark::DoNotOptimize(r);
    benchmark::DoNotOptimize(batch.events.data());
  }
  if (decoder.events() != static_cast<uint64_t>(state.iterations()) * kEventsPerMessage) {
    state.SkipWithError("events were rejected");
  }
  state.SetItemsProcessed(state.iterations() * kEventsPerMessage);
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(payload.size()));
  state.counters["payload_bytes"] = static_cast<double>(payload.size());
}
BENCHMARK(BM_Decode256);

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

}  // namespace
}  // namespace inferscope

BENCHMARK_MAIN();
