#pragma once

#include "pipeline/registry.h"

namespace inferscope {

// Registers the `jetstream_results` sink (sinks/jetstream_results_sink.h). In a build without
// INFERSCOPE_JETSTREAM (libnats not found) it registers the type with a creation error saying so,
// as the `jetstream` source does.
void RegisterJetStreamResultsSink(Registry& registry);

}  // namespace inferscope
