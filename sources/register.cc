#include "sources/register.h"

#include "sources/host_source.h"
#include "sources/jetstream_register.h"
#include "sources/prom_scrape_source.h"
#include "sources/remote_write_source.h"
#include "sources/zmq_source.h"

namespace inferscope {

void RegisterSources(Registry& registry) {
  registry.AddSource<ZmqSource>();
  registry.AddSource<PromScrapeSource>();
  registry.AddSource<RemoteWriteSource>();
  registry.AddSource<HostSource>();
  RegisterJetStreamSource(registry);
}

}  // namespace inferscope
