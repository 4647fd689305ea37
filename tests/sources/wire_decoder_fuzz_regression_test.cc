// Regression tests for what fuzz/targets/wire_decoder_fuzzer.cc found (the inputs are kept in
// fuzz/corpus/wire_decoder/regression-*).

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include <msgpack.hpp>

#include "pipeline/clock.h"
#include "pipeline/event.h"
#include "pipeline/interner.h"
#include "sources/wire_decoder.h"

namespace inferscope {
namespace {

constexpr int64_t kNow = 1'718'000'100'000;

// A message of `events` identical request events from publisher `pub`.
std::string Payload(uint64_t seq, std::string_view pub = "p", int events = 1) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(4);
  pk.pack("v");
  pk.pack(1);
  pk.pack("pub");
  pk.pack(pub);
  pk.pack("seq");
  pk.pack(seq);
  pk.pack("events");
  pk.pack_array(events);
  for (int i = 0; i < events; ++i) {
    pk.pack_map(5);
    pk.pack("k");
    pk.pack("r");
    pk.pack("i");
    pk.pack("node-1");
    pk.pack("m");
    pk.pack("llama");
    pk.pack("t");
    pk.pack(kNow - 1000);
    pk.pack("e2e");
    pk.pack(1.5);
  }
  return std::string(buf.data(), buf.size());
}

// Fuzzer finding: seq 2^64 - 1 made the expected sequence number wrap to 0, so the same message
// decoded again was a "gap" of 2^64 - 1 messages and applied a second time (fire-and-forget mode).
// The largest value is now outside the protocol (seq < 2^64 - 1) and rejected as a bad envelope.
TEST(WireDecoderFuzzRegression, LargestSequenceNumberIsRejectedAndNeverAppliedTwice) {
  for (bool strict : {false, true}) {
    SCOPED_TRACE(strict ? "strict_sequence" : "fire-and-forget");
    Interner interner;
    ManualClock clock(kNow);
    WireDecoderOptions options;
    options.strict_sequence = strict;
    WireDecoder decoder(options, interner, clock, nullptr, "test");
    EventBatch batch;
    const std::string payload = Payload(std::numeric_limits<uint64_t>::max());
    for (int round = 0; round < 2; ++round) {
      const DecodeResult r = decoder.Decode(payload, batch);
      EXPECT_TRUE(r.message_rejected);
      EXPECT_FALSE(r.applied);
      EXPECT_EQ(r.first_reason, RejectReason::kBadEnvelope);
      EXPECT_NE(r.detail().find("seq"), std::string_view::npos) << r.detail();
    }
    EXPECT_TRUE(batch.events.empty());
    EXPECT_EQ(decoder.gaps(), 0u);
    EXPECT_EQ(decoder.rejected_count(RejectReason::kBadEnvelope), 2u);
  }
}

// Fuzzer finding (fuzz_hello): a message refused for good (here: over the event limit) whose
// publisher id is not UTF-8 still had its sequence number consumed under that id, so the source
// answered with a nack naming a publisher no client can parse. A refused message with such an id
// now touches no publisher state and gets no answer.
TEST(WireDecoderFuzzRegression, RefusedMessageWithANonUtf8PublisherConsumesNothing) {
  Interner interner;
  ManualClock clock(kNow);
  WireDecoderOptions options;
  options.strict_sequence = true;
  options.max_events_per_message = 1;
  WireDecoder decoder(options, interner, clock, nullptr, "test");
  const std::string bad_pub("\x90\x30", 2);
  const std::string payload = Payload(0, bad_pub, /*events=*/2);
  EventBatch batch;
  const DecodeResult r = decoder.Decode(payload, batch);
  EXPECT_TRUE(r.message_rejected);
  EXPECT_FALSE(r.applied);
  EXPECT_FALSE(r.consumed);
  EXPECT_EQ(r.publisher, 0u);
  EXPECT_FALSE(interner.Find(bad_pub).has_value());
  EXPECT_TRUE(batch.events.empty());
}

// The largest allowed value still works: applied once, then a duplicate.
TEST(WireDecoderFuzzRegression, SecondLargestSequenceNumberIsAppliedOnce) {
  Interner interner;
  ManualClock clock(kNow);
  WireDecoder decoder(WireDecoderOptions{}, interner, clock, nullptr, "test");
  EventBatch batch;
  const std::string payload = Payload(std::numeric_limits<uint64_t>::max() - 1);
  const DecodeResult first = decoder.Decode(payload, batch);
  EXPECT_TRUE(first.applied);
  EXPECT_EQ(first.accepted, 1u);
  const DecodeResult second = decoder.Decode(payload, batch);
  EXPECT_FALSE(second.applied);
  EXPECT_EQ(second.sequence, SequenceVerdict::kDuplicate);
  EXPECT_EQ(batch.events.size(), 1u);
  EXPECT_EQ(decoder.gaps(), 0u);
}

}  // namespace
}  // namespace inferscope
