// libFuzzer target: acknowledged mode (docs/PROTOCOL.md §9) end to end in one process: a real
// `zmq` source in `router` mode, and a DEALER socket that sends it what the input says.
//
// Each input gets a fresh source (bound to an ipc:// endpoint, Run on its own thread) and a fresh
// DEALER, so runs do not depend on each other. The input is a list of operations:
//   op & 3 == 0 or 1  send a multipart message of 1 + (op >> 2) % 4 frames; the first frame is
//                     "hello" when (op >> 4) % 4 == 0, "metrics" when 1, else read from the input
//                     like the others; each frame read from the input is <len><bytes>, len one
//                     byte (255: two more bytes, little-endian);
//   op & 3 == 2       hand the source a durable checkpoint (OnCheckpointDurable) for publisher
//                     "p<(op >> 2) % 4>" and the sequence number in the next byte, as the
//                     executor does from a sink thread;
//   op & 3 == 3       read the replies that arrived so far.
// Then a barrier: a hello of publisher "fuzz-barrier"; the run ends when its ack arrives (so every
// message before it was handled). Hellos, data messages (the source's strict-sequence decoder),
// bad frame counts, duplicates and the resend hints are all on this path.
//
// Checked besides the sanitizers: the source never dies, never stops answering (the barrier ack
// must arrive within 10 s), and every reply is a 2-frame ["ack", ...] or ["nack", ...] that the
// clients' parsers (sources/ack_messages.h) accept.

#include <signal.h>
#include <unistd.h>

#include <cerrno>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>
#include <msgpack.hpp>
#include <zmq.hpp>

#include "pipeline/clock.h"
#include "pipeline/config.h"
#include "pipeline/event.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "pipeline/source.h"
#include "pipeline/stage.h"
#include "sources/ack_messages.h"
#include "sources/zmq_source.h"

namespace inferscope {
namespace {

constexpr int64_t kNowMs = 1'718'000'100'000;
constexpr char kBarrierPub[] = "fuzz-barrier";

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "hello_fuzzer: %s\n", what.c_str());
  std::abort();
}

// A SourceOutput that keeps nothing: batches are counted and recycled.
class NullOutput final : public SourceOutput {
 public:
  EventBatchPtr Acquire() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (pool_.empty()) return std::make_unique<EventBatch>();
    EventBatchPtr b = std::move(pool_.back());
    pool_.pop_back();
    return b;
  }
  bool Emit(EventBatchPtr batch) override {
    Release(std::move(batch));
    return true;
  }
  bool TryEmit(EventBatchPtr& batch) override {
    Release(std::move(batch));
    return true;
  }
  void Release(EventBatchPtr batch) override {
    std::lock_guard<std::mutex> lock(mu_);
    batch->Clear();
    pool_.push_back(std::move(batch));
  }

 private:
  std::mutex mu_;
  std::vector<EventBatchPtr> pool_;
};

std::string Hello(std::string_view pub) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(2);
  pk.pack("v");
  pk.pack(1);
  pk.pack("pub");
  pk.pack(pub);
  return std::string(buf.data(), buf.size());
}

// Checks one reply (already received in full) with the publisher's own parsers
// (sources/ack_messages.h: the engine's encoders must produce what they accept); returns its
// publisher.
std::string CheckReply(const std::vector<zmq::message_t>& frames) {
  if (frames.size() != 2) {
    Fail("a reply that is not 2 frames (" + std::to_string(frames.size()) + " frames)");
  }
  const std::string_view kind = frames[0].to_string_view();
  const std::string_view payload(static_cast<const char*>(frames[1].data()), frames[1].size());
  if (kind == "ack") {
    Result<AckMessage> ack = ParseAck(payload);
    if (!ack.ok()) Fail("an ack the clients cannot read: " + ack.status().message());
    return ack->publisher;
  }
  if (kind == "nack") {
    Result<NackMessage> nack = ParseNack(payload);
    if (!nack.ok()) Fail("a nack the clients cannot read: " + nack.status().message());
    if (nack->reason.empty()) Fail("a nack without a reason");
    return nack->publisher;
  }
  Fail("a reply that is neither an ack nor a nack: '" + std::string(kind) + "'");
}

// libFuzzer's timers (SIGALRM) interrupt system calls of the fuzzer thread: retry them. (The source
// thread blocks the signals, as the engine's threads do.)
template <typename Fn>
auto RetryOnEintr(Fn fn) {
  for (;;) {
    try {
      return fn();
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
    }
  }
}

