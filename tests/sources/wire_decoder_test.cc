#include "sources/wire_decoder.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <random>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <msgpack.hpp>

#include "clients/cpp/publisher.h"
#include "pipeline/clock.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"

// The replacement operators below pair malloc with free; GCC cannot tell they match.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

// Counting allocator: counts the allocations of the calling thread while enabled, to prove that
// decoding allocates nothing per event.
namespace {
thread_local bool g_count_allocations = false;
thread_local uint64_t g_allocations = 0;
}  // namespace

void* operator new(size_t n) {
  if (g_count_allocations) ++g_allocations;
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }

namespace inferscope {
namespace {

constexpr int64_t kNow = 1'700'000'000'000;

// --- a tiny msgpack builder for hand-made (and malformed) payloads ---

struct Nil {};
struct Bin {
  std::string bytes;
};
// Bytes copied verbatim (msgpack-c packs whole doubles as integers; this writes a real float64).
struct Raw {
  std::string bytes;
};
Raw Float64(double d) {
  uint64_t bits;
  std::memcpy(&bits, &d, 8);
  std::string s(1, '\xcb');
  for (int i = 7; i >= 0; --i) s += static_cast<char>((bits >> (8 * i)) & 0xff);
  return Raw{s};
}
using V = std::variant<Nil, bool, uint64_t, int64_t, double, std::string, Bin, Raw,
                       std::vector<std::pair<std::string, std::string>>>;
using Fields = std::vector<std::pair<std::string, V>>;

void PackValue(msgpack::packer<msgpack::sbuffer>& p, msgpack::sbuffer& b, const V& v) {
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, Nil>) {
          p.pack_nil();
        } else if constexpr (std::is_same_v<T, bool>) {
          x ? p.pack_true() : p.pack_false();
        } else if constexpr (std::is_same_v<T, uint64_t>) {
          p.pack_uint64(x);
        } else if constexpr (std::is_same_v<T, int64_t>) {
          p.pack_int64(x);
        } else if constexpr (std::is_same_v<T, double>) {
          p.pack_double(x);
        } else if constexpr (std::is_same_v<T, std::string>) {
          p.pack_str(static_cast<uint32_t>(x.size()));
          p.pack_str_body(x.data(), static_cast<uint32_t>(x.size()));
        } else if constexpr (std::is_same_v<T, Raw>) {
          b.write(x.bytes.data(), x.bytes.size());
        } else if constexpr (std::is_same_v<T, Bin>) {
          p.pack_bin(static_cast<uint32_t>(x.bytes.size()));
          p.pack_bin_body(x.bytes.data(), static_cast<uint32_t>(x.bytes.size()));
        } else {  // a nested map of strings
          p.pack_map(static_cast<uint32_t>(x.size()));
          for (const auto& [k, s] : x) {
            p.pack(k);
            p.pack(s);
          }
        }
      },
      v);
}

void PackFields(msgpack::packer<msgpack::sbuffer>& p, msgpack::sbuffer& b, const Fields& fields) {
  p.pack_map(static_cast<uint32_t>(fields.size()));
  for (const auto& [k, v] : fields) {
    p.pack(k);
    PackValue(p, b, v);
  }
}

std::string Bytes(const msgpack::sbuffer& b) { return std::string(b.data(), b.size()); }

// An envelope from explicit fields (for bad envelopes).
std::string EnvelopeWith(const Fields& envelope, const std::vector<Fields>* events) {
  msgpack::sbuffer b;
  msgpack::packer<msgpack::sbuffer> p(b);
  p.pack_map(static_cast<uint32_t>(envelope.size() + (events ? 1 : 0)));
  for (const auto& [k, v] : envelope) {
    p.pack(k);
    PackValue(p, b, v);
  }
  if (events != nullptr) {
    p.pack(std::string("events"));
    p.pack_array(static_cast<uint32_t>(events->size()));
    for (const Fields& e : *events) PackFields(p, b, e);
  }
  return Bytes(b);
}

std::string Payload(const std::vector<Fields>& events, uint64_t seq = 0,
                    const std::string& pub = "pub-1") {
  return EnvelopeWith({{"v", uint64_t{1}}, {"pub", pub}, {"seq", seq}}, &events);
}

