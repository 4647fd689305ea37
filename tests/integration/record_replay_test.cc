// `inferscope record` and `inferscope replay` end to end: a stream published on a PUB socket goes
// into a real engine (a sub source) while `inferscope record` (SUB) records it; the recording is
// replayed into a second engine (a pull source) on a fresh state directory; both stores then hold
// the same panes.

#include <gtest/gtest.h>
#include <signal.h>

#include <msgpack.hpp>
#include <zmq.hpp>

#include <chrono>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>

#include "cli/recording.h"
#include "clients/cpp/publisher.h"
#include "tests/integration/engine_fixture.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using testing::EngineProcess;
using testing::ReadFile;
using testing::ReadStore;
using testing::StoredResult;
using testing::Subprocess;
using testing::Substitute;
using testing::TempDir;
using testing::WaitFor;

// Only data moves watermarks (idle_timeout 0), every pane kept at 1 s.
constexpr char kTopology[] = R"(name: record-replay
state:
  path: STATE
  tiers:
    - {resolution: 1s, retention: forever}
query:
  listen: 127.0.0.1:0
sources:
  - name: ingest
    type: zmq
    options:
      endpoint: ENDPOINT
      mode: MODE
operators:
  - name: windows
    type: window_aggregate
    inputs: [ingest]
    options:
      pane: 1s
      out_of_orderness: 2s
      idle_timeout: 0
sinks:
  - name: state
    type: rocksdb_state
    inputs: [windows]
)";

// The value of the first sample of `name` whose labels contain `label`; -1 when there is none.
double Metric(EngineProcess& engine, const std::string& name, const std::string& label) {
  auto res = engine.http().Get("/metrics");
  if (!res) return -1;
  std::istringstream lines(res->body);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(name + "{", 0) != 0) continue;
    const size_t close = line.find("} ");
    if (close == std::string::npos || line.find(label) > close) continue;
    return std::stod(line.substr(close + 2));
  }
  return -1;
}

// A heartbeat (no events) of publisher "probe": {"v":1,"pub":"probe","seq":seq,"events":[]}.
std::string Heartbeat(uint64_t seq) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(4);
  pk.pack(std::string("v"));
  pk.pack(1);
  pk.pack(std::string("pub"));
  pk.pack(std::string("probe"));
  pk.pack(std::string("seq"));
  pk.pack(seq);
  pk.pack(std::string("events"));
  pk.pack_array(0);
  return std::string(buf.data(), buf.size());
}

struct RecordingCount {
  bool clean = false;  // read to its end without a torn or corrupt record
  uint64_t messages = 0;
  uint64_t events = 0;
};

// Reads the recording at `path`, counting messages and the events in their payloads.
RecordingCount CountRecording(const std::string& path) {
  RecordingCount c;
  auto reader = RecordingReader::Open(path);
  if (!reader.ok()) return c;
  RecordedMessage m;
  while ((*reader)->Next(&m)) {
    ++c.messages;
    msgpack::object_handle oh = msgpack::unpack(m.payload.data(), m.payload.size());
    const msgpack::object& o = oh.get();
    for (uint32_t i = 0; i < o.via.map.size; ++i) {
      const msgpack::object& k = o.via.map.ptr[i].key;
      if (std::string_view(k.via.str.ptr, k.via.str.size) == "events") {
        c.events += o.via.map.ptr[i].val.via.array.size;
      }
    }
  }
  c.clean = (*reader)->status().ok();
  return c;
}

