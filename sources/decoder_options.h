#pragma once

#include "pipeline/config.h"
#include "pipeline/status.h"
#include "sources/wire_decoder.h"

namespace inferscope {

// Reads the protocol-v1 decoder limits shared by the sources that decode protocol-v1 payloads (zmq,
// jetstream) from a stage's `options` into `*d`, keeping its values as defaults: max_future_skew,
// max_past, max_events_per_message, max_string_bytes, max_message_bytes, max_publishers,
// max_strings_per_publisher. The caller checks the known fields.
Status ParseDecoderOptions(const ConfigNode& node, WireDecoderOptions* d);

}  // namespace inferscope
