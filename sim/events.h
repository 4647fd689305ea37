#pragma once

// The engine's events for what a simulation produces, for tests and benchmarks that drive the
// operators in-process (`inferscope simulate` publishes the same fields over the wire). Event
// time = `t0_ms` + simulated time.

#include <cstdint>

#include "pipeline/event.h"
#include "sim/serving_model.h"

namespace inferscope::sim {

// Which interned names an instance's events carry.
struct EventNames {
  StringId instance = 0;
  StringId model = 0;
  StringId publisher = 0;
};

// A request event: e2e and token counts always, ttft/tpot when the request got that far, the
// error kind by its wire name.
Event RequestEvent(const RequestOutcome& outcome, int64_t t0_ms, const EventNames& names);

// A gauge event of metric `metric` (the interned name of sample.gauge).
Event GaugeEvent(const GaugeSample& sample, int64_t t0_ms, const EventNames& names,
                 StringId metric);

}  // namespace inferscope::sim
