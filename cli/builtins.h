#pragma once

#include "pipeline/registry.h"

namespace inferscope {

// Registers every built-in source, operator and sink. Called once at start-up.
void RegisterBuiltins(Registry& registry);

}  // namespace inferscope