Fields Request(double e2e = 120.5, int64_t t = kNow) {
  return {{"k", std::string("r")},
          {"i", std::string("node-1")},
          {"m", std::string("llama-70b")},
          {"t", static_cast<uint64_t>(t)},
          {"e2e", e2e}};
}

Fields Gauge(double value = 0.75) {
  return {{"k", std::string("g")},
          {"i", std::string("node-1")},
          {"m", std::string("llama-70b")},
          {"t", static_cast<uint64_t>(kNow)},
          {"n", std::string("kv_cache_usage")},
          {"val", value}};
}

Fields With(Fields f, const std::string& key, V v) {
  for (auto& [k, old] : f) {
    if (k == key) {
      old = std::move(v);
      return f;
    }
  }
  f.emplace_back(key, std::move(v));
  return f;
}

Fields Without(Fields f, const std::string& key) {
  std::erase_if(f, [&](const auto& kv) { return kv.first == key; });
  return f;
}

class Fixture {
 public:
  explicit Fixture(WireDecoderOptions options = {}, size_t max_strings = 1'000'000)
      : interner(max_strings), clock(kNow), decoder(options, interner, clock, &metrics, "ingest") {}

  DecodeResult Decode(const std::string& payload) { return decoder.Decode(payload, batch); }

  Interner interner;
  ManualClock clock;
  MetricsRegistry metrics;
  WireDecoder decoder;
  EventBatch batch;
};

// --- happy path ---

TEST(WireDecoderTest, DecodesRequestsAndGauges) {
  Fixture f;
  Fields full = Request(250);
  full = With(full, "ttft", 30.0);
  full = With(full, "tpot", int64_t{12});  // ints are numbers too
  full = With(full, "pt", uint64_t{1000});
  full = With(full, "ot", uint64_t{200});
  full = With(full, "ct", uint64_t{512});
  full = With(full, "err", std::string("timeout"));
  full = With(full, "cost", 0.002);
  full = With(full, "q", 0.9);
  full = With(full, "future_field", std::vector<std::pair<std::string, std::string>>{{"a", "b"}});
  DecodeResult r = f.Decode(Payload({full, Gauge(0.5)}, 7));
  ASSERT_FALSE(r.message_rejected) << r.detail();
  EXPECT_EQ(r.accepted, 2u);
  EXPECT_EQ(r.rejected, 0u);
  EXPECT_EQ(r.seq, 7u);
  EXPECT_EQ(r.sequence, SequenceVerdict::kFirst);
  EXPECT_EQ(f.interner.Name(r.publisher), "pub-1");
  ASSERT_EQ(f.batch.events.size(), 2u);
  EXPECT_EQ(f.batch.publisher, r.publisher);

  const Event& e = f.batch.events[0];
  EXPECT_EQ(e.kind, EventKind::kRequest);
  EXPECT_EQ(e.time_ms, kNow);
  EXPECT_EQ(f.interner.Name(e.instance), "node-1");
  EXPECT_EQ(f.interner.Name(e.model), "llama-70b");
  EXPECT_EQ(e.publisher, r.publisher);
  EXPECT_DOUBLE_EQ(e.e2e_ms, 250);
  EXPECT_DOUBLE_EQ(e.ttft_ms, 30);
  EXPECT_DOUBLE_EQ(e.tpot_ms, 12);
  EXPECT_EQ(e.prompt_tokens, 1000u);
  EXPECT_EQ(e.output_tokens, 200u);
  EXPECT_EQ(e.cached_tokens, 512u);
  EXPECT_EQ(e.error, ErrorKind::kTimeout);
  EXPECT_DOUBLE_EQ(e.cost_usd, 0.002);
  EXPECT_DOUBLE_EQ(e.quality, 0.9);
  EXPECT_TRUE(e.Has(kHasE2e) && e.Has(kHasTtft) && e.Has(kHasTpot) && e.Has(kHasPromptTokens) &&
              e.Has(kHasOutputTokens) && e.Has(kHasCachedTokens) && e.Has(kHasCost) &&
              e.Has(kHasQuality));

  const Event& g = f.batch.events[1];
  EXPECT_EQ(g.kind, EventKind::kGauge);
  EXPECT_EQ(f.interner.Name(g.metric), "kv_cache_usage");
  EXPECT_DOUBLE_EQ(g.value, 0.5);

  EXPECT_EQ(f.metrics.CounterValue("inferscope_source_events_total", {{"stage", "ingest"}}), 2u);
  EXPECT_EQ(f.metrics.CounterValue("inferscope_source_messages_total"), 1u);
}

