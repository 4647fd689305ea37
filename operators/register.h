#pragma once

#include "pipeline/registry.h"

namespace inferscope {

// Registers every operator of the operators/ module with `registry`. Called once at start-up.
void RegisterOperators(Registry& registry);

}  // namespace inferscope
