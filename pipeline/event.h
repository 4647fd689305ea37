#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

namespace inferscope {

// Interned string id (see Interner). 0 is never a valid id.
using StringId = uint32_t;

enum class EventKind : uint8_t {
  kRequest = 1,  // the outcome of one inference request
  kGauge = 2,    // a sampled value (kv_cache_usage, num_requests_waiting, ...)
  // The bucket-count deltas of one latency histogram series over a scrape interval (Prometheus
  // sources): the buckets are in EventBatch::histograms[Event::histogram].
  kHistogram = 3,
};

// Why a request failed. On the wire this is the string in the "err" field.
enum class ErrorKind : uint8_t {
  kNone = 0,
  kTimeout,
  kRateLimited,
  kServerError,
  kClientError,
  kCancelled,
  kOther,
};
inline constexpr int kNumErrorKinds = 7;

// "timeout", "rate_limited", "server_error", "client_error", "cancelled", "other" ("" for kNone).
std::string_view ErrorKindName(ErrorKind kind);
// Parses a wire error kind; unknown strings map to kOther (the set may grow on the publisher side).
ErrorKind ParseErrorKind(std::string_view name);

// Bits of Event::present: which optional request fields the publisher sent.
enum RequestField : uint16_t {
  kHasTtft = 1 << 0,
  kHasTpot = 1 << 1,
  kHasE2e = 1 << 2,
  kHasPromptTokens = 1 << 3,
  kHasOutputTokens = 1 << 4,
  kHasCachedTokens = 1 << 5,
  kHasCost = 1 << 6,
  kHasQuality = 1 << 7,
};

// One decoded event. A plain value type: strings are interned ids, so an Event never owns memory
// and batches of them are reused without allocation.
//
// Units are fixed: times in milliseconds since the Unix epoch, latencies in milliseconds, cost in
// US dollars, quality in [0, 1], tokens as counts.
struct Event {
  int64_t time_ms = 0;  // event time
  StringId instance = 0;
  StringId model = 0;
  StringId publisher = 0;
  EventKind kind = EventKind::kGauge;
  ErrorKind error = ErrorKind::kNone;  // requests only
  uint16_t present = 0;                // requests only: RequestField bits

  // kGauge: the metric name and its value. kHistogram: the metric the buckets describe (ttft_ms,
  // tpot_ms, e2e_ms, queue_time_ms) and, in `value`, the sum delta of the interval.
  StringId metric = 0;
  // kHistogram: index of the buckets in the carrying EventBatch's `histograms` (fills padding:
  // sizeof(Event) is unchanged, static_assert below).
  uint32_t histogram = 0;
  double value = 0;

  // kRequest: fields valid when their RequestField bit is set.
  double ttft_ms = 0;
  double tpot_ms = 0;
  double e2e_ms = 0;
  double cost_usd = 0;
  double quality = 0;
  uint32_t prompt_tokens = 0;
  uint32_t output_tokens = 0;
  uint32_t cached_tokens = 0;

  bool Has(RequestField f) const { return (present & f) != 0; }
  bool ok() const { return error == ErrorKind::kNone; }
};

static_assert(sizeof(Event) == 96, "Event grew: the hot path copies and scans these");

// The bucket deltas of one histogram series over one interval (EventKind::kHistogram): bucket i
// holds the observations in (upper[i-1], upper[i]] (the first bucket: (0, upper[0]], or
// (-inf, upper[0]] when its bound is negative); the last bound may be +Inf. Non-cumulative,
// non-negative counts. Fixed capacity so a reused EventBatch never allocates for them.
struct HistogramDelta {
  // vLLM, SGLang and TGI latency histograms have 8-30 buckets; the limit leaves room for custom
  // bucket layouts. A series with more buckets is refused (counted as `histogram_buckets`).
  static constexpr uint32_t kMaxBuckets = 64;
  uint32_t buckets = 0;  // used entries of upper/count
  double upper[kMaxBuckets];
  double count[kMaxBuckets];
  double sum = 0;    // Δ_sum over the interval (in the metric's unit, ms for latencies)
  double total = 0;  // Δ_count over the interval (the sum of `count`)
};

// The sequence number of a message a source handed on (applied, or refused for good and so
// consumed): once the batch carrying it has been processed, the message's effect is part of the
// next checkpoint. Acknowledged mode numbers messages per publisher *incarnation*
// (docs/PROTOCOL.md §9); `prev_*` keep the incarnation that came before, so that its resent
// messages are still recognised as duplicates.
struct AppliedSequence {
  StringId publisher = 0;
  uint64_t incarnation = 0;  // 0: a publisher that sends none (legacy)
  uint64_t seq = 0;
  bool has_prev = false;
  uint64_t prev_incarnation = 0;
  uint64_t prev_seq = 0;  // the last sequence number consumed in prev_incarnation
};

// A batch of events from one source message (or several). Batches are pooled and reused: clear()
// keeps the capacity, so the steady state allocates nothing.
struct EventBatch {
  std::vector<Event> events;
  StringId publisher = 0;  // the publisher of every event in the batch (0 when mixed or unknown)
  int64_t received_ns =
      0;                // monotonic receive time of the message that filled it (latency tracking)
  uint32_t source = 0;  // index of the emitting source; set by the engine, not by sources
  // The messages whose events the batch carries, in order (sources that track sequence numbers).
  std::vector<AppliedSequence> sequences;
  // Bucket arrays of the batch's kHistogram events (Event::histogram indexes it).
  std::vector<HistogramDelta> histograms;

  // The buckets of a kHistogram event of this batch, or null when its index is out of range.
  const HistogramDelta* HistogramOf(const Event& e) const {
    return e.kind == EventKind::kHistogram && e.histogram < histograms.size()
               ? &histograms[e.histogram]
               : nullptr;
  }

  void Clear() {
    events.clear();
    sequences.clear();
    histograms.clear();
    publisher = 0;
    received_ns = 0;
    source = 0;
  }
};

using EventBatchPtr = std::unique_ptr<EventBatch>;

}  // namespace inferscope
