// libFuzzer target: WireDecoder::Decode on arbitrary payloads (docs/PROTOCOL.md §2-§4).
//
// The input is one payload. It is decoded by fresh decoders (so that every run is deterministic):
//   1. fire-and-forget mode, default limits, twice (the second time is a duplicate);
//   2. strict-sequence (acknowledged) mode, default limits, twice;
//   3. strict-sequence mode with tight limits (3 events, 8-byte strings, a 12-string interner, a
//      64-byte message limit), so that every limit is reached from short inputs.
// Besides the sanitizers, the decoder's documented contract is checked: never throws, the result
// counts what was appended, a rejected message appends nothing, a duplicate or (strict) an
// out-of-order message is not applied.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "pipeline/clock.h"
#include "pipeline/event.h"
#include "pipeline/interner.h"
#include "sources/wire_decoder.h"

namespace inferscope {
namespace {

// Near the seeds' event times (2024-06-10), so that their events are on time.
constexpr int64_t kNowMs = 1'718'000'100'000;

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "wire_decoder_fuzzer: contract violated: %s\n", what);
  std::abort();
}

void Check(bool ok, const char* what) {
  if (!ok) Fail(what);
}

void CheckResult(const WireDecoderOptions& options, const DecodeResult& r, const EventBatch& batch,
                 size_t before, const Interner& interner) {
  Check(batch.events.size() == before + r.accepted, "events appended != accepted");
  Check(r.detail_len <= r.detail_buf.size(), "detail longer than its buffer");
  if (r.message_rejected) {
    Check(r.accepted == 0 && r.rejected == 0, "a rejected message appended or rejected events");
    Check(!r.applied, "a rejected message was applied");
    Check(IsMessageLevel(r.first_reason), "message rejected with an event-level reason");
  }
  if (r.first_reason == RejectReason::kNone) Check(r.rejected == 0, "rejections without a reason");
  if (r.sequence == SequenceVerdict::kDuplicate) Check(!r.applied, "a duplicate was applied");
  if (options.strict_sequence && r.sequence == SequenceVerdict::kGap) {
    Check(!r.applied, "strict mode applied a message ahead of the expected one");
  }
  if (!r.applied) Check(r.accepted == 0, "events accepted from a message not applied");
  Check(r.accepted <= options.max_events_per_message, "more events than max_events_per_message");
  for (size_t i = before; i < batch.events.size(); ++i) {
    const Event& e = batch.events[i];
    Check(e.time_ms > 0 && e.time_ms <= kNowMs + options.max_future_skew_ms,
          "accepted event time out of range");
    Check(e.instance != 0 && e.model != 0 && e.publisher == r.publisher, "accepted event ids");
    Check(!interner.Name(e.instance).empty() &&
              interner.Name(e.instance).size() <= options.max_string_bytes,
          "accepted instance name");
    Check(e.kind == EventKind::kRequest || e.kind == EventKind::kGauge, "accepted event kind");
    if (e.kind == EventKind::kGauge) Check(e.metric != 0, "gauge without a metric");
  }
}

void Run(const WireDecoderOptions& options, size_t max_strings, std::string_view payload) {
  Interner interner(max_strings);
  ManualClock clock(kNowMs);
  WireDecoder decoder(options, interner, clock, /*metrics=*/nullptr, "fuzz");
  EventBatch batch;
  for (int round = 0; round < 2; ++round) {
    const size_t before = batch.events.size();
    const DecodeResult r = decoder.Decode(payload, batch);
    CheckResult(options, r, batch, before, interner);
    if (round == 1 && r.applied && r.sequence != SequenceVerdict::kNone) {
      Fail("the same message was applied twice");
    }
  }
  Check(decoder.messages() == 2, "messages() does not count every Decode");
}

}  // namespace
}  // namespace inferscope

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace inferscope;
  const std::string_view payload(reinterpret_cast<const char*>(data), size);

  WireDecoderOptions fire_and_forget;
  Run(fire_and_forget, 1'000'000, payload);

  WireDecoderOptions strict;
  strict.strict_sequence = true;
  Run(strict, 1'000'000, payload);

  WireDecoderOptions tight;
  tight.strict_sequence = true;
  tight.max_events_per_message = 3;
  tight.max_string_bytes = 8;
  tight.max_message_bytes = 64;
  tight.max_future_skew_ms = 1000;
  tight.max_past_ms = 1000;
  Run(tight, 12, payload);
  return 0;
}
