// Built instead of bridge_command.cc when INFERSCOPE_JETSTREAM is off (libnats not found).

#include <iostream>

#include "cli/commands.h"

namespace inferscope {

int BridgeCommand(const BridgeArgs&) {
  std::cerr << "bridge: this inferscope was built without JetStream support (INFERSCOPE_JETSTREAM: "
               "install libnats-dev and build again)\n";
  return 2;
}

}  // namespace inferscope