TEST(WireDecoderTest, OptionalFieldsAbsentAndErrorKinds) {
  Fixture f;
  DecodeResult r = f.Decode(Payload({Request(), With(Request(), "err", std::string("")),
                                     With(Request(), "err", std::string("rate_limited")),
                                     With(Request(), "err", std::string("gpu_on_fire"))}));
  ASSERT_EQ(r.accepted, 4u) << r.detail();
  const Event& e = f.batch.events[0];
  EXPECT_EQ(e.present, kHasE2e);
  EXPECT_EQ(e.error, ErrorKind::kNone);
  EXPECT_EQ(f.batch.events[1].error, ErrorKind::kNone);
  EXPECT_EQ(f.batch.events[2].error, ErrorKind::kRateLimited);
  EXPECT_EQ(f.batch.events[3].error, ErrorKind::kOther);
}

TEST(WireDecoderTest, KeysInAnyOrderAndEnvelopeAfterEvents) {
  Fixture f;
  std::vector<Fields> events = {{{"e2e", 5.0},
                                 {"t", static_cast<uint64_t>(kNow)},
                                 {"m", std::string("m")},
                                 {"i", std::string("i")},
                                 {"k", std::string("r")}}};
  msgpack::sbuffer b;
  msgpack::packer<msgpack::sbuffer> p(b);
  p.pack_map(5);
  p.pack(std::string("events"));
  p.pack_array(1);
  PackFields(p, b, events[0]);
  p.pack(std::string("x-unknown"));
  p.pack_array(2);
  p.pack(1);
  p.pack(2);
  p.pack(std::string("seq"));
  p.pack(3);
  p.pack(std::string("pub"));
  p.pack(std::string("late-pub"));
  p.pack(std::string("v"));
  p.pack(1);
  DecodeResult r = f.Decode(Bytes(b));
  ASSERT_EQ(r.accepted, 1u) << r.detail();
  EXPECT_EQ(f.interner.Name(f.batch.events[0].publisher), "late-pub");
}

// --- event-level rejections: the bad event goes, its neighbours stay ---

struct BadEventCase {
  const char* name;
  Fields event;
  RejectReason reason;
};

