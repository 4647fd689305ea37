// CurveZMQ on the zmq source (docs/PROTOCOL.md, "Security"): real sockets on 127.0.0.1, real
// client keys, the source's ZAP handler. A client whose key is not listed is refused; a listed key
// may publish only under the publisher ids its globs allow, so it can neither inject events under
// another publisher's id nor learn that publisher's sequence number with a hello.

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "auth/curve.h"
#include "clients/cpp/acked_publisher.h"
#include "clients/cpp/publisher.h"
#include "pipeline/clock.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "sources/zmq_source.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using testing::TempDir;

constexpr auto kDeadline = std::chrono::seconds(20);

// A SourceOutput whose emitted events the test thread collects.
class CollectingOutput final : public SourceOutput {
 public:
  EventBatchPtr Acquire() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return nullptr;
    return std::make_unique<EventBatch>();
  }
  bool Emit(EventBatchPtr batch) override {
    std::lock_guard<std::mutex> lock(mu_);
    events_.insert(events_.end(), batch->events.begin(), batch->events.end());
    return !stopping_;
  }
  bool TryEmit(EventBatchPtr& batch) override { return Emit(std::move(batch)); }
  void Release(EventBatchPtr) override {}
  std::vector<Event> events() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }

 private:
  std::mutex mu_;
  bool stopping_ = false;
  std::vector<Event> events_;
};

bool WaitUntil(const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + kDeadline;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));  // polling, not synchronising
  }
  return done();
}

CurveKeyPair NewPair() {
  Result<CurveKeyPair> pair = GenerateCurveKeyPair();
  EXPECT_TRUE(pair.ok()) << pair.status().ToString();
  return *pair;
}

// Keys of the engine and of three clients: alice may publish as alice-*, bob as bob, mallory is
// not listed.
struct Keys {
  CurveKeyPair engine = NewPair();
  CurveKeyPair alice = NewPair();
  CurveKeyPair bob = NewPair();
  CurveKeyPair mallory = NewPair();

  CurveServerOptions Server() const {
    CurveServerOptions o;
    o.server_secret_key = engine.secret_key;
    o.server_public_key = engine.public_key;
    Result<std::shared_ptr<const AuthorizedKeys>> keys = AuthorizedKeys::Parse(
        alice.public_key + " alice-*\n" + bob.public_key + " bob\n", "keys", true);
    EXPECT_TRUE(keys.ok()) << keys.status().ToString();
    o.authorized_keys = *keys;
    return o;
  }
  client::CurveClientKeys Client(const CurveKeyPair& pair) const {
    return {engine.public_key, pair.secret_key, pair.public_key};
  }
};

class Harness {
 public:
  explicit Harness(ZmqSource::Options options) : source(std::move(options)) {
    StageContext ctx;
    ctx.name = "ingest";
    ctx.interner = &interner;
    ctx.metrics = &metrics;
    ctx.clock = &SystemClock::Instance();
    Status st = source.Open(ctx);
    EXPECT_TRUE(st.ok()) << st.ToString();
    if (st.ok()) thread = std::thread([this] { run_status = source.Run(output, stop); });
  }
  ~Harness() {
    stop = true;
    source.Interrupt();  // Run blocks in its poll until a message or this
    if (thread.joinable()) thread.join();
    EXPECT_TRUE(run_status.ok()) << run_status.ToString();
    source.Close();
  }
  uint64_t Counter(std::string_view name, const Labels& labels) const {
    return metrics.CounterValue(name, labels);
  }
  uint64_t Unauthorized() const {
    return Counter("inferscope_source_rejected_total",
                   {{"stage", "ingest"}, {"reason", "unauthorized_publisher"}});
  }
  uint64_t AuthFailures() const {
    return Counter("inferscope_source_auth_failures_total", {{"stage", "ingest"}});
  }
  std::vector<double> ValuesFrom(std::string_view publisher) {
    std::vector<double> out;
    for (const Event& e : output.events()) {
      if (interner.Name(e.publisher) == publisher) out.push_back(e.e2e_ms);
    }
    return out;
  }

  Interner interner;
  MetricsRegistry metrics;
  CollectingOutput output;
  ZmqSource source;
  std::atomic<bool> stop{false};
  Status run_status;
  std::thread thread;
};

ZmqSource::Options CurveOptions(const Keys& keys, ZmqSource::Mode mode) {
  ZmqSource::Options o;
  o.endpoint = "tcp://127.0.0.1:*";
  o.mode = mode;
  if (mode == ZmqSource::Mode::kRouter) o.decoder.strict_sequence = true;
  if (mode == ZmqSource::Mode::kSub) o.bind = true;
  o.curve = keys.Server();
  return o;
}

