#include "sources/zmq_source.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <yaml-cpp/yaml.h>
#include <zmq.hpp>

#include "clients/cpp/acked_publisher.h"
#include "clients/cpp/publisher.h"
#include "pipeline/clock.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "pipeline/registry.h"
#include "sources/ack_messages.h"
#include "sources/register.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

constexpr auto kDeadline = std::chrono::seconds(30);

// A real SourceOutput: a small pool of batches and a queue that the test thread drains.
class TestOutput final : public SourceOutput {
 public:
  // `queue_capacity`: TryEmit fails when this many batches are queued (Emit ignores it).
  explicit TestOutput(size_t queue_capacity = 64) : capacity_(queue_capacity) {}

  EventBatchPtr Acquire() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return nullptr;
    ++outstanding_;
    if (pool_.empty()) return std::make_unique<EventBatch>();
    EventBatchPtr b = std::move(pool_.back());
    pool_.pop_back();
    return b;
  }
  bool Emit(EventBatchPtr batch) override {
    std::lock_guard<std::mutex> lock(mu_);
    --outstanding_;  // taken back, queued or (when stopping) recycled
    if (stopping_) return false;
    queue_.push_back(std::move(batch));
    cv_.notify_all();
    return true;
  }
  bool TryEmit(EventBatchPtr& batch) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ || queue_.size() >= capacity_) return false;
    --outstanding_;
    queue_.push_back(std::move(batch));
    cv_.notify_all();
    return true;
  }
  void Release(EventBatchPtr batch) override {
    std::lock_guard<std::mutex> lock(mu_);
    --outstanding_;
    batch->Clear();
    pool_.push_back(std::move(batch));
  }
  void Stop() {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }

  // Moves the queued events into `events_` (waiting up to 50 ms for a batch), recycling batches.
  void Drain() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::milliseconds(50), [&] { return !queue_.empty(); });
    while (!queue_.empty()) {
      EventBatchPtr b = std::move(queue_.front());
      queue_.pop_front();
      ++batches_;
      events_.insert(events_.end(), b->events.begin(), b->events.end());
      sequences_.insert(sequences_.end(), b->sequences.begin(), b->sequences.end());
      b->Clear();
      pool_.push_back(std::move(b));
    }
  }

  // Drains until `done()` holds or the deadline passes.
  bool WaitFor(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + kDeadline;
    while (std::chrono::steady_clock::now() < deadline) {
      Drain();
      if (done()) return true;
    }
    return false;
  }

  const std::vector<Event>& events() const { return events_; }
  // The sequence numbers the batches carried (applied or consumed messages), in order.
  const std::vector<AppliedSequence>& sequences() const { return sequences_; }
  size_t batches() const { return batches_; }
  // Batches handed out by Acquire and not yet given back (Release, Emit, successful TryEmit).
  int64_t outstanding() {
    std::lock_guard<std::mutex> lock(mu_);
    return outstanding_;
  }

 private:
  const size_t capacity_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<EventBatchPtr> pool_;
  std::deque<EventBatchPtr> queue_;
  bool stopping_ = false;
  std::vector<Event> events_;
  std::vector<AppliedSequence> sequences_;
  size_t batches_ = 0;
  int64_t outstanding_ = 0;
};

// Opens a ZmqSource and runs it on its own thread until destroyed.
class Harness {
 public:
  explicit Harness(ZmqSource::Options options, size_t queue_capacity = 64)
      : output(queue_capacity), source(std::move(options)) {
    StageContext ctx;
    ctx.name = "zmq-in";
    ctx.interner = &interner;
    ctx.metrics = &metrics;
    ctx.clock = &SystemClock::Instance();
    Status st = source.Open(ctx);
    EXPECT_TRUE(st.ok()) << st.ToString();
    if (st.ok()) {
      thread = std::thread([this] { run_status = source.Run(output, stop); });
    }
  }
  ~Harness() {
    StopAndJoin();
    EXPECT_TRUE(run_status.ok()) << run_status.ToString();
    source.Close();
  }
  // Stops Run and waits for it to return.
  void StopAndJoin() {
    stop = true;
    source.Interrupt();  // Run blocks in its poll until a message or this
    if (thread.joinable()) thread.join();
  }

  uint64_t Counter(std::string_view name, const Labels& labels = {}) const {
    return metrics.CounterValue(name, labels);
  }
  size_t EventsFrom(std::string_view publisher) const {
    return std::count_if(output.events().begin(), output.events().end(),
                         [&](const Event& e) { return interner.Name(e.publisher) == publisher; });
  }

  Interner interner;
  MetricsRegistry metrics;
  TestOutput output;
  ZmqSource source;
  std::atomic<bool> stop{false};
  Status run_status;
  std::thread thread;
};

// Sends one valid message of one gauge event: PUSH→PULL keeps order, so once its event is out,
// everything the socket sent before it has been counted.
void SendOneGauge(zmq::socket_t& push) {
  client::BatchEncoder encoder("raw-pub");
  encoder.AddGauge("n", "m", "g", 1.0);
  std::string_view payload = encoder.Finish();
  push.send(zmq::str_buffer("metrics"), zmq::send_flags::sndmore);
  push.send(zmq::buffer(payload.data(), payload.size()), zmq::send_flags::none);
}

ZmqSource::Options PullOptions() {
  ZmqSource::Options o;
  o.endpoint = "tcp://127.0.0.1:*";
  return o;
}

TEST(ZmqSourceTest, ResolvesWildcardEndpoint) {
  Harness h(PullOptions());
  std::string ep = h.source.Endpoint();
  EXPECT_EQ(ep.rfind("tcp://127.0.0.1:", 0), 0u) << ep;
  EXPECT_EQ(ep.find('*'), std::string::npos) << ep;
  EXPECT_GT(std::stoi(ep.substr(ep.rfind(':') + 1)), 0);
}

