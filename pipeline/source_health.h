#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace inferscope {

// SourceHealth collects the health of what sources pull from (scrape targets), for the engine's
// /v1/health. An engine service (StageContext::services): sources look it up at Open and report
// after each attempt.
//
// Concurrency: thread-safe. Bounded: at most kMaxEntries targets are kept (further ones are
// counted, not stored).
class SourceHealth {
 public:
  static constexpr size_t kMaxEntries = 100'000;

  struct Target {
    std::string stage;
    std::string target;  // the URL
    std::string instance;
    bool up = false;
    std::string last_error;  // reason and detail of the last failed attempt ("" when none yet)
    int64_t last_attempt_ms = 0;
    int64_t last_error_ms = 0;
    uint64_t failures = 0;  // failed attempts so far
  };

  void Report(const Target& target);
  void Remove(const std::string& stage, const std::string& target);
  std::vector<Target> Snapshot() const;
  uint64_t dropped() const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, std::string>, Target> targets_;
  uint64_t dropped_ = 0;
};

inline void SourceHealth::Report(const Target& target) {
  std::lock_guard<std::mutex> lock(mu_);
  auto key = std::make_pair(target.stage, target.target);
  auto it = targets_.find(key);
  if (it == targets_.end()) {
    if (targets_.size() >= kMaxEntries) {
      ++dropped_;
      return;
    }
    targets_.emplace(std::move(key), target);
    return;
  }
  it->second = target;
}

inline void SourceHealth::Remove(const std::string& stage, const std::string& target) {
  std::lock_guard<std::mutex> lock(mu_);
  targets_.erase(std::make_pair(stage, target));
}

inline std::vector<SourceHealth::Target> SourceHealth::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Target> out;
  out.reserve(targets_.size());
  for (const auto& [key, t] : targets_) out.push_back(t);
  return out;
}

inline uint64_t SourceHealth::dropped() const {
  std::lock_guard<std::mutex> lock(mu_);
  return dropped_;
}

}  // namespace inferscope