// Receives every reply waiting on `dealer` (or waits up to `timeout_ms` for the first one);
// returns true when the barrier's ack was among them.
bool DrainReplies(zmq::socket_t& dealer, int timeout_ms) {
  bool barrier = false;
  zmq::pollitem_t item{dealer.handle(), 0, ZMQ_POLLIN, 0};
  for (int wait = timeout_ms;; wait = 0) {
    if (RetryOnEintr([&] { return zmq::poll(&item, 1, std::chrono::milliseconds(wait)); }) <= 0) {
      return barrier;
    }
    std::vector<zmq::message_t> frames;
    do {
      frames.emplace_back();
      if (!RetryOnEintr([&] { return dealer.recv(frames.back(), zmq::recv_flags::dontwait); })) {
        Fail("a reply whose frames did not arrive together");
      }
    } while (frames.back().more());
    if (CheckReply(frames) == kBarrierPub) barrier = true;
  }
}

// Reads bytes from the input.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}
  bool empty() const { return p_ == end_; }
  uint8_t Byte() { return p_ == end_ ? 0 : *p_++; }
  std::string Frame() {
    size_t len = Byte();
    if (len == 255) len = Byte() | (size_t{Byte()} << 8);
    len = std::min<size_t>(len, static_cast<size_t>(end_ - p_));
    std::string s(reinterpret_cast<const char*>(p_), len);
    p_ += len;
    return s;
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

struct Shared {
  zmq::context_t context{1};
  std::string endpoint;
};

Shared& Global() {
  static Shared* shared = [] {
    auto* s = new Shared();
    const char* tmp = std::getenv("TMPDIR");
    s->endpoint = std::string("ipc://") + (tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") +
                  "/inferscope-fuzz-hello-" + std::to_string(getpid()) + ".sock";
    return s;
  }();
  return *shared;
}

}  // namespace
}  // namespace inferscope

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  inferscope::Global();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace inferscope;
  if (size > 4096) return -1;
  Shared& g = Global();

  Interner interner(64);
  // Interned first, so that a full string table cannot keep the barrier hello from an answer.
  (void)interner.Intern(kBarrierPub);
  ManualClock clock(kNowMs);
  MetricsRegistry metrics;
  StageContext ctx;
  ctx.name = "fuzz";
  ctx.interner = &interner;
  ctx.metrics = &metrics;
  ctx.clock = &clock;

  ZmqSource::Options options;
  options.endpoint = g.endpoint;
  options.mode = ZmqSource::Mode::kRouter;
  options.batch_events = 4;
  options.decoder.strict_sequence = true;
  options.decoder.max_events_per_message = 8;
  ZmqSource source(options);
  ::unlink(g.endpoint.substr(6).c_str());
  if (Status s = source.Open(ctx); !s.ok()) Fail("cannot open the source: " + s.ToString());

  NullOutput output;
  std::atomic<bool> stop{false};
  Status run_status;
  std::thread runner([&] {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    run_status = source.Run(output, stop);
  });

  zmq::socket_t dealer(g.context, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.connect(g.endpoint);

  Reader in(data, size);
  bool barrier_seen = false;
  while (!in.empty()) {
    const uint8_t op = in.Byte();
    switch (op & 3) {
      case 0:
      case 1: {
        const int frames = 1 + (op >> 2) % 4;
        const int topic = (op >> 4) % 4;
        for (int i = 0; i < frames; ++i) {
          std::string frame = i == 0 && topic == 0   ? std::string("hello")
                              : i == 0 && topic == 1 ? std::string("metrics")
                                                     : in.Frame();
          const auto flags = i + 1 < frames ? zmq::send_flags::sndmore : zmq::send_flags::none;
          if (!RetryOnEintr([&] { return dealer.send(zmq::buffer(frame), flags); })) {
            Fail("the DEALER cannot send");
          }
        }
        break;
      }
      case 2: {
        const std::string pub = "p" + std::to_string((op >> 2) % 4);
        const StringId id = interner.Intern(pub);
        const uint64_t seq = in.Byte();
        if (id != 0) source.OnCheckpointDurable({{id, seq}});
        break;
      }
      default:
        barrier_seen = DrainReplies(dealer, 0) || barrier_seen;
        break;
    }
  }

  const std::string hello = Hello(kBarrierPub);
  RetryOnEintr([&] { return dealer.send(zmq::str_buffer("hello"), zmq::send_flags::sndmore); });
  RetryOnEintr([&] { return dealer.send(zmq::buffer(hello), zmq::send_flags::none); });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!DrainReplies(dealer, 100)) {
    if (std::chrono::steady_clock::now() > deadline) {
      Fail("the source did not answer the barrier hello within 10 s");
    }
  }
  (void)barrier_seen;

  stop.store(true);
  source.Interrupt();  // Run blocks in its poll until a message or this
  runner.join();
  if (!run_status.ok()) Fail("Run failed: " + run_status.ToString());
  dealer.close();
  source.Close();
  return 0;
}