TEST(ZmqSourceTest, PullReceivesBatchesFromTheCppPublisher) {
  ZmqSource::Options options = PullOptions();
  options.batch_events = 300;
  Harness h(options);
  client::PublisherOptions po;
  po.endpoint = h.source.Endpoint();
  po.publisher_id = "cpp-pub";
  po.batch_size = 100;
  client::Publisher pub(po);
  std::string error;
  ASSERT_TRUE(pub.Connect(&error)) << error;

  const int64_t now = client::NowMs();
  constexpr int kRequests = 1000;
  for (int i = 0; i < kRequests; ++i) {
    client::RequestOutcome r;
    r.instance = i % 2 == 0 ? "node-even" : "node-odd";
    r.model = "llama";
    r.e2e_ms = i;
    r.ttft_ms = i / 2.0;
    r.output_tokens = static_cast<uint32_t>(i);
    r.error = i % 10 == 0 ? "timeout" : "";
    r.time_ms = now;
    ASSERT_TRUE(pub.Request(r)) << pub.last_error();
  }
  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(pub.Gauge("node-even", "llama", "kv_cache_usage", i / 10.0, now));
  ASSERT_TRUE(pub.Flush());
  EXPECT_EQ(pub.messages_sent(), 11u);
  EXPECT_EQ(pub.events_sent(), 1010u);

  // The publisher stays open until everything is counted (no fire-and-forget tail).
  ASSERT_TRUE(h.output.WaitFor([&] { return h.output.events().size() >= 1010; }))
      << h.output.events().size();
  EXPECT_EQ(h.output.events().size(), 1010u);
  std::vector<bool> seen(kRequests, false);
  int gauges = 0;
  for (const Event& e : h.output.events()) {
    EXPECT_EQ(h.interner.Name(e.publisher), "cpp-pub");
    EXPECT_EQ(e.time_ms, now);
    if (e.kind == EventKind::kGauge) {
      EXPECT_EQ(h.interner.Name(e.metric), "kv_cache_usage");
      ++gauges;
      continue;
    }
    int i = static_cast<int>(e.e2e_ms);
    ASSERT_GE(i, 0);
    ASSERT_LT(i, kRequests);
    EXPECT_FALSE(seen[i]);
    seen[i] = true;
    EXPECT_EQ(h.interner.Name(e.instance), i % 2 == 0 ? "node-even" : "node-odd");
    EXPECT_EQ(h.interner.Name(e.model), "llama");
    EXPECT_DOUBLE_EQ(e.ttft_ms, i / 2.0);
    EXPECT_EQ(e.output_tokens, static_cast<uint32_t>(i));
    EXPECT_EQ(e.error, i % 10 == 0 ? ErrorKind::kTimeout : ErrorKind::kNone);
  }
  EXPECT_EQ(gauges, 10);
  EXPECT_EQ(std::count(seen.begin(), seen.end(), true), kRequests);
  EXPECT_EQ(h.Counter("inferscope_source_messages_total", {{"stage", "zmq-in"}}), 11u);
  EXPECT_EQ(h.Counter("inferscope_source_events_total"), 1010u);
  EXPECT_EQ(h.Counter("inferscope_source_sequence_gaps_total"), 0u);
  EXPECT_EQ(h.Counter("inferscope_source_duplicates_total"), 0u);
  EXPECT_GT(h.Counter("inferscope_source_bytes_total"), 1010u * 40);
}

TEST(ZmqSourceTest, BadFramesAndGarbageAreCountedAndSurvived) {
  Harness h(PullOptions());
  zmq::context_t ctx(1);
  zmq::socket_t push(ctx, zmq::socket_type::push);
  push.set(zmq::sockopt::linger, 0);
  push.connect(h.source.Endpoint());

  push.send(zmq::str_buffer("only-one-frame"), zmq::send_flags::none);
  push.send(zmq::str_buffer("metrics"), zmq::send_flags::sndmore);
  push.send(zmq::str_buffer("a"), zmq::send_flags::sndmore);
  push.send(zmq::str_buffer("b"), zmq::send_flags::none);
  push.send(zmq::str_buffer("metrics"), zmq::send_flags::sndmore);
  push.send(zmq::str_buffer("\xc1 definitely not msgpack"), zmq::send_flags::none);
  push.send(zmq::str_buffer("metrics"), zmq::send_flags::sndmore);
  push.send(zmq::buffer(std::string(3000, '\x91')), zmq::send_flags::none);
  // Then a valid message: PUSH→PULL keeps order, so once it is counted so is everything before.
  SendOneGauge(push);

  ASSERT_TRUE(h.output.WaitFor([&] { return h.output.events().size() >= 1; }));
  EXPECT_EQ(h.Counter("inferscope_source_rejected_total", {{"reason", "bad_frames"}}), 2u);
  EXPECT_EQ(h.Counter("inferscope_source_rejected_total", {{"reason", "not_msgpack"}}), 2u);
  EXPECT_EQ(h.Counter("inferscope_source_messages_total"), 5u);
  EXPECT_EQ(h.Counter("inferscope_source_events_total"), 1u);
}

// A frame far over max_message_bytes was assembled whole by libzmq before the decoder refused it
// (three 800 MB messages: 2.3 GB resident). ZMQ_MAXMSGSIZE now cuts its connection at the frame's
// header, so it never reaches the decoder; one just over the limit is still counted. A topic
// frame is bounded the same way (a 50 MB topic was accepted).
TEST(ZmqSourceTest, AFrameFarOverTheLimitIsCutAtItsHeaderAndTheRestFlows) {
  ZmqSource::Options options = PullOptions();
  options.decoder.max_message_bytes = 1024;
  Harness h(options);
  zmq::context_t ctx(1);
  auto connect = [&] {
    zmq::socket_t push(ctx, zmq::socket_type::push);
    push.set(zmq::sockopt::linger, 1000);
    push.connect(h.source.Endpoint());
    return push;
  };
  const std::string giant(1024 + ZmqSource::kFrameSlackBytes + 1, '\x91');
  {
    zmq::socket_t push = connect();
    push.send(zmq::str_buffer("metrics"), zmq::send_flags::sndmore);
    push.send(zmq::buffer(giant), zmq::send_flags::none);
  }
  {
    zmq::socket_t push = connect();
    push.send(zmq::buffer(giant), zmq::send_flags::sndmore);  // the topic frame
    push.send(zmq::str_buffer("x"), zmq::send_flags::none);
  }
  zmq::socket_t push = connect();
  push.send(zmq::str_buffer("metrics"), zmq::send_flags::sndmore);
  push.send(zmq::buffer(std::string(1100, '\x91')), zmq::send_flags::none);  // just over
  SendOneGauge(push);

  ASSERT_TRUE(h.output.WaitFor([&] { return h.output.events().size() >= 1; }));
  EXPECT_EQ(h.Counter("inferscope_source_rejected_total", {{"reason", "message_too_large"}}), 1u);
  EXPECT_EQ(h.Counter("inferscope_source_messages_total"), 2u);
  EXPECT_LT(h.Counter("inferscope_source_bytes_total"), 4096u);
}

