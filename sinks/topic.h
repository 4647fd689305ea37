#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace inferscope {

// Topics of the stream sinks (docs/PROTOCOL.md, "Topics"): "summaries.<instance>.<model>." and
// "alerts.<severity>.<instance>.<model>.", every name escaped and followed by a '.'.
//
// Escaping: every byte of a name that is '.', '%', or outside the printable ASCII range
// 0x21..0x7E (space, control bytes, DEL, every byte of a non-ASCII character) is written as '%'
// and two uppercase hex digits; every other byte is itself. So a segment never holds a raw '.',
// the topic splits into its names at the dots, and the prefix up to any segment's terminating '.'
// selects exactly that name: "summaries.vllm-1." matches instance "vllm-1" but not "vllm-1.eu"
// (topic "summaries.vllm-1%2Eeu.<model>."). "llama-3.1-8b" is written "llama-3%2E1-8b".
// The same rule is implemented by the clients (clients/cpp/topics.h, clients/python).

// Appends the escaped `name` followed by '.' to `topic`. No allocation when `topic` has the
// capacity.
void AppendTopicSegment(std::string& topic, std::string_view name);
// The escaped `name`, without the trailing '.'.
std::string EscapeTopicName(std::string_view name);
// The name an escaped segment stands for; nullopt when `segment` holds a raw '.', or a '%' not
// followed by two hex digits.
std::optional<std::string> UnescapeTopicName(std::string_view segment);
// The unescaped names of a topic: "summaries.a%2Eb.m." → {"summaries", "a.b", "m"}; nullopt when
// the topic does not end with '.' or a segment does not unescape.
std::optional<std::vector<std::string>> SplitTopic(std::string_view topic);

}  // namespace inferscope
