#include "pipeline/event.h"

namespace inferscope {

std::string_view ErrorKindName(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kNone:
      return "";
    case ErrorKind::kTimeout:
      return "timeout";
    case ErrorKind::kRateLimited:
      return "rate_limited";
    case ErrorKind::kServerError:
      return "server_error";
    case ErrorKind::kClientError:
      return "client_error";
    case ErrorKind::kCancelled:
      return "cancelled";
    case ErrorKind::kOther:
      return "other";
  }
  return "other";
}

ErrorKind ParseErrorKind(std::string_view name) {
  for (int i = 1; i < kNumErrorKinds; ++i) {
    auto kind = static_cast<ErrorKind>(i);
    if (ErrorKindName(kind) == name) return kind;
  }
  return ErrorKind::kOther;
}

}  // namespace inferscope
