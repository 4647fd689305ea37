#include "sources/decoder_options.h"

#include "pipeline/interner.h"
#include "pipeline/names.h"

namespace inferscope {

Status ParseDecoderOptions(const ConfigNode& node, WireDecoderOptions* d) {
  Result<int64_t> skew = node.GetDurationMs("max_future_skew", d->max_future_skew_ms);
  if (!skew.ok()) return skew.status();
  d->max_future_skew_ms = *skew;
  Result<int64_t> past = node.GetDurationMs("max_past", d->max_past_ms, 1);
  if (!past.ok()) return past.status();
  d->max_past_ms = *past;
  Result<int64_t> max_events =
      node.GetInt("max_events_per_message", d->max_events_per_message, 1, 1 << 24);
  if (!max_events.ok()) return max_events.status();
  d->max_events_per_message = static_cast<uint32_t>(*max_events);
  Result<int64_t> max_string =
      node.GetInt("max_string_bytes", d->max_string_bytes, 1, kMaxNameBytes);
  if (!max_string.ok()) return max_string.status();
  d->max_string_bytes = static_cast<uint32_t>(*max_string);
  Result<int64_t> max_message = node.GetInt(
      "max_message_bytes", static_cast<int64_t>(d->max_message_bytes), 16, int64_t{1} << 31);
  if (!max_message.ok()) return max_message.status();
  d->max_message_bytes = static_cast<size_t>(*max_message);
  Result<int64_t> max_publishers = node.GetInt("max_publishers", d->max_publishers, 1, 1 << 20);
  if (!max_publishers.ok()) return max_publishers.status();
  d->max_publishers = static_cast<uint32_t>(*max_publishers);
  Result<int64_t> string_share =
      node.GetInt("max_strings_per_publisher", static_cast<int64_t>(d->max_strings_per_publisher),
                  0, static_cast<int64_t>(Interner::kHardLimit));
  if (!string_share.ok()) return string_share.status();
  d->max_strings_per_publisher = static_cast<size_t>(*string_share);
  return Status::Ok();
}

}  // namespace inferscope
