#include "pipeline/dead_letter_json.h"

#include "pipeline/interner.h"

namespace inferscope {

nlohmann::json DeadLetterJson(const DeadLetter& d, const Interner& names) {
  const Event& e = d.event;
  nlohmann::json j = {{"reason", d.reason},
                      {"watermark_ms", d.watermark_ms},
                      {"pub", names.Name(e.publisher)},
                      {"i", names.Name(e.instance)},
                      {"m", names.Name(e.model)},
                      {"t", e.time_ms}};
  if (e.kind == EventKind::kHistogram) {
    // The buckets travel in the batch, not the event: a dead letter keeps the series and the
    // interval's observation count.
    j["k"] = "h";
    j["n"] = names.Name(e.metric);
    j["count"] = e.value;
    return j;
  }
  if (e.kind == EventKind::kGauge) {
    j["k"] = "g";
    j["n"] = names.Name(e.metric);
    j["val"] = e.value;
    return j;
  }
  j["k"] = "r";
  if (e.Has(kHasE2e)) j["e2e"] = e.e2e_ms;
  if (e.Has(kHasTtft)) j["ttft"] = e.ttft_ms;
  if (e.Has(kHasTpot)) j["tpot"] = e.tpot_ms;
  if (e.Has(kHasPromptTokens)) j["pt"] = e.prompt_tokens;
  if (e.Has(kHasOutputTokens)) j["ot"] = e.output_tokens;
  if (e.Has(kHasCachedTokens)) j["ct"] = e.cached_tokens;
  if (e.Has(kHasCost)) j["cost"] = e.cost_usd;
  if (e.Has(kHasQuality)) j["q"] = e.quality;
  if (!e.ok()) j["err"] = ErrorKindName(e.error);
  return j;
}

}  // namespace inferscope