TEST(WireDecoderTest, RejectsBadEventsAndKeepsTheRest) {
  const std::string long_name(256, 'x');
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<BadEventCase> cases = {
      {"missing k", Without(Request(), "k"), RejectReason::kMissingField},
      {"k not str", With(Request(), "k", uint64_t{1}), RejectReason::kWrongType},
      {"unknown kind", With(Request(), "k", std::string("x")), RejectReason::kUnknownKind},
      {"missing instance", Without(Request(), "i"), RejectReason::kMissingField},
      {"missing model", Without(Request(), "m"), RejectReason::kMissingField},
      {"missing time", Without(Request(), "t"), RejectReason::kMissingField},
      {"missing e2e", Without(Request(), "e2e"), RejectReason::kMissingField},
      {"missing gauge name", Without(Gauge(), "n"), RejectReason::kMissingField},
      {"missing gauge value", Without(Gauge(), "val"), RejectReason::kMissingField},
      {"instance not str", With(Request(), "i", uint64_t{5}), RejectReason::kWrongType},
      {"model is bin", With(Request(), "m", Bin{"abc"}), RejectReason::kWrongType},
      {"e2e is str", With(Request(), "e2e", std::string("5")), RejectReason::kWrongType},
      {"e2e is nil", With(Request(), "e2e", Nil{}), RejectReason::kWrongType},
      {"ttft is bool", With(Request(), "ttft", true), RejectReason::kWrongType},
      {"err not str", With(Request(), "err", uint64_t{1}), RejectReason::kWrongType},
      {"t is str", With(Request(), "t", std::string("now")), RejectReason::kWrongType},
      {"pt fractional", With(Request(), "pt", 1.5), RejectReason::kWrongType},
      {"t fractional", With(Request(), "t", Float64(kNow + 0.5)), RejectReason::kWrongType},
      {"value is map",
       With(Gauge(), "val", std::vector<std::pair<std::string, std::string>>{{"a", "b"}}),
       RejectReason::kWrongType},
      {"e2e NaN", With(Request(), "e2e", nan), RejectReason::kNonFinite},
      {"ttft Inf", With(Request(), "ttft", inf), RejectReason::kNonFinite},
      {"gauge -Inf", With(Gauge(), "val", -inf), RejectReason::kNonFinite},
      {"negative e2e", With(Request(), "e2e", -1.0), RejectReason::kOutOfRange},
      {"negative tpot", With(Request(), "tpot", int64_t{-3}), RejectReason::kOutOfRange},
      {"negative tokens", With(Request(), "ot", int64_t{-1}), RejectReason::kOutOfRange},
      {"tokens > 2^32-1", With(Request(), "pt", uint64_t{1} << 32), RejectReason::kOutOfRange},
      {"negative cost", With(Request(), "cost", -0.01), RejectReason::kOutOfRange},
      {"quality > 1", With(Request(), "q", 1.01), RejectReason::kOutOfRange},
      {"quality < 0", With(Request(), "q", -0.1), RejectReason::kOutOfRange},
      {"empty instance", With(Request(), "i", std::string("")), RejectReason::kEmptyString},
      {"empty gauge name", With(Gauge(), "n", std::string("")), RejectReason::kEmptyString},
      {"long model", With(Request(), "m", long_name), RejectReason::kStringTooLong},
      {"t zero", With(Request(), "t", uint64_t{0}), RejectReason::kTimestampOutOfRange},
      {"t negative", With(Request(), "t", int64_t{-5}), RejectReason::kTimestampOutOfRange},
      {"t in the future", With(Request(), "t", static_cast<uint64_t>(kNow + 5 * 60 * 1000 + 1)),
       RejectReason::kTimestampOutOfRange},
  };
  for (const BadEventCase& c : cases) {
    SCOPED_TRACE(c.name);
    Fixture f;
    DecodeResult r = f.Decode(Payload({Request(10), c.event, Gauge(3)}));
    ASSERT_FALSE(r.message_rejected) << r.detail();
    EXPECT_EQ(r.accepted, 2u);
    EXPECT_EQ(r.rejected, 1u);
    EXPECT_EQ(r.first_reason, c.reason) << RejectReasonName(r.first_reason) << ": " << r.detail();
    EXPECT_FALSE(r.detail().empty());
    ASSERT_EQ(f.batch.events.size(), 2u);
    EXPECT_DOUBLE_EQ(f.batch.events[0].e2e_ms, 10);
    EXPECT_DOUBLE_EQ(f.batch.events[1].value, 3);
    EXPECT_EQ(f.decoder.rejected_count(c.reason), 1u);
    EXPECT_EQ(f.metrics.CounterValue("inferscope_source_rejected_total",
                                     {{"reason", std::string(RejectReasonName(c.reason))}}),
              1u);
    EXPECT_EQ(f.metrics.CounterValue("inferscope_source_rejected_by_publisher_total",
                                     {{"publisher", "pub-1"}}),
              1u);
  }
}

TEST(WireDecoderTest, NonMapEventIsWrongType) {
  Fixture f;
  msgpack::sbuffer b;
  msgpack::packer<msgpack::sbuffer> p(b);
  p.pack_map(4);
  p.pack(std::string("v"));
  p.pack(1);
  p.pack(std::string("pub"));
  p.pack(std::string("p"));
  p.pack(std::string("seq"));
  p.pack(0);
  p.pack(std::string("events"));
  p.pack_array(3);
  PackFields(p, b, Request());
  p.pack_array(1);
  p.pack(std::string("not an event"));
  PackFields(p, b, Request());
  DecodeResult r = f.Decode(Bytes(b));
  EXPECT_EQ(r.accepted, 2u);
  EXPECT_EQ(r.rejected, 1u);
  EXPECT_EQ(r.first_reason, RejectReason::kWrongType);
}

