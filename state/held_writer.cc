#include "state/held_writer.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "state/state_store.h"

namespace inferscope {

Status HeldWriter::Options::Validate(std::string_view type) const {
  if (retry_backoff_ms < 1) {
    return Status::InvalidArgument(std::string(type) + ": retry_backoff must be at least 1ms");
  }
  if (retry_max_backoff_ms < retry_backoff_ms) {
    return Status::InvalidArgument(std::string(type) +
                                   ": retry_max_backoff must be >= retry_backoff");
  }
  return Status::Ok();
}

Status HeldWriter::ParseOptions(const ConfigNode& node, std::string_view type, Options* out) {
  Result<int64_t> backoff = node.GetDurationMs("retry_backoff", out->retry_backoff_ms, 1);
  if (!backoff.ok()) return backoff.status();
  out->retry_backoff_ms = *backoff;
  Result<int64_t> max_backoff =
      node.GetDurationMs("retry_max_backoff", out->retry_max_backoff_ms, 1);
  if (!max_backoff.ok()) return max_backoff.status();
  out->retry_max_backoff_ms = *max_backoff;
  Status valid = out->Validate(type);
  if (!valid.ok()) return node.Error("retry_max_backoff", valid.message());
  return Status::Ok();
}

void HeldWriter::Open(StateStore* state, std::string writer, std::string_view type,
                      Counter* write_errors) {
  state_ = state;
  writer_ = std::move(writer);
  type_ = type;
  write_errors_ = write_errors;
}

Status HeldWriter::Write(std::string_view what, const std::function<Status()>& write) {
  int64_t backoff_ms = options_.retry_backoff_ms;
  uint64_t attempts = 0;
  Status s = write();
  while (true) {
    ++attempts;
    if (s.ok()) {
      if (attempts > 1) {
        state_->ReleaseWriteError(writer_);
        spdlog::info("{}: {} written after {} attempts; writes resume", type_, what, attempts);
      }
      return s;
    }
    write_errors_->Inc();
    if (s.code() == Status::Code::kInvalidArgument) {
      // The content is wrong, not the storage: retrying cannot help.
      if (attempts > 1) state_->ReleaseWriteError(writer_);
      return s;
    }
    state_->HoldWriteError(writer_, s.WithContext(what));
    if (attempts == 1) {
      spdlog::error("{}: writing {} failed; holding it and retrying: {}", type_, what,
                    s.ToString());
    }
    {
      std::unique_lock<std::mutex> lock(interrupt_mu_);
      if (interrupt_cv_.wait_for(lock, std::chrono::milliseconds(backoff_ms),
                                 [this] { return interrupted_; })) {
        given_up_ = true;
        spdlog::error(
            "{}: stopping while {} cannot be written ({} attempts): given up; this sink writes "
            "nothing more: {}",
            type_, what, attempts, s.ToString());
        return s;
      }
    }
    backoff_ms = std::min(backoff_ms * 2, options_.retry_max_backoff_ms);
    // The store reopens itself before the first write after a failed one (StateStore::Resume).
    s = write();
  }
}

void HeldWriter::Interrupt() {
  {
    std::lock_guard<std::mutex> lock(interrupt_mu_);
    interrupted_ = true;
  }
  interrupt_cv_.notify_all();
}

}  // namespace inferscope
