// The jetstream source against a real nats-server (started per test, on a port it chooses): events
// from every partition, positions in the batches, dead letters, restore from a checkpointed
// position, acks only after a durable checkpoint.

#include <gtest/gtest.h>
#include <nats/nats.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "clients/cpp/jetstream_publisher.h"
#include "clients/cpp/nats_connect.h"
#include "pipeline/checkpoint.h"
#include "pipeline/clock.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "pipeline/source_health.h"
#include "sources/envelope.h"
#include "sources/jetstream_source.h"
#include "sources/partition.h"
#include "tests/nats_server.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using testing::NatsServer;
using testing::TempDir;
using testing::WaitFor;

constexpr char kStream[] = "INFERSCOPE";

// Keeps the events and the positions a source emits.
class Collector final : public SourceOutput {
 public:
  EventBatchPtr Acquire() override { return std::make_unique<EventBatch>(); }
  bool Emit(EventBatchPtr batch) override {
    std::lock_guard<std::mutex> lock(mu_);
    events_ += batch->events.size();
    max_batch_ = std::max(max_batch_, batch->events.size());
    ++batches_;
    for (const AppliedSequence& a : batch->sequences) positions_[a.publisher] = a.seq;
    return true;
  }
  bool TryEmit(EventBatchPtr& batch) override { return Emit(std::move(batch)); }
  void Release(EventBatchPtr) override {}
  size_t events() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }
  size_t max_batch() {
    std::lock_guard<std::mutex> lock(mu_);
    return max_batch_;
  }
  size_t batches() {
    std::lock_guard<std::mutex> lock(mu_);
    return batches_;
  }
  std::map<StringId, uint64_t> positions() {
    std::lock_guard<std::mutex> lock(mu_);
    return positions_;
  }

 private:
  std::mutex mu_;
  size_t events_ = 0;
  size_t max_batch_ = 0;
  size_t batches_ = 0;
  std::map<StringId, uint64_t> positions_;
};

class MapReader final : public CheckpointReader {
 public:
  explicit MapReader(std::map<std::string, std::string> records) : records_(std::move(records)) {}
  Status ForEach(
      const std::function<Status(std::string_view, std::string_view)>& fn) const override {
    for (const auto& [k, v] : records_) INFERSCOPE_RETURN_IF_ERROR(fn(k, v));
    return Status::Ok();
  }

 private:
  std::map<std::string, std::string> records_;
};

// A source with its engine context, run on a thread of its own.
class Running {
 public:
  Running(const std::string& url, std::vector<uint32_t> partitions,
          const std::function<void(JetStreamSource::Options&)>& adjust = {}) {
    JetStreamSource::Options o;
    o.url = url;
    o.stream = kStream;
    o.partitions = std::move(partitions);
    o.fetch_wait_ms = 20;
    if (adjust) adjust(o);
    source = std::make_unique<JetStreamSource>(o);
    ctx.name = "js";
    ctx.interner = &interner;
    ctx.metrics = &metrics;
    ctx.clock = &clock;
  }
  ~Running() { Stop(); }
  Status Open() { return source->Open(ctx); }
  void Start() {
    thread = std::thread([this] { run_status = source->Run(out, stop); });
  }
  void Stop() {
    if (!thread.joinable()) return;
    stop.store(true);
    source->Interrupt();
    thread.join();
    source->Close();
  }
  uint64_t Counter(const std::string& name, uint32_t partition) {
    return metrics
        .GetCounter(name, "", {{"stage", "js"}, {"partition", std::to_string(partition)}})
        ->value();
  }
  StringId Key(uint32_t partition) {
    return interner.Intern(
        JetStreamSource::PositionKey(kStream, "inferscope.in." + std::to_string(partition)));
  }

  Interner interner;
  MetricsRegistry metrics;
  SystemClock clock;
  StageContext ctx;
  std::unique_ptr<JetStreamSource> source;
  Collector out;
  std::atomic<bool> stop{false};
  std::thread thread;
  Status run_status;
};

// Checks that `server` is up and creates the stream kStream over "inferscope.in.*" on it, as
// every source test starts.
void MakeStream(const NatsServer& server) {
  ASSERT_FALSE(server.url().empty()) << server.Log();
  std::string error;
  ASSERT_TRUE(
      client::JetStreamPublisher::EnsureStream(server.url(), kStream, "inferscope.in", &error))
      << error;
}

client::JetStreamPublisherOptions PublisherOptions(const std::string& url, uint32_t partitions) {
  client::JetStreamPublisherOptions o;
  o.url = url;
  o.stream = kStream;
  o.partitions = partitions;
  o.publisher_id = "test";
  o.batch_size = 5;
  return o;
}

// Publishes `requests` request outcomes over 8 instances, or of `instance` alone when given
// (event times a minute ago, 10 ms apart).
void PublishRequests(client::JetStreamPublisher& pub, int requests, int first = 0,
                     const std::string& instance = "") {
  const int64_t t0 = client::NowMs() - 60'000;
  for (int i = first; i < first + requests; ++i) {
    client::RequestOutcome r;
    const std::string name = instance.empty() ? "gpu-" + std::to_string(i % 8) : instance;
    r.instance = name;  // a view
    r.model = "llama";
    r.e2e_ms = 100 + i;
    r.time_ms = t0 + i * 10;
    ASSERT_TRUE(pub.Request(r)) << pub.last_error();
  }
  ASSERT_TRUE(pub.Flush()) << pub.last_error();
}

// Runs `fn` with a JetStream context on the server.
void WithJs(const std::string& url, const std::function<void(jsCtx*)>& fn) {
  natsConnection* conn = nullptr;
  jsCtx* js = nullptr;
  ASSERT_EQ(natsConnection_ConnectTo(&conn, url.c_str()), NATS_OK);
  ASSERT_EQ(natsConnection_JetStream(&js, conn, nullptr), NATS_OK);
  fn(js);
  jsCtx_Destroy(js);
  natsConnection_Destroy(conn);
}

