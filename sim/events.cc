#include "sim/events.h"

namespace inferscope::sim {

Event RequestEvent(const RequestOutcome& o, int64_t t0_ms, const EventNames& names) {
  Event e;
  e.kind = EventKind::kRequest;
  e.time_ms = t0_ms + static_cast<int64_t>(o.time_ms);
  e.instance = names.instance;
  e.model = names.model;
  e.publisher = names.publisher;
  e.error = o.ok() ? ErrorKind::kNone : ParseErrorKind(ErrorName(o.error));
  e.present = kHasE2e | kHasPromptTokens | kHasOutputTokens | kHasCachedTokens;
  e.e2e_ms = o.e2e_ms;
  if (o.ttft_ms >= 0) {
    e.present |= kHasTtft;
    e.ttft_ms = o.ttft_ms;
  }
  if (o.tpot_ms >= 0) {
    e.present |= kHasTpot;
    e.tpot_ms = o.tpot_ms;
  }
  e.prompt_tokens = o.prompt_tokens;
  e.output_tokens = o.output_tokens;
  e.cached_tokens = o.cached_tokens;
  return e;
}

Event GaugeEvent(const GaugeSample& g, int64_t t0_ms, const EventNames& names, StringId metric) {
  Event e;
  e.kind = EventKind::kGauge;
  e.time_ms = t0_ms + static_cast<int64_t>(g.time_ms);
  e.instance = names.instance;
  e.model = names.model;
  e.publisher = names.publisher;
  e.metric = metric;
  e.value = g.value;
  return e;
}

}  // namespace inferscope::sim
