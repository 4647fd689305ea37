// libFuzzer target: WireDecoder::Decode on arbitrary payloads (docs/PROTOCOL.md §2-§4).
//
// The input is one payload. It is decoded by decoders as good as fresh (Reset()):
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
#include <memory>
#include <string_view>

#include "pipeline/clock.h"
#include "pipeline/event.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
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
  if (r.sequence == SequenceVerdict::kLate) {
    Check(!options.strict_sequence, "strict mode found a late message (it never applies gaps)");
    Check(r.applied && r.missing == 0, "a late message not applied, or with messages missing");
  }
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

// The string table, the metrics registry and the decoder outlive a run (building them costs more
// than a decode: the decoder's two name caches and its counter look-ups were 58 % of an input's
// time); they are replaced every kRenewEvery runs and when the table is nearly full, so that names
// interned by earlier inputs cannot change the verdicts for long. Between runs the decoder is
// Reset(): every publisher and sequence position is forgotten, as in a fresh decoder.
struct Shared {
  Shared(const WireDecoderOptions& options, size_t max_strings)
      : options(options), max_strings(max_strings) {
    Renew();
  }
  void Renew() {
    decoder.reset();
    interner = std::make_unique<Interner>(max_strings);
    metrics = std::make_unique<MetricsRegistry>();
    decoder = std::make_unique<WireDecoder>(options, *interner, clock, metrics.get(), "fuzz");
    runs = 0;
  }
  const WireDecoderOptions options;
  const size_t max_strings;
  ManualClock clock{kNowMs};
  std::unique_ptr<Interner> interner;
  std::unique_ptr<MetricsRegistry> metrics;
  std::unique_ptr<WireDecoder> decoder;
  int runs = 0;
};
constexpr int kRenewEvery = 1000;

void Run(Shared& shared, std::string_view payload) {
  if (++shared.runs > kRenewEvery ||
      shared.interner->size() + shared.max_strings / 8 >= shared.interner->max_strings()) {
    shared.Renew();
  } else {
    shared.decoder->Reset();
  }
  const WireDecoderOptions& options = shared.options;
  Interner& interner = *shared.interner;
  WireDecoder& decoder = *shared.decoder;
  Check(decoder.messages() == 0 && decoder.publishers() == 0 && decoder.sequence_positions() == 0,
        "Reset() left state behind");
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

  static Shared fire_and_forget(WireDecoderOptions{}, 1'000'000);
  Run(fire_and_forget, payload);

  static const WireDecoderOptions strict = [] {
    WireDecoderOptions o;
    o.strict_sequence = true;
    return o;
  }();
  static Shared strict_shared(strict, 1'000'000);
  Run(strict_shared, payload);

  // Tight limits; 12 strings: the interner starts with 8 well-known names, so the table fills up.
  static const WireDecoderOptions tight = [] {
    WireDecoderOptions o;
    o.strict_sequence = true;
    o.max_events_per_message = 3;
    o.max_string_bytes = 8;
    o.max_message_bytes = 64;
    o.max_future_skew_ms = 1000;
    o.max_past_ms = 1000;
    return o;
  }();
  static Shared tight_shared(tight, 12);
  Run(tight_shared, payload);
  return 0;
}