TEST(WireDecoderTest, TimestampWindowFollowsTheLatestAcceptedEvent) {
  Fixture f;
  const int64_t hour = 60 * 60 * 1000;
  EXPECT_EQ(f.Decode(Payload({Request(1, kNow - hour + 1000)}, 0)).accepted,
            1u);  // nothing seen yet
  EXPECT_EQ(f.Decode(Payload({Request(1, kNow)}, 1)).accepted, 1u);
  EXPECT_EQ(f.decoder.max_event_time_ms(), kNow);
  DecodeResult r = f.Decode(Payload({Request(1, kNow - hour - 1), Request(1, kNow - hour + 1)}, 2));
  EXPECT_EQ(r.accepted, 1u);
  EXPECT_EQ(r.first_reason, RejectReason::kTimestampOutOfRange);
  // The future bound follows the injected clock.
  EXPECT_EQ(f.Decode(Payload({Request(1, kNow + 10 * 60 * 1000)}, 3)).accepted, 0u);
  f.clock.Advance(6 * 60 * 1000);
  EXPECT_EQ(f.Decode(Payload({Request(1, kNow + 10 * 60 * 1000)}, 4)).accepted, 1u);
}

TEST(WireDecoderTest, CardinalityLimit) {
  // 8 well-known ids + the publisher, "node-1" and "llama-70b".
  Fixture f({}, kNumWellKnownIds + 3);
  DecodeResult r =
      f.Decode(Payload({Request(), With(Request(), "m", std::string("new-model")), Request()}));
  EXPECT_EQ(r.accepted, 2u) << r.detail() << " interner size " << f.interner.size();
  EXPECT_EQ(r.first_reason, RejectReason::kCardinalityLimit);
  // A new publisher cannot be interned either: the whole message goes.
  DecodeResult r2 = f.Decode(Payload({Request()}, 0, "another-publisher"));
  EXPECT_TRUE(r2.message_rejected);
  EXPECT_EQ(r2.first_reason, RejectReason::kPublisherLimit);
  EXPECT_EQ(f.batch.events.size(), 2u);
}

// --- message-level rejections ---

TEST(WireDecoderTest, RejectsBadEnvelopes) {
  WireDecoderOptions options;
  options.max_events_per_message = 4;
  options.max_message_bytes = 4096;
  std::vector<Fields> one = {Request()};
  std::vector<Fields> five(5, Request());
  const std::string good = Payload(one);
  struct Case {
    const char* name;
    std::string payload;
    RejectReason reason;
  };
  std::vector<Case> cases = {
      {"empty", "", RejectReason::kNotMsgpack},
      {"reserved byte", "\xc1", RejectReason::kNotMsgpack},
      {"truncated", good.substr(0, good.size() - 3), RejectReason::kNotMsgpack},
      {"trailing bytes", good + "\x01", RejectReason::kNotMsgpack},
      {"two values", good + good, RejectReason::kNotMsgpack},
      {"text", "hello world", RejectReason::kNotMsgpack},
      {"not a map", std::string("\x93\x01\x02\x03", 4), RejectReason::kBadEnvelope},
      {"scalar", std::string("\x01", 1), RejectReason::kBadEnvelope},
      {"missing v", EnvelopeWith({{"pub", std::string("p")}, {"seq", uint64_t{0}}}, &one),
       RejectReason::kBadEnvelope},
      {"v not uint",
       EnvelopeWith({{"v", std::string("1")}, {"pub", std::string("p")}, {"seq", uint64_t{0}}},
                    &one),
       RejectReason::kBadEnvelope},
      {"v 2",
       EnvelopeWith({{"v", uint64_t{2}}, {"pub", std::string("p")}, {"seq", uint64_t{0}}}, &one),
       RejectReason::kUnknownVersion},
      {"v 0", EnvelopeWith({{"v", uint64_t{0}}}, nullptr), RejectReason::kUnknownVersion},
      {"missing pub", EnvelopeWith({{"v", uint64_t{1}}, {"seq", uint64_t{0}}}, &one),
       RejectReason::kBadEnvelope},
      {"empty pub",
       EnvelopeWith({{"v", uint64_t{1}}, {"pub", std::string("")}, {"seq", uint64_t{0}}}, &one),
       RejectReason::kBadEnvelope},
      {"long pub",
       EnvelopeWith({{"v", uint64_t{1}}, {"pub", std::string(256, 'p')}, {"seq", uint64_t{0}}},
                    &one),
       RejectReason::kBadEnvelope},
      {"pub not str",
       EnvelopeWith({{"v", uint64_t{1}}, {"pub", uint64_t{7}}, {"seq", uint64_t{0}}}, &one),
       RejectReason::kBadEnvelope},
      {"missing seq", EnvelopeWith({{"v", uint64_t{1}}, {"pub", std::string("p")}}, &one),
       RejectReason::kBadEnvelope},
      {"negative seq",
       EnvelopeWith({{"v", uint64_t{1}}, {"pub", std::string("p")}, {"seq", int64_t{-1}}}, &one),
       RejectReason::kBadEnvelope},
      {"seq float",
       EnvelopeWith({{"v", uint64_t{1}}, {"pub", std::string("p")}, {"seq", Float64(1.0)}}, &one),
       RejectReason::kBadEnvelope},
      {"missing events",
       EnvelopeWith({{"v", uint64_t{1}}, {"pub", std::string("p")}, {"seq", uint64_t{0}}}, nullptr),
       RejectReason::kBadEnvelope},
      {"events is a map",
       EnvelopeWith({{"v", uint64_t{1}},
                     {"pub", std::string("p")},
                     {"seq", uint64_t{0}},
                     {"events", std::vector<std::pair<std::string, std::string>>{}}},
                    nullptr),
       RejectReason::kBadEnvelope},
      {"too many events", Payload(five), RejectReason::kBatchTooLarge},
      {"too large", Payload(std::vector<Fields>(4, With(Request(), "pad", std::string(1500, 'x')))),
       RejectReason::kMessageTooLarge},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    Fixture f(options);
    f.batch.events.resize(1);  // events already in the batch survive a rejected message
    DecodeResult r = f.Decode(c.payload);
    EXPECT_TRUE(r.message_rejected);
    EXPECT_EQ(r.first_reason, c.reason) << RejectReasonName(r.first_reason) << ": " << r.detail();
    EXPECT_TRUE(IsMessageLevel(r.first_reason));
    EXPECT_FALSE(r.detail().empty());
    EXPECT_EQ(r.accepted, 0u);
    EXPECT_EQ(f.batch.events.size(), 1u);
    EXPECT_EQ(f.decoder.rejected_count(c.reason), 1u);
    EXPECT_EQ(f.metrics.CounterValue("inferscope_source_rejected_total",
                                     {{"reason", std::string(RejectReasonName(c.reason))}}),
              1u);
    EXPECT_EQ(f.metrics.CounterValue("inferscope_source_events_total"), 0u);
  }
}

