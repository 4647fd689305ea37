#pragma once

#include "pipeline/registry.h"

namespace inferscope {

// Registers every sink of this module (rocksdb_state, zmq_pub) with `registry`. Call once.
void RegisterSinks(Registry& registry);

}  // namespace inferscope
