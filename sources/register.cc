#include "sources/register.h"

#include "sources/zmq_source.h"

namespace inferscope {

void RegisterSources(Registry& registry) { registry.AddSource<ZmqSource>(); }

}  // namespace inferscope