TEST(ZmqSourceTest, SubModeFiltersTopicsByPrefix) {
  zmq::context_t ctx(1);
  zmq::socket_t pub(ctx, zmq::socket_type::pub);
  pub.set(zmq::sockopt::linger, 0);
  pub.bind("tcp://127.0.0.1:*");
  const std::string endpoint = pub.get(zmq::sockopt::last_endpoint);

  ZmqSource::Options options;
  options.endpoint = endpoint;
  options.mode = ZmqSource::Mode::kSub;  // connects
  options.topics = {"metrics"};
  Harness h(options);
  EXPECT_EQ(h.source.Endpoint(), "");  // binds nothing

  client::BatchEncoder wanted("sub-pub");
  client::BatchEncoder unwanted("other-pub");
  auto send = [&](std::string_view topic, client::BatchEncoder& enc) {
    for (int i = 0; i < 5; ++i) enc.AddGauge("node", "m", "queue_depth", i);
    std::string_view payload = enc.Finish();
    pub.send(zmq::buffer(topic.data(), topic.size()), zmq::send_flags::sndmore);
    pub.send(zmq::buffer(payload.data(), payload.size()), zmq::send_flags::none);
  };
  // SUB joins late (the subscription travels to the PUB): publish until enough has arrived.
  const auto deadline = std::chrono::steady_clock::now() + kDeadline;
  while (h.EventsFrom("sub-pub") < 50 && std::chrono::steady_clock::now() < deadline) {
    send("other", unwanted);
    send("metrics.node-1", wanted);
    h.output.Drain();
  }
  ASSERT_GE(h.EventsFrom("sub-pub"), 50u);
  EXPECT_EQ(h.EventsFrom("other-pub"), 0u);
  // Every message that arrived was contiguous after the first: no gaps.
  EXPECT_EQ(h.Counter("inferscope_source_sequence_gaps_total"), 0u);
}

TEST(ZmqSourceTest, ShedsWhenTheQueueIsFull) {
  ZmqSource::Options options = PullOptions();
  options.on_full = ZmqSource::OnFull::kShed;
  Harness h(options, /*queue_capacity=*/0);  // TryEmit always fails
  client::PublisherOptions po;
  po.endpoint = h.source.Endpoint();
  po.publisher_id = "shed-pub";
  po.batch_size = 50;
  client::Publisher pub(po);
  ASSERT_TRUE(pub.Connect());
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(pub.Gauge("n", "m", "g", i));
  ASSERT_TRUE(pub.Flush());
  ASSERT_TRUE(h.output.WaitFor([&] {
    return h.Counter("inferscope_source_shed_events_total", {{"publisher", "shed-pub"}}) >= 200;
  }));
  EXPECT_EQ(h.Counter("inferscope_source_shed_events_total"), 200u);
  EXPECT_EQ(h.output.events().size(), 0u);
  h.StopAndJoin();
  EXPECT_EQ(h.output.outstanding(), 0);  // the shed batch went back to the pool
}

TEST(ZmqSourceTest, GivesItsBatchBackWhenStopped) {
  Harness h(PullOptions());
  client::PublisherOptions po;
  po.endpoint = h.source.Endpoint();
  po.publisher_id = "stop-pub";
  po.batch_size = 100;
  client::Publisher pub(po);
  ASSERT_TRUE(pub.Connect());
  for (int i = 0; i < 300; ++i) ASSERT_TRUE(pub.Gauge("n", "m", "g", i));
  ASSERT_TRUE(pub.Flush());
  ASSERT_TRUE(h.output.WaitFor([&] { return h.output.events().size() >= 300; }));
  h.StopAndJoin();
  h.output.Drain();
  EXPECT_EQ(h.output.events().size(), 300u);
  EXPECT_EQ(h.output.outstanding(), 0);  // the idle batch Run held went back to the pool
}

TEST(ZmqSourceTest, CoalescesSmallMessagesWithinBatchDelay) {
  ZmqSource::Options options = PullOptions();
  options.batch_delay_ms = 500;
  Harness h(options);
  client::PublisherOptions po;
  po.endpoint = h.source.Endpoint();
  po.publisher_id = "small-pub";
  po.batch_size = 1;  // one event per message
  client::Publisher pub(po);
  ASSERT_TRUE(pub.Connect());
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(pub.Gauge("n", "m", "g", i));
  ASSERT_TRUE(pub.Flush());
  ASSERT_TRUE(h.output.WaitFor([&] { return h.output.events().size() >= 20; }));
  EXPECT_EQ(h.output.events().size(), 20u);
  EXPECT_EQ(h.Counter("inferscope_source_messages_total", {{"stage", "zmq-in"}}), 20u);
  // 20 messages sent back to back go to the operators in fewer hand-offs than messages.
  EXPECT_LT(h.output.batches(), 20u);
}

TEST(ZmqSourceTest, HandsOnACoalescingBatchWhenStopped) {
  ZmqSource::Options options = PullOptions();
  options.batch_delay_ms = 1000;
  Harness h(options);
  client::PublisherOptions po;
  po.endpoint = h.source.Endpoint();
  po.publisher_id = "late-pub";
  po.batch_size = 1;
  client::Publisher pub(po);
  ASSERT_TRUE(pub.Connect());
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(pub.Gauge("n", "m", "g", i));
  ASSERT_TRUE(pub.Flush());
  ASSERT_TRUE(h.output.WaitFor(
      [&] { return h.Counter("inferscope_source_events_total") >= 5; }));  // decoded, waiting
  h.StopAndJoin();
  h.output.Drain();
  EXPECT_EQ(h.output.events().size(), 5u);  // the accepted events were not dropped at stop
  EXPECT_EQ(h.output.outstanding(), 0);
}

// Runs `command` with its stdin connected to a pipe that stays open until Finish(), so that the
// child can keep its socket open until the test has counted everything.
class Child {
 public:
  explicit Child(const std::string& command) : pipe_(popen(command.c_str(), "w")) {}
  ~Child() { Finish(); }
  bool ok() const { return pipe_ != nullptr; }
  // Closes the child's stdin and returns its exit status.
  int Finish() {
    if (pipe_ == nullptr) return status_;
    int st = pclose(pipe_);
    pipe_ = nullptr;
    status_ = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return status_;
  }

 private:
  FILE* pipe_;
  int status_ = -1;
};