// A consumer's acknowledgement state as the server reports it.
struct ConsumerAcks {
  uint64_t floor = 0;    // ack floor (stream sequence); 0 when it cannot be read
  int64_t pending = -1;  // delivered and not acknowledged; -1 when it cannot be read
};

ConsumerAcks ReadConsumerAcks(const std::string& url, const std::string& consumer) {
  natsConnection* conn = nullptr;
  jsCtx* js = nullptr;
  ConsumerAcks acks;
  if (natsConnection_ConnectTo(&conn, url.c_str()) == NATS_OK &&
      natsConnection_JetStream(&js, conn, nullptr) == NATS_OK) {
    jsConsumerInfo* ci = nullptr;
    if (js_GetConsumerInfo(&ci, js, kStream, consumer.c_str(), nullptr, nullptr) == NATS_OK) {
      acks.floor = ci->AckFloor.Stream;
      acks.pending = ci->NumAckPending;
      jsConsumerInfo_Destroy(ci);
    }
  }
  if (js != nullptr) jsCtx_Destroy(js);
  if (conn != nullptr) natsConnection_Destroy(conn);
  return acks;
}

uint64_t AckFloor(const std::string& url, const std::string& consumer) {
  return ReadConsumerAcks(url, consumer).floor;
}

TEST(JetStreamPartitionTest, ClientAndEngineAgreeOnTheDocumentedHash) {
  // FNV-1a 32 of "a" is 0xe40c292c (the published test vector).
  EXPECT_EQ(Fnv1a32("a"), 0xe40c292cu);
  EXPECT_EQ(Fnv1a32(""), 2166136261u);
  for (const char* instance : {"gpu-0", "gpu-1", "node-17", "a", ""}) {
    for (uint32_t n : {1u, 2u, 3u, 16u}) {
      EXPECT_EQ(client::JetStreamPartition(instance, n), PartitionOf(instance, n)) << instance;
    }
  }
}

TEST(JetStreamSourceTest, ConsumesEveryPartitionAndReportsStreamPositions) {
  TempDir dir;
  NatsServer server(dir);
  ASSERT_NO_FATAL_FAILURE(MakeStream(server));
  client::JetStreamPublisher pub(PublisherOptions(server.url(), 2));
  ASSERT_TRUE(pub.Connect()) << pub.last_error();
  PublishRequests(pub, 80);
  const uint64_t messages = pub.messages_published();
  ASSERT_GE(messages, 16u);

  Running r(server.url(), {0, 1});
  ASSERT_TRUE(r.Open().ok());
  r.Start();
  ASSERT_TRUE(WaitFor([&] { return r.out.events() >= 80; })) << r.out.events();
  ASSERT_TRUE(WaitFor([&] {
    return r.Counter("inferscope_jetstream_fetched_messages_total", 0) +
               r.Counter("inferscope_jetstream_fetched_messages_total", 1) ==
           messages;
  }));
  r.Stop();
  EXPECT_TRUE(r.run_status.ok()) << r.run_status.ToString();
  EXPECT_EQ(r.out.events(), 80u);
  const auto positions = r.out.positions();
  ASSERT_EQ(positions.size(), 2u);
  // Stream sequences number the messages of both subjects 1..messages: the newest is the last.
  EXPECT_EQ(std::max(positions.at(r.Key(0)), positions.at(r.Key(1))), messages);
  EXPECT_GT(r.Counter("inferscope_jetstream_fetched_messages_total", 0), 0u);
  EXPECT_GT(r.Counter("inferscope_jetstream_fetched_messages_total", 1), 0u);
  // Nothing acked without a durable checkpoint.
  EXPECT_EQ(r.Counter("inferscope_jetstream_acks_total", 0), 0u);
}

TEST(JetStreamSourceTest, BadMessagesAreCountedDeadLettersAndThePositionMovesOn) {
  TempDir dir;
  NatsServer server(dir);
  ASSERT_NO_FATAL_FAILURE(MakeStream(server));
  client::JetStreamPublisher pub(PublisherOptions(server.url(), 1));
  ASSERT_TRUE(pub.Connect()) << pub.last_error();
  ASSERT_TRUE(pub.PublishRaw(0, "not msgpack at all", ""));
  ASSERT_TRUE(pub.PublishRaw(0, std::string("\x81\xa1v\x07", 4), ""));  // {"v": 7}
  PublishRequests(pub, 5);  // one message: stream sequence 3

  Running r(server.url(), {0});
  ASSERT_TRUE(r.Open().ok());
  r.Start();
  ASSERT_TRUE(WaitFor([&] { return r.out.events() == 5; }));
  ASSERT_TRUE(WaitFor([&] { return r.out.positions()[r.Key(0)] == 3; }));
  r.Stop();
  EXPECT_EQ(r.Counter("inferscope_jetstream_dead_letters_total", 0), 2u);
  EXPECT_EQ(r.Counter("inferscope_jetstream_fetched_messages_total", 0), 3u);
}

