#include "query/raw_request.h"

#include <array>
#include <cstdint>
#include <utility>

namespace inferscope {
namespace {

constexpr std::string_view kCrlf = "\r\n";
// httplib answers 414 to a longer request line (CPPHTTPLIB_REQUEST_URI_MAX_LENGTH) and 400 to a
// longer header line (CPPHTTPLIB_HEADER_MAX_LENGTH), both counted with their CRLF.
constexpr size_t kMaxLineBytes = 8192;

// Byte classes: a request-target byte the fast path takes as is, and an RFC 9110 token byte.
struct Classes {
  std::array<bool, 256> target{};
  std::array<bool, 256> token{};
  constexpr Classes() {
    for (int c = 0; c < 256; ++c) {
      const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
      target[static_cast<size_t>(c)] = alnum;
      token[static_cast<size_t>(c)] = alnum;
    }
    for (char c : std::string_view("-._~/:,;@!$'()*")) target[static_cast<uint8_t>(c)] = true;
    for (char c : std::string_view("!#$%&'*+-.^_`|~")) token[static_cast<uint8_t>(c)] = true;
  }
};
constexpr Classes kClasses;

bool AllOf(std::string_view s, const std::array<bool, 256>& cls) {
  for (char c : s) {
    if (!cls[static_cast<uint8_t>(c)]) return false;
  }
  return true;
}

char Lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool EqualsLower(std::string_view s, std::string_view lower) {
  if (s.size() != lower.size()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    if (Lower(s[i]) != lower[i]) return false;
  }
  return true;
}

// Visible ASCII but '%', space and tab: what a header value may hold here.
bool ValueBytes(std::string_view s) {
  for (char c : s) {
    const auto b = static_cast<uint8_t>(c);
    if ((b != '\t' && (b < 0x20 || b > 0x7e)) || b == '%') return false;
  }
  return true;
}

std::string_view TrimSpaces(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool ParseQuery(std::string_view query, RawRequest* out) {
  while (true) {
    const size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    const size_t eq = pair.find('=');
    if (eq == 0 || eq == std::string_view::npos ||
        pair.find('=', eq + 1) != std::string_view::npos ||
        out->param_count == RawRequest::kMaxParams) {
      return false;
    }
    out->params[out->param_count++] = {pair.substr(0, eq), pair.substr(eq + 1)};
    if (amp == std::string_view::npos) return true;
    query.remove_prefix(amp + 1);
  }
}

bool ParseRequestLine(std::string_view line, RawRequest* out) {
  if (line.size() + kCrlf.size() > kMaxLineBytes) return false;
  const size_t sp1 = line.find(' ');
  if (sp1 == 0 || sp1 == std::string_view::npos) return false;
  out->method = line.substr(0, sp1);
  for (char c : out->method) {
    if (c < 'A' || c > 'Z') return false;
  }
  std::string_view rest = line.substr(sp1 + 1);
  const size_t sp2 = rest.find(' ');
  if (sp2 == std::string_view::npos || rest.substr(sp2 + 1) != "HTTP/1.1") return false;
  const std::string_view target = rest.substr(0, sp2);
  const size_t question = target.find('?');
  out->path = target.substr(0, question);
  if (out->path.empty() || out->path.front() != '/' || !AllOf(out->path, kClasses.target)) {
    return false;
  }
  if (question == std::string_view::npos) return true;
  const std::string_view query = target.substr(question + 1);
  for (char c : query) {
    if (!kClasses.target[static_cast<uint8_t>(c)] && c != '&' && c != '=') return false;
  }
  return ParseQuery(query, out);
}

// Which of the headers the fast path reads have been seen (the first one counts).
struct Seen {
  bool authorization = false;
  bool origin = false;
  bool connection = false;
};

// One header line; false when it is malformed or asks for what the fast path does not do. httplib
// percent-decodes header values and skips lines with an empty value, so such lines are left to it;
// it compresses the response when Accept-Encoding names a coding it was built with, and answers a
// Range with part of the body (or 416), so those headers, whatever their value, are left to it too.
bool ParseHeaderLine(std::string_view line, RawRequest* out, Seen* seen) {
  const size_t colon = line.find(':');
  if (colon == 0 || colon == std::string_view::npos || line.size() + kCrlf.size() > kMaxLineBytes) {
    return false;
  }
  const std::string_view name = line.substr(0, colon);
  const std::string_view raw_value = line.substr(colon + 1);
  if (!AllOf(name, kClasses.token) || !ValueBytes(raw_value)) return false;
  const std::string_view value = TrimSpaces(raw_value);
  if (value.empty()) return false;
  if (EqualsLower(name, "content-length")) return value == "0";
  if (EqualsLower(name, "transfer-encoding") || EqualsLower(name, "expect") ||
      EqualsLower(name, "accept-encoding") || EqualsLower(name, "range")) {
    return false;
  }
  if (EqualsLower(name, "authorization")) {
    if (!std::exchange(seen->authorization, true)) out->authorization = value;
  } else if (EqualsLower(name, "origin")) {
    if (!std::exchange(seen->origin, true)) out->origin = value;
  } else if (EqualsLower(name, "connection")) {
    if (!std::exchange(seen->connection, true)) out->connection_close = value == "close";
  }
  return true;
}

}  // namespace

bool ParseRawRequest(std::string_view head, RawRequest* out) {
  *out = RawRequest{};
  if (head.size() < 4 || head.substr(head.size() - 4) != "\r\n\r\n") return false;
  head.remove_suffix(2);  // each line, the last included, now ends in CRLF
  size_t end = head.find(kCrlf);
  if (!ParseRequestLine(head.substr(0, end), out)) return false;
  head.remove_prefix(end + kCrlf.size());
  Seen seen;
  while (!head.empty()) {
    end = head.find(kCrlf);  // found: head ends in CRLF
    const std::string_view line = head.substr(0, end);
    // A bare CR or LF inside a line (httplib's reader would split or keep it differently).
    if (line.find_first_of("\r\n") != std::string_view::npos) return false;
    if (!ParseHeaderLine(line, out, &seen)) return false;
    head.remove_prefix(end + kCrlf.size());
  }
  return true;
}

bool PathPattern::Compile(std::string_view pattern) {
  segments_.clear();
  if (pattern.empty() || pattern.front() != '/') return false;
  pattern.remove_prefix(1);
  static constexpr std::string_view kCapture = "([^/]+)";
  while (true) {
    if (pattern.starts_with(kCapture)) {
      // (the capture holds a '/', so it is taken before the pattern is split at one)
      segments_.push_back({std::string(), true});
      pattern.remove_prefix(kCapture.size());
      if (pattern.empty()) return true;
      if (pattern.front() != '/') return false;
      pattern.remove_prefix(1);
      continue;
    }
    const size_t slash = pattern.find('/');
    const std::string_view segment = pattern.substr(0, slash);
    if (!segment.empty() && AllOf(segment, kClasses.target) &&
        segment.find_first_of(".*()$") == std::string_view::npos) {
      // (regex metacharacters among the target bytes are refused: such a literal is not one)
      segments_.push_back({std::string(segment), false});
    } else {
      return false;
    }
    if (slash == std::string_view::npos) return true;
    pattern.remove_prefix(slash + 1);
  }
}

bool PathPattern::Match(std::string_view path, std::vector<std::string_view>* captures) const {
  captures->clear();
  if (segments_.empty() || path.empty() || path.front() != '/') return false;
  path.remove_prefix(1);
  for (size_t i = 0; i < segments_.size(); ++i) {
    const size_t slash = path.find('/');
    const bool last = i + 1 == segments_.size();
    if (last != (slash == std::string_view::npos)) return false;
    const std::string_view segment = path.substr(0, slash);
    if (segments_[i].capture) {
      if (segment.empty()) return false;
      captures->push_back(segment);
    } else if (segment != segments_[i].literal) {
      return false;
    }
    if (!last) path.remove_prefix(slash + 1);
  }
  return true;
}

}  // namespace inferscope