// A publisher process restarted with the same id starts again at seq 0. Without an incarnation
// the engine took the new run's first 1,024 messages for duplicates of the old run's and dropped
// them (the review's restarted sidecar: 500 of 1,000 events stored). Each reference Publisher, C++
// and Python, is now a new incarnation: the restart is counted and every event applied.
TEST(ZmqSourceTest, APublisherRestartedWithTheSameIdLosesNothing) {
  Harness h(PullOptions());
  const int64_t now = client::NowMs();
  for (int run = 0; run < 2; ++run) {
    client::PublisherOptions po;
    po.endpoint = h.source.Endpoint();
    po.publisher_id = "sidecar-cpp";
    po.batch_size = 10;
    client::Publisher pub(po);
    ASSERT_TRUE(pub.Connect());
    for (int i = 0; i < 50; ++i) {
      ASSERT_TRUE(pub.Gauge("node", "m", "kv_cache_usage", run * 50 + i, now));
    }
    ASSERT_TRUE(pub.Flush());
    const size_t want = static_cast<size_t>(50 * (run + 1));
    ASSERT_TRUE(h.output.WaitFor([&] { return h.output.events().size() >= want; }))
        << h.output.events().size();
  }

  testing::TempDir dir;
  const std::string script = (dir.path() / "publish.py").string();
  std::ofstream(script) << R"PY(
import sys
from inferscope_client import Publisher

endpoint, now, run = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pub = Publisher(endpoint, "sidecar-py", batch_size=10)
for i in range(50):
    pub.gauge("node", "m", "kv_cache_usage", 100 + run * 50 + i, time_ms=now)
pub.flush()
sys.stdin.read()  # keep the socket open until the test has counted everything
pub.close()
)PY";
  for (int run = 0; run < 2; ++run) {
    Child child("PYTHONPATH='" + testing::SourceDir() + "/clients/python' '" + testing::Python() +
                "' '" + script + "' '" + h.source.Endpoint() + "' " + std::to_string(now) + " " +
                std::to_string(run));
    ASSERT_TRUE(child.ok());
    const size_t want = static_cast<size_t>(150 + 50 * run);
    ASSERT_TRUE(h.output.WaitFor([&] { return h.output.events().size() >= want; }))
        << h.output.events().size();
    EXPECT_EQ(child.Finish(), 0);
  }
  ASSERT_EQ(h.output.events().size(), 200u);
  std::vector<bool> seen(200, false);
  for (const Event& e : h.output.events()) seen[static_cast<size_t>(e.value)] = true;
  EXPECT_EQ(std::count(seen.begin(), seen.end(), true), 200);
  EXPECT_EQ(h.Counter("inferscope_source_duplicates_total"), 0u);
  EXPECT_EQ(h.Counter("inferscope_source_publisher_restarts_total"), 2u);
}

TEST(ZmqSourceTest, ReceivesThePythonClient) {
  Harness h(PullOptions());
  testing::TempDir dir;
  const std::string script = (dir.path() / "publish.py").string();
  {
    std::ofstream out(script);
    out << R"PY(
import sys
from inferscope_client import Publisher

endpoint, now = sys.argv[1], int(sys.argv[2])
pub = Publisher(endpoint, "py-pub", batch_size=64)
for i in range(300):
    pub.request("py-node", "py-model", e2e_ms=float(i), ttft_ms=i / 4, prompt_tokens=i,
                error="rate_limited" if i % 7 == 0 else None, quality=0.5, time_ms=now)
for i in range(20):
    pub.gauge("py-node", "py-model", "num_requests_running", i, time_ms=now)
pub.flush()
sys.stdin.read()  # keep the socket open until the test has counted everything
pub.close()
)PY";
  }
  const int64_t now = client::NowMs();
  const std::string cmd = "PYTHONPATH='" + testing::SourceDir() + "/clients/python' '" +
                          testing::Python() + "' '" + script + "' '" + h.source.Endpoint() + "' " +
                          std::to_string(now);
  Child child(cmd);
  ASSERT_TRUE(child.ok());
  ASSERT_TRUE(h.output.WaitFor([&] { return h.output.events().size() >= 320; }))
      << h.output.events().size() << " events";
  EXPECT_EQ(child.Finish(), 0);

  ASSERT_EQ(h.output.events().size(), 320u);
  std::vector<bool> seen(300, false);
  int gauges = 0;
  for (const Event& e : h.output.events()) {
    EXPECT_EQ(h.interner.Name(e.publisher), "py-pub");
    EXPECT_EQ(h.interner.Name(e.instance), "py-node");
    EXPECT_EQ(h.interner.Name(e.model), "py-model");
    EXPECT_EQ(e.time_ms, now);
    if (e.kind == EventKind::kGauge) {
      EXPECT_EQ(h.interner.Name(e.metric), "num_requests_running");
      EXPECT_DOUBLE_EQ(e.value, gauges);
      ++gauges;
      continue;
    }
    int i = static_cast<int>(e.e2e_ms);
    ASSERT_TRUE(i >= 0 && i < 300);
    seen[i] = true;
    EXPECT_DOUBLE_EQ(e.ttft_ms, i / 4.0);
    EXPECT_EQ(e.prompt_tokens, static_cast<uint32_t>(i));
    EXPECT_FALSE(e.Has(kHasOutputTokens));
    EXPECT_DOUBLE_EQ(e.quality, 0.5);
    EXPECT_EQ(e.error, i % 7 == 0 ? ErrorKind::kRateLimited : ErrorKind::kNone);
  }
  EXPECT_EQ(gauges, 20);
  EXPECT_EQ(std::count(seen.begin(), seen.end(), true), 300);
  EXPECT_EQ(h.Counter("inferscope_source_messages_total"), 5u);  // 320 / 64
  EXPECT_EQ(h.Counter("inferscope_source_rejected_total"), 0u);
}

TEST(ZmqSourceTest, RunsThePythonExample) {
  Harness h(PullOptions());
  const std::string cmd = "cd '" + testing::SourceDir() + "/clients/python' && '" +
                          testing::Python() + "' example.py --endpoint '" + h.source.Endpoint() +
                          "' --requests 300 > /dev/null";
  Child child(cmd);
  ASSERT_TRUE(child.ok());
  EXPECT_EQ(child.Finish(), 0);
  // The example exits right after sending; only its first messages are certain to arrive.
  ASSERT_TRUE(h.output.WaitFor([&] { return h.EventsFrom("example-gateway") >= 64; }));
  EXPECT_EQ(h.Counter("inferscope_source_rejected_total"), 0u);
}

