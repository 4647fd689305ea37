#pragma once

#include "pipeline/registry.h"

namespace inferscope {

// Registers the sinks of this module (zmq_pub, zmq_alerts, ..., jetstream_results) with `registry`.
// Called once by RegisterBuiltins(); the sinks that write the state store register with
// RegisterStateSinks (state/register.h).
void RegisterSinks(Registry& registry);

}  // namespace inferscope
