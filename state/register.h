#pragma once

#include "pipeline/registry.h"

namespace inferscope {

// Registers the sinks of this module (rocksdb_state, rocksdb_alerts: the sinks that write the
// StateStore) with `registry`. Called once by RegisterBuiltins().
void RegisterStateSinks(Registry& registry);

}  // namespace inferscope