TEST(ZmqSourceTest, CreateFromConfig) {
  Registry registry;
  RegisterSources(registry);
  ASSERT_TRUE(registry.HasSource("zmq"));

  auto node = [](const std::string& yaml) {
    return ConfigNode("test.yaml", YAML::Load(yaml), "sources[0].options");
  };
  auto made = registry.CreateSource(
      "zmq", node("{endpoint: 'tcp://127.0.0.1:*', mode: sub, bind: true, topics: [metrics, x], "
                  "rcvhwm: 10, on_full: shed, batch_events: 7, max_future_skew: 1m, max_past: 2h, "
                  "max_events_per_message: 100, max_string_bytes: 64, max_message_bytes: 100000}"));
  ASSERT_TRUE(made.ok()) << made.status().ToString();

  EXPECT_FALSE(ZmqSource::Create(node("{mode: pull}")).ok());  // endpoint is required
  auto typo = ZmqSource::Create(node("{endpoint: 'tcp://127.0.0.1:*', rcvhmw: 5}"));
  ASSERT_FALSE(typo.ok());
  EXPECT_NE(typo.status().message().find("rcvhmw"), std::string::npos) << typo.status().ToString();
  EXPECT_FALSE(ZmqSource::Create(node("{endpoint: 'tcp://127.0.0.1:*', mode: dealer}")).ok());
  EXPECT_FALSE(ZmqSource::Create(node("{endpoint: 'tcp://127.0.0.1:*', on_full: drop}")).ok());
  EXPECT_FALSE(ZmqSource::Create(node("{endpoint: 'tcp://127.0.0.1:*', topics: [a]}")).ok());
  EXPECT_FALSE(ZmqSource::Create(node("{endpoint: 'tcp://127.0.0.1:*', batch_events: 0}")).ok());
  EXPECT_FALSE(ZmqSource::Create(node("{endpoint: 'tcp://127.0.0.1:*', max_past: 0}")).ok());
  EXPECT_TRUE(ZmqSource::Create(node("{endpoint: 'tcp://127.0.0.1:*', batch_delay: 0}")).ok());
  EXPECT_TRUE(ZmqSource::Create(node("{endpoint: 'tcp://127.0.0.1:*', batch_delay: 20ms}")).ok());
  EXPECT_FALSE(ZmqSource::Create(node("{endpoint: 'tcp://127.0.0.1:*', batch_delay: 5s}")).ok());
  EXPECT_TRUE(ZmqSource::Create(node("{endpoint: 'tcp://127.0.0.1:*', max_publishers: 10, "
                                     "max_strings_per_publisher: 1000}"))
                  .ok());
  for (const char* bad_limit :
       {"max_publishers: 0", "max_publishers: 1048577", "max_strings_per_publisher: -1",
        "max_strings_per_publisher: 4194305"}) {
    auto refused =
        ZmqSource::Create(node(std::string("{endpoint: 'tcp://127.0.0.1:*', ") + bad_limit + "}"));
    ASSERT_FALSE(refused.ok()) << bad_limit;
    EXPECT_NE(refused.status().message().find(std::string(bad_limit).substr(0, 14)),
              std::string::npos)
        << refused.status().ToString();
  }
  // Names longer than the store keeps (kMaxNameBytes, 255) cannot be let through.
  EXPECT_TRUE(
      ZmqSource::Create(node("{endpoint: 'tcp://127.0.0.1:*', max_string_bytes: 255}")).ok());
  auto too_long = ZmqSource::Create(node("{endpoint: 'tcp://127.0.0.1:*', max_string_bytes: 256}"));
  ASSERT_FALSE(too_long.ok());
  EXPECT_NE(too_long.status().message().find("max_string_bytes"), std::string::npos)
      << too_long.status().ToString();

  // An endpoint libzmq cannot parse is refused when the topology is built, naming the field.
  auto unknown = ZmqSource::Create(node("{endpoint: 'nonsense://x'}"));
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("nonsense"), std::string::npos)
      << unknown.status().ToString();

  // A well-formed endpoint that cannot be bound fails at Open with a Status, not an exception.
  auto bad = ZmqSource::Create(node("{endpoint: 'ipc:///nonexistent-inferscope-dir/in.sock'}"));
  ASSERT_TRUE(bad.ok()) << bad.status().ToString();
  Interner interner;
  StageContext ctx;
  ctx.name = "s";
  ctx.interner = &interner;
  ctx.clock = &SystemClock::Instance();
  Status st = (*bad)->Open(ctx);
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.code(), Status::Code::kIOError) << st.ToString();
}

// --- acknowledged mode (router) ---

ZmqSource::Options RouterOptions(uint32_t max_events_per_message = 65536) {
  ZmqSource::Options o;
  o.endpoint = "tcp://127.0.0.1:*";
  o.mode = ZmqSource::Mode::kRouter;
  o.decoder.strict_sequence = true;
  o.decoder.max_events_per_message = max_events_per_message;
  return o;
}

// A raw DEALER publisher that speaks §9 by hand.
class RawDealer {
 public:
  explicit RawDealer(const std::string& endpoint) : socket_(context_, zmq::socket_type::dealer) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.connect(endpoint);
  }
  void Send(std::string_view kind, std::string_view payload) {
    socket_.send(zmq::buffer(kind), zmq::send_flags::sndmore);
    socket_.send(zmq::buffer(payload), zmq::send_flags::none);
  }
  // The next [kind, payload] from the engine; empty kind after 10 s of silence.
  std::pair<std::string, std::string> Receive() {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, std::chrono::seconds(10)) <= 0) return {};
    zmq::message_t kind, payload;
    if (!socket_.recv(kind) || !kind.more() || !socket_.recv(payload)) return {};
    return {kind.to_string(), payload.to_string()};
  }

 private:
  zmq::context_t context_{1};
  zmq::socket_t socket_;
};

// A payload of `events` requests in incarnation `inc`, as the C++ client lays it out.
std::string AckedPayload(const std::string& pub, uint64_t inc, uint64_t seq, int events) {
  client::BatchEncoder encoder(pub, seq);
  encoder.enable_incarnation(inc);
  for (int i = 0; i < events; ++i) {
    client::RequestOutcome r;
    r.instance = "node-1";
    r.model = "m";
    r.e2e_ms = 10.0 + i;
    encoder.AddRequest(r);
  }
  return std::string(encoder.Finish());
}

