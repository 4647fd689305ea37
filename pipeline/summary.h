#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "pipeline/aggregate.h"
#include "pipeline/alert.h"
#include "pipeline/event.h"

namespace inferscope {

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
  Aggregate agg;
};

// What operators emit and sinks consume. One batch per operator-thread step; shared read-only by
// every sink it fans out to.
struct OutputBatch {
  std::vector<WindowSummary> summaries;
  std::vector<Alert> alerts;  // alert state changes (see pipeline/alert.h)
  int64_t watermark_ms = 0;   // the emitting operator's watermark after this step

  bool empty() const { return summaries.empty() && alerts.empty(); }
};

using OutputBatchPtr = std::shared_ptr<const OutputBatch>;

}  // namespace inferscope