TEST(JetStreamSourceTest, RestartResumesAfterTheCheckpointedSequenceAndAcksFollowDurability) {
  TempDir dir;
  NatsServer server(dir);
  ASSERT_NO_FATAL_FAILURE(MakeStream(server));
  client::JetStreamPublisher pub(PublisherOptions(server.url(), 1));
  ASSERT_TRUE(pub.Connect()) << pub.last_error();
  PublishRequests(pub, 30);  // 6 messages of 5 events: stream sequences 1..6

  {
    Running first(server.url(), {0});
    ASSERT_TRUE(first.Open().ok());
    first.Start();
    // Two fetches at least: positions 6 and then 10 are batch ends, as checkpoints see them.
    ASSERT_TRUE(WaitFor([&] { return first.out.positions()[first.Key(0)] == 6; }));
    PublishRequests(pub, 20, 30);  // sequences 7..10
    ASSERT_TRUE(WaitFor([&] { return first.out.positions()[first.Key(0)] == 10; }));
    EXPECT_EQ(AckFloor(server.url(), "inferscope-p0"), 0u);
    // A checkpoint holding the effect up to sequence 6 is durable: 6 is acked (AckAll), not 10.
    AppliedSequence durable;
    durable.publisher = first.Key(0);
    durable.seq = 6;
    first.source->OnCheckpointDurable({durable});
    EXPECT_TRUE(WaitFor([&] { return AckFloor(server.url(), "inferscope-p0") == 6; }))
        << AckFloor(server.url(), "inferscope-p0");
    EXPECT_EQ(first.Counter("inferscope_jetstream_acks_total", 0), 1u);
    first.Stop();
  }
  // A restart restored from that checkpoint applies sequences 7..10 only (20 events), although
  // the durable consumer of the first run had been delivered all ten.
  Running second(server.url(), {0});
  ASSERT_TRUE(second.Open().ok());
  AppliedSequence at6;
  at6.seq = 6;
  std::map<std::string, std::string> records;
  records[JetStreamSource::PositionKey(kStream, "inferscope.in.0")] = EncodeAppliedSequence(at6);
  MapReader reader(std::move(records));
  ASSERT_TRUE(second.source->Restore(reader).ok());
  second.Start();
  ASSERT_TRUE(WaitFor([&] { return second.out.positions()[second.Key(0)] == 10; }));
  second.Stop();
  EXPECT_EQ(second.out.events(), 20u);
  EXPECT_EQ(second.Counter("inferscope_jetstream_fetched_messages_total", 0), 4u);
}

// An ack lost on the way (here the server is stopped, the ack sits unread in its socket, and the
// server is killed) on a stream that then stays idle: no later ack covers it, so the server
// redelivers the messages every ack_wait. Before, the source skipped each redelivery (applied
// already) without acking it, for ever: the consumer never drained (a takeover test's "caught up"
// wait once timed out so). Now a redelivery that a durable checkpoint covers is acked at once.
TEST(JetStreamSourceTest, ARedeliveryAfterALostAckIsAcknowledgedAgain) {
  TempDir dir;
  NatsServer server(dir);
  ASSERT_NO_FATAL_FAILURE(MakeStream(server));
  {
    client::JetStreamPublisher pub(PublisherOptions(server.url(), 1));
    ASSERT_TRUE(pub.Connect()) << pub.last_error();
    PublishRequests(pub, 20);  // sequences 1..4
  }
  Running r(server.url(), {0}, [](JetStreamSource::Options& o) { o.ack_wait_ms = 1000; });
  ASSERT_TRUE(r.Open().ok());
  r.Start();
  ASSERT_TRUE(WaitFor([&] { return r.out.positions()[r.Key(0)] == 4; }));

  server.process().Signal(SIGSTOP);
  AppliedSequence durable;
  durable.publisher = r.Key(0);
  durable.seq = 4;
  r.source->OnCheckpointDurable({durable});
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // libnats flushes the ack
  ASSERT_TRUE(server.Restart()) << server.Log();                // it dies unread
  EXPECT_EQ(r.Counter("inferscope_jetstream_acks_total", 0), 1u);

  ASSERT_TRUE(WaitFor(
      [&] {
        const ConsumerAcks acks = ReadConsumerAcks(server.url(), "inferscope-p0");
        return acks.floor == 4 && acks.pending == 0;
      },
      std::chrono::seconds(20)))
      << "ack floor " << ReadConsumerAcks(server.url(), "inferscope-p0").floor << ", pending "
      << ReadConsumerAcks(server.url(), "inferscope-p0").pending << ", redeliveries skipped "
      << r.Counter("inferscope_jetstream_redelivered_skipped_total", 0);
  EXPECT_GE(r.Counter("inferscope_jetstream_redelivered_skipped_total", 0), 1u);
  EXPECT_GE(r.Counter("inferscope_jetstream_acks_total", 0), 2u);
  r.Stop();
  EXPECT_EQ(r.out.events(), 20u);  // nothing applied twice
}

