// Built instead of results_feed.cc when INFERSCOPE_JETSTREAM is off (libnats not found).

#include "cli/results_feed.h"

namespace inferscope {

Result<std::unique_ptr<ResultsFeed>> ResultsFeed::Start(const ResultsFeedOptions&, StateStore*,
                                                        MetricsRegistry*, const Clock*) {
  return Status::Unavailable(
      "--results: this inferscope was built without JetStream support (INFERSCOPE_JETSTREAM: "
      "install libnats-dev and build again)");
}

}  // namespace inferscope