// Issue 8 item 4: a batch over the engine's event limit is refused for good with a nack, its
// sequence number consumed; the next message is applied and acknowledged (no wedge).
TEST(ZmqSourceTest, RouterRefusesAnOverLimitBatchForGoodAndMovesOn) {
  Harness h(RouterOptions(/*max_events_per_message=*/4));
  RawDealer pub(h.source.Endpoint());
  pub.Send("hello", EncodeHello({"poison", 77}));
  auto [kind, payload] = pub.Receive();
  ASSERT_EQ(kind, "ack");
  Result<AckMessage> hello = ParseAck(payload);
  ASSERT_TRUE(hello.ok()) << hello.status().ToString();
  EXPECT_EQ(hello->incarnation, 77u);
  EXPECT_FALSE(hello->next.has_value());  // never heard of it

  pub.Send("metrics", AckedPayload("poison", 77, 0, 6));
  std::tie(kind, payload) = pub.Receive();
  ASSERT_EQ(kind, "nack");
  Result<NackMessage> nack = ParseNack(payload);
  ASSERT_TRUE(nack.ok()) << nack.status().ToString();
  EXPECT_EQ(nack->seq, 0u);
  EXPECT_EQ(nack->incarnation, 77u);
  EXPECT_EQ(nack->reason, "batch_too_large");
  EXPECT_TRUE(nack->consumed);

  pub.Send("metrics", AckedPayload("poison", 77, 1, 3));
  ASSERT_TRUE(h.output.WaitFor([&] { return h.output.events().size() == 3; }));
  ASSERT_TRUE(h.output.WaitFor([&] { return h.output.sequences().size() == 2; }));
  EXPECT_EQ(h.output.sequences()[0].seq, 0u);  // the refused one is checkpointed too
  EXPECT_EQ(h.output.sequences()[1].seq, 1u);
  EXPECT_EQ(h.output.sequences()[1].incarnation, 77u);
  h.source.OnCheckpointDurable({h.output.sequences()[1]});
  std::tie(kind, payload) = pub.Receive();
  ASSERT_EQ(kind, "ack");
  Result<AckMessage> ack = ParseAck(payload);
  ASSERT_TRUE(ack.ok());
  EXPECT_EQ(ack->ack, 1u);
  EXPECT_EQ(ack->next, 2u);
  EXPECT_EQ(h.Counter("inferscope_source_nacks_total", {{"stage", "zmq-in"}}), 1u);
}

// Drives a client::AckedPublisher against a harnessed router source, making every applied
// message durable at once (as a checkpoint would), until `done` or 20 s.
bool DriveAcked(Harness& h, client::AckedPublisher& pub, const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  size_t durable = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    pub.Poll(5);
    h.output.Drain();
    if (h.output.sequences().size() > durable) {
      durable = h.output.sequences().size();
      h.source.OnCheckpointDurable({h.output.sequences().back()});
    }
    if (done()) return true;
  }
  return false;
}

TEST(ZmqSourceTest, AckedClientReportsARefusedMessageAndGoesOn) {
  Harness h(RouterOptions(/*max_events_per_message=*/4));
  client::AckedPublisherOptions o;
  o.endpoint = h.source.Endpoint();
  o.publisher_id = "cpp-poison";
  o.batch_size = 6;  // more than the engine takes: as if the client's limit were misconfigured
  std::vector<client::Rejection> rejections;
  o.on_rejected = [&](const client::Rejection& r) { rejections.push_back(r); };
  client::AckedPublisher pub(o);
  ASSERT_TRUE(pub.Connect());
  EXPECT_TRUE(pub.hello_answered());
  client::RequestOutcome r;
  r.instance = "node-1";
  r.model = "m";
  r.e2e_ms = 5;
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(pub.Request(r));  // seq 0: 6 events, refused
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(pub.Request(r));
  ASSERT_TRUE(pub.Flush());  // seq 1: 3 events
  ASSERT_TRUE(DriveAcked(h, pub, [&] { return pub.unacked() == 0; })) << pub.last_error();
  ASSERT_EQ(rejections.size(), 1u);
  EXPECT_EQ(rejections[0].seq, 0u);
  EXPECT_EQ(rejections[0].events, 6u);
  EXPECT_EQ(rejections[0].reason, "batch_too_large");
  EXPECT_EQ(rejections[0].incarnation, pub.incarnation());
  EXPECT_EQ(pub.rejected_messages(), 1u);
  EXPECT_EQ(pub.rejected_events(), 6u);
  EXPECT_EQ(pub.acked_seq(), 1u);
  EXPECT_EQ(h.output.events().size(), 3u);
}

// Issue 8: publisher ids are bounded, over real sockets. With max_publishers 2, the third id's
// hello goes unanswered and its messages are nacked (publisher_limit, not consumed), each counted;
// the C++ client reports them; the first two publishers keep working; the source's tables stay at
// two publishers.
TEST(ZmqSourceTest, RouterRefusesPublishersBeyondMaxPublishers) {
  ZmqSource::Options options = RouterOptions();
  options.decoder.max_publishers = 2;
  Harness h(options);
  RawDealer a(h.source.Endpoint());
  a.Send("hello", EncodeHello({"pub-a", 5}));
  auto [kind, payload] = a.Receive();
  ASSERT_EQ(kind, "ack");
  a.Send("metrics", AckedPayload("pub-a", 5, 0, 2));
  RawDealer b(h.source.Endpoint());
  b.Send("metrics", AckedPayload("pub-b", 6, 0, 3));
  ASSERT_TRUE(h.output.WaitFor([&] { return h.output.events().size() == 5; }));

  // The third id: its hello is not answered (the first answer it gets is the nack of its message,
  // which the ROUTER handles after the hello).
  RawDealer c(h.source.Endpoint());
  c.Send("hello", EncodeHello({"pub-c", 7}));
  c.Send("metrics", AckedPayload("pub-c", 7, 0, 4));
  std::tie(kind, payload) = c.Receive();
  ASSERT_EQ(kind, "nack");
  Result<NackMessage> nack = ParseNack(payload);
  ASSERT_TRUE(nack.ok()) << nack.status().ToString();
  EXPECT_EQ(nack->publisher, "pub-c");
  EXPECT_EQ(nack->incarnation, 7u);
  EXPECT_EQ(nack->seq, 0u);
  EXPECT_EQ(nack->reason, "publisher_limit");
  EXPECT_FALSE(nack->consumed);
  EXPECT_FALSE(nack->latest.has_value());

  // The reference client reports the refusal (on_rejected) and does not resend it.
  client::AckedPublisherOptions o;
  o.endpoint = h.source.Endpoint();
  o.publisher_id = "cpp-refused";
  o.hello_timeout_ms = 0;  // its hello is never answered
  std::vector<client::Rejection> rejections;
  o.on_rejected = [&](const client::Rejection& r) { rejections.push_back(r); };
  client::AckedPublisher refused(o);
  ASSERT_TRUE(refused.Connect());
  client::RequestOutcome r;
  r.instance = "node-1";
  r.model = "m";
  r.e2e_ms = 5;
  ASSERT_TRUE(refused.Request(r));
  ASSERT_TRUE(refused.Flush());
  ASSERT_TRUE(DriveAcked(h, refused, [&] { return !rejections.empty(); })) << refused.last_error();
  EXPECT_EQ(rejections[0].reason, "publisher_limit");
  EXPECT_EQ(rejections[0].events, 1u);
  EXPECT_EQ(refused.unacked(), 0u);
  EXPECT_FALSE(refused.hello_answered());

  // The first two still work.
  a.Send("metrics", AckedPayload("pub-a", 5, 1, 1));
  b.Send("metrics", AckedPayload("pub-b", 6, 1, 1));
  ASSERT_TRUE(h.output.WaitFor([&] { return h.output.events().size() == 7; }));
  EXPECT_EQ(h.EventsFrom("pub-a"), 3u);
  EXPECT_EQ(h.EventsFrom("pub-b"), 4u);

  h.StopAndJoin();
  // Refused: pub-c's hello and message, cpp-refused's hello(s) and message.
  const uint64_t refusals = h.Counter("inferscope_source_rejected_total",
                                      {{"stage", "zmq-in"}, {"reason", "publisher_limit"}});
  EXPECT_GE(refusals, 4u);
  EXPECT_EQ(refusals, h.source.decoder()->rejected_count(RejectReason::kPublisherLimit));
  EXPECT_EQ(h.source.decoder()->publishers(), 2u);
  EXPECT_EQ(h.source.decoder()->sequence_positions(), 2u);
  EXPECT_FALSE(h.interner.Find("pub-c").has_value());
  EXPECT_FALSE(h.interner.Find("cpp-refused").has_value());
  const std::string text = h.metrics.RenderPrometheus();
  EXPECT_NE(text.find("inferscope_source_publishers{stage=\"zmq-in\"} 2"), std::string::npos);
  EXPECT_EQ(text.find("pub-c"), std::string::npos);  // no label for a refused id
}