// A message stored after newer ones of its publisher — a JetStream publisher's resend after an
// acknowledgement lost in a leader election, which the new leader stores after what was published
// meanwhile — is applied when it comes (it was counted missing by the gap its absence made), once.
// Before, it was dropped as a duplicate: its events were lost although the stream held them. A run
// restored from a checkpoint between the newer ones and the late one applies it too (the first
// message seen of a publisher marks the numbers before it missing: the consumer starts after the
// checkpoint, so they were not applied since), so the same messages are applied with or without a
// restart in between. A copy of a message stored twice is a duplicate in both runs.
TEST(JetStreamSourceTest, AMessageStoredAfterNewerOnesIsAppliedOnceWithOrWithoutARestart) {
  TempDir dir;
  NatsServer server(dir);
  ASSERT_NO_FATAL_FAILURE(MakeStream(server));
  client::JetStreamPublisher pub(PublisherOptions(server.url(), 1));
  ASSERT_TRUE(pub.Connect()) << pub.last_error();
  // Stream sequences 1..8: publisher "late/p0"'s messages in the order 0 1 3 4 2, then "copy/p0"'s
  // 0 1 1 (three requests each).
  const int64_t t0 = client::NowMs() - 60'000;
  const std::pair<const char*, uint64_t> stored[] = {{"late/p0", 0}, {"late/p0", 1}, {"late/p0", 3},
                                                     {"late/p0", 4}, {"late/p0", 2}, {"copy/p0", 0},
                                                     {"copy/p0", 1}, {"copy/p0", 1}};
  for (const auto& [publisher, seq] : stored) {
    client::BatchEncoder encoder(publisher, seq);
    for (int i = 0; i < 3; ++i) {
      client::RequestOutcome r;
      r.instance = "gpu-0";
      r.model = "llama";
      r.e2e_ms = 100;
      r.time_ms = t0 + static_cast<int64_t>(seq) * 100 + i;
      encoder.AddRequest(r);
    }
    ASSERT_TRUE(pub.PublishRaw(0, encoder.Finish(), "")) << pub.last_error();
  }
  ASSERT_TRUE(pub.Flush()) << pub.last_error();
  const Labels late = {{"stage", "js"}, {"publisher", "late/p0"}};
  const Labels copy = {{"stage", "js"}, {"publisher", "copy/p0"}};

  {
    Running r(server.url(), {0});
    ASSERT_TRUE(r.Open().ok());
    r.Start();
    ASSERT_TRUE(WaitFor([&] { return r.out.positions()[r.Key(0)] == 8; }));
    r.Stop();
    EXPECT_EQ(r.out.events(), 21u);  // late/p0's 0..4 and copy/p0's 0..1, once each
    EXPECT_EQ(r.metrics.CounterValue("inferscope_source_sequence_gaps_total", late), 1u);
    EXPECT_EQ(r.metrics.CounterValue("inferscope_source_late_messages_total", late), 1u);
    EXPECT_EQ(r.metrics.CounterValue("inferscope_source_duplicates_total", copy), 1u);
  }
  // Restored from a checkpoint at stream sequence 3 (late/p0's 0, 1 and 3 applied): its 4 and the
  // late 2 are applied, and copy/p0's 0 and 1 once.
  Running again(server.url(), {0});
  ASSERT_TRUE(again.Open().ok());
  AppliedSequence at3;
  at3.seq = 3;
  std::map<std::string, std::string> records;
  records[JetStreamSource::PositionKey(kStream, "inferscope.in.0")] = EncodeAppliedSequence(at3);
  MapReader reader(std::move(records));
  ASSERT_TRUE(again.source->Restore(reader).ok());
  again.Start();
  ASSERT_TRUE(WaitFor([&] { return again.out.positions()[again.Key(0)] == 8; }));
  again.Stop();
  EXPECT_EQ(again.out.events(), 12u);
  EXPECT_EQ(again.metrics.CounterValue("inferscope_source_late_messages_total", late), 1u);
  EXPECT_EQ(again.metrics.CounterValue("inferscope_source_duplicates_total", copy), 1u);
}

TEST(JetStreamSourceTest, AConsumerDeletedUnderARunningSourceIsCreatedAgainAtItsPosition) {
  TempDir dir;
  NatsServer server(dir);
  ASSERT_NO_FATAL_FAILURE(MakeStream(server));
  client::JetStreamPublisher pub(PublisherOptions(server.url(), 1));
  ASSERT_TRUE(pub.Connect()) << pub.last_error();
  PublishRequests(pub, 25);  // sequences 1..5
  Running r(server.url(), {0});
  ASSERT_TRUE(r.Open().ok());
  r.Start();
  ASSERT_TRUE(WaitFor([&] { return r.out.positions()[r.Key(0)] == 5; }));
  {
    natsConnection* conn = nullptr;
    jsCtx* js = nullptr;
    ASSERT_EQ(natsConnection_ConnectTo(&conn, server.url().c_str()), NATS_OK);
    ASSERT_EQ(natsConnection_JetStream(&js, conn, nullptr), NATS_OK);
    EXPECT_EQ(js_DeleteConsumer(js, kStream, "inferscope-p0", nullptr, nullptr), NATS_OK);
    jsCtx_Destroy(js);
    natsConnection_Destroy(conn);
  }
  PublishRequests(pub, 25, 25);  // sequences 6..10
  ASSERT_TRUE(WaitFor([&] { return r.out.positions()[r.Key(0)] == 10; }))
      << r.out.positions()[r.Key(0)];
  r.Stop();
  EXPECT_EQ(r.out.events(), 50u);  // nothing applied twice, nothing skipped
}

// Publishes `requests` request outcomes of one instance whose partition (of 2) is 1, one message
// per 5 (PublisherOptions' batch_size), event times after `first`.
void PublishToPartitionOne(client::JetStreamPublisher& pub, int requests, int first) {
  std::string instance;
  for (int i = 0; instance.empty(); ++i) {
    const std::string name = "gpu-" + std::to_string(i);
    if (client::JetStreamPartition(name, 2) == 1) instance = name;
  }
  PublishRequests(pub, requests, first, instance);
}

