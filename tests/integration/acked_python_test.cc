// Acknowledged publishing (docs/PROTOCOL.md §9) against the real engine: `inferscope run` as a
// subprocess with a `mode: router` zmq source, window_aggregate and the rocksdb_state sink; the
// Python AckedPublisher (tests/integration/publish_acked.py) and the C++ client::AckedPublisher
// publish known events, wait until they are acknowledged, and the HTTP summary must count every
// event exactly once — across an engine restart, resent acknowledged messages and a lost message.

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "clients/cpp/acked_publisher.h"
#include "tests/integration/engine_fixture.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using nlohmann::json;
using testing::EngineProcess;
using testing::ReadFile;
using testing::RestartablePort;
using testing::Subprocess;
using testing::Substitute;
using testing::TempDir;
using testing::WaitFor;

constexpr char kTopology[] = R"(name: acked
engine:
  checkpoint_interval: 200ms
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
      mode: router
operators:
  - name: windows
    type: window_aggregate
    inputs: [ingest]
    options:
      pane: 1s
      out_of_orderness: 3s  # > the resend delay of lose-second, so resent events are not late
      idle_timeout: 300ms
sinks:
  - name: state
    type: rocksdb_state
    inputs: [windows]
)";

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// `inferscope run` on the topology above, its state in `dir`/state (so a second Engine on the same
// dir restarts on the same state). The router source binds a new ephemeral port unless `endpoint`
// names one (a restart on the port an earlier run was given).
class Engine {
 public:
  Engine(const TempDir& dir, int start, const std::string& endpoint = "tcp://127.0.0.1:*")
      : process_(dir,
                 {Substitute(kTopology, {{"STATE", dir.str() + "/state"}, {"ENDPOINT", endpoint}}),
                  "engine." + std::to_string(start)}) {}

  bool WaitReady() { return process_.WaitReady(); }
  std::string Endpoint() const { return process_.Endpoint("ingest"); }
  std::string Log() const { return process_.Log(); }
  // SIGTERM, and the exit code.
  int Stop() { return process_.Stop(); }

  // The ttft_ms count of node-a/m1 summed over the stored panes since `since_ms` (-1 when the
  // series does not exist yet).
  int64_t Count(int64_t since_ms) { return Stored(since_ms, "count"); }
  // The sum of the ttft_ms values (events are numbered so that a lost or doubled one shows).
  int64_t Sum(int64_t since_ms) { return Stored(since_ms, "sum"); }
  int64_t Stored(int64_t since_ms, const std::string& field) {
    const int64_t from = since_ms - 60'000;
    const int64_t to = NowMs() + 120'000;
    auto res = process_.http().Get(
        ("/v1/instances/node-a/summary?model=m1&metric=ttft_ms&window=1m&from=" +
         std::to_string(from) + "&to=" + std::to_string(to))
            .c_str());
    if (!res || res->status != 200) return -1;
    json body = json::parse(res->body, nullptr, false);
    if (!body.is_object() || !body.contains("windows")) return -1;
    double total = 0;
    for (const json& w : body["windows"]) {
      if (w.contains(field) && w[field].is_number()) total += w[field].get<double>();
    }
    return static_cast<int64_t>(total + 0.5);
  }

