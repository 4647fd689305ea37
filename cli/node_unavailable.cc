// Built instead of node.cc when INFERSCOPE_JETSTREAM is off (libnats not found).

#include <spdlog/spdlog.h>

#include "cli/commands.h"

namespace inferscope {

int NodeCommand(const NodeArgs&) {
  spdlog::error(
      "node: this inferscope was built without JetStream support (INFERSCOPE_JETSTREAM: install "
      "libnats-dev and build again)");
  return 2;
}

}  // namespace inferscope
