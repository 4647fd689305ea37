#pragma once

// Internal to query/: the strict request reader of the query server's fast path.

#include <array>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace inferscope {

// A request head in the subset that the fast path (QueryServer, GatedServer::FastPath) serves
// without httplib: HTTP/1.1, a request target of unreserved characters only (so no percent- or
// plus-decoding can differ from httplib's), well-formed query pairs, well-formed header lines, no
// body. Every view points into the text given to ParseRawRequest.
struct RawRequest {
  static constexpr size_t kMaxParams = 16;

  std::string_view method;
  std::string_view path;  // the target before '?'
  // name=value pairs of the query, in request order.
  std::array<std::pair<std::string_view, std::string_view>, kMaxParams> params;
  size_t param_count = 0;
  // The first value of each (empty when absent), as httplib's get_header_value gives it.
  std::string_view authorization;
  std::string_view origin;
  // The first Connection header is exactly "close" (httplib's test).
  bool connection_close = false;
};

// Reads `head`: a whole request head ending in an empty line and nothing after it. False, leaving
// the request to httplib, for anything outside the subset: another version, a target with a byte
// outside [A-Za-z0-9] and -._~/:,;@!$'()*, a second '?', an empty or '='-less or doubled-'='
// query pair, more than kMaxParams pairs, a request or header line over httplib's 8192 bytes
// (with its CRLF), a header line that is not `token ":" visible-text` (obs-fold, bare CR or LF,
// control bytes), a Content-Length other than 0, Transfer-Encoding, Expect, Accept-Encoding
// (httplib compresses) or Range (httplib answers part of the body).
bool ParseRawRequest(std::string_view head, RawRequest* out);

// A route pattern (httplib's regex form) that the fast path can match without std::regex: '/'
// separated segments, each a literal of target characters or the capture "([^/]+)".
class PathPattern {
 public:
  // False when `pattern` has another form (the route is then left to httplib).
  bool Compile(std::string_view pattern);
  // Whether `path` matches the whole pattern; captures appended to `captures` (cleared first).
  bool Match(std::string_view path, std::vector<std::string_view>* captures) const;

 private:
  struct Segment {
    std::string literal;  // unused for a capture
    bool capture = false;
  };
  std::vector<Segment> segments_;
};

}  // namespace inferscope