  // Waits until Count reaches `expected`, then checks it stays there for a while (a pane closing
  // late must not add anything).
  ::testing::AssertionResult CountIs(int64_t since_ms, int64_t expected) {
    int64_t last = -1;
    if (!WaitFor([&] { return (last = Count(since_ms)) >= expected; })) {
      return ::testing::AssertionFailure() << "count " << last << ", expected " << expected;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // panes close within ~1.3 s
    last = Count(since_ms);
    if (last != expected) {
      return ::testing::AssertionFailure() << "count " << last << ", expected " << expected;
    }
    return ::testing::AssertionSuccess();
  }

  // The value of a Prometheus sample whose line starts with `prefix` (summed over matches).
  double Metric(const std::string& prefix) {
    auto res = process_.http().Get("/metrics");
    if (!res) return -1;
    double sum = 0;
    std::istringstream in(res->body);
    for (std::string line; std::getline(in, line);) {
      if (line.rfind(prefix, 0) == 0) sum += std::stod(line.substr(line.rfind(' ') + 1));
    }
    return sum;
  }

 private:
  EngineProcess process_;
};

// publish_acked.py running as a subprocess.
class Python {
 public:
  Python(const TempDir& dir, const std::string& endpoint, const std::string& pub,
         const std::string& mode, int count, const std::vector<std::string>& options = {}) {
    static int run = 0;
    log_ = dir.str() + "/python." + std::to_string(run++) + ".log";
    std::vector<std::string> argv = {testing::Python(),
                                     testing::SourceDir() + "/tests/integration/publish_acked.py",
                                     endpoint,
                                     pub,
                                     mode,
                                     std::to_string(count)};
    argv.insert(argv.end(), options.begin(), options.end());
    mode_ = mode;
    process_ = std::make_unique<Subprocess>(argv, log_);
  }
  Subprocess& process() { return *process_; }
  std::string Log() const { return ReadFile(log_); }
  // Waits for the exit; returns its code and fills `*out` with the JSON line.
  int Finish(json* out) {
    const int rc = process_->Wait(std::chrono::seconds(90));
    const std::string text = ReadFile(log_);
    *out = json();
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
      if (!line.empty() && line[0] == '{') *out = json::parse(line, nullptr, false);
    }
    if (rc != 0) ADD_FAILURE() << mode_ << " exited " << rc << ":\n" << text;
    return rc;
  }

 private:
  std::string log_, mode_;
  std::unique_ptr<Subprocess> process_;
};

// Runs publish_acked.py; returns its exit code and fills `*out` with its JSON line.
int RunPython(const TempDir& dir, const std::string& endpoint, const std::string& pub,
              const std::string& mode, int count, json* out, int expect_first_seq = -1,
              std::vector<std::string> options = {}) {
  if (expect_first_seq >= 0) {
    options.push_back("--expect-first-seq");
    options.push_back(std::to_string(expect_first_seq));
  }
  return Python(dir, endpoint, pub, mode, count, options).Finish(out);
}

constexpr int kBatch = 7;  // publish_acked.py's batch size
int Messages(int events) { return (events + kBatch - 1) / kBatch; }

TEST(AckedPythonTest, ExactCountsAcrossEngineRestart) {
  TempDir dir;
  const int64_t since = NowMs();
  constexpr int kFirst = 500, kSecond = 300;
  json first_incarnation;
  {
    Engine engine(dir, 0);
    ASSERT_TRUE(engine.WaitReady()) << engine.Log();
    json r;
    ASSERT_EQ(RunPython(dir, engine.Endpoint(), "py-acked", "publish", kFirst, &r), 0);
    EXPECT_TRUE(r["hello_next"].is_null()) << r.dump();  // never heard of it
    EXPECT_EQ(r["first_seq"], 0);
    EXPECT_EQ(r["acked_seq"], Messages(kFirst) - 1) << r.dump();
    first_incarnation = r["incarnation"];
    EXPECT_TRUE(engine.CountIs(since, kFirst)) << engine.Log();
    EXPECT_EQ(engine.Metric("inferscope_source_out_of_order_total"), 0);
    ASSERT_EQ(engine.Stop(), 0) << engine.Log();
  }
  {
    Engine engine(dir, 1);
    ASSERT_TRUE(engine.WaitReady()) << engine.Log();
    EXPECT_TRUE(engine.CountIs(since, kFirst)) << engine.Log();
    json r;
    // The new process is a new incarnation: it starts again at 0, and the engine knows the first
    // process's incarnation as the latest one.
    ASSERT_EQ(RunPython(dir, engine.Endpoint(), "py-acked", "publish", kSecond, &r, 0), 0);
    EXPECT_EQ(r["hello_next"], 0) << r.dump();
    EXPECT_TRUE(r["hello_ack"].is_null()) << r.dump();
    EXPECT_EQ(r["hello_latest"], first_incarnation) << r.dump();
    EXPECT_GT(r["incarnation"].get<uint64_t>(), first_incarnation.get<uint64_t>());
    EXPECT_EQ(r["acked_seq"], Messages(kSecond) - 1) << r.dump();
    EXPECT_TRUE(engine.CountIs(since, kFirst + kSecond)) << engine.Log();
    EXPECT_EQ(engine.Stop(), 0) << engine.Log();
  }
}

