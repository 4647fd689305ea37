#pragma once

#include "pipeline/registry.h"

namespace inferscope {

// Registers the sources of this module (zmq) with `registry`. Called once by RegisterBuiltins().
void RegisterSources(Registry& registry);

}  // namespace inferscope