TEST(WireDecoderTest, DeepNestingIsRejectedWithoutRecursion) {
  Fixture f;
  std::string deep(100000, '\x91');  // [[[[...
  deep += '\x01';
  DecodeResult r = f.Decode(deep);
  EXPECT_EQ(r.first_reason, RejectReason::kNotMsgpack);
  // Deep nesting inside an unknown envelope key.
  std::string inner = std::string(40, '\x91') + '\x01';
  std::string payload = Payload({Request()});
  payload[0] = static_cast<char>(0x85);  // one more key
  payload += std::string("\xa1x", 2) + inner;
  EXPECT_EQ(f.Decode(payload).first_reason, RejectReason::kNotMsgpack);
}

TEST(WireDecoderTest, BadFramesCountsMessages) {
  Fixture f;
  f.decoder.RecordBadFrames(10);
  EXPECT_EQ(f.decoder.rejected_count(RejectReason::kBadFrames), 1u);
  EXPECT_EQ(f.metrics.CounterValue("inferscope_source_rejected_total", {{"reason", "bad_frames"}}),
            1u);
  EXPECT_EQ(f.metrics.CounterValue("inferscope_source_bytes_total"), 10u);
}

// --- sequence numbers ---

TEST(WireDecoderTest, CountsGapsDuplicatesAndRestarts) {
  Fixture f;
  auto decode = [&](uint64_t seq, const std::string& pub = "pub-1") {
    return f.Decode(Payload({Request()}, seq, pub));
  };
  EXPECT_EQ(decode(100).sequence, SequenceVerdict::kFirst);
  EXPECT_EQ(decode(101).sequence, SequenceVerdict::kInOrder);
  DecodeResult gap = decode(105);
  EXPECT_EQ(gap.sequence, SequenceVerdict::kGap);
  EXPECT_EQ(gap.missing, 3u);
  EXPECT_EQ(gap.accepted, 1u);
  DecodeResult dup = decode(103);  // late arrival within the window: dropped
  EXPECT_EQ(dup.sequence, SequenceVerdict::kDuplicate);
  EXPECT_EQ(dup.accepted, 0u);
  EXPECT_EQ(decode(105).sequence, SequenceVerdict::kDuplicate);
  EXPECT_EQ(decode(106).sequence, SequenceVerdict::kInOrder);
  EXPECT_EQ(decode(5000).sequence, SequenceVerdict::kGap);
  EXPECT_EQ(decode(5001 - WireDecoder::kDuplicateWindow).sequence, SequenceVerdict::kDuplicate);
  EXPECT_EQ(decode(5000 - WireDecoder::kDuplicateWindow).sequence, SequenceVerdict::kRestart);
  EXPECT_EQ(decode(5001 - WireDecoder::kDuplicateWindow).sequence, SequenceVerdict::kInOrder);
  EXPECT_EQ(decode(0, "pub-2").sequence, SequenceVerdict::kFirst);  // independent tracking
  EXPECT_EQ(decode(1, "pub-2").sequence, SequenceVerdict::kInOrder);

  EXPECT_EQ(f.batch.events.size(), 9u);  // 11 messages - 2 duplicates... see below
  EXPECT_EQ(f.decoder.gaps(), 3u + (5000 - 107));
  EXPECT_EQ(f.decoder.duplicates(), 3u);
  EXPECT_EQ(f.decoder.restarts(), 1u);
  const Labels pub1 = {{"stage", "ingest"}, {"publisher", "pub-1"}};
  EXPECT_EQ(f.metrics.CounterValue("inferscope_source_sequence_gaps_total", pub1), 3u + 4893u);
  EXPECT_EQ(f.metrics.CounterValue("inferscope_source_duplicates_total", pub1), 3u);
  EXPECT_EQ(f.metrics.CounterValue("inferscope_source_publisher_restarts_total", pub1), 1u);
  EXPECT_EQ(f.batch.publisher, 0u);  // mixed publishers
}

