#pragma once

#include <string>

#include "pipeline/clock.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"

namespace inferscope {

class CheckpointStorage;  // pipeline/checkpoint.h
class SilenceRegistry;    // alerting/silence.h
class StateStore;         // state/state_store.h (the runtime passes it on, never uses it)

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
  // The engine's silences (thread-safe); null when the stage runs outside an Engine.
  SilenceRegistry* silences = nullptr;
};

}  // namespace inferscope
