#pragma once

// What the JetStream integration tests share (jetstream_crash_test.cc, jetstream_cluster_test.cc):
// the engine's topology, the seeded stream and its publisher, and what the server says of the
// partitions' consumers.

#include <gtest/gtest.h>
#include <nats/nats.h>

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "clients/cpp/jetstream_publisher.h"
#include "tests/integration/engine_fixture.h"
#include "tests/test_util.h"

namespace inferscope::jetstream_test {

using testing::EngineProcess;
using testing::Substitute;
using testing::TempDir;

constexpr uint32_t kPartitions = 4;

// As tests/integration/crash_test.cc: only data moves watermarks, 1 s panes, checkpoints every
// 100 ms. Watermarks are per publisher id, one per partition here, and the operator's is their
// minimum over the publishers seen so far. The partitions carry equal shares of event time and are
// fetched in turn, 2 messages (~1.1 s of event time) at a time: with the jitter (0.5 s) that stays
// within out_of_orderness (5 s), also for the partition fetched first, whose publisher alone sets
// the watermark until the others' first events arrive; max_publisher_lag (5 minutes) is far above
// it. So however the partitions interleave no event is ever late, and the panes do not depend on
// timing. (A topology must likewise give out_of_orderness room for one fetch_batch of event time
// per partition: docs/SOURCES.md.)
inline constexpr char kTopology[] = R"(name: jetstream-crash
state:
  path: STATE
  tiers:
    - {resolution: 1s, retention: forever}
engine:
  checkpoint_interval: 100ms
sources:
  - name: ingest
    type: jetstream
    options:
      url: URL
      stream: STREAM
      subject_prefix: PREFIX
      partitions: [0, 1, 2, 3]
      fetch_batch: 2
      fetch_wait: 20ms
operators:
  - name: windows
    type: window_aggregate
    inputs: [ingest]
    options:
      pane: 1s
      out_of_orderness: 5s
      idle_timeout: 0
      max_publisher_lag: 5m
sinks:
  - name: state
    type: rocksdb_state
    inputs: [windows]
)";

inline std::unique_ptr<EngineProcess> StartEngine(const TempDir& dir, const std::string& state,
                                                  const std::string& url, const std::string& stream,
                                                  const std::string& prefix,
                                                  const std::string& name) {
  return std::make_unique<EngineProcess>(
      dir, EngineProcess::Options{
               Substitute(kTopology,
                          {{"STATE", state}, {"URL", url}, {"STREAM", stream}, {"PREFIX", prefix}}),
               name});
}

// Eight instances, two per partition, so the partitions carry equal shares of event time.
inline std::vector<std::string> BalancedInstances() {
  std::vector<std::string> out;
  int per_partition[kPartitions] = {};
  for (int i = 0; out.size() < 2 * kPartitions; ++i) {
    std::string name = "node-" + std::to_string(i);
    uint32_t p = client::JetStreamPartition(name, kPartitions);
    if (per_partition[p] < 2) {
      ++per_partition[p];
      out.push_back(std::move(name));
    }
  }
  return out;
}

// The seeded stream: message m is 50 events, event times 7 ms apart with jitter within
// out_of_orderness, requests and gauges over the eight instances.
struct SeededStream {
  static constexpr int kEventsPerMessage = 50;
  explicit SeededStream(int64_t t0) : t0(t0), instances(BalancedInstances()) {}
  void Fill(client::JetStreamPublisher& pub, int message) const {
    std::mt19937_64 rng(static_cast<uint64_t>(message) * 7919 + 3);
    std::uniform_real_distribution<double> latency(20, 400);
    std::uniform_int_distribution<int> jitter(-500, 500);
    for (int i = 0; i < kEventsPerMessage; ++i) {
      const int n = message * kEventsPerMessage + i;
      const int64_t t = t0 + n * 7 + jitter(rng);
      const std::string& instance = instances[static_cast<size_t>(n) % instances.size()];
      const std::string model = n % 3 == 0 ? "llama" : "qwen";
      if (n % 5 == 0) {
        ASSERT_TRUE(pub.Gauge(instance, model, "kv_cache_usage", latency(rng) / 400, t));
        continue;
      }
      client::RequestOutcome r;
      r.instance = instance;
      r.model = model;
      r.e2e_ms = latency(rng) * 10;
      r.ttft_ms = latency(rng);
      r.output_tokens = static_cast<uint32_t>(latency(rng));
      r.error = n % 37 == 0 ? "timeout" : "";
      r.time_ms = t;
      ASSERT_TRUE(pub.Request(r)) << pub.last_error();
    }
  }
  int64_t t0;
  std::vector<std::string> instances;
};

inline void Publish(client::JetStreamPublisher& pub, const SeededStream& stream, int from, int to) {
  for (int m = from; m < to; ++m) stream.Fill(pub, m);
  ASSERT_TRUE(pub.Flush()) << pub.last_error();
}

inline client::JetStreamPublisherOptions PublisherOptions(const std::string& url,
                                                          const std::string& stream) {
  client::JetStreamPublisherOptions o;
  o.url = url;
  o.stream = stream;
  o.partitions = kPartitions;
  o.publisher_id = "seeded";
  o.batch_size = 20;  // events per message and partition: ~0.56 s of event time
  return o;
}

// What the server says of the partitions' consumers, summed.
struct Consumers {
  uint64_t pending = 0;      // not delivered yet
  uint64_t ack_pending = 0;  // delivered, not acked (their checkpoint is not durable yet)
  uint64_t acked = 0;        // sum of ack floors
  bool all_found = true;
};

inline Consumers ReadConsumers(const std::string& url, const std::string& stream) {
  Consumers c;
  natsConnection* conn = nullptr;
  jsCtx* js = nullptr;
  if (natsConnection_ConnectTo(&conn, url.c_str()) == NATS_OK &&
      natsConnection_JetStream(&js, conn, nullptr) == NATS_OK) {
    for (uint32_t p = 0; p < kPartitions; ++p) {
      jsConsumerInfo* ci = nullptr;
      const std::string name = "inferscope-p" + std::to_string(p);
      if (js_GetConsumerInfo(&ci, js, stream.c_str(), name.c_str(), nullptr, nullptr) != NATS_OK) {
        c.all_found = false;
        continue;
      }
      c.pending += ci->NumPending;
      c.ack_pending += static_cast<uint64_t>(ci->NumAckPending);
      c.acked += ci->AckFloor.Stream;
      jsConsumerInfo_Destroy(ci);
    }
  } else {
    c.all_found = false;
  }
  if (js != nullptr) jsCtx_Destroy(js);
  if (conn != nullptr) natsConnection_Destroy(conn);
  return c;
}

// Everything published is applied and its checkpoint durable (acks follow durable checkpoints).
inline bool AllAcked(const std::string& url, const std::string& stream) {
  const Consumers c = ReadConsumers(url, stream);
  return c.all_found && c.pending == 0 && c.ack_pending == 0 && c.acked > 0;
}

}  // namespace inferscope::jetstream_test
