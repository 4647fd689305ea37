#pragma once

#include <string>
#include <utility>
#include <vector>

#include "pipeline/clock.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"

namespace inferscope {

class CheckpointStorage;  // pipeline/checkpoint.h
class StateStore;         // state/state_store.h (the runtime passes it on, never uses it)

// Engine-wide services a stage may use, looked up by type (the silence registry, say), so that a
// new service reaches the stages that need it without a new StageContext field.
// Concurrency: filled before the stages open; lookups are read-only. The services must be
// thread-safe if stages on several threads use them.
class StageServices {
 public:
  // Makes `service` what Get<T>() returns (replacing an earlier one; null removes it).
  template <typename T>
  void Provide(T* service) {
    for (auto& [tag, ptr] : entries_) {
      if (tag == &kTag<T>) {
        ptr = service;
        return;
      }
    }
    entries_.emplace_back(&kTag<T>, service);
  }
  // The service of type T; null when the engine provides none (e.g. a stage run outside an Engine).
  // A linear scan of a few entries: look it up once, at Open.
  template <typename T>
  T* Get() const {
    for (const auto& [tag, ptr] : entries_) {
      if (tag == &kTag<T>) return static_cast<T*>(ptr);
    }
    return nullptr;
  }

 private:
  template <typename T>
  static constexpr char kTag = 0;  // one address per service type
  std::vector<std::pair<const void*, void*>> entries_;
};

// What the engine hands every source, operator and sink when it opens them. The pointers outlive
// the stage. `state` is null when the topology declares no state directory.
struct StageContext {
  std::string name;  // the stage's name in the topology (used as the `stage` metric label)
  Interner* interner = nullptr;
  MetricsRegistry* metrics = nullptr;
  const Clock* clock = nullptr;
  StateStore* state = nullptr;
  // Where the executor reads the last durable checkpoint back from on start; null: nothing to
  // restore. Set together with `state` (state/checkpoint_store.h).
  const CheckpointStorage* checkpoints = nullptr;
  // Other engine services by type (e.g. `services.Get<SilenceRegistry>()`, the engine's silences).
  StageServices services;
};

}  // namespace inferscope
