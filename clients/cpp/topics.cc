#include "clients/cpp/topics.h"

#include <utility>

namespace inferscope::client {
namespace {

constexpr char kHex[] = "0123456789ABCDEF";

bool NeedsEscape(unsigned char c) { return c < 0x21 || c > 0x7e || c == '.' || c == '%'; }

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

void AppendSegment(std::string& topic, std::string_view name) {
  topic += EscapeTopicName(name);
  topic += '.';
}

}  // namespace

std::string EscapeTopicName(std::string_view name) {
  std::string out;
  out.reserve(name.size());
  for (const char ch : name) {
    const auto c = static_cast<unsigned char>(ch);
    if (NeedsEscape(c)) {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0x0f];
    } else {
      out += ch;
    }
  }
  return out;
}

std::optional<std::string> UnescapeTopicName(std::string_view segment) {
  std::string out;
  out.reserve(segment.size());
  for (size_t i = 0; i < segment.size(); ++i) {
    const char c = segment[i];
    if (c == '.') return std::nullopt;
    if (c != '%') {
      out += c;
      continue;
    }
    if (i + 2 >= segment.size()) return std::nullopt;
    const int hi = HexValue(segment[i + 1]);
    const int lo = HexValue(segment[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi << 4 | lo);
    i += 2;
  }
  return out;
}

std::string SummaryTopicPrefix(std::string_view instance, std::string_view model) {
  std::string prefix = "summaries.";
  if (instance.empty()) return prefix;
  AppendSegment(prefix, instance);
  if (!model.empty()) AppendSegment(prefix, model);
  return prefix;
}

std::string AlertTopicPrefix(std::string_view severity, std::string_view instance,
                             std::string_view model) {
  std::string prefix = "alerts.";
  if (severity.empty()) return prefix;
  AppendSegment(prefix, severity);
  if (instance.empty()) return prefix;
  AppendSegment(prefix, instance);
  if (!model.empty()) AppendSegment(prefix, model);
  return prefix;
}

std::optional<std::vector<std::string>> ParseTopic(std::string_view topic) {
  if (topic.empty() || topic.back() != '.') return std::nullopt;
  std::vector<std::string> names;
  size_t start = 0;
  while (start < topic.size()) {
    const size_t dot = topic.find('.', start);
    std::optional<std::string> name = UnescapeTopicName(topic.substr(start, dot - start));
    if (!name) return std::nullopt;
    names.push_back(std::move(*name));
    start = dot + 1;
  }
  const bool summary = names[0] == "summaries" && names.size() == 3;
  const bool alert = names[0] == "alerts" && names.size() == 4;
  if (!summary && !alert) return std::nullopt;
  return names;
}

}  // namespace inferscope::client
