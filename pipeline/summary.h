#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "alerting/alert.h"
#include "pipeline/event.h"
#include "values/aggregate.h"

namespace inferscope {

struct PendingCheckpoint;  // pipeline/checkpoint.h

// A series is one metric of one model on one instance.
struct SeriesKey {
  StringId instance = 0;
  StringId model = 0;
  StringId metric = 0;
  bool operator==(const SeriesKey&) const = default;
};

// Hash of a series given as (instance << 32 | model, metric), for the operators' open-addressing
// tables: the metric is spread by a golden-ratio multiply, then MurmurHash3's 64-bit finalizer
// mixes every bit into the high bits the tables index with.
inline uint64_t SeriesHash(uint64_t instance_model, uint32_t metric) {
  uint64_t h = instance_model ^ (static_cast<uint64_t>(metric) * 0x9E3779B97F4A7C15ULL);
  h ^= h >> 33;
  h *= 0xFF51AFD7ED558CCDULL;
  h ^= h >> 33;
  h *= 0xC4CEB9FE1A85EC53ULL;
  h ^= h >> 33;
  return h;
}

// The aggregate of one series over [start_ms, end_ms), emitted when a window closes.
struct WindowSummary {
  SeriesKey series;
  int64_t start_ms = 0;
  int64_t end_ms = 0;
  int64_t max_event_time_ms = 0;  // latest event time that contributed
  // True when this replaces a result emitted before for the same series and interval (late events
  // within the allowed lateness arrived); consumers upsert.
  bool update = false;
  Aggregate agg;
};

// An event that could not be applied after it was accepted by a source (for example, it arrived
// after its pane's allowed lateness). Kept with its reason so nothing is dropped silently.
struct DeadLetter {
  Event event;
  std::string_view reason;   // a static string, e.g. "too_late"
  int64_t watermark_ms = 0;  // the operator's watermark when the event was refused
};

// What operators emit and sinks consume. One batch per operator-thread step; shared read-only by
// every sink it fans out to.
struct OutputBatch {
  std::vector<WindowSummary> summaries;
  std::vector<Alert> alerts;  // alert state changes (see alerting/alert.h)
  std::vector<DeadLetter> dead_letters;
  // Set on the batches the executor sends to checkpoint-writing sinks (and on nothing else).
  std::shared_ptr<const PendingCheckpoint> checkpoint;
  int64_t watermark_ms = 0;  // the emitting operator's watermark after this step

  bool empty() const {
    return summaries.empty() && alerts.empty() && dead_letters.empty() && checkpoint == nullptr;
  }
};

using OutputBatchPtr = std::shared_ptr<const OutputBatch>;

}  // namespace inferscope