// A delivery lost on the way, as when the server a client is connected through dies with it in
// flight: here a pull request of the test's own (the server cannot tell it from the source's)
// takes one message of partition 1 while the source waits on partition 0. The next delivery the
// source gets skips a consumer sequence; it creates the consumer again after its position and
// applies the lost message once. Before, it applied the next ones, and its AckAll ack after the
// checkpoint covered the lost message too: its events were gone for good.
TEST(JetStreamSourceTest, ADeliveryLostOnTheWayIsFetchedAgainNotSkipped) {
  TempDir dir;
  NatsServer server(dir);
  ASSERT_NO_FATAL_FAILURE(MakeStream(server));
  client::JetStreamPublisher pub(PublisherOptions(server.url(), 2));
  ASSERT_TRUE(pub.Connect()) << pub.last_error();
  ASSERT_NO_FATAL_FAILURE(PublishToPartitionOne(pub, 20, 0));  // sequences 1..4
  // Each empty fetch of partition 0 waits 300 ms with no request of the source's open on 1.
  Running r(server.url(), {0, 1}, [](JetStreamSource::Options& o) { o.fetch_wait_ms = 300; });
  ASSERT_TRUE(r.Open().ok());
  r.Start();
  ASSERT_TRUE(WaitFor([&] { return r.out.positions()[r.Key(1)] == 4; }));

  natsConnection* conn = nullptr;
  ASSERT_EQ(natsConnection_ConnectTo(&conn, server.url().c_str()), NATS_OK);
  natsSubscription* inbox = nullptr;
  ASSERT_EQ(natsConnection_SubscribeSync(&inbox, conn, "test.stolen"), NATS_OK);
  int published = 20;
  uint64_t stolen_seq = 0;
  for (int attempt = 0; attempt < 100 && stolen_seq == 0; ++attempt) {
    ASSERT_NO_FATAL_FAILURE(PublishToPartitionOne(pub, 5, published));  // one message
    published += 5;
    const std::string pull = "{\"batch\":1,\"no_wait\":true}";
    ASSERT_EQ(
        natsConnection_PublishRequest(conn, "$JS.API.CONSUMER.MSG.NEXT.INFERSCOPE.inferscope-p1",
                                      "test.stolen", pull.data(), static_cast<int>(pull.size())),
        NATS_OK);
    natsMsg* msg = nullptr;
    ASSERT_EQ(natsSubscription_NextMsg(&msg, inbox, 5000), NATS_OK);
    const char* reply = natsMsg_GetReply(msg);
    if (reply != nullptr && std::string_view(reply).starts_with("$JS.ACK.")) {
      jsMsgMetaData* meta = nullptr;
      ASSERT_EQ(natsMsg_GetMetaData(&meta, msg), NATS_OK);
      stolen_seq = meta->Sequence.Stream;  // delivered, never acked: lost on the way
      jsMsgMetaData_Destroy(meta);
    }
    natsMsg_Destroy(msg);  // else a 404 status: the source had fetched it; try again
  }
  natsSubscription_Destroy(inbox);
  natsConnection_Destroy(conn);
  ASSERT_GT(stolen_seq, 0u) << "the source fetched every message before the test's pull request";
  ASSERT_NO_FATAL_FAILURE(PublishToPartitionOne(pub, 10, published));  // two more messages
  published += 10;
  const uint64_t last = pub.messages_published();

  ASSERT_TRUE(WaitFor([&] { return r.out.positions()[r.Key(1)] == last; }))
      << r.out.positions()[r.Key(1)] << " of " << last;
  ASSERT_TRUE(WaitFor([&] { return r.out.events() == static_cast<size_t>(published); }))
      << r.out.events() << " events of " << published << " (message " << stolen_seq
      << " was lost on the way)";
  EXPECT_GE(r.Counter("inferscope_jetstream_delivery_gaps_total", 1), 1u);
  EXPECT_EQ(r.Counter("inferscope_jetstream_delivery_gaps_total", 0), 0u);
  r.Stop();
  EXPECT_EQ(r.out.events(), static_cast<size_t>(published));  // and nothing applied twice
}

// The server dies under a running source: the loss is reported once (health entry, gauge,
// counter), the source stops fetching, and after the server is back on the same port and store it
// reconnects (reported once) and consumes what was published since.
TEST(JetStreamSourceTest, ALostConnectionIsReportedOnceAndFetchingResumesAfterTheReconnection) {
  TempDir dir;
  NatsServer server(dir);
  ASSERT_NO_FATAL_FAILURE(MakeStream(server));
  {
    client::JetStreamPublisher pub(PublisherOptions(server.url(), 1));
    ASSERT_TRUE(pub.Connect()) << pub.last_error();
    PublishRequests(pub, 10);
  }
  SourceHealth health;
  Running r(server.url(), {0});
  r.ctx.services.Provide(&health);
  ASSERT_TRUE(r.Open().ok());
  r.Start();
  ASSERT_TRUE(WaitFor([&] { return r.out.events() == 10; }));
  auto connection = [&] {
    const std::vector<SourceHealth::Connection> all = health.Connections();
    return all.empty() ? SourceHealth::Connection() : all.front();
  };
  auto gauge = [&](const std::string& name) {
    return r.metrics.GetGauge(name, "", {{"stage", "js"}})->value();
  };
  auto counter = [&](const std::string& name) {
    return r.metrics.GetCounter(name, "", {{"stage", "js"}})->value();
  };
  EXPECT_TRUE(connection().connected);
  EXPECT_EQ(connection().stage, "js");
  EXPECT_EQ(connection().kind, "jetstream");
  EXPECT_EQ(connection().server, server.url());
  EXPECT_EQ(gauge("inferscope_jetstream_connected"), 1);
  ASSERT_TRUE(WaitFor([&] { return connection().last_fetch_ms > 0; }));

  server.process().Signal(SIGKILL);
  server.process().Wait();
  ASSERT_TRUE(WaitFor([&] { return !connection().connected; }));
  EXPECT_EQ(connection().disconnects, 1u);
  EXPECT_EQ(connection().server, "");
  EXPECT_EQ(gauge("inferscope_jetstream_connected"), 0);
  EXPECT_EQ(counter("inferscope_jetstream_disconnects_total"), 1u);
  // No fetch completes while the connection is down.
  const int64_t last_fetch = connection().last_fetch_ms;
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(connection().last_fetch_ms, last_fetch);

  ASSERT_TRUE(server.Restart()) << server.Log();
  ASSERT_TRUE(WaitFor([&] { return connection().connected; }));
  EXPECT_EQ(connection().reconnects, 1u);
  EXPECT_EQ(connection().server, server.url());
  EXPECT_EQ(gauge("inferscope_jetstream_connected"), 1);
  EXPECT_EQ(counter("inferscope_jetstream_reconnects_total"), 1u);
  {
    client::JetStreamPublisherOptions o = PublisherOptions(server.url(), 1);
    o.publisher_id = "after";  // "test" again would number from 0 again: duplicates
    client::JetStreamPublisher pub(o);
    ASSERT_TRUE(pub.Connect()) << pub.last_error();
    PublishRequests(pub, 10, 10);
  }
  ASSERT_TRUE(WaitFor([&] { return r.out.events() == 20; })) << r.out.events();
  // Reported at most once a second while fetching.
  EXPECT_TRUE(WaitFor([&] { return connection().last_fetch_ms > last_fetch; }));
  r.Stop();
  EXPECT_TRUE(health.Connections().empty());                         // removed at Close
  EXPECT_EQ(counter("inferscope_jetstream_disconnects_total"), 1u);  // Close is not a loss
}

