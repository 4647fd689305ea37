#pragma once

// What the tests of the ZeroMQ result sinks (alerts, bottlenecks, workflows, routing) share: the
// sink created on a free loopback port and opened, a subscriber on it, and the publish loop that
// waits out ZeroMQ's slow joiner (PUB drops until the subscription has reached it).

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>
#include <zmq_addon.hpp>

#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "pipeline/config.h"
#include "pipeline/metrics.h"
#include "pipeline/stage.h"
#include "pipeline/summary.h"
#include "tests/test_util.h"

namespace inferscope::testing {

// A sink of type S with options `endpoint: tcp://127.0.0.1:*`, opened as stage `stage` with
// `metrics`; null (and the test failed) when it cannot be created or opened.
template <typename S>
std::unique_ptr<S> OpenLoopbackSink(const std::string& stage, MetricsRegistry& metrics) {
  auto made = S::Create(ConfigNode("t.yaml", YAML::Load("endpoint: tcp://127.0.0.1:*"), "options"));
  if (!made.ok()) {
    ADD_FAILURE() << made.status().ToString();
    return nullptr;
  }
  std::unique_ptr<S> sink = std::move(made).value();
  StageContext ctx;
  ctx.name = stage;
  ctx.metrics = &metrics;
  if (Status opened = sink->Open(ctx); !opened.ok()) {
    ADD_FAILURE() << opened.ToString();
    return nullptr;
  }
  return sink;
}

// A SUB socket subscribed to `prefix` and connected to `endpoint`, with a 100 ms receive timeout.
inline zmq::socket_t Subscriber(zmq::context_t& zctx, const std::string& endpoint,
                                const std::string& prefix) {
  zmq::socket_t sub(zctx, zmq::socket_type::sub);
  sub.set(zmq::sockopt::subscribe, prefix);
  sub.set(zmq::sockopt::rcvtimeo, 100);
  sub.connect(endpoint);
  return sub;
}

// Writes `batch` to `sink` until `sub` receives a message; its frames (empty when none came within
// WaitFor's timeout, and the test failed).
template <typename S>
std::vector<zmq::message_t> WriteUntilReceived(S& sink, const OutputBatch& batch,
                                               zmq::socket_t& sub) {
  std::vector<zmq::message_t> frames;
  const bool received = WaitFor([&] {
    EXPECT_TRUE(sink.Write(batch).ok());
    frames.clear();
    return zmq::recv_multipart(sub, std::back_inserter(frames)).has_value();
  });
  EXPECT_TRUE(received) << "nothing received from " << sink.Endpoint();
  if (!received) frames.clear();
  return frames;
}

}  // namespace inferscope::testing
