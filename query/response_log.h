#pragma once

// A log of every response the query API sends, for the tests that check the API against its
// OpenAPI document (tests/query/validate_openapi.py). Off unless the environment variable
// INFERSCOPE_API_RECORD_DIR names a directory: then each process appends one JSON line per
// response to <dir>/api-<pid>.jsonl:
//   {"method", "route" (the route's path template, null when no route matched), "path", "status",
//    "content_type", "body" (the body as sent, a string)}
// at most kMaxRecords lines per process (further responses are counted in a last line
// {"dropped": n} written at exit). Not meant for production: it writes every body.

#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace inferscope {

class ResponseLog {
 public:
  static constexpr size_t kMaxRecords = 200'000;

  // The log named by INFERSCOPE_API_RECORD_DIR, shared by every server of the process; null when
  // the variable is unset or empty, or the file cannot be opened (logged once).
  static ResponseLog* FromEnvironment();

  void Record(std::string_view method, const std::string* route, std::string_view path, int status,
              std::string_view content_type, std::string_view body);

  ~ResponseLog();

 private:
  explicit ResponseLog(FILE* file) : file_(file) {}

  std::mutex mu_;
  FILE* file_ = nullptr;
  size_t records_ = 0;
  size_t dropped_ = 0;
};

}  // namespace inferscope