client::RequestOutcome Request(double e2e_ms) {
  client::RequestOutcome r;
  r.instance = "node-1";
  r.model = "llama";
  r.e2e_ms = e2e_ms;
  return r;
}

// Sends one request with `e2e_ms` as `publisher_id` with `keys` through a PUSH publisher.
void Push(const std::string& endpoint, const std::string& publisher_id,
          const client::CurveClientKeys& keys, double e2e_ms) {
  client::PublisherOptions po;
  po.endpoint = endpoint;
  po.publisher_id = publisher_id;
  po.curve = keys;
  po.linger_ms = 1000;
  client::Publisher pub(po);
  std::string error;
  ASSERT_TRUE(pub.Connect(&error)) << error;
  ASSERT_TRUE(pub.Request(Request(e2e_ms)));
  ASSERT_TRUE(pub.Flush()) << pub.last_error();
  pub.Close();
}

TEST(ZmqSourceCurveTest, AuthorisedKeyPublishes) {
  Keys keys;
  Harness h(CurveOptions(keys, ZmqSource::Mode::kPull));
  Push(h.source.Endpoint(), "alice-1", keys.Client(keys.alice), 7);
  Push(h.source.Endpoint(), "bob", keys.Client(keys.bob), 8);
  ASSERT_TRUE(WaitUntil([&] { return h.output.events().size() == 2; }));
  EXPECT_EQ(h.ValuesFrom("alice-1"), std::vector<double>{7});
  EXPECT_EQ(h.ValuesFrom("bob"), std::vector<double>{8});
  EXPECT_EQ(h.AuthFailures(), 0u);
  EXPECT_EQ(h.Unauthorized(), 0u);
}

TEST(ZmqSourceCurveTest, UnauthorisedKeyAndPlainClientsAreRefusedAndCounted) {
  Keys keys;
  Harness h(CurveOptions(keys, ZmqSource::Mode::kPull));
  // Mallory's key is not listed: the handshake is refused (counted), nothing is applied.
  client::PublisherOptions po;
  po.endpoint = h.source.Endpoint();
  po.publisher_id = "alice-1";
  po.curve = keys.Client(keys.mallory);
  po.send_timeout_ms = 0;  // the send cannot complete: there is no admitted peer
  client::Publisher mallory(po);
  std::string error;
  ASSERT_TRUE(mallory.Connect(&error)) << error;
  (void)mallory.Request(Request(666));
  (void)mallory.Flush();
  // A client without keys does not even reach the ZAP handler (CURVE vs NULL mechanism).
  po.curve = {};
  client::Publisher plain(po);
  ASSERT_TRUE(plain.Connect(&error)) << error;
  (void)plain.Request(Request(667));
  (void)plain.Flush();
  ASSERT_TRUE(WaitUntil([&] { return h.AuthFailures() >= 1; }));

  // An authorised publisher sent after them gets through; nothing else did.
  Push(h.source.Endpoint(), "alice-1", keys.Client(keys.alice), 1);
  ASSERT_TRUE(WaitUntil([&] { return !h.output.events().empty(); }));
  EXPECT_EQ(h.ValuesFrom("alice-1"), std::vector<double>{1});
  EXPECT_EQ(h.output.events().size(), 1u);
  EXPECT_GE(h.AuthFailures(), 1u);
}

