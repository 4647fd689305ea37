// Built instead of jetstream_source.cc when INFERSCOPE_JETSTREAM is off (libnats not found).

#include <memory>

#include "sources/jetstream_register.h"

namespace inferscope {

void RegisterJetStreamSource(Registry& registry) {
  registry.AddSource(
      "jetstream", "Consumes protocol-v1 batches from NATS JetStream (not in this build)",
      [](const ConfigNode& options) -> Result<std::unique_ptr<Source>> {
        return options.Error("",
                             "this inferscope was built without JetStream support "
                             "(INFERSCOPE_JETSTREAM: install libnats-dev and build again)");
      });
}

}  // namespace inferscope
