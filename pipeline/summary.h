#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "pipeline/aggregate.h"
#include "pipeline/alert.h"
#include "pipeline/event.h"

namespace inferscope {

struct PendingCheckpoint;  // pipeline/checkpoint.h

// A series is one metric of one model on one instance.
struct SeriesKey {
  StringId instance = 0;
  StringId model = 0;
  StringId metric = 0;
  bool operator==(const SeriesKey&) const = default;
};

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
  std::vector<Alert> alerts;  // alert state changes (see pipeline/alert.h)
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