TEST(AckedPythonTest, ResentAcknowledgedMessagesAreDropped) {
  TempDir dir;
  const int64_t since = NowMs();
  Engine engine(dir, 0);
  ASSERT_TRUE(engine.WaitReady()) << engine.Log();
  json r;
  const std::vector<std::string> spool = {"--spool", dir.str() + "/py-dup.spool"};
  ASSERT_EQ(RunPython(dir, engine.Endpoint(), "py-dup", "publish", 210, &r, -1, spool), 0);
  ASSERT_TRUE(engine.CountIs(since, 210)) << engine.Log();

  // The same incarnation (from the spool), sequence numbers 0..29 again, with events in them: all
  // duplicates, each answered with the current ack, none applied.
  ASSERT_EQ(RunPython(dir, engine.Endpoint(), "py-dup", "resend-acked", 210, &r, -1, spool), 0);
  EXPECT_EQ(r["first_seq"], 0);
  EXPECT_EQ(r["acked_seq"], Messages(210) - 1) << r.dump();
  EXPECT_GE(engine.Metric("inferscope_source_duplicates_total"), 1);
  // A new process without the spool is a new incarnation; the count is exact, so nothing
  // duplicate was counted.
  ASSERT_EQ(RunPython(dir, engine.Endpoint(), "py-dup", "publish", 70, &r, 0), 0);
  EXPECT_TRUE(engine.CountIs(since, 280)) << engine.Log();
  EXPECT_EQ(engine.Stop(), 0) << engine.Log();
}

TEST(AckedPythonTest, LostMessageIsResentInOrderAndAppliedOnce) {
  TempDir dir;
  const int64_t since = NowMs();
  Engine engine(dir, 0);
  ASSERT_TRUE(engine.WaitReady()) << engine.Log();
  json r;
  ASSERT_EQ(RunPython(dir, engine.Endpoint(), "py-lossy", "lose-second", 100, &r), 0);
  EXPECT_GT(r["resends"].get<int>(), 0) << r.dump();
  EXPECT_EQ(r["acked_seq"], Messages(100) - 1) << r.dump();
  EXPECT_TRUE(engine.CountIs(since, 100)) << engine.Log();
  EXPECT_GE(engine.Metric("inferscope_source_out_of_order_total"), 1);
  EXPECT_EQ(engine.Stop(), 0) << engine.Log();
}

// The first message of a new publisher is lost: the engine must not apply seq 1 (a cumulative ack
// would then cover the lost seq 0); the publisher resends from 0 and every event counts once.
TEST(AckedPythonTest, LostFirstMessageOfNewPublisherIsResentAndAppliedOnce) {
  TempDir dir;
  const int64_t since = NowMs();
  Engine engine(dir, 0);
  ASSERT_TRUE(engine.WaitReady()) << engine.Log();
  json r;
  ASSERT_EQ(RunPython(dir, engine.Endpoint(), "py-lossy-first", "lose-first", 100, &r), 0);
  EXPECT_GT(r["resends"].get<int>(), 0) << r.dump();
  EXPECT_EQ(r["acked_seq"], Messages(100) - 1) << r.dump();
  EXPECT_TRUE(engine.CountIs(since, 100)) << engine.Log();
  EXPECT_GE(engine.Metric("inferscope_source_out_of_order_total"), 1);
  EXPECT_EQ(engine.Stop(), 0) << engine.Log();
}