TEST(RecordReplayTest, ReplayedRecordingStoresTheSamePanesAsTheLiveStream) {
  TempDir dir;
  zmq::context_t ctx(1);
  zmq::socket_t pub(ctx, zmq::socket_type::pub);
  pub.set(zmq::sockopt::sndhwm, 0);  // no limit: nothing is dropped for a slow subscriber
  pub.set(zmq::sockopt::linger, 0);
  pub.bind("tcp://127.0.0.1:*");
  const std::string pub_endpoint = pub.get(zmq::sockopt::last_endpoint);

  // The live engine subscribes to the publisher, and so does the recorder.
  EngineProcess live(
      dir,
      {Substitute(kTopology,
                  {{"STATE", dir.str() + "/live"}, {"ENDPOINT", pub_endpoint}, {"MODE", "sub"}}),
       "live"});
  ASSERT_TRUE(live.WaitReady()) << live.Log();
  const std::string recording = dir.str() + "/stream.isrec";
  const std::string record_log = dir.str() + "/record.log";
  Subprocess recorder(
      {testing::InferscopeBinary(), "record", "--connect", pub_endpoint, "--output", recording},
      record_log);

  // Subscriptions take effect asynchronously: heartbeats until both have heard one.
  uint64_t probe_seq = 0;
  auto send = [&](const std::string& payload) {
    pub.send(zmq::str_buffer("metrics"), zmq::send_flags::sndmore);
    pub.send(zmq::const_buffer(payload.data(), payload.size()), zmq::send_flags::none);
  };
  ASSERT_TRUE(WaitFor(
      [&] {
        send(Heartbeat(probe_seq++));
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        return Metric(live, "inferscope_source_messages_total", "stage=\"ingest\"") >= 1 &&
               CountRecording(recording).messages >= 1;
      },
      std::chrono::seconds(30)))
      << ReadFile(record_log) << "\n"
      << live.Log();

  // The stream: 200 messages of 25 events (requests and gauges of 4 instances and 2 models),
  // event times 20 ms apart with jitter inside out_of_orderness, over 100 s of event time.
  constexpr int kMessages = 200;
  constexpr int kEventsPerMessage = 25;
  constexpr int kEvents = kMessages * kEventsPerMessage;
  const int64_t t0 = client::NowMs() - 600'000;
  client::BatchEncoder enc("generator");
  std::mt19937_64 rng(14);
  std::uniform_real_distribution<double> latency(20, 400);
  std::uniform_int_distribution<int> jitter(-300, 300);
  for (int m = 0; m < kMessages; ++m) {
    for (int i = 0; i < kEventsPerMessage; ++i) {
      const int n = m * kEventsPerMessage + i;
      const int64_t t = t0 + n * 20 + jitter(rng);
      const std::string instance = "node-" + std::to_string(n % 4);
      const std::string model = n % 3 == 0 ? "llama" : "qwen";
      if (n % 5 == 0) {
        enc.AddGauge(instance, model, "kv_cache_usage", latency(rng) / 400, t);
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
      enc.AddRequest(r);
    }
    const std::string_view payload = enc.Finish();
    send(std::string(payload));
    if (m % 20 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));  // some spacing
  }
  ASSERT_TRUE(WaitFor([&] {
    return Metric(live, "inferscope_source_events_total", "stage=\"ingest\"") == kEvents;
  })) << live.Log();
  RecordingCount count;
  ASSERT_TRUE(WaitFor([&] {
    count = CountRecording(recording);
    return count.clean && count.events == kEvents;
  })) << count.messages
      << " messages, " << count.events << " events\n"
      << ReadFile(record_log);
  recorder.Signal(SIGTERM);
  ASSERT_EQ(recorder.Wait(), 0) << ReadFile(record_log);
  count = CountRecording(recording);
  EXPECT_TRUE(count.clean);
  EXPECT_EQ(count.events, static_cast<uint64_t>(kEvents));
  EXPECT_GE(count.messages, static_cast<uint64_t>(kMessages) + 1);  // heartbeats too
  EXPECT_NE(ReadFile(record_log).find(std::to_string(count.messages) + " messages"),
            std::string::npos)
      << ReadFile(record_log);
  EXPECT_EQ(live.Stop(), 0) << live.Log();

  // The recording into a second engine on a fresh state directory, 4x faster than recorded.
  EngineProcess replayed(dir, {Substitute(kTopology, {{"STATE", dir.str() + "/replayed"},
                                                      {"ENDPOINT", "tcp://127.0.0.1:*"},
                                                      {"MODE", "pull"}}),
                               "replayed"});
  ASSERT_TRUE(replayed.WaitReady()) << replayed.Log();
  const std::string replay_log = dir.str() + "/replay.log";
  Subprocess replay({testing::InferscopeBinary(), "replay", "--input", recording, "--endpoint",
                     replayed.Endpoint("ingest"), "--speed", "4"},
                    replay_log);
  ASSERT_EQ(replay.Wait(), 0) << ReadFile(replay_log);
  EXPECT_NE(ReadFile(replay_log).find(std::to_string(count.messages) + " messages"),
            std::string::npos)
      << ReadFile(replay_log);
  ASSERT_TRUE(WaitFor([&] {
    return Metric(replayed, "inferscope_source_events_total", "stage=\"ingest\"") == kEvents;
  })) << replayed.Log();
  EXPECT_EQ(Metric(replayed, "inferscope_source_messages_total", "stage=\"ingest\""),
            static_cast<double>(count.messages));
  EXPECT_EQ(replayed.Stop(), 0) << replayed.Log();

  const std::map<std::string, StoredResult> want = ReadStore(dir.str() + "/live");
  const std::map<std::string, StoredResult> got = ReadStore(dir.str() + "/replayed");
  // 4 instances x 2 models x (e2e, ttft, output tokens, kv cache, ...) x ~100 panes.
  ASSERT_GT(want.size(), 1000u);
  testing::ExpectSamePanes(got, want);
}

}  // namespace
}  // namespace inferscope