// Without resends (resend_deadline_ms 0), a publish whose acknowledgement is lost (the server
// stopped with it in flight) is counted failed after ack_timeout_ms, and later Flushes succeed
// again.
TEST(JetStreamPublisherTest, WithoutResendsAnAckTimeoutFailsThePublishAndLaterFlushesRecover) {
  TempDir dir;
  NatsServer server(dir);
  ASSERT_NO_FATAL_FAILURE(MakeStream(server));
  client::JetStreamPublisherOptions o = PublisherOptions(server.url(), 1);
  o.ack_timeout_ms = 1000;
  o.resend_deadline_ms = 0;
  client::JetStreamPublisher pub(o);
  ASSERT_TRUE(pub.Connect()) << pub.last_error();
  PublishRequests(pub, 10);
  ASSERT_EQ(pub.failed_messages(), 0u);

  // The server is stopped while 4 messages are published: their acknowledgements never come.
  ASSERT_TRUE(server.process().Pause());
  for (int i = 0; i < 20; ++i) {
    client::RequestOutcome r;
    r.instance = "gpu-0";
    r.model = "llama";
    r.e2e_ms = 100;
    ASSERT_TRUE(pub.Request(r)) << pub.last_error();
  }
  EXPECT_FALSE(pub.Flush());
  EXPECT_EQ(pub.failed_messages(), 4u) << pub.last_error();
  ASSERT_TRUE(server.Restart()) << server.Log();

  // Once reconnected, a publish is acknowledged and Flush succeeds (before the fix every Flush
  // timed out waiting for the lost acknowledgements).
  const uint64_t failed = pub.failed_messages();
  bool recovered = WaitFor([&] {
    client::RequestOutcome r;
    r.instance = "gpu-1";
    r.model = "llama";
    r.e2e_ms = 100;
    return pub.Request(r) && pub.Flush();
  });
  EXPECT_TRUE(recovered) << pub.last_error();
  EXPECT_GE(pub.failed_messages(), failed);
}

// The stream's messages of one subject, in stream order: (publisher id, sequence) of each payload.
std::vector<std::pair<std::string, uint64_t>> StoredMessages(const std::string& url,
                                                             const std::string& subject) {
  std::vector<std::pair<std::string, uint64_t>> out;
  WithJs(url, [&](jsCtx* js) {
    for (uint64_t seq = 1;; ++seq) {
      natsMsg* msg = nullptr;
      if (js_GetMsg(&msg, js, kStream, seq, nullptr, nullptr) != NATS_OK) break;
      if (natsMsg_GetSubject(msg) == subject) {
        Envelope envelope;
        const std::string_view payload(natsMsg_GetData(msg),
                                       static_cast<size_t>(natsMsg_GetDataLength(msg)));
        if (PeekEnvelope(payload, &envelope)) out.emplace_back(envelope.publisher, envelope.seq);
      }
      natsMsg_Destroy(msg);
    }
  });
  return out;
}

// Resends: the server is stopped with messages in flight, then killed and started again on the same
// store. The publisher resends what was not acknowledged (same Nats-Msg-Id) once it has
// reconnected; every message is stored exactly once, in order, and Flush succeeds.
TEST(JetStreamPublisherTest, PublishesLostWithTheServerAreResentAndStoredExactlyOnceInOrder) {
  TempDir dir;
  NatsServer server(dir);
  ASSERT_NO_FATAL_FAILURE(MakeStream(server));
  client::JetStreamPublisherOptions o = PublisherOptions(server.url(), 1);
  o.ack_timeout_ms = 1000;
  o.resend_deadline_ms = 30'000;
  client::JetStreamPublisher pub(o);
  ASSERT_TRUE(pub.Connect()) << pub.last_error();
  PublishRequests(pub, 50);  // sequences 0..9, acknowledged
  // Stopped: messages 10..13 are published and their acknowledgements do not come; some may be
  // stored (the server reads them before it is killed), some not.
  ASSERT_TRUE(server.process().Pause());
  for (int i = 0; i < 20; ++i) {
    client::RequestOutcome r;
    r.instance = "gpu-0";
    r.model = "llama";
    r.e2e_ms = 100;
    ASSERT_TRUE(pub.Request(r)) << pub.last_error();
  }
  std::thread restart([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // the publishes time out
    EXPECT_TRUE(server.Restart()) << server.Log();
  });
  const bool flushed = pub.Flush();  // resends once reconnected
  restart.join();
  EXPECT_TRUE(flushed) << pub.last_error();
  EXPECT_EQ(pub.failed_messages(), 0u);
  EXPECT_GT(pub.resent_messages(), 0u);
  // One more after the recovery.
  PublishRequests(pub, 5, 70);
  const auto stored = StoredMessages(server.url(), "inferscope.in.0");
  ASSERT_EQ(stored.size(), 15u);
  for (size_t i = 0; i < stored.size(); ++i) {
    EXPECT_EQ(stored[i].first, "test/p0");
    EXPECT_EQ(stored[i].second, i) << "stream position " << i;
  }
}

