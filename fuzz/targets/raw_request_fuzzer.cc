// libFuzzer target: the query server's fast-path request reader (query/raw_request.h).
//
// Input: any bytes, given whole to ParseRawRequest as the request text the gate hands the fast
// path. When it accepts, checked besides the sanitizers:
//  * every view (method, path, parameter names and values, authorization, origin) lies inside
//    the input and holds no CR or LF;
//  * the method is one or more upper-case ASCII letters, the path starts with '/', every parameter
//    has a name, param_count <= kMaxParams;
//  * the input's first empty line is its end (CRLF CRLF found only as its last four bytes), and it
//    holds no CR or LF outside a CRLF pair: the gate (Inspect), which measures a request up to its
//    first empty line, and the reader agree where the request ends;
//  * parsing again gives the same result.
// PathPattern::Match of the compiled route patterns of the fast path (a capture route, a literal
// route, and a two-capture pattern) on the accepted path and on the raw input: a match never yields
// an empty capture or one holding '/', and it agrees with std::regex_match of the same pattern (as
// httplib routes), captures included. PathPattern::Compile of the input's first line must not fail
// any sanitizer check, and a pattern it compiles (the line's text before its first space) matches
// the rest of the line as std::regex_match does.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "query/raw_request.h"

namespace inferscope {
namespace {

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "raw_request_fuzzer: %s\n", what);
  std::abort();
}

// A route pattern, compiled both ways.
struct Compiled {
  PathPattern fast;
  std::regex regex;
};

Compiled Compile(const char* pattern) {
  Compiled c{PathPattern(), std::regex(pattern)};
  if (!c.fast.Compile(pattern)) Fail("a route pattern of the fast path does not compile");
  return c;
}

const std::vector<Compiled>& Patterns() {
  static const std::vector<Compiled> patterns = [] {
    std::vector<Compiled> v;
    v.push_back(Compile("/v1/instances/([^/]+)/summary"));
    v.push_back(Compile("/v1/series"));
    v.push_back(Compile("/v1/a/([^/]+)/b/([^/]+)"));
    return v;
  }();
  return patterns;
}

bool Inside(std::string_view view, std::string_view input) {
  if (view.empty()) return true;
  return view.data() >= input.data() && view.data() + view.size() <= input.data() + input.size();
}

void CheckView(std::string_view view, std::string_view input) {
  if (!Inside(view, input)) Fail("a view lies outside the input");
  if (view.find_first_of("\r\n") != std::string_view::npos) Fail("a view holds CR or LF");
}

// PathPattern::Match against std::regex_match (httplib's routing) on `path`.
void CheckMatch(const PathPattern& fast, const std::regex& regex, std::string_view path) {
  std::vector<std::string_view> captures;
  const bool matched = fast.Match(path, &captures);
  if (matched) {
    for (std::string_view capture : captures) {
      if (capture.empty()) Fail("an empty capture");
      if (capture.find('/') != std::string_view::npos) Fail("a capture holding '/'");
      if (!Inside(capture, path)) Fail("a capture outside the path");
    }
  }
  const std::string text(path);
  std::smatch m;
  const bool regex_matched = std::regex_match(text, m, regex);
  if (matched != regex_matched) Fail("PathPattern::Match and std::regex_match disagree");
  if (!matched) return;
  if (m.size() != captures.size() + 1) Fail("capture counts differ from std::regex_match");
  for (size_t i = 0; i < captures.size(); ++i) {
    if (m[i + 1].str() != captures[i]) Fail("a capture differs from std::regex_match's");
  }
}

void CheckRequest(std::string_view input, const RawRequest& r) {
  if (r.method.empty()) Fail("an empty method");
  for (char c : r.method) {
    if (c < 'A' || c > 'Z') Fail("a method byte that is not an upper-case letter");
  }
  if (r.path.empty() || r.path.front() != '/') Fail("a path that does not start with '/'");
  if (r.param_count > RawRequest::kMaxParams) Fail("param_count over kMaxParams");
  CheckView(r.method, input);
  CheckView(r.path, input);
  for (size_t i = 0; i < r.param_count; ++i) {
    if (r.params[i].first.empty()) Fail("a parameter without a name");
    CheckView(r.params[i].first, input);
    CheckView(r.params[i].second, input);
  }
  CheckView(r.authorization, input);
  CheckView(r.origin, input);
  // Where the request ends: its first empty line, which is the input's end.
  if (input.size() < 4 || input.find("\r\n\r\n") != input.size() - 4) {
    Fail("accepted text whose first empty line is not its end");
  }
  for (size_t i = 0; i < input.size(); ++i) {
    const bool cr = input[i] == '\r';
    const bool lf = input[i] == '\n';
    if (cr && (i + 1 == input.size() || input[i + 1] != '\n')) Fail("a bare CR accepted");
    if (lf && (i == 0 || input[i - 1] != '\r')) Fail("a bare LF accepted");
  }
  RawRequest again;
  if (!ParseRawRequest(input, &again) || again.method != r.method || again.path != r.path ||
      again.param_count != r.param_count || again.authorization != r.authorization ||
      again.origin != r.origin || again.connection_close != r.connection_close) {
    Fail("parsing again gives another result");
  }
}

}  // namespace
}  // namespace inferscope

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace inferscope;
  if (size > 32 * 1024) return -1;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  RawRequest r;
  if (ParseRawRequest(input, &r)) {
    CheckRequest(input, r);
    for (const Compiled& p : Patterns()) CheckMatch(p.fast, p.regex, r.path);
  }
  // std::regex recurses per character: keep its inputs short.
  if (size > 512) return 0;
  const std::string_view line = input.substr(0, input.find('\n'));
  for (const Compiled& p : Patterns()) CheckMatch(p.fast, p.regex, line);
  // The first line as "<pattern> <path>".
  const size_t space = line.find(' ');
  const std::string_view pattern = line.substr(0, space);
  const std::string_view path = space == std::string_view::npos ? "" : line.substr(space + 1);
  PathPattern own;
  if (own.Compile(pattern)) {
    // A pattern the fast path takes is also a regular expression httplib would route by.
    std::regex regex;
    try {
      regex = std::regex(std::string(pattern));
    } catch (const std::regex_error&) {
      Fail("PathPattern::Compile took a pattern that is no regular expression");
    }
    CheckMatch(own, regex, path);
  }
  return 0;
}