// The same bound in fire-and-forget mode (PUSH → PULL): a flood of fresh ids is refused and
// counted; the tables hold max_publishers ids; the admitted publishers go on.
TEST(ZmqSourceTest, PullRefusesPublishersBeyondMaxPublishers) {
  ZmqSource::Options options = PullOptions();
  options.decoder.max_publishers = 3;
  Harness h(options);
  zmq::context_t context(1);
  zmq::socket_t push(context, zmq::socket_type::push);
  push.set(zmq::sockopt::linger, 1000);
  push.connect(h.source.Endpoint());
  auto send = [&](const std::string& pub, uint64_t seq) {
    client::BatchEncoder encoder(pub, seq);
    client::RequestOutcome r;
    r.instance = "node-1";
    r.model = "m";
    r.e2e_ms = 1;
    encoder.AddRequest(r);
    push.send(zmq::str_buffer("metrics"), zmq::send_flags::sndmore);
    push.send(zmq::buffer(encoder.Finish()), zmq::send_flags::none);
  };
  for (int p = 0; p < 3; ++p) send("keep-" + std::to_string(p), 0);
  for (int p = 0; p < 500; ++p) send("fresh-" + std::to_string(p), 0);
  for (int p = 0; p < 3; ++p) send("keep-" + std::to_string(p), 1);
  ASSERT_TRUE(h.output.WaitFor([&] {
    return h.output.events().size() == 6 &&
           h.Counter("inferscope_source_rejected_total",
                     {{"stage", "zmq-in"}, {"reason", "publisher_limit"}}) == 500;
  }));
  h.StopAndJoin();
  EXPECT_EQ(h.source.decoder()->publishers(), 3u);
  EXPECT_EQ(h.source.decoder()->sequence_positions(), 3u);
  for (int p = 0; p < 3; ++p) EXPECT_EQ(h.EventsFrom("keep-" + std::to_string(p)), 2u);
  for (int p = 0; p < 500; p += 50) {
    EXPECT_FALSE(h.interner.Find("fresh-" + std::to_string(p)).has_value()) << p;
  }
}

TEST(ZmqSourceTest, AckedClientNeverBuildsAMessageOverTheLimits) {
  client::AckedPublisherOptions o;
  o.endpoint = "tcp://127.0.0.1:1";
  o.publisher_id = "p";
  o.batch_size = 10;
  o.max_events_per_message = 4;
  std::string error;
  EXPECT_FALSE(client::AckedPublisher(o).Connect(&error));
  EXPECT_NE(error.find("max_events_per_message"), std::string::npos) << error;

  // Messages end early rather than grow past max_message_bytes; an engine with that limit
  // applies every one of them.
  ZmqSource::Options so = RouterOptions();
  so.decoder.max_message_bytes = 4096;
  Harness h(so);
  o.endpoint = h.source.Endpoint();
  o.batch_size = 1000;
  o.max_events_per_message = 65536;
  o.max_message_bytes = 4096;
  client::AckedPublisher pub(o);
  ASSERT_TRUE(pub.Connect(&error)) << error;
  const std::string long_error(300, 'e');
  client::RequestOutcome r;
  r.instance = "node-1";
  r.model = "m";
  r.e2e_ms = 5;
  r.error = long_error;
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(pub.Request(r)) << pub.last_error();
  const std::string too_long(5000, 'x');
  r.error = too_long;
  EXPECT_FALSE(pub.Request(r));  // alone larger than the limit: refused at the call
  EXPECT_NE(pub.last_error().find("max_message_bytes"), std::string::npos) << pub.last_error();
  ASSERT_TRUE(pub.Flush());
  ASSERT_TRUE(DriveAcked(h, pub, [&] { return pub.unacked() == 0; })) << pub.last_error();
  EXPECT_EQ(h.output.events().size(), 100u);
  EXPECT_EQ(pub.rejected_messages(), 0u);
  EXPECT_EQ(h.source.decoder()->rejected_count(RejectReason::kMessageTooLarge), 0u);
  EXPECT_GE(pub.next_seq(), 10u);  // 100 events of ~330 bytes in messages of < 4 KiB
}