// Resends need the stream's duplicate window: Connect refuses a stream whose window is shorter
// than resend_deadline_ms + ack_timeout_ms (a resend of a stored message would be stored twice).
TEST(JetStreamPublisherTest, ConnectRefusesADuplicateWindowShorterThanTheResendDeadline) {
  TempDir dir;
  NatsServer server(dir);
  ASSERT_FALSE(server.url().empty()) << server.Log();
  WithJs(server.url(), [](jsCtx* js) {
    const char* subjects[] = {"inferscope.in.*"};
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = kStream;
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Duplicates = int64_t{5'000} * 1'000'000;  // 5 s
    jsStreamInfo* info = nullptr;
    ASSERT_EQ(js_AddStream(&info, js, &cfg, nullptr, nullptr), NATS_OK);
    jsStreamInfo_Destroy(info);
  });
  client::JetStreamPublisher refused(PublisherOptions(server.url(), 1));  // 30 s + 10 s
  EXPECT_FALSE(refused.Connect());
  EXPECT_NE(refused.last_error().find("duplicate window (5000 ms) is shorter"), std::string::npos)
      << refused.last_error();
  client::JetStreamPublisherOptions o = PublisherOptions(server.url(), 1);
  o.resend_deadline_ms = 3'000;
  o.ack_timeout_ms = 1'000;
  client::JetStreamPublisher fits(o);
  EXPECT_TRUE(fits.Connect()) << fits.last_error();
}

TEST(JetStreamPublisherTest, EnsureStreamRefusesAnExistingStreamWithOtherReplicas) {
  TempDir dir;
  NatsServer server(dir);
  ASSERT_FALSE(server.url().empty()) << server.Log();
  std::string error;
  ASSERT_TRUE(
      client::JetStreamPublisher::EnsureStream(server.url(), kStream, "inferscope.in", &error, 1))
      << error;
  EXPECT_TRUE(
      client::JetStreamPublisher::EnsureStream(server.url(), kStream, "inferscope.in", &error, 1))
      << error;
  EXPECT_FALSE(
      client::JetStreamPublisher::EnsureStream(server.url(), kStream, "inferscope.in", &error, 3));
  EXPECT_NE(error.find("exists with 1 replica(s), not the 3 asked for"), std::string::npos)
      << error;
}

TEST(JetStreamSourceTest, OptionsAreValidated) {
  JetStreamSource::Options o;
  o.url = std::string("nats://127.0.0.1:1");
  o.stream = std::string("S");      // (assigning a literal trips GCC 12's false -Wrestrict here)
  EXPECT_FALSE(o.Validate().ok());  // no partitions
  o.partitions = {0, 0};
  EXPECT_FALSE(o.Validate().ok());
  o.partitions = {0, 1};
  EXPECT_TRUE(o.Validate().ok());
  o.durable = "a.b";
  EXPECT_FALSE(o.Validate().ok());
  o.durable = "ok";
  o.fetch_wait_ms = 5000;
  EXPECT_FALSE(o.Validate().ok());
}

TEST(JetStreamSourceTest, AnEmptyUrlListOrItemIsRefusedNamingTheUrlOption) {
  JetStreamSource::Options o;
  o.stream = std::string("S");
  o.partitions = {0};
  for (const char* bad : {"", ",", " ", ", ,", "nats://127.0.0.1:1,", "nats://a:1,,nats://b:2"}) {
    o.url = std::string(bad);
    const Status st = o.Validate();
    EXPECT_FALSE(st.ok()) << "'" << bad << "'";
    EXPECT_NE(st.ToString().find("url: "), std::string::npos) << st.ToString();
  }
  o.url = std::string(" nats://127.0.0.1:1 ,\tnats://127.0.0.1:2");
  EXPECT_TRUE(o.Validate().ok());
  std::vector<std::string> servers;
  std::string error;
  ASSERT_TRUE(client::SplitNatsUrls(o.url, &servers, &error)) << error;
  EXPECT_EQ(servers, (std::vector<std::string>{"nats://127.0.0.1:1", "nats://127.0.0.1:2"}));

  // The publisher refuses them before connecting (libnats would try nats://localhost:4222).
  client::JetStreamPublisherOptions po = PublisherOptions(", ,", 1);
  client::JetStreamPublisher pub(po);
  EXPECT_FALSE(pub.Connect());
  EXPECT_NE(pub.last_error().find("url: "), std::string::npos) << pub.last_error();
  EXPECT_FALSE(client::JetStreamPublisher::EnsureStream(" ", "S", "inferscope.in", &error));
  EXPECT_NE(error.find("url: "), std::string::npos) << error;
}

TEST(JetStreamSourceTest, OpenFailsClearlyWithoutTheStream) {
  TempDir dir;
  NatsServer server(dir);
  ASSERT_FALSE(server.url().empty()) << server.Log();
  Running r(server.url(), {0});
  Status st = r.Open();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.ToString().find("INFERSCOPE"), std::string::npos) << st.ToString();
}

TEST(JetStreamSourceTest, OpenRefusesWorkQueueAndInterestStreams) {
  TempDir dir;
  NatsServer server(dir);
  ASSERT_FALSE(server.url().empty()) << server.Log();
  for (jsRetentionPolicy retention : {js_WorkQueuePolicy, js_InterestPolicy}) {
    WithJs(server.url(), [&](jsCtx* js) {
      js_DeleteStream(js, kStream, nullptr, nullptr);
      jsStreamConfig sc;
      jsStreamConfig_Init(&sc);
      sc.Name = kStream;
      const char* subjects[] = {"inferscope.in.*"};
      sc.Subjects = subjects;
      sc.SubjectsLen = 1;
      sc.Retention = retention;
      jsStreamInfo* si = nullptr;
      ASSERT_EQ(js_AddStream(&si, js, &sc, nullptr, nullptr), NATS_OK);
      jsStreamInfo_Destroy(si);
    });
    Running r(server.url(), {0});
    Status st = r.Open();
    ASSERT_FALSE(st.ok());
    const std::string name = retention == js_WorkQueuePolicy ? "work-queue" : "interest";
    EXPECT_NE(st.ToString().find("'INFERSCOPE' has " + name + " retention"), std::string::npos)
        << st.ToString();
  }
}

