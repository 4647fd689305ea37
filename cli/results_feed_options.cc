// ResultsFeedOptions::Validate, built with and without INFERSCOPE_JETSTREAM (the CLI checks its
// flags either way).

#include <algorithm>

#include "cli/results_feed.h"

namespace inferscope {

Status ResultsFeedOptions::Validate() const {
  auto valid_name = [](std::string_view name) {
    return !name.empty() && std::none_of(name.begin(), name.end(), [](char c) {
      return c == '.' || c == '*' || c == '>' || c == ' ' || c == '\t' || c == '/' || c == '\\';
    });
  };
  if (url.empty()) return Status::InvalidArgument("--results: expected nats://host:port[,...]");
  if (!valid_name(stream)) {
    return Status::InvalidArgument(
        "--results-stream must be a name without '.', '*', '>', '/' or spaces");
  }
  if (subject_prefix.empty() || subject_prefix.front() == '.' || subject_prefix.back() == '.' ||
      subject_prefix.find_first_of("*> \t") != std::string::npos) {
    return Status::InvalidArgument(
        "--results-subject-prefix must be a subject such as inferscope.results");
  }
  if (!valid_name(durable)) {
    return Status::InvalidArgument(
        "--results-consumer must be a name without '.', '*', '>', '/' or spaces");
  }
  if (fetch_batch < 1 || fetch_batch > 65536) {
    return Status::InvalidArgument("results feed: fetch_batch must be between 1 and 65536");
  }
  if (fetch_wait_ms < 1 || fetch_wait_ms > 1000) {
    return Status::InvalidArgument("results feed: fetch_wait must be between 1ms and 1s");
  }
  return Status::Ok();
}

}  // namespace inferscope