// Issue 8 item 2, in the small: a publisher the engine knows at seq 500 of an earlier incarnation
// restarts; its new incarnation's messages from seq 0 are applied, not dropped as duplicates.
TEST(ZmqSourceTest, RouterAppliesANewIncarnationFromZero) {
  Harness h(RouterOptions());
  RawDealer pub(h.source.Endpoint());
  for (uint64_t seq = 0; seq < 3; ++seq) pub.Send("metrics", AckedPayload("restarts", 5, seq, 1));
  ASSERT_TRUE(h.output.WaitFor([&] { return h.output.events().size() == 3; }));
  h.source.OnCheckpointDurable({h.output.sequences().back()});
  auto [kind, payload] = pub.Receive();
  ASSERT_EQ(kind, "ack");
  // The new incarnation: hello says where it stands, then its messages from 0 are applied.
  RawDealer restarted(h.source.Endpoint());
  restarted.Send("hello", EncodeHello({"restarts", 9}));
  std::tie(kind, payload) = restarted.Receive();
  ASSERT_EQ(kind, "ack");
  Result<AckMessage> hello = ParseAck(payload);
  ASSERT_TRUE(hello.ok());
  EXPECT_EQ(hello->incarnation, 9u);
  EXPECT_FALSE(hello->ack.has_value());
  EXPECT_EQ(hello->next, 0u);
  EXPECT_EQ(hello->latest, 5u);
  for (uint64_t seq = 0; seq < 2; ++seq) {
    restarted.Send("metrics", AckedPayload("restarts", 9, seq, 1));
  }
  ASSERT_TRUE(h.output.WaitFor([&] { return h.output.events().size() == 5; }));
  h.source.OnCheckpointDurable({h.output.sequences().back()});
  std::tie(kind, payload) = restarted.Receive();
  ASSERT_EQ(kind, "ack");
  Result<AckMessage> ack = ParseAck(payload);
  ASSERT_TRUE(ack.ok());
  EXPECT_EQ(ack->incarnation, 9u);
  EXPECT_EQ(ack->ack, 1u);
  // The old incarnation is over: a message it had not sent before is refused for good.
  pub.Send("metrics", AckedPayload("restarts", 5, 3, 1));
  std::tie(kind, payload) = pub.Receive();
  ASSERT_EQ(kind, "nack");
  Result<NackMessage> nack = ParseNack(payload);
  ASSERT_TRUE(nack.ok());
  EXPECT_EQ(nack->reason, "stale_incarnation");
  EXPECT_FALSE(nack->consumed);
  EXPECT_EQ(nack->latest, 9u);
  EXPECT_EQ(h.output.events().size(), 5u);
}

// The detached router source (fuzz/targets/ack_fuzzer.cc) makes the socket's decisions: the same
// replies, to the peer that sent the message, and the same frame-count checks.
class RecordingReplies final : public ZmqSource::ReplySink {
 public:
  void OnReply(std::string_view peer, std::string_view kind, std::string_view payload) override {
    replies.push_back({std::string(peer), std::string(kind), std::string(payload)});
  }
  struct Reply {
    std::string peer, kind, payload;
  };
  std::vector<Reply> replies;
};

TEST(ZmqSourceTest, DetachedRouterAnswersTheSenderWithoutASocket) {
  Interner interner(1000);
  // The payloads carry events stamped now (the client's clock).
  ManualClock clock(SystemClock::Instance().NowMs());
  MetricsRegistry metrics;
  StageContext ctx;
  ctx.name = "detached";
  ctx.interner = &interner;
  ctx.clock = &clock;
  ctx.metrics = &metrics;
  RecordingReplies sink;
  ZmqSource pull(PullOptions());
  EXPECT_FALSE(pull.OpenDetached(ctx, sink).ok());  // router mode only
  ZmqSource source(RouterOptions(/*max_events_per_message=*/4));
  ASSERT_TRUE(source.OpenDetached(ctx, sink).ok());

  EventBatch batch;
  const std::string hello = EncodeHello({"pub-a", 3});
  source.Deliver(std::vector<std::string_view>{"peer-1", "hello", hello}, batch);
  ASSERT_EQ(sink.replies.size(), 1u);
  EXPECT_EQ(sink.replies[0].peer, "peer-1");
  ASSERT_EQ(sink.replies[0].kind, "ack");
  Result<AckMessage> ack = ParseAck(sink.replies[0].payload);
  ASSERT_TRUE(ack.ok()) << ack.status().ToString();
  EXPECT_EQ(ack->publisher, "pub-a");
  EXPECT_FALSE(ack->next.has_value());

  const std::string first = AckedPayload("pub-a", 3, 0, 2);
  source.Deliver(std::vector<std::string_view>{"peer-2", "metrics", first}, batch);
  EXPECT_EQ(batch.events.size(), 2u);
  ASSERT_EQ(batch.sequences.size(), 1u);
  EXPECT_EQ(sink.replies.size(), 1u);  // applied: the ack waits for the checkpoint
  // The checkpoint's ack goes to the peer of the publisher's latest message, when flushed.
  source.OnCheckpointDurable({batch.sequences[0]});
  EXPECT_EQ(sink.replies.size(), 1u);
  source.FlushAcks();
  ASSERT_EQ(sink.replies.size(), 2u);
  EXPECT_EQ(sink.replies[1].peer, "peer-2");
  ack = ParseAck(sink.replies[1].payload);
  ASSERT_TRUE(ack.ok());
  EXPECT_EQ(ack->ack, 0u);
  EXPECT_EQ(ack->next, 1u);

  // Over the event limit: a nack to the sender, its sequence number consumed.
  const std::string poison = AckedPayload("pub-a", 3, 1, 5);
  source.Deliver(std::vector<std::string_view>{"peer-2", "metrics", poison}, batch);
  ASSERT_EQ(sink.replies.size(), 3u);
  ASSERT_EQ(sink.replies[2].kind, "nack");
  Result<NackMessage> nack = ParseNack(sink.replies[2].payload);
  ASSERT_TRUE(nack.ok());
  EXPECT_EQ(nack->reason, "batch_too_large");
  EXPECT_TRUE(nack->consumed);

  // A message of 1 or 3 frames is counted as bad_frames and not answered.
  source.Deliver(std::vector<std::string_view>{"peer-3", "metrics"}, batch);
  source.Deliver(std::vector<std::string_view>{"peer-3", "metrics", first, "x"}, batch);
  EXPECT_EQ(sink.replies.size(), 3u);
  EXPECT_EQ(source.decoder()->rejected_count(RejectReason::kBadFrames), 2u);
  EXPECT_EQ(batch.events.size(), 2u);
  source.Close();
}

}  // namespace
}  // namespace inferscope
