// Issue 8: bounded ingest state, end to end (`inferscope run`, real sockets). A source keeps state
// for at most max_publishers publisher ids: the ids beyond are refused (publisher_limit) and
// counted, the first ones go on; and one publisher flooding new instance names is refused beyond
// its share of the string table while another publisher's new instance is accepted.

#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <sstream>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "clients/cpp/publisher.h"
#include "tests/integration/engine_fixture.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using testing::EngineProcess;
using testing::Substitute;
using testing::TempDir;
using testing::WaitFor;

constexpr char kTopology[] = R"(name: publisher-limit
state:
  path: STATE
query:
  listen: 127.0.0.1:0
sources:
  - name: ingest
    type: zmq
    options:
      endpoint: tcp://127.0.0.1:*
      max_publishers: 3
      max_strings_per_publisher: 20
operators:
  - name: windows
    type: window_aggregate
    inputs: [ingest]
    options: {pane: 1s, out_of_orderness: 0s, idle_timeout: 0s}
sinks:
  - name: state
    type: rocksdb_state
    inputs: [windows]
)";

// The value of the sample of `name` whose line contains `label` (-1 when there is none).
double Sample(const std::string& text, const std::string& name, const std::string& label) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(name + "{", 0) == 0 && line.find(label) != std::string::npos) {
      return std::stod(line.substr(line.rfind(' ') + 1));
    }
  }
  return -1;
}

TEST(PublisherLimitTest, IdsBeyondTheLimitAreRefusedAndOnePublisherCannotTakeTheStringTable) {
  TempDir dir;
  EngineProcess engine(dir, Substitute(kTopology, {{"STATE", dir.str() + "/state"}}));
  ASSERT_TRUE(engine.WaitReady()) << engine.Log();

  // One PUSH connection, so the engine sees the messages in the order they are sent.
  zmq::context_t context(1);
  zmq::socket_t push(context, zmq::socket_type::push);
  push.set(zmq::sockopt::linger, 2000);
  push.connect(engine.Endpoint("ingest"));
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  auto send = [&](const std::string& pub, uint64_t seq, const std::vector<std::string>& instances) {
    client::BatchEncoder encoder(pub, seq);
    for (const std::string& instance : instances) {
      client::RequestOutcome r;
      r.instance = instance;
      r.model = "m";
      r.e2e_ms = 10;
      r.time_ms = now;
      encoder.AddRequest(r);
    }
    push.send(zmq::str_buffer("metrics"), zmq::send_flags::sndmore);
    push.send(zmq::buffer(encoder.Finish()), zmq::send_flags::none);
  };

  // Three publishers are admitted; "keep-node" and "m" are charged to keep-0, which added them.
  for (int p = 0; p < 3; ++p) send("keep-" + std::to_string(p), 0, {"keep-node"});
  // 50 more ids: refused, nothing kept (their instance names are never interned).
  for (int p = 0; p < 50; ++p) send("fresh-" + std::to_string(p), 0, {"fresh-node"});
  // keep-0 floods 100 new instance names: 18 fit in its share of 20.
  std::vector<std::string> flood;
  for (int i = 0; i < 100; ++i) flood.push_back("flood-" + std::to_string(i));
  send("keep-0", 1, flood);
  // keep-1's new instance is still accepted, and the admitted publishers go on.
  send("keep-1", 1, {"k1-new-node"});
  send("keep-2", 1, {"keep-node"});

  std::string metrics;
  ASSERT_TRUE(WaitFor([&] {
    auto res = engine.http().Get("/metrics");
    metrics = res ? res->body : "";
    return Sample(metrics, "inferscope_source_events_total", "stage=\"ingest\"") == 3 + 18 + 2 &&
           Sample(metrics, "inferscope_source_rejected_total", "reason=\"publisher_limit\"") == 50;
  })) << metrics
      << engine.Log();
  EXPECT_EQ(Sample(metrics, "inferscope_source_rejected_total", "reason=\"cardinality_limit\""),
            82);
  EXPECT_EQ(
      Sample(metrics, "inferscope_source_rejected_by_publisher_total", "publisher=\"keep-0\""), 82);
  EXPECT_EQ(Sample(metrics, "inferscope_source_publishers", "stage=\"ingest\""), 3);
  EXPECT_EQ(Sample(metrics, "inferscope_interner_refused_strings", "reason=\"publisher_share\""),
            82);
  EXPECT_EQ(metrics.find("fresh-"), std::string::npos);  // no label for a refused id
  EXPECT_EQ(
      Sample(metrics, "inferscope_source_rejected_by_publisher_total", "publisher=\"keep-1\""),
      0);  // its new instance was accepted
  EXPECT_EQ(engine.Stop(), 0) << engine.Log();
}

}  // namespace
}  // namespace inferscope