// The attack of issue 8 item 11, in acknowledged mode: bob's key is authorised (for "bob"), and he
// says hello as alice-1 to learn her next sequence number, then sends a message as alice-1 with
// that number so that her real one would be dropped as a duplicate. Both are refused and counted;
// alice's messages are applied as if bob had not been there.
TEST(ZmqSourceCurveTest, AuthorisedKeyCannotUseAnotherKeysPublisherId) {
  Keys keys;
  Harness h(CurveOptions(keys, ZmqSource::Mode::kRouter));
  auto acked = [&](const std::string& id, const CurveKeyPair& pair, int hello_timeout_ms) {
    client::AckedPublisherOptions o;
    o.endpoint = h.source.Endpoint();
    o.publisher_id = id;
    o.curve = keys.Client(pair);
    o.hello_timeout_ms = hello_timeout_ms;
    return std::make_unique<client::AckedPublisher>(o);
  };
  std::string error;
  auto alice = acked("alice-1", keys.alice, 5000);
  ASSERT_TRUE(alice->Connect(&error)) << error;
  ASSERT_TRUE(alice->Request(Request(1)));
  ASSERT_TRUE(alice->Flush());
  ASSERT_TRUE(WaitUntil([&] { return h.ValuesFrom("alice-1").size() == 1; }));

  auto bob_as_alice = acked("alice-1", keys.bob, 200);  // the hello goes unanswered
  ASSERT_TRUE(bob_as_alice->Connect(&error)) << error;
  ASSERT_TRUE(bob_as_alice->Request(Request(666)));
  ASSERT_TRUE(bob_as_alice->Flush());
  ASSERT_TRUE(WaitUntil([&] { return h.Unauthorized() >= 2; }));  // the hello and the message
  EXPECT_GE(h.Counter("inferscope_source_unauthorized_total",
                      {{"stage", "ingest"}, {"publisher", "alice-1"}}),
            2u);
  EXPECT_FALSE(bob_as_alice->any_acked());

  ASSERT_TRUE(alice->Request(Request(2)));
  ASSERT_TRUE(alice->Flush());
  ASSERT_TRUE(WaitUntil([&] { return h.ValuesFrom("alice-1").size() == 2; }));
  EXPECT_EQ(h.ValuesFrom("alice-1"), (std::vector<double>{1, 2}));
  EXPECT_EQ(h.Counter("inferscope_source_duplicates_total",
                      {{"stage", "ingest"}, {"publisher", "alice-1"}}),
            0u);

  // Bob under his own id is fine.
  auto bob = acked("bob", keys.bob, 5000);
  ASSERT_TRUE(bob->Connect(&error)) << error;
  ASSERT_TRUE(bob->Request(Request(5)));
  ASSERT_TRUE(bob->Flush());
  ASSERT_TRUE(WaitUntil([&] { return h.ValuesFrom("bob").size() == 1; }));
  EXPECT_EQ(h.ValuesFrom("alice-1"), (std::vector<double>{1, 2}));
  EXPECT_EQ(h.AuthFailures(), 0u);
}

TEST(ZmqSourceCurveTest, BoundSubSourceChecksPublishersToo) {
  Keys keys;
  Harness h(CurveOptions(keys, ZmqSource::Mode::kSub));
  // A PUB publisher joins asynchronously (the subscription must reach it), so publish until the
  // authorised events arrive; the impostor's publisher id never shows up.
  client::PublisherOptions po;
  po.endpoint = h.source.Endpoint();
  po.socket = client::PublisherOptions::SocketType::kPub;
  po.curve = keys.Client(keys.bob);
  po.publisher_id = "alice-1";
  client::Publisher impostor(po);
  po.publisher_id = "bob";
  client::Publisher bob(po);
  std::string error;
  ASSERT_TRUE(impostor.Connect(&error)) << error;
  ASSERT_TRUE(bob.Connect(&error)) << error;
  ASSERT_TRUE(WaitUntil([&] {
    (void)impostor.Request(Request(666));
    (void)impostor.Flush();
    (void)bob.Request(Request(3));
    (void)bob.Flush();
    return h.ValuesFrom("bob").size() >= 3 && h.Unauthorized() >= 3;
  }));
  EXPECT_TRUE(h.ValuesFrom("alice-1").empty());
}

TEST(ZmqSourceCurveTest, CreateReadsTheKeyFilesAndNeedsABoundSocket) {
  TempDir dir;
  Keys keys;
  ASSERT_TRUE(WriteCurveKeyFiles(dir.str() + "/engine", keys.engine, false).ok());
  {
    std::ofstream out(dir.str() + "/publishers");
    out << "# who may publish\n" << keys.alice.public_key << " alice-*\n";
  }
  const std::string curve = "curve: {server_secret_key_file: " + dir.str() +
                            "/engine.key, authorized_keys_file: " + dir.str() + "/publishers}";
  auto create = [&](const std::string& yaml) {
    return ZmqSource::Create(ConfigNode("<test>", YAML::Load(yaml), "sources[0].options"));
  };
  Result<std::unique_ptr<ZmqSource>> ok =
      create("endpoint: tcp://127.0.0.1:*\nmode: router\n" + curve);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();

  Result<std::unique_ptr<ZmqSource>> connecting =
      create("endpoint: tcp://127.0.0.1:5555\nmode: sub\n" + curve);
  ASSERT_FALSE(connecting.ok());
  EXPECT_NE(connecting.status().message().find("bound socket"), std::string::npos)
      << connecting.status().ToString();

  Result<std::unique_ptr<ZmqSource>> missing = create(
      "endpoint: tcp://127.0.0.1:*\ncurve: {server_secret_key_file: /nonexistent/engine.key, "
      "authorized_keys_file: /nonexistent/keys}");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("curve.server_secret_key_file"), std::string::npos)
      << missing.status().ToString();
}

}  // namespace
}  // namespace inferscope
