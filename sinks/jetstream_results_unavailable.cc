// Built instead of jetstream_results_sink.cc when INFERSCOPE_JETSTREAM is off (libnats not found).

#include <memory>

#include "sinks/jetstream_results_register.h"

namespace inferscope {

void RegisterJetStreamResultsSink(Registry& registry) {
  registry.AddSink("jetstream_results",
                   "Publishes results to a NATS JetStream results stream (not in this build)",
                   [](const ConfigNode& options) -> Result<std::unique_ptr<Sink>> {
                     return options.Error(
                         "",
                         "this inferscope was built without JetStream support "
                         "(INFERSCOPE_JETSTREAM: install libnats-dev and build again)");
                   });
}

}  // namespace inferscope