// Issue 8 item 2: the engine is down when a publisher restarts; its hello goes unanswered and it
// publishes anyway. When the engine comes back, every event the publisher reports acknowledged
// must be stored (before incarnations, the engine took them for duplicates of the previous
// process's sequence numbers, dropped them and acknowledged them: all lost).
TEST(AckedPythonTest, PublisherRestartedWhileTheEngineIsDownLosesNothing) {
  TempDir dir;
  const int64_t since = NowMs();
  constexpr int kFirst = 350, kSecond = 105;  // 15 messages: fewer than max_unacked (16)
  std::string endpoint;
  {
    // A port the engine can bind again after its stop (RestartablePort).
    Engine engine(dir, 0, "tcp://127.0.0.1:" + std::to_string(RestartablePort()));
    ASSERT_TRUE(engine.WaitReady()) << engine.Log();
    endpoint = engine.Endpoint();
    json r;
    ASSERT_EQ(RunPython(dir, endpoint, "py-down", "publish", kFirst, &r), 0);
    ASSERT_TRUE(engine.CountIs(since, kFirst)) << engine.Log();
    ASSERT_EQ(engine.Stop(), 0) << engine.Log();
  }
  // The restarted publisher sends everything while the engine is down...
  const std::string sent = dir.str() + "/sent";
  Python python(dir, endpoint, "py-down", "publish", kSecond, {"--sent-file", sent});
  ASSERT_TRUE(WaitFor([&] { return !ReadFile(sent).empty() || !python.process().Running(); }))
      << python.Log();
  ASSERT_FALSE(ReadFile(sent).empty()) << python.Log();
  // ... then the engine comes back on the same endpoint with its state.
  Engine engine(dir, 1, endpoint);
  ASSERT_TRUE(engine.WaitReady()) << engine.Log();
  json r;
  ASSERT_EQ(python.Finish(&r), 0);
  EXPECT_EQ(r["acked_seq"], Messages(kSecond) - 1) << r.dump();
  EXPECT_TRUE(engine.CountIs(since, kFirst + kSecond)) << engine.Log();
  EXPECT_EQ(engine.Sum(since), (kSecond * (kSecond + 1) + kFirst * (kFirst + 1)) / 2);
  EXPECT_EQ(engine.Stop(), 0) << engine.Log();
}

// Issue 8 item 3: a publisher killed with SIGKILL (twice) and started again with its spool resends
// what it had not seen acknowledged under its original incarnation and sequence numbers; the
// engine applies each message exactly once: nothing lost, nothing counted twice.
TEST(AckedPythonTest, KilledPublisherRestartedWithItsSpoolLosesAndDuplicatesNothing) {
  TempDir dir;
  const int64_t since = NowMs();
  constexpr int kEvents = 7 * 120;
  Engine engine(dir, 0);
  ASSERT_TRUE(engine.WaitReady()) << engine.Log();
  const std::string progress = dir.str() + "/progress";
  const std::vector<std::string> options = {
      "--spool", dir.str() + "/pub.spool", "--progress", progress, "--delay-ms", "10"};
  auto messages_written = [&] {
    const std::string text = ReadFile(progress);
    return text.empty() ? 0 : std::atoi(text.c_str());
  };
  for (int kill_after : {30, 70}) {
    Python python(dir, engine.Endpoint(), "py-spool", "spool", kEvents, options);
    ASSERT_TRUE(WaitFor([&] {
      return messages_written() >= kill_after || !python.process().Running();
    })) << python.Log();
    ASSERT_TRUE(python.process().Running()) << python.Log();
    python.process().Signal(SIGKILL);
    python.process().Wait();
  }
  Python last(dir, engine.Endpoint(), "py-spool", "spool", kEvents, options);
  json r;
  ASSERT_EQ(last.Finish(&r), 0);
  EXPECT_GT(r["restored"].get<int>(), 0)
      << "nothing was in flight at the kill: the test proves little";
  EXPECT_EQ(r["next_seq"], kEvents / 7) << r.dump();
  EXPECT_TRUE(engine.CountIs(since, kEvents)) << engine.Log();
  EXPECT_EQ(engine.Sum(since), int64_t{kEvents} * (kEvents + 1) / 2) << engine.Log();
  EXPECT_EQ(engine.Metric("inferscope_source_publisher_restarts_total"), 0);  // one incarnation
  EXPECT_EQ(engine.Stop(), 0) << engine.Log();
}

