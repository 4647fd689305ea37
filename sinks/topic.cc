#include "sinks/topic.h"

#include <utility>

namespace inferscope {
namespace {

constexpr char kHex[] = "0123456789ABCDEF";

inline bool NeedsEscape(unsigned char c) { return c < 0x21 || c > 0x7e || c == '.' || c == '%'; }

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

}  // namespace

void AppendTopicSegment(std::string& topic, std::string_view name) {
  size_t plain = 0;  // bytes before the first one to escape: appended in one go
  while (plain < name.size() && !NeedsEscape(static_cast<unsigned char>(name[plain]))) ++plain;
  topic.append(name.data(), plain);
  for (size_t i = plain; i < name.size(); ++i) {
    const auto c = static_cast<unsigned char>(name[i]);
    if (NeedsEscape(c)) {
      const char escaped[3] = {'%', kHex[c >> 4], kHex[c & 0x0f]};
      topic.append(escaped, 3);
    } else {
      topic.push_back(static_cast<char>(c));
    }
  }
  topic.push_back('.');
}

std::string EscapeTopicName(std::string_view name) {
  std::string out;
  AppendTopicSegment(out, name);
  out.pop_back();
  return out;
}

std::optional<std::string> UnescapeTopicName(std::string_view segment) {
  std::string out;
  out.reserve(segment.size());
  for (size_t i = 0; i < segment.size(); ++i) {
    const char c = segment[i];
    if (c == '.') return std::nullopt;
    if (c != '%') {
      out.push_back(c);
      continue;
    }
    if (i + 2 >= segment.size()) return std::nullopt;
    const int hi = HexValue(segment[i + 1]);
    const int lo = HexValue(segment[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>(hi << 4 | lo));
    i += 2;
  }
  return out;
}

std::optional<std::vector<std::string>> SplitTopic(std::string_view topic) {
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
  return names;
}

}  // namespace inferscope
