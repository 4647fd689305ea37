#pragma once

// A SourceOutput keeping every event a source emits (the HTTP-fed sources' tests read them back).

#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "pipeline/source.h"

namespace inferscope::testing {

class CollectingOutput final : public SourceOutput {
 public:
  EventBatchPtr Acquire() override { return std::make_unique<EventBatch>(); }
  bool Emit(EventBatchPtr batch) override {
    std::lock_guard<std::mutex> lock(mu_);
    events_.insert(events_.end(), batch->events.begin(), batch->events.end());
    return true;
  }
  bool TryEmit(EventBatchPtr& batch) override { return Emit(std::move(batch)); }
  void Release(EventBatchPtr) override {}
  std::vector<Event> events() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }

 private:
  std::mutex mu_;
  std::vector<Event> events_;
};

}  // namespace inferscope::testing