// The C++ twin: client::AckedPublisher in this process, same flow.
bool PublishCpp(const std::string& endpoint, int count, uint64_t* first_seq, uint64_t* acked,
                std::string* error) {
  client::AckedPublisherOptions o;
  o.endpoint = endpoint;
  o.publisher_id = "cpp-acked";
  o.batch_size = kBatch;
  o.max_unacked = 16;
  o.block_timeout_ms = 30'000;
  client::AckedPublisher pub(o);
  if (!pub.Connect(error)) return false;
  *first_seq = pub.next_seq();
  for (int i = 0; i < count; ++i) {
    client::RequestOutcome r;
    r.instance = "node-a";
    r.model = "m1";
    r.e2e_ms = 100.0 + i;
    r.ttft_ms = i + 1.0;
    if (!pub.Request(r)) {
      *error = pub.last_error();
      return false;
    }
  }
  const bool ok = pub.WaitAcked(60'000);
  if (!ok) *error = pub.last_error();
  *acked = pub.any_acked() ? pub.acked_seq() : UINT64_MAX;
  pub.Close();
  return ok;
}

TEST(AckedCppTest, ExactCountsAcrossEngineRestart) {
  TempDir dir;
  const int64_t since = NowMs();
  uint64_t first = 0, acked = 0;
  std::string error;
  {
    Engine engine(dir, 0);
    ASSERT_TRUE(engine.WaitReady()) << engine.Log();
    ASSERT_TRUE(PublishCpp(engine.Endpoint(), 400, &first, &acked, &error)) << error;
    EXPECT_EQ(first, 0u);
    EXPECT_EQ(acked, static_cast<uint64_t>(Messages(400) - 1));
    EXPECT_TRUE(engine.CountIs(since, 400)) << engine.Log();
    ASSERT_EQ(engine.Stop(), 0) << engine.Log();
  }
  {
    Engine engine(dir, 1);
    ASSERT_TRUE(engine.WaitReady()) << engine.Log();
    ASSERT_TRUE(PublishCpp(engine.Endpoint(), 100, &first, &acked, &error)) << error;
    EXPECT_EQ(first, 0u);  // a new incarnation starts again at 0
    EXPECT_EQ(acked, static_cast<uint64_t>(Messages(100) - 1));
    EXPECT_TRUE(engine.CountIs(since, 500)) << engine.Log();
    EXPECT_EQ(engine.Stop(), 0) << engine.Log();
  }
}

// The C++ twin of PublisherRestartedWhileTheEngineIsDownLosesNothing: client::AckedPublisher
// connects while the engine is down (no answer to its hello), publishes, and the engine comes back.
TEST(AckedCppTest, PublisherStartedWhileTheEngineIsDownLosesNothing) {
  TempDir dir;
  const int64_t since = NowMs();
  uint64_t first = 0, acked = 0;
  std::string error;
  std::string endpoint;
  {
    Engine engine(dir, 0, "tcp://127.0.0.1:" + std::to_string(RestartablePort()));
    ASSERT_TRUE(engine.WaitReady()) << engine.Log();
    endpoint = engine.Endpoint();
    ASSERT_TRUE(PublishCpp(endpoint, 210, &first, &acked, &error)) << error;
    ASSERT_TRUE(engine.CountIs(since, 210)) << engine.Log();
    ASSERT_EQ(engine.Stop(), 0) << engine.Log();
  }
  client::AckedPublisherOptions o;
  o.endpoint = endpoint;
  o.publisher_id = "cpp-acked";
  o.batch_size = kBatch;
  o.hello_timeout_ms = 100;
  client::AckedPublisher pub(o);
  ASSERT_TRUE(pub.Connect(&error)) << error;
  EXPECT_FALSE(pub.hello_answered());
  for (int i = 0; i < 70; ++i) {
    client::RequestOutcome r;
    r.instance = "node-a";
    r.model = "m1";
    r.e2e_ms = 100.0 + i;
    r.ttft_ms = i + 1.0;
    ASSERT_TRUE(pub.Request(r)) << pub.last_error();
  }
  ASSERT_TRUE(pub.Flush()) << pub.last_error();
  Engine engine(dir, 1, endpoint);
  ASSERT_TRUE(engine.WaitReady()) << engine.Log();
  ASSERT_TRUE(pub.WaitAcked(60'000)) << pub.last_error() << "\n" << engine.Log();
  EXPECT_EQ(pub.acked_seq(), static_cast<uint64_t>(Messages(70) - 1))
      << "next " << pub.next_seq() << " sent " << pub.messages_sent() << " resends "
      << pub.resends() << " inc " << pub.incarnation();
  EXPECT_TRUE(engine.CountIs(since, 280)) << engine.Log();
  EXPECT_EQ(engine.Stop(), 0) << engine.Log();
}

// A child process (fork) running client::AckedPublisher with a spool: it publishes events
// next_seq*kBatch .. `events`-1 (ttft_ms i+1), writes next_seq to `progress` after each message
// and pauses 10 ms, then waits for every acknowledgement and exits 0 (1: not acknowledged in time).
pid_t StartSpooledCppPublisher(const std::string& endpoint, const std::string& spool,
                               const std::string& progress, int events) {
  const pid_t pid = fork();
  if (pid != 0) return pid;
  client::AckedPublisherOptions o;
  o.endpoint = endpoint;
  o.publisher_id = "cpp-spool";
  o.batch_size = kBatch;
  o.max_unacked = 64;
  o.spool_path = spool;
  client::AckedPublisher pub(o);
  if (!pub.Connect()) _exit(2);
  for (int i = static_cast<int>(pub.next_seq()) * kBatch; i < events; ++i) {
    client::RequestOutcome r;
    r.instance = "node-a";
    r.model = "m1";
    r.e2e_ms = 100.0 + i;
    r.ttft_ms = i + 1.0;
    if (!pub.Request(r)) _exit(3);
    if ((i + 1) % kBatch == 0) {
      std::ofstream(progress + ".tmp") << pub.next_seq();
      std::rename((progress + ".tmp").c_str(), progress.c_str());
      pub.Poll(10);
    }
  }
  _exit(pub.WaitAcked(60'000) ? 0 : 1);
}

// Issue 8 item 3, C++ client: killed with SIGKILL twice and restarted with its spool, the
// publisher loses nothing and the engine counts nothing twice.
TEST(AckedCppTest, KilledPublisherRestartedWithItsSpoolLosesAndDuplicatesNothing) {
  TempDir dir;
  const int64_t since = NowMs();
  constexpr int kEvents = kBatch * 120;
  Engine engine(dir, 0);
  ASSERT_TRUE(engine.WaitReady()) << engine.Log();
  const std::string spool = dir.str() + "/cpp.spool";
  const std::string progress = dir.str() + "/cpp.progress";
  auto messages_written = [&] {
    const std::string text = ReadFile(progress);
    return text.empty() ? 0 : std::atoi(text.c_str());
  };
  for (int kill_after : {30, 70}) {
    const pid_t child = StartSpooledCppPublisher(engine.Endpoint(), spool, progress, kEvents);
    ASSERT_GT(child, 0);
    int status = 0;
    const bool reached = WaitFor([&] {
      return messages_written() >= kill_after || waitpid(child, &status, WNOHANG) == child;
    });
    ::kill(child, SIGKILL);
    waitpid(child, &status, 0);
    ASSERT_TRUE(reached);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the publisher ended before it was killed: " << status;
  }
  const pid_t last = StartSpooledCppPublisher(engine.Endpoint(), spool, progress, kEvents);
  int status = 0;
  ASSERT_TRUE(
      WaitFor([&] { return waitpid(last, &status, WNOHANG) == last; }, std::chrono::seconds(90)));
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(messages_written(), kEvents / kBatch);
  EXPECT_TRUE(engine.CountIs(since, kEvents)) << engine.Log();
  EXPECT_EQ(engine.Sum(since), int64_t{kEvents} * (kEvents + 1) / 2) << engine.Log();
  EXPECT_EQ(engine.Stop(), 0) << engine.Log();
}

}  // namespace
}  // namespace inferscope
