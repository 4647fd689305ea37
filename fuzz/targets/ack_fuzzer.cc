// libFuzzer target: acknowledged mode's hello/ack state machine (docs/PROTOCOL.md §9) driven
// directly: a `zmq` source in `router` mode opened without its socket (ZmqSource::OpenDetached),
// handed each received frame set as the ROUTER socket would (ZmqSource::Deliver), its replies
// collected by a ReplySink and checked at once. The same code as the `hello` target (every
// decision of the source and its strict-sequence decoder) without sockets, threads or waits, so it
// runs thousands of inputs per second; `hello` keeps the socket path (ReceiveOne, Run's loop, the
// checkpoint hand-over from another thread).
//
// Each input gets a fresh source, decoder and string table (they are cheap without the socket), so
// runs do not depend on each other. The input is a list of operations, the `hello` target's
// encoding (so its corpus is valid here) plus a sender:
//   op & 3 == 0 or 1  a message of 1 + (op >> 2) % 4 frames from peer "d<op >> 6>"; the first frame
//                     is "hello" when (op >> 4) % 4 == 0, "metrics" when 1, else read from the
//                     input like the others; each frame read from the input is <len><bytes>, len
//                     one byte (255: two more bytes, little-endian);
//   op & 3 == 2       a durable checkpoint (OnCheckpointDurable) for publisher "p<(op >> 2) % 4>",
//                     incarnation (op >> 4) % 4 and the sequence number in the next byte;
//   op & 3 == 3       the acks handed over so far are sent (FlushAcks, as Run does between
//                     batches); when op & 4, the clock moves 50 ms on (the resend-hint interval).
// Then a barrier: a hello of publisher "fuzz-barrier" from its own peer, which must be answered at
// once with its ack.
//
// Checked besides the sanitizers: every reply is an ["ack", ...] or ["nack", ...] that the
// clients' parsers (sources/ack_messages.h) accept, goes to a peer that sent something, and names a
// publisher; the barrier hello is answered at once with an ack of "fuzz-barrier", incarnation 0,
// to the barrier's peer.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <spdlog/spdlog.h>
#include <msgpack.hpp>

#include "pipeline/clock.h"
#include "pipeline/event.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "pipeline/stage.h"
#include "sources/ack_messages.h"
#include "sources/zmq_source.h"

namespace inferscope {
namespace {

constexpr int64_t kNowMs = 1'718'000'100'000;
constexpr char kBarrierPub[] = "fuzz-barrier";
constexpr std::string_view kPeers[] = {"d0", "d1", "d2", "d3"};
constexpr std::string_view kBarrierPeer = "barrier";

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "ack_fuzzer: %s\n", what.c_str());
  std::abort();
}

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

// Checks each reply when it is sent, with the publisher's own parsers (the engine's encoders must
// produce what they accept); keeps the last ack of the barrier publisher.
class CheckingSink final : public ZmqSource::ReplySink {
 public:
  void OnReply(std::string_view peer, std::string_view kind, std::string_view payload) override {
    bool known_peer = peer == kBarrierPeer;
    for (std::string_view p : kPeers) known_peer = known_peer || peer == p;
    if (!known_peer) Fail("a reply to a peer that sent nothing: '" + std::string(peer) + "'");
    if (kind == "ack") {
      Result<AckMessage> ack = ParseAck(payload);
      if (!ack.ok()) Fail("an ack the clients cannot read: " + ack.status().message());
      if (ack->publisher.empty()) Fail("an ack without a publisher");
      if (ack->publisher == kBarrierPub) {
        barrier_acked = peer == kBarrierPeer && ack->incarnation == 0;
      }
      return;
    }
    if (kind == "nack") {
      Result<NackMessage> nack = ParseNack(payload);
      if (!nack.ok()) Fail("a nack the clients cannot read: " + nack.status().message());
      if (nack->reason.empty()) Fail("a nack without a reason");
      if (nack->publisher.empty()) Fail("a nack without a publisher");
      return;
    }
    Fail("a reply that is neither an ack nor a nack: '" + std::string(kind) + "'");
  }
  bool barrier_acked = false;
};

// Reads bytes from the input.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}
  bool empty() const { return p_ == end_; }
  uint8_t Byte() { return p_ == end_ ? 0 : *p_++; }
  std::string_view Frame() {
    size_t len = Byte();
    if (len == 255) len = Byte() | (size_t{Byte()} << 8);
    len = std::min<size_t>(len, static_cast<size_t>(end_ - p_));
    std::string_view s(reinterpret_cast<const char*>(p_), len);
    p_ += len;
    return s;
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

// Set up once: the options, the barrier hello, the metrics registry (a decoder's counters are
// looked up, not made again, after the first input).
struct Shared {
  ZmqSource::Options options;
  std::string barrier_hello = Hello(kBarrierPub);
  MetricsRegistry metrics;
};

Shared& Global() {
  static Shared* shared = [] {
    auto* s = new Shared();
    s->options.endpoint = "inproc://detached";  // never bound
    s->options.mode = ZmqSource::Mode::kRouter;
    s->options.batch_events = 4;
    s->options.decoder.strict_sequence = true;
    s->options.decoder.max_events_per_message = 8;
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
  StageContext ctx;
  ctx.name = "fuzz";
  ctx.interner = &interner;
  ctx.metrics = &g.metrics;
  ctx.clock = &clock;
  CheckingSink replies;
  ZmqSource source(g.options);
  if (Status s = source.OpenDetached(ctx, replies); !s.ok()) {
    Fail("cannot open the source: " + s.ToString());
  }

  EventBatch batch;
  Reader in(data, size);
  std::string_view frames[5];
  while (!in.empty()) {
    const uint8_t op = in.Byte();
    switch (op & 3) {
      case 0:
      case 1: {
        const int n = 1 + (op >> 2) % 4;
        const int topic = (op >> 4) % 4;
        frames[0] = kPeers[op >> 6];
        for (int i = 1; i <= n; ++i) {
          frames[i] = i == 1 && topic == 0   ? std::string_view("hello")
                      : i == 1 && topic == 1 ? std::string_view("metrics")
                                             : in.Frame();
        }
        source.Deliver(std::span<const std::string_view>(frames, 1 + n), batch);
        if (batch.events.size() >= 64) batch.Clear();
        break;
      }
      case 2: {
        const std::string pub = "p" + std::to_string((op >> 2) % 4);
        const StringId id = interner.Intern(pub);
        AppliedSequence applied;
        applied.publisher = id;
        applied.incarnation = (op >> 4) % 4;
        applied.seq = in.Byte();
        if (id != 0) source.OnCheckpointDurable({applied});
        break;
      }
      default:
        source.FlushAcks();
        if ((op & 4) != 0) clock.Advance(50);
        break;
    }
  }

  const std::string_view barrier[] = {kBarrierPeer, "hello", g.barrier_hello};
  source.Deliver(barrier, batch);
  if (!replies.barrier_acked) Fail("the barrier hello was not answered with its ack");
  source.Close();
  return 0;
}