TEST(JetStreamSourceTest, APositionOutsideTheStreamIsWarnedAndCountedAsAGap) {
  TempDir dir;
  NatsServer server(dir);
  ASSERT_NO_FATAL_FAILURE(MakeStream(server));
  client::JetStreamPublisher pub(PublisherOptions(server.url(), 1));
  ASSERT_TRUE(pub.Connect()) << pub.last_error();
  PublishRequests(pub, 25);  // sequences 1..5
  WithJs(server.url(),
         [](jsCtx* js) { ASSERT_EQ(js_PurgeStream(js, kStream, nullptr, nullptr), NATS_OK); });
  PublishRequests(pub, 25, 25);  // sequences 6..10: the stream holds 6..10
  auto restore_at = [](Running& r, uint64_t seq) {
    AppliedSequence a;
    a.seq = seq;
    std::map<std::string, std::string> records;
    records[JetStreamSource::PositionKey(kStream, "inferscope.in.0")] = EncodeAppliedSequence(a);
    MapReader reader(std::move(records));
    ASSERT_TRUE(r.source->Restore(reader).ok());
  };
  {
    // Applied up to 2, but 3..5 were purged: a gap, and 6..10 are applied.
    Running r(server.url(), {0});
    ASSERT_TRUE(r.Open().ok());
    restore_at(r, 2);
    r.Start();
    ASSERT_TRUE(WaitFor([&] { return r.out.positions()[r.Key(0)] == 10; }));
    r.Stop();
    EXPECT_EQ(r.out.events(), 25u);
    EXPECT_EQ(r.Counter("inferscope_jetstream_position_gaps_total", 0), 1u);
  }
  {
    // Applied up to 5, the stream starts at 6: no gap.
    Running r(server.url(), {0});
    ASSERT_TRUE(r.Open().ok());
    restore_at(r, 5);
    r.Start();
    ASSERT_TRUE(WaitFor([&] { return r.out.positions()[r.Key(0)] == 10; }));
    r.Stop();
    EXPECT_EQ(r.Counter("inferscope_jetstream_position_gaps_total", 0), 0u);
  }
  {
    // A position beyond the stream's last sequence (a recreated stream): a gap.
    Running r(server.url(), {0});
    ASSERT_TRUE(r.Open().ok());
    restore_at(r, 40);
    r.Start();
    ASSERT_TRUE(
        WaitFor([&] { return r.Counter("inferscope_jetstream_position_gaps_total", 0) == 1; }));
    r.Stop();
    EXPECT_EQ(r.out.events(), 0u);
  }
}

TEST(JetStreamSourceTest, APublisherLimitHoldsThePartitionInsteadOfSkippingTheMessage) {
  TempDir dir;
  NatsServer server(dir);
  ASSERT_NO_FATAL_FAILURE(MakeStream(server));
  client::JetStreamPublisher first(PublisherOptions(server.url(), 1));
  ASSERT_TRUE(first.Connect()) << first.last_error();
  PublishRequests(first, 10);  // sequences 1..2, publisher test/p0
  client::JetStreamPublisherOptions o = PublisherOptions(server.url(), 1);
  o.publisher_id = "other";
  client::JetStreamPublisher second(o);
  ASSERT_TRUE(second.Connect()) << second.last_error();
  PublishRequests(second, 5, 10);  // sequence 3: a second publisher, beyond max_publishers = 1
  PublishRequests(first, 5, 15);   // sequence 4

  Running r(server.url(), {0},
            [](JetStreamSource::Options& opt) { opt.decoder.max_publishers = 1; });
  ASSERT_TRUE(r.Open().ok());
  r.Start();
  // Held at sequence 3 and fetched again (a new consumer at the position) at least once more.
  ASSERT_TRUE(WaitFor([&] { return r.Counter("inferscope_jetstream_held_total", 0) >= 2; }));
  r.Stop();
  EXPECT_EQ(r.out.positions()[r.Key(0)], 2u);  // not past the refused message
  EXPECT_EQ(r.out.events(), 10u);              // sequence 4 waits behind it
  EXPECT_EQ(r.Counter("inferscope_jetstream_dead_letters_total", 0), 0u);
  EXPECT_EQ(r.Counter("inferscope_jetstream_acks_total", 0), 0u);
}

TEST(JetStreamSourceTest, AFetchOfLargeMessagesIsEmittedInBoundedBatches) {
  TempDir dir;
  NatsServer server(dir);
  ASSERT_NO_FATAL_FAILURE(MakeStream(server));
  client::JetStreamPublisherOptions o = PublisherOptions(server.url(), 1);
  o.batch_size = 5000;
  client::JetStreamPublisher pub(o);
  ASSERT_TRUE(pub.Connect()) << pub.last_error();
  PublishRequests(pub, 20000);  // 4 messages of 5,000 events, fetched together (fetch_batch 256)
  Running r(server.url(), {0});
  ASSERT_TRUE(r.Open().ok());
  r.Start();
  ASSERT_TRUE(WaitFor([&] { return r.out.positions()[r.Key(0)] == 4; }));
  r.Stop();
  EXPECT_EQ(r.out.events(), 20000u);
  // A batch is closed once it holds 8,192 events: at most 2 messages of 5,000 each.
  EXPECT_LE(r.out.max_batch(), 10000u);
  EXPECT_GE(r.out.batches(), 2u);
}

}  // namespace
}  // namespace inferscope
