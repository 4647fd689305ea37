#pragma once

#include <string>

#include "pipeline/clock.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"

namespace inferscope {

class SilenceRegistry;
class StateStore;

// What the engine hands every source, operator and sink when it opens them. The pointers outlive
// the stage. `state` is null when the topology declares no state directory.
struct StageContext {
  std::string name;  // the stage's name in the topology (used as the `stage` metric label)
  Interner* interner = nullptr;
  MetricsRegistry* metrics = nullptr;
  const Clock* clock = nullptr;
  StateStore* state = nullptr;
  // The engine's silences (thread-safe); null when the stage runs outside an Engine.
  SilenceRegistry* silences = nullptr;
};

}  // namespace inferscope