// --- robustness ---

TEST(WireDecoderTest, GarbageNeverCrashes) {
  Fixture f;
  std::mt19937_64 rng(42);
  std::string good = Payload({With(Request(), "ttft", 3.0), Gauge(), Request()}, 0);
  uint64_t accepted = 0;
  auto check = [&](const std::string& payload) {
    DecodeResult r = f.decoder.Decode(payload, f.batch);
    accepted += r.accepted;
    ASSERT_EQ(f.batch.events.size(), accepted);
    if (r.message_rejected) {
      ASSERT_TRUE(IsMessageLevel(r.first_reason));
    }
  };
  // Every truncation of a valid payload.
  for (size_t n = 0; n < good.size(); ++n) check(good.substr(0, n));
  // Random bytes, random lengths.
  for (int i = 0; i < 20000; ++i) {
    std::string junk(rng() % 300, '\0');
    for (char& c : junk) c = static_cast<char>(rng());
    check(junk);
  }
  // Random mutations of a valid payload reach deeper into the decoder.
  for (int i = 0; i < 50000; ++i) {
    std::string m = good;
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) m[rng() % m.size()] = static_cast<char>(rng());
    if (rng() % 4 == 0) m.resize(rng() % m.size());
    check(m);
  }
  // Headers that claim huge lengths.
  for (std::string h :
       {std::string("\xdb\xff\xff\xff\xff", 5), std::string("\xdd\xff\xff\xff\xff", 5),
        std::string("\xdf\xff\xff\xff\xff", 5), std::string("\xc9\xff\xff\xff\xff\x01", 6),
        std::string("\xc6\xff\xff\xff\xff", 5)}) {
    check(h);
  }
  SUCCEED() << accepted << " events accepted from mutated payloads";
}

// --- the C++ client's encoder round-trips ---

