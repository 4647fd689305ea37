#pragma once

#include "pipeline/registry.h"

namespace inferscope {

// Registers the `jetstream` source (sources/jetstream_source.h). In a build without
// INFERSCOPE_JETSTREAM (libnats not found) it registers a `jetstream` type whose creation fails
// with an error saying so, so a topology that asks for it is refused clearly at load time.
void RegisterJetStreamSource(Registry& registry);

}  // namespace inferscope
