#pragma once

// Topics of inferscope's stream sinks (docs/PROTOCOL.md, "Topics"): subscription prefixes for the
// summary stream ("summaries.<instance>.<model>.") and the alert stream
// ("alerts.<severity>.<instance>.<model>."), and the names a received topic carries. Depends on
// nothing but the standard library.
//
// Every name in a topic is escaped — '.', '%' and every byte outside printable ASCII 0x21..0x7E
// become '%' and two uppercase hex digits — and followed by '.', so a prefix built here selects
// exactly the names given: SummaryTopicPrefix("vllm-1") is "summaries.vllm-1.", which instance
// "vllm-1.eu" (topic "summaries.vllm-1%2Eeu.<model>.") does not match.
//
//   sub.set(zmq::sockopt::subscribe, inferscope::client::SummaryTopicPrefix("vllm-1"));
//   sub.set(zmq::sockopt::subscribe,
//           inferscope::client::AlertTopicPrefix("critical", "10.0.0.5", "llama-3.1-8b"));

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace inferscope::client {

// `name` escaped for a topic segment (without the terminating '.').
std::string EscapeTopicName(std::string_view name);
// The name an escaped segment stands for; nullopt when it holds a raw '.' or a bad '%' escape.
std::optional<std::string> UnescapeTopicName(std::string_view segment);

// The subscription prefix for the summaries of one instance ("summaries.<instance>."), or of one
// instance and model ("summaries.<instance>.<model>."). An empty instance gives "summaries." (all
// summaries); a model without an instance is not a prefix and is ignored.
std::string SummaryTopicPrefix(std::string_view instance = {}, std::string_view model = {});

// The subscription prefix for alerts: "alerts." (all), "alerts.<severity>." (one severity:
// info, warning, critical, emergency), "alerts.<severity>.<instance>." or
// "alerts.<severity>.<instance>.<model>.". Arguments after the first empty one are ignored.
std::string AlertTopicPrefix(std::string_view severity = {}, std::string_view instance = {},
                             std::string_view model = {});

// The unescaped names of a received topic: {"summaries", instance, model} or
// {"alerts", severity, instance, model}; nullopt when the topic is not in this format.
std::optional<std::vector<std::string>> ParseTopic(std::string_view topic);

}  // namespace inferscope::client