TEST(WireDecoderTest, BatchEncoderRoundTrips) {
  Fixture f;
  client::BatchEncoder encoder("encoder-pub");
  client::RequestOutcome r;
  r.instance = "vllm-3";
  r.model = "qwen";
  r.e2e_ms = 812.25;
  r.ttft_ms = 95.5;
  r.tpot_ms = 14.0;
  r.prompt_tokens = 1234;
  r.output_tokens = 4294967295u;
  r.cached_tokens = 0;
  r.error = "server_error";
  r.cost_usd = 0.0123;
  r.quality = 1.0;
  r.time_ms = kNow - 5;
  encoder.AddRequest(r);
  client::RequestOutcome minimal;
  minimal.instance = "vllm-3";
  minimal.model = "qwen";
  minimal.e2e_ms = 1;
  minimal.time_ms = kNow;
  encoder.AddRequest(minimal);
  encoder.AddGauge("vllm-3", "qwen", "num_requests_waiting", -2.5, kNow);
  EXPECT_EQ(encoder.size(), 3u);

  DecodeResult res = f.Decode(std::string(encoder.Finish()));
  ASSERT_FALSE(res.message_rejected) << res.detail();
  ASSERT_EQ(res.accepted, 3u) << res.detail();
  EXPECT_EQ(res.seq, 0u);
  EXPECT_EQ(f.interner.Name(res.publisher), "encoder-pub");
  const Event& e = f.batch.events[0];
  EXPECT_EQ(e.time_ms, kNow - 5);
  EXPECT_EQ(f.interner.Name(e.instance), "vllm-3");
  EXPECT_EQ(f.interner.Name(e.model), "qwen");
  EXPECT_DOUBLE_EQ(e.e2e_ms, 812.25);
  EXPECT_DOUBLE_EQ(e.ttft_ms, 95.5);
  EXPECT_DOUBLE_EQ(e.tpot_ms, 14);
  EXPECT_EQ(e.prompt_tokens, 1234u);
  EXPECT_EQ(e.output_tokens, 4294967295u);
  EXPECT_TRUE(e.Has(kHasCachedTokens));
  EXPECT_EQ(e.cached_tokens, 0u);
  EXPECT_EQ(e.error, ErrorKind::kServerError);
  EXPECT_DOUBLE_EQ(e.cost_usd, 0.0123);
  EXPECT_DOUBLE_EQ(e.quality, 1.0);
  EXPECT_EQ(f.batch.events[1].present, kHasE2e);
  EXPECT_EQ(f.batch.events[1].error, ErrorKind::kNone);
  EXPECT_EQ(f.batch.events[2].kind, EventKind::kGauge);
  EXPECT_EQ(f.interner.Name(f.batch.events[2].metric), "num_requests_waiting");
  EXPECT_DOUBLE_EQ(f.batch.events[2].value, -2.5);

  // The next batch gets the next sequence number; an empty batch is a valid heartbeat.
  encoder.AddGauge("vllm-3", "qwen", "x", 1, kNow);
  DecodeResult res2 = f.Decode(std::string(encoder.Finish()));
  EXPECT_EQ(res2.seq, 1u);
  EXPECT_EQ(res2.sequence, SequenceVerdict::kInOrder);
  EXPECT_EQ(res2.accepted, 1u);
  DecodeResult res3 = f.Decode(std::string(encoder.Finish()));
  EXPECT_EQ(res3.seq, 2u);
  EXPECT_EQ(res3.accepted, 0u);
  EXPECT_FALSE(res3.message_rejected);
}

// --- allocation ---

TEST(WireDecoderTest, SteadyStateAllocatesNothingPerEvent) {
  Fixture f;
  client::BatchEncoder encoder("alloc-pub");
  std::vector<std::string> payloads;
  for (int m = 0; m < 50; ++m) {
    for (int i = 0; i < 256; ++i) {
      client::RequestOutcome r;
      r.instance = i % 2 ? "node-a" : "node-b";
      r.model = "m";
      r.e2e_ms = i;
      r.ttft_ms = 1;
      r.output_tokens = 10;
      r.time_ms = kNow;
      encoder.AddRequest(r);
    }
    payloads.emplace_back(encoder.Finish());
  }
  // Warm up: interning, the publisher table, the batch capacity.
  f.Decode(payloads[0]);
  f.batch.Clear();

  g_allocations = 0;
  g_count_allocations = true;
  uint64_t accepted = 0;
  for (size_t m = 1; m < payloads.size(); ++m) {
    accepted += f.decoder.Decode(payloads[m], f.batch).accepted;
    f.batch.Clear();
  }
  g_count_allocations = false;
  EXPECT_EQ(accepted, 49u * 256u);
  // msgpack-c allocates its parse stack once per message; nothing per event.
  EXPECT_LE(g_allocations, payloads.size() - 1) << g_allocations << " allocations";
}

}  // namespace
}  // namespace inferscope
