#include "sources/wire_decoder.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <limits>
#include <new>
#include <utility>

#include "pipeline/names.h"
#include "pipeline/utf8.h"
#include "sources/msgpack_cursor.h"

// Why a hand-written msgpack cursor rather than msgpack-c (measured on the 2-vCPU target, GCC 12
// -O3, bench/decode_bench: 256 events per message, ~100 bytes per event, 11 fields per request):
//   - the source thread (recv + decode + batch hand-off) must stay well under 250 ns per event to
//     sustain 2 M events/s with the publisher on the same machine;
//   - msgpack-c's visitor parser alone, with a visitor that does nothing, costs 140-200 ns per
//     event, and the decoder built on it cost ~290 ns (3.4 M events/s, ~2800 instructions per
//     event under callgrind) even with the parser forced inline: its generic state machine
//     re-dispatches every byte through a parse stack and calls the visitor around every key and
//     value;
//   - this cursor knows the schema (envelope map → events array → event maps of scalars), reads
//   each
//     header with one type-byte dispatch and a big-endian load, finds keys with a perfect hash of
//     the key's bytes, and skips anything else with an explicit stack bounded by the depth limit:
//     ~100 ns per event (10 M events/s, ~1000 instructions), faster than msgpack-c doing nothing.
// The verdicts are those of a msgpack-c parse plus the protocol's checks: tests/sources/
// wire_decoder_test.cc compares them with a reference model on valid payloads of every encoding
// and on random, truncated and mutated ones.

namespace inferscope {
namespace {

// The largest incarnation accepted: the reference clients make theirs (ms since the epoch) << 22
// | 22 random bits, so one beyond a day ahead of the wall clock is no clock's. Refused, because an
// incarnation is final: one near 2^64 - 1 would make the publisher id's every later incarnation
// stale, for good (a counter 1, 2, 3 ... is fine). The system clock, not the decoder's injected
// one: the bound is about the clocks publishers read.
bool IncarnationBeyondClocks(uint64_t incarnation) {
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  constexpr int64_t kDayMs = 86'400'000;
  return incarnation > (static_cast<uint64_t>(std::max<int64_t>(now_ms, 0) + kDayMs) << 22);
}

using wire::LoadBe16;
using wire::LoadBe32;
using wire::LoadBe64;
using wire::LoadLe32;
using wire::LoadLe64;
using wire::MsgpackCursor;
using wire::Value;

constexpr std::string_view kReasonNames[kNumRejectReasons] = {
    "",
    "bad_frames",
    "not_msgpack",
    "bad_envelope",
    "unknown_version",
    "batch_too_large",
    "message_too_large",
    "publisher_limit",
    "unauthorized_publisher",
    "missing_field",
    "wrong_type",
    "unknown_kind",
    "non_finite",
    "out_of_range",
    "empty_string",
    "string_too_long",
    "timestamp_out_of_range",
    "cardinality_limit",
    "invalid_utf8",
};

// Deeper nesting is rejected (not_msgpack). The top-level value is at depth 1.
constexpr int kMaxDepth = MsgpackCursor::kMaxDepth;
constexpr uint64_t kMaxTokens = std::numeric_limits<uint32_t>::max();

// Event fields, by wire key.
enum Field : uint8_t {
  kFieldKind,      // "k"
  kFieldInstance,  // "i"
  kFieldModel,     // "m"
  kFieldTime,      // "t"
  kFieldE2e,       // "e2e"
  kFieldTtft,      // "ttft"
  kFieldTpot,      // "tpot"
  kFieldPrompt,    // "pt"
  kFieldOutput,    // "ot"
  kFieldCached,    // "ct"
  kFieldErr,       // "err"
  kFieldCost,      // "cost"
  kFieldQuality,   // "q"
  kFieldName,      // "n"
  kFieldValue,     // "val"
  kNumFields,
  kFieldUnknown = 0xff,
};
constexpr std::string_view kFieldNames[kNumFields] = {
    "k", "i", "m", "t", "e2e", "ttft", "tpot", "pt", "ot", "ct", "err", "cost", "q", "n", "val",
};

// Envelope fields.
enum EnvField : uint8_t {
  kEnvVersion,
  kEnvPub,
  kEnvSeq,
  kEnvEvents,
  kEnvInc,
  kNumEnvFields,
  kEnvUnknown
};

// a[0..len) == b[0..len); len >= 1. Short strings (names are mostly 4..16 bytes) compare with two
// overlapping loads each instead of a call to memcmp.
inline bool SameBytes(const char* a, const char* b, uint32_t len) {
  if (len >= 8) {
    if (len > 16) return std::memcmp(a, b, len) == 0;
    return ((LoadLe64(a) ^ LoadLe64(b)) | (LoadLe64(a + len - 8) ^ LoadLe64(b + len - 8))) == 0;
  }
  if (len >= 4) {
    return ((LoadLe32(a) ^ LoadLe32(b)) | (LoadLe32(a + len - 4) ^ LoadLe32(b + len - 4))) == 0;
  }
  return a[0] == b[0] && a[len / 2] == b[len / 2] && a[len - 1] == b[len - 1];
}

inline Field EventField(const uint8_t* s, uint32_t n) {
  switch (n) {
    case 1:
      switch (s[0]) {
        case 'k':
          return kFieldKind;
        case 'i':
          return kFieldInstance;
        case 'm':
          return kFieldModel;
        case 't':
          return kFieldTime;
        case 'q':
          return kFieldQuality;
        case 'n':
          return kFieldName;
      }
      return kFieldUnknown;
    case 2:
      if (s[1] != 't') return kFieldUnknown;
      if (s[0] == 'p') return kFieldPrompt;
      if (s[0] == 'o') return kFieldOutput;
      if (s[0] == 'c') return kFieldCached;
      return kFieldUnknown;
    case 3:
      if (s[0] == 'e' && s[1] == '2' && s[2] == 'e') return kFieldE2e;
      if (s[0] == 'e' && s[1] == 'r' && s[2] == 'r') return kFieldErr;
      if (s[0] == 'v' && s[1] == 'a' && s[2] == 'l') return kFieldValue;
      return kFieldUnknown;
    case 4: {
      const uint32_t w = LoadLe32(reinterpret_cast<const char*>(s));
      if (w == LoadLe32("ttft")) return kFieldTtft;
      if (w == LoadLe32("tpot")) return kFieldTpot;
      if (w == LoadLe32("cost")) return kFieldCost;
      return kFieldUnknown;
    }
  }
  return kFieldUnknown;
}

// The event keys as a fixstr would carry them, header byte included, packed little-endian into a
// word; a perfect hash of these words finds a key's field with one multiply and one compare.
constexpr uint64_t PackedFixstrKey(std::string_view name) {
  uint64_t k = 0xa0 | name.size();
  for (size_t i = 0; i < name.size(); ++i)
    k |= uint64_t{static_cast<uint8_t>(name[i])} << (8 * (i + 1));
  return k;
}
constexpr uint64_t kKeyHashMultiplier = 0x442e3d437204e52dull;  // collision-free for kFieldNames
constexpr int kKeyHashBits = 5;
constexpr size_t KeyHash(uint64_t packed) {
  return static_cast<size_t>((packed * kKeyHashMultiplier) >> (64 - kKeyHashBits));
}
struct KeySlot {
  uint64_t packed = 0;  // 0: empty (a packed key has 0xa0.. in its low byte)
  Field field = kFieldUnknown;
};
constexpr std::array<KeySlot, size_t{1} << kKeyHashBits> MakeKeyTable() {
  std::array<KeySlot, size_t{1} << kKeyHashBits> table{};
  for (int f = 0; f < kNumFields; ++f) {
    const uint64_t packed = PackedFixstrKey(kFieldNames[f]);
    KeySlot& slot = table[KeyHash(packed)];
    if (slot.packed != 0) throw "kKeyHashMultiplier collides: pick another";  // compile error
    slot = KeySlot{packed, static_cast<Field>(f)};
  }
  return table;
}
constexpr std::array<KeySlot, size_t{1} << kKeyHashBits> kKeyTable = MakeKeyTable();

// Per fixstr length, the mask keeping its header and bytes in a little-endian word; 0 past the
// longest protocol key, so that longer keys hash to a word no slot holds.
constexpr std::array<uint64_t, 32> MakeKeyMasks() {
  std::array<uint64_t, 32> masks{};
  for (uint32_t len = 0; len <= 4; ++len) masks[len] = (uint64_t{1} << (8 * (len + 1))) - 1;
  return masks;
}
constexpr std::array<uint64_t, 32> kKeyMasks = MakeKeyMasks();

// The field of the fixstr key of length `len` (< 32) whose header byte is at `p`; at least 8 bytes
// must be readable from `p`. Every protocol key is 1..4 bytes long.
inline Field FixstrKeyField(const uint8_t* p, uint32_t len) {
  uint64_t word;
  std::memcpy(&word, p, 8);
  word &= kKeyMasks[len];
  const KeySlot& slot = kKeyTable[KeyHash(word)];
  return slot.packed == word ? slot.field : kFieldUnknown;
}

inline EnvField EnvelopeField(std::string_view s) {
  if (s == "v") return kEnvVersion;
  if (s == "pub") return kEnvPub;
  if (s == "seq") return kEnvSeq;
  if (s == "events") return kEnvEvents;
  if (s == "inc") return kEnvInc;
  return kEnvUnknown;
}

// Reads a number as a double. kNone on success.
inline RejectReason AsDouble(const Value& v, double& out) {
  switch (v.type) {
    case Value::kFloat:
      out = v.d;
      return std::isfinite(out) ? RejectReason::kNone : RejectReason::kNonFinite;
    case Value::kUint:
      out = static_cast<double>(v.u);
      return RejectReason::kNone;
    case Value::kInt:
      out = static_cast<double>(v.i);
      return RejectReason::kNone;
    default:
      return RejectReason::kWrongType;
  }
}

// Reads a non-negative whole number (an integer, or a float with no fraction).
inline RejectReason AsCount(const Value& v, uint64_t& out) {
  switch (v.type) {
    case Value::kUint:
      out = v.u;
      return RejectReason::kNone;
    case Value::kInt:
      return RejectReason::kOutOfRange;
    case Value::kFloat:
      if (!std::isfinite(v.d)) return RejectReason::kNonFinite;
      if (v.d < 0) return RejectReason::kOutOfRange;
      if (v.d != std::floor(v.d)) return RejectReason::kWrongType;
      if (v.d >= 18446744073709551616.0) return RejectReason::kOutOfRange;
      out = static_cast<uint64_t>(v.d);
      return RejectReason::kNone;
    default:
      return RejectReason::kWrongType;
  }
}

[[gnu::format(printf, 2, 3)]] void SetDetail(DecodeResult& result, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  int n = std::vsnprintf(result.detail_buf.data(), result.detail_buf.size(), fmt, args);
  va_end(args);
  if (n < 0) n = 0;
  result.detail_len =
      static_cast<uint8_t>(std::min<size_t>(static_cast<size_t>(n), result.detail_buf.size() - 1));
}

}  // namespace

std::string_view RejectReasonName(RejectReason reason) {
  auto i = static_cast<size_t>(reason);
  return i < std::size(kReasonNames) ? kReasonNames[i] : "unknown";
}

bool IsMessageLevel(RejectReason reason) {
  return reason >= RejectReason::kBadFrames && reason <= RejectReason::kUnauthorizedPublisher;
}

Status WireDecoderOptions::Validate() const {
  if (max_future_skew_ms < 0) return Status::InvalidArgument("max_future_skew must be >= 0");
  if (max_past_ms <= 0) return Status::InvalidArgument("max_past must be > 0");
  if (max_events_per_message < 1 || max_events_per_message > (1u << 24)) {
    return Status::InvalidArgument("max_events_per_message must be in 1..16777216");
  }
  if (max_string_bytes < 1 || max_string_bytes > kMaxNameBytes) {
    return Status::InvalidArgument("max_string_bytes must be in 1.." +
                                   std::to_string(kMaxNameBytes));
  }
  if (max_message_bytes < 16 || max_message_bytes > (size_t{1} << 31)) {
    return Status::InvalidArgument("max_message_bytes must be in 16..2147483648");
  }
  if (max_publishers < 1 || max_publishers > (1u << 20)) {
    return Status::InvalidArgument("max_publishers must be in 1..1048576");
  }
  if (max_strings_per_publisher > Interner::kHardLimit) {
    return Status::InvalidArgument("max_strings_per_publisher must be in 0..4194304");
  }
  return Status::Ok();
}

// Walker decodes one payload in one pass: a MsgpackCursor over the bytes, driven by what this
// schema expects at each level: top → envelope map → events array → event map. Event values are
// kept as Values until their map ends; the event is then validated and appended to the batch
// straight away (Decode() takes the batch back if the envelope turns out bad). Values nobody asked
// for (unknown keys, containers where scalars belong, non-map events) are skipped by the cursor.
//
// A stop of the cursor ends the walk with its verdict (truncated, invalid, too deep); the walk
// stops it itself (kBatchTooLarge) when the events array is longer than max_events_per_message.
class WireDecoder::Walker {
 public:
  using Stop = MsgpackCursor::Stop;
  // The walk's own stop (MsgpackCursor::Fail): the events array is longer than
  // max_events_per_message.
  static constexpr Stop kBatchTooLarge = Stop::kRefused;

  Walker(WireDecoder& d, EventBatch& batch, DecodeResult& result, int64_t now_ms,
         std::string_view payload)
      : d_(d),
        batch_(batch),
        result_(result),
        future_limit_(static_cast<uint64_t>(now_ms + d.options_.max_future_skew_ms)),
        now_ms_(now_ms),
        max_past_ms_(d.options_.max_past_ms),
        max_time_(d.max_event_time_ms_),
        string_limit_(d.options_.max_string_bytes),
        max_events_(d.options_.max_events_per_message),
        c_(payload) {}

  // Walks the one top-level value. False when the walk stopped early (see stop()); the caller
  // checks consumed() for trailing bytes.
  bool Parse() {
    uint32_t n = 0;
    switch (c_.MapHeader(n)) {
      case kYes:
        top_is_map_ = true;
        return EnvelopeMap(n);
      case kNo:
        return c_.Skip(0);
      case kFailed:
        break;
    }
    return false;
  }

  // Reads only the envelope's scalars (v, pub, inc, seq), skipping every other value, "events"
  // included, without looking into it: identifies a message that is rejected as a whole. False
  // when the payload is not a map or not well-formed up to the map's end.
  bool ScanEnvelope() {
    uint32_t n = 0;
    if (c_.MapHeader(n) != kYes) return false;
    top_is_map_ = true;
    Value ignored;
    for (uint32_t k = 0; k < n; ++k) {
      EnvField f = kEnvUnknown;
      const uint8_t* key = nullptr;
      uint32_t len = 0;
      switch (c_.Str(key, len)) {
        case kYes:
          f = EnvelopeField({reinterpret_cast<const char*>(key), len});
          break;
        case kNo:
          if (!c_.Skip(1)) return false;
          break;
        case kFailed:
          return false;
      }
      if (f == kEnvUnknown || f == kEnvEvents) {
        if (!c_.ReadValue(ignored, 1)) return false;
        continue;
      }
      if (!c_.ReadValue(env_[f], 1)) return false;
      env_seen_ |= 1u << f;
    }
    return true;
  }

  // --- results ---
  Stop stop() const { return c_.stop(); }
  size_t stopped_at() const { return c_.stopped_at(); }
  size_t consumed() const { return c_.consumed(); }
  bool top_is_map() const { return top_is_map_; }
  const Value* env(EnvField f) const { return (env_seen_ & (1u << f)) ? &env_[f] : nullptr; }
  bool events_is_array() const { return events_is_array_; }
  uint32_t events_declared() const { return events_declared_; }
  uint32_t accepted() const { return accepted_; }
  uint32_t rejected() const { return rejected_; }
  int64_t max_time() const { return max_time_; }
  // The interned publisher if "pub" was valid when seen (0 otherwise; may be stale if "pub" was
  // repeated).
  StringId publisher() const { return publisher_; }
  // The publisher id written into every appended event, or kMixedStamp when it changed midway.
  StringId stamped_publisher() const { return stamped_; }
  static constexpr StringId kMixedStamp = std::numeric_limits<StringId>::max();
  const std::array<uint32_t, kNumRejectReasons>& reasons() const { return reasons_; }

 private:
  using Got = MsgpackCursor::Got;
  static constexpr Got kYes = MsgpackCursor::kYes;
  static constexpr Got kNo = MsgpackCursor::kNo;
  static constexpr Got kFailed = MsgpackCursor::kFailed;

  // --- the protocol's levels ---

  // The envelope's `n` pairs (depth 1).
  bool EnvelopeMap(uint32_t n) {
    for (uint32_t k = 0; k < n; ++k) {
      EnvField f = kEnvUnknown;
      const uint8_t* key = nullptr;
      uint32_t len = 0;
      switch (c_.Str(key, len)) {
        case kYes:
          f = EnvelopeField({reinterpret_cast<const char*>(key), len});
          break;
        case kNo:  // a non-string key is an unknown key
          if (!c_.Skip(1)) return false;
          break;
        case kFailed:
          return false;
      }
      if (f == kEnvUnknown) {
        if (!c_.Skip(1)) return false;
        continue;
      }
      if (f == kEnvEvents && !events_is_array_) {
        uint32_t count = 0;
        Got got = c_.ArrayHeader(count);
        if (got == kFailed) return false;
        if (got == kYes) {
          env_seen_ |= 1u << kEnvEvents;
          events_is_array_ = true;
          events_declared_ = count;
          if (count > max_events_) return c_.Fail(kBatchTooLarge);
          if (!Events(count)) return false;
          continue;
        }
      }
      Value& v = env_[f];
      if (!c_.ReadValue(v, 1)) return false;
      env_seen_ |= 1u << f;
      // Look the publisher up before the events' strings when it comes first (as clients write
      // it), so that a full Interner rejects events rather than whole messages, the events' new
      // names are charged to it, and a refused publisher (max_publishers) adds no names at all.
      if (f == kEnvPub && v.type == Value::kStr && v.len > 0 && v.len <= kMaxNameBytes &&
          IsValidUtf8(v.str())) {
        publisher_ = d_.LookupPublisher(v.str());
        publisher_refused_ = publisher_ == 0;
      }
    }
    return true;
  }

  // The events array's `n` elements (depth 2).
  bool Events(uint32_t n) {
    for (uint32_t k = 0; k < n; ++k) {
      ++event_index_;
      uint32_t pairs = 0;
      switch (c_.MapHeader(pairs)) {
        case kYes:
          if (!EventMap(pairs)) return false;
          break;
        case kNo:
          if (!c_.Skip(2)) return false;
          RejectEvent(RejectReason::kWrongType, "event is not a map");
          break;
        case kFailed:
          return false;
      }
    }
    return true;
  }

  // One event map's `n` pairs (depth 3); then validates and appends the event.
  //
  // Fast path: while at least kFastBytes are left, a pair whose key is a fixstr and whose value is
  // a fixstr, an integer or a float cannot run past the end (key <= 32 bytes, value <= 32), so it
  // is read with no bounds checks, from a cursor held in a register. Anything else, and the last
  // bytes of the payload, go through PairChecked().
  bool EventMap(uint32_t n) {
    static constexpr ptrdiff_t kFastBytes = 64;
    const uint8_t* p = c_.pos();
    const uint8_t* const end = c_.end();
    uint32_t seen = 0;
    for (uint32_t k = 0; k < n; ++k) {
      if (end - p < kFastBytes || (*p & 0xe0) != 0xa0) [[unlikely]] {
        c_.set_pos(p);
        const int64_t bit = PairChecked();
        if (bit < 0) return false;
        seen |= static_cast<uint32_t>(bit);
        p = c_.pos();
        continue;
      }
      const uint32_t key_len = *p & 0x1f;
      const Field f = FixstrKeyField(p, key_len);
      p += 1 + key_len;
      if (f == kFieldUnknown) [[unlikely]] {
        c_.set_pos(p);
        if (!c_.Skip(3)) return false;
        p = c_.pos();
        continue;
      }
      Value& v = fields_[f];
      const uint8_t b = *p;
      switch (b) {
        case 0x00 ... 0x7f:  // positive fixint
          v.SetUint(b);
          p += 1;
          break;
        case 0xa0 ... 0xbf:  // fixstr
          v.type = Value::kStr;
          v.s = reinterpret_cast<const char*>(p + 1);
          v.len = b & 0x1f;
          p += 1 + (b & 0x1f);
          break;
        case 0xcb:
          v.type = Value::kFloat;
          v.d = std::bit_cast<double>(LoadBe64(p + 1));
          p += 9;
          break;
        case 0xca:
          v.type = Value::kFloat;
          v.d = static_cast<double>(std::bit_cast<float>(LoadBe32(p + 1)));
          p += 5;
          break;
        case 0xcc:
          v.SetUint(p[1]);
          p += 2;
          break;
        case 0xcd:
          v.SetUint(LoadBe16(p + 1));
          p += 3;
          break;
        case 0xce:
          v.SetUint(LoadBe32(p + 1));
          p += 5;
          break;
        case 0xcf:
          v.SetUint(LoadBe64(p + 1));
          p += 9;
          break;
        case 0xd0:
          v.SetInt(static_cast<int8_t>(p[1]));
          p += 2;
          break;
        case 0xd1:
          v.SetInt(static_cast<int16_t>(LoadBe16(p + 1)));
          p += 3;
          break;
        case 0xd2:
          v.SetInt(static_cast<int32_t>(LoadBe32(p + 1)));
          p += 5;
          break;
        case 0xd3:
          v.SetInt(static_cast<int64_t>(LoadBe64(p + 1)));
          p += 9;
          break;
        case 0xe0 ... 0xff:  // negative fixint
          v.type = Value::kInt;
          v.i = static_cast<int8_t>(b);
          p += 1;
          break;
        default:  // long strings, nil, bool, bin, ext, containers
          c_.set_pos(p);
          if (!c_.ReadValue(v, 3)) return false;
          p = c_.pos();
          break;
      }
      seen |= 1u << f;
    }
    c_.set_pos(p);
    seen_ = seen;
    FinishEvent();
    return true;
  }

  // One key/value pair of an event map, every read checked. Returns the field's bit for `seen`
  // (0 for an unknown key), or -1 when the walk stopped.
  [[gnu::noinline]] int64_t PairChecked() {
    Field f = kFieldUnknown;
    const uint8_t* key = nullptr;
    uint32_t len = 0;
    switch (c_.Str(key, len)) {
      case kYes:
        f = EventField(key, len);
        break;
      case kNo:  // a non-string key is an unknown key
        if (!c_.Skip(3)) return -1;
        break;
      case kFailed:
        return -1;
    }
    if (f == kFieldUnknown) return c_.Skip(3) ? 0 : -1;
    if (!c_.ReadValue(fields_[f], 3)) return -1;
    return int64_t{1} << f;
  }

  // --- event validation ---

  void RejectEvent(RejectReason reason, const char* what, Field field = kFieldUnknown) {
    ++rejected_;
    ++reasons_[static_cast<size_t>(reason)];
    if (result_.first_reason == RejectReason::kNone) {
      result_.first_reason = reason;
      const char* name = field == kFieldUnknown ? "" : kFieldNames[field].data();
      SetDetail(result_, "event %u%s%s%s: %s (%s)", event_index_ - 1, *name ? " field \"" : "",
                name, *name ? "\"" : "", what, RejectReasonName(reason).data());
    }
  }

  bool Has(Field f) const { return (seen_ & (1u << f)) != 0; }

  // Checks a required name field; kNone when fine.
  RejectReason CheckName(Field f) const {
    if (!Has(f)) return RejectReason::kMissingField;
    const Value& v = fields_[f];
    if (v.type != Value::kStr) return RejectReason::kWrongType;
    if (v.len == 0) return RejectReason::kEmptyString;
    if (v.len > string_limit_) return RejectReason::kStringTooLong;
    if (!IsValidUtf8(v.str())) [[unlikely]]
      return RejectReason::kInvalidUtf8;
    return RejectReason::kNone;
  }

  // An optional non-negative latency/cost (every request field is optional, e2e included: a
  // gateway reporting at first-token time has no e2e yet); sets the bit in `present` when given.
  [[gnu::always_inline]] RejectReason NonNegative(Field f, double& out, uint16_t bit,
                                                  Event& e) const {
    if (!Has(f)) return RejectReason::kNone;
    RejectReason r = AsDouble(fields_[f], out);
    if (r != RejectReason::kNone) return r;
    if (out < 0) return RejectReason::kOutOfRange;
    e.present |= bit;
    return RejectReason::kNone;
  }

  [[gnu::always_inline]] RejectReason Tokens(Field f, uint32_t& out, uint16_t bit, Event& e) const {
    if (!Has(f)) return RejectReason::kNone;
    uint64_t n = 0;
    RejectReason r = AsCount(fields_[f], n);
    if (r != RejectReason::kNone) return r;
    if (n > kMaxTokens) return RejectReason::kOutOfRange;
    out = static_cast<uint32_t>(n);
    e.present |= bit;
    return RejectReason::kNone;
  }

  // Validates the event's fields in the protocol's order (docs/PROTOCOL.md §3: k, i, m, t, the
  // kind's fields in table order, then interning) and fills `e`. Returns the first failing check
  // with its field in `bad` (kFieldUnknown for interning).
  RejectReason Validate(Event& e, Field& bad) {
    RejectReason r;
    bad = kFieldKind;
    if (!Has(kFieldKind)) return RejectReason::kMissingField;
    const Value& k = fields_[kFieldKind];
    if (k.type != Value::kStr) return RejectReason::kWrongType;
    if (k.len != 1 || (k.s[0] != 'r' && k.s[0] != 'g')) return RejectReason::kUnknownKind;
    e.kind = k.s[0] == 'r' ? EventKind::kRequest : EventKind::kGauge;

    bad = kFieldInstance;
    if ((r = CheckName(kFieldInstance)) != RejectReason::kNone) return r;
    bad = kFieldModel;
    if ((r = CheckName(kFieldModel)) != RejectReason::kNone) return r;

    bad = kFieldTime;
    if (!Has(kFieldTime)) return RejectReason::kMissingField;
    uint64_t t = 0;
    if ((r = AsCount(fields_[kFieldTime], t)) != RejectReason::kNone) {
      return r == RejectReason::kOutOfRange ? RejectReason::kTimestampOutOfRange : r;
    }
    // max_past counts back from the latest accepted event time (historical data moves it), but
    // never from beyond the clock: one event ahead of it (up to max_future_skew) from any
    // publisher would otherwise reject everybody's on-time events.
    if (t == 0 || t > future_limit_ ||
        static_cast<int64_t>(t) < std::min(max_time_, now_ms_) - max_past_ms_) {
      return RejectReason::kTimestampOutOfRange;
    }
    e.time_ms = static_cast<int64_t>(t);

    if (e.kind == EventKind::kRequest) {
      bad = kFieldE2e;
      if ((r = NonNegative(kFieldE2e, e.e2e_ms, kHasE2e, e)) != RejectReason::kNone) {
        return r;
      }
      bad = kFieldTtft;
      if ((r = NonNegative(kFieldTtft, e.ttft_ms, kHasTtft, e)) != RejectReason::kNone) {
        return r;
      }
      bad = kFieldTpot;
      if ((r = NonNegative(kFieldTpot, e.tpot_ms, kHasTpot, e)) != RejectReason::kNone) {
        return r;
      }
      bad = kFieldPrompt;
      if ((r = Tokens(kFieldPrompt, e.prompt_tokens, kHasPromptTokens, e)) != RejectReason::kNone) {
        return r;
      }
      bad = kFieldOutput;
      if ((r = Tokens(kFieldOutput, e.output_tokens, kHasOutputTokens, e)) != RejectReason::kNone) {
        return r;
      }
      bad = kFieldCached;
      if ((r = Tokens(kFieldCached, e.cached_tokens, kHasCachedTokens, e)) != RejectReason::kNone) {
        return r;
      }
      if (Has(kFieldErr)) {
        bad = kFieldErr;
        const Value& v = fields_[kFieldErr];
        if (v.type != Value::kStr) return RejectReason::kWrongType;
        if (v.len > 0) {
          if (!IsValidUtf8(v.str())) [[unlikely]]
            return RejectReason::kInvalidUtf8;
          e.error = ParseErrorKind(v.str());
        }
      }
      bad = kFieldCost;
      if ((r = NonNegative(kFieldCost, e.cost_usd, kHasCost, e)) != RejectReason::kNone) {
        return r;
      }
      bad = kFieldQuality;
      if ((r = NonNegative(kFieldQuality, e.quality, kHasQuality, e)) != RejectReason::kNone) {
        return r;
      }
      if (e.Has(kHasQuality) && e.quality > 1) return RejectReason::kOutOfRange;
    } else {
      bad = kFieldName;
      if ((r = CheckName(kFieldName)) != RejectReason::kNone) return r;
      bad = kFieldValue;
      if (!Has(kFieldValue)) return RejectReason::kMissingField;
      if ((r = AsDouble(fields_[kFieldValue], e.value)) != RejectReason::kNone) return r;
    }

    // Intern last, so that rejected events never take a slot of the Interner. A message whose
    // publisher is refused is rejected whole: its names are not interned.
    bad = kFieldUnknown;
    if (publisher_refused_) [[unlikely]]
      return RejectReason::kCardinalityLimit;
    const Value& i = fields_[kFieldInstance];
    const Value& m = fields_[kFieldModel];
    e.instance = d_.InternRecent(i.s, i.len, publisher_);
    e.model = d_.InternRecent(m.s, m.len, publisher_);
    if (e.kind == EventKind::kGauge) {
      const Value& n = fields_[kFieldName];
      e.metric = d_.InternRecent(n.s, n.len, publisher_);
    }
    if (e.instance == 0 || e.model == 0 || (e.kind == EventKind::kGauge && e.metric == 0)) {
      return RejectReason::kCardinalityLimit;
    }
    return RejectReason::kNone;
  }

  // Validates the event in place at the end of the batch (no copy); takes it back if rejected.
  void FinishEvent() {
    Event& e = batch_.events.emplace_back();
    Field bad = kFieldUnknown;
    const RejectReason r = Validate(e, bad);
    if (r != RejectReason::kNone) [[unlikely]] {
      batch_.events.pop_back();
      RejectEvent(r, DescribeValue(bad), bad);
      return;
    }
    if (e.time_ms > max_time_) max_time_ = e.time_ms;
    e.publisher = publisher_;
    if (stamped_ != publisher_) stamped_ = accepted_ == 0 ? publisher_ : kMixedStamp;
    ++accepted_;
  }

  // A short description of the offending value for the rejection detail.
  const char* DescribeValue(Field f) const {
    if (f == kFieldUnknown) return "cannot intern";
    if (!Has(f)) return "missing";
    switch (fields_[f].type) {
      case Value::kUint:
        return "unsigned integer";
      case Value::kInt:
        return "negative integer";
      case Value::kFloat:
        return "float";
      case Value::kStr:
        return "string";
      default:
        return "nil, bool, bin, ext or container";
    }
  }

  WireDecoder& d_;
  EventBatch& batch_;
  DecodeResult& result_;
  const uint64_t future_limit_;  // now + max_future_skew_ms, as the unsigned event time
  const int64_t now_ms_;
  const int64_t max_past_ms_;
  int64_t max_time_;
  const uint32_t string_limit_;
  const uint32_t max_events_;

  MsgpackCursor c_;
  bool top_is_map_ = false;

  std::array<Value, kNumEnvFields> env_{};
  uint32_t env_seen_ = 0;
  bool events_is_array_ = false;
  uint32_t events_declared_ = 0;
  StringId publisher_ = 0;
  bool publisher_refused_ = false;  // "pub" was seen and refused (LookupPublisher)
  StringId stamped_ = 0;

  std::array<Value, kNumFields> fields_;
  uint32_t seen_ = 0;
  uint32_t event_index_ = 0;

  uint32_t accepted_ = 0;
  uint32_t rejected_ = 0;
  std::array<uint32_t, kNumRejectReasons> reasons_{};
};
WireDecoder::WireDecoder(const WireDecoderOptions& options, Interner& interner, const Clock& clock,
                         MetricsRegistry* metrics, std::string stage)
    : options_(options),
      interner_(interner),
      cache_(interner),
      recent_(new RecentString[size_t{1} << kRecentBits]()),
      clock_(clock),
      metrics_(metrics != nullptr ? metrics : &own_metrics_),
      stage_(std::move(stage)),
      sequences_(options.strict_sequence, options.late_before_first) {
  string_share_ = options_.max_strings_per_publisher != 0
                      ? options_.max_strings_per_publisher
                      : std::max<size_t>(interner.max_strings() / 4, 1);
  const Labels stage_label = {{"stage", stage_}};
  publishers_gauge_ = metrics_->GetGauge(
      "inferscope_source_publishers",
      "Publisher ids a source keeps state for (at most max_publishers, plus restored ones)",
      stage_label);
  messages_counter_ = MakeCounter("inferscope_source_messages_total",
                                  "Messages received by a source, valid or not.", stage_label);
  events_counter_ =
      MakeCounter("inferscope_source_events_total", "Events accepted by a source.", stage_label);
  bytes_counter_ = MakeCounter("inferscope_source_bytes_total",
                               "Payload bytes received by a source.", stage_label);
  for (int i = 1; i < kNumRejectReasons; ++i) {
    auto reason = static_cast<RejectReason>(i);
    reason_counters_[i] = MakeCounter(
        "inferscope_source_rejected_total",
        "Rejected input: messages for message-level reasons (bad_frames, not_msgpack, "
        "bad_envelope, unknown_version, batch_too_large, message_too_large, publisher_limit, "
        "unauthorized_publisher), "
        "events for the others.",
        {{"stage", stage_}, {"reason", std::string(RejectReasonName(reason))}});
  }
}

WireDecoder::~WireDecoder() = default;

void WireDecoder::Reset() {
  sequences_.Clear();
  publishers_.clear();
  publisher_ids_.clear();
  publishers_gauge_->Set(0);
  last_publisher_ = 0;
  last_publisher_counters_ = nullptr;
  reason_counts_ = {};
  messages_ = 0;
  events_ = 0;
  gaps_ = 0;
  duplicates_ = 0;
  late_ = 0;
  restarts_ = 0;
  out_of_order_ = 0;
  max_event_time_ms_ = 0;
}

Counter* WireDecoder::MakeCounter(std::string_view name, std::string_view help,
                                  const Labels& labels) {
  return metrics_->GetCounter(name, help, labels);
}

void WireDecoder::RestoreSequence(StringId publisher, uint64_t next_seq) {
  Publisher(publisher);
  sequences_.Restore(publisher, next_seq);
}

void WireDecoder::RestoreSequence(StringId publisher, const AppliedSequence& applied) {
  Publisher(publisher);
  sequences_.Restore(publisher, applied);
}

std::optional<uint64_t> WireDecoder::NextSequence(StringId publisher) const {
  return sequences_.NextSequence(publisher);
}

std::optional<uint64_t> WireDecoder::NextSequence(StringId publisher, uint64_t incarnation) const {
  return sequences_.NextSequence(publisher, incarnation);
}

std::optional<uint64_t> WireDecoder::CurrentIncarnation(StringId publisher) const {
  return sequences_.CurrentIncarnation(publisher);
}

std::optional<AppliedSequence> WireDecoder::Position(StringId publisher) const {
  return sequences_.Position(publisher);
}

WireDecoder::PublisherCounters& WireDecoder::Publisher(StringId id) {
  if (id == last_publisher_ && last_publisher_counters_ != nullptr) {
    return *last_publisher_counters_;
  }
  auto [it, inserted] = publishers_.try_emplace(id);
  if (inserted) {
    interner_.Pin(id);  // sequence state and counters are keyed by it for the process's life
    publisher_ids_.emplace(interner_.Name(id), id);  // pinned: the name never moves or goes
    publishers_gauge_->Set(static_cast<double>(publishers_.size()));
    const Labels labels = {{"stage", stage_}, {"publisher", std::string(interner_.Name(id))}};
    PublisherCounters& p = it->second;
    p.messages = MakeCounter("inferscope_source_publisher_messages_total",
                             "Messages with a valid envelope, by publisher.", labels);
    p.rejected = MakeCounter("inferscope_source_rejected_by_publisher_total",
                             "Events rejected, by publisher (valid envelopes only).", labels);
    p.gaps = MakeCounter("inferscope_source_sequence_gaps_total",
                         "Messages missing according to the publisher's sequence numbers.", labels);
    p.duplicates =
        MakeCounter("inferscope_source_duplicates_total", "Duplicate messages dropped.", labels);
    p.late = MakeCounter("inferscope_source_late_messages_total",
                         "Messages counted missing by a gap that arrived later, after newer ones "
                         "(applied once).",
                         labels);
    p.restarts =
        MakeCounter("inferscope_source_publisher_restarts_total",
                    "Publisher restarts (sequence number far behind the expected one).", labels);
    p.out_of_order = MakeCounter("inferscope_source_out_of_order_total",
                                 "Messages ahead of the expected sequence number, not applied "
                                 "(acknowledged mode; the publisher resends them).",
                                 labels);
  }
  last_publisher_ = id;
  last_publisher_counters_ = &it->second;  // unordered_map never moves its elements
  return it->second;
}

StringId WireDecoder::LookupPublisher(std::string_view name) {
  if (last_publisher_ != 0 && interner_.Name(last_publisher_) == name) return last_publisher_;
  if (auto it = publisher_ids_.find(name); it != publisher_ids_.end()) return it->second;
  if (publishers_.size() >= options_.max_publishers) return 0;
  return cache_.Intern(name);
}

StringId WireDecoder::AdmitPublisher(std::string_view name) {
  const StringId id = LookupPublisher(name);
  if (id != 0) Publisher(id);
  return id;
}

StringId WireDecoder::InternRecent(const char* s, uint32_t len, StringId owner) {
  // After an Interner::Sweep the slots may point at reclaimed names: start afresh.
  if (cache_.Sync()) {
    std::fill(recent_.get(), recent_.get() + (size_t{1} << kRecentBits), RecentString{});
  }
  // A cheap hash of the length and the first, last (and, for long strings, middle) bytes; the
  // slot's bytes are compared in full, so a collision only costs a trip to cache_. len >= 1.
  uint64_t a;
  uint64_t b;
  if (len >= 8) {
    a = LoadLe64(s);
    b = LoadLe64(s + len - 8);
    if (len > 16) a ^= LoadLe64(s + len / 2 - 4) * 0x165667B19E3779F9ull;
  } else if (len >= 4) {
    a = LoadLe32(s);
    b = LoadLe32(s + len - 4);
  } else {
    a = static_cast<uint8_t>(s[0]) | uint64_t{static_cast<uint8_t>(s[len / 2])} << 8 |
        uint64_t{static_cast<uint8_t>(s[len - 1])} << 16;
    b = 0;
  }
  const uint64_t h =
      ((a * 0x9E3779B97F4A7C15ull) ^ (b * 0xC2B2AE3D27D4EB4Full) ^ len) * 0xD6E8FEB86659FD93ull;
  RecentString& slot = recent_[h >> (64 - kRecentBits)];
  if (slot.len == len && SameBytes(slot.data, s, len)) return slot.id;
  const StringId id = cache_.InternFor({s, len}, owner, string_share_);
  if (id != 0) {
    // The Interner's copy never moves or changes until two sweeps after it is reclaimed (and
    // the slots are emptied at the first), so the slot can point at it.
    const std::string_view name = interner_.Name(id);
    slot = RecentString{name.data(), len, id};
  }
  return id;
}

void WireDecoder::RejectMessage(RejectReason reason, DecodeResult& result) {
  result.message_rejected = true;
  result.accepted = 0;
  result.rejected = 0;
  result.first_reason = reason;
  ++reason_counts_[static_cast<size_t>(reason)];
  reason_counters_[static_cast<size_t>(reason)]->Inc();
}

void WireDecoder::RejectDecoded(RejectReason reason, EventBatch& batch, size_t start,
                                DecodeResult& result) {
  batch.events.resize(start);
  result.first_reason = RejectReason::kNone;  // a message-level reason replaces event details
  RejectMessage(reason, result);
}

void WireDecoder::ConsumeRejected(std::string_view payload, EventBatch& batch,
                                  DecodeResult& result) {
  if (!options_.strict_sequence) return;
  Walker scan(*this, batch, result, 0, payload);
  if (!scan.ScanEnvelope()) return;
  const Value* v = scan.env(kEnvVersion);
  const Value* pub = scan.env(kEnvPub);
  const Value* seq = scan.env(kEnvSeq);
  const Value* inc = scan.env(kEnvInc);
  if (v == nullptr || v->type != Value::kUint || v->u != 1 || pub == nullptr ||
      pub->type != Value::kStr || pub->len == 0 || pub->len > kMaxNameBytes ||
      !IsValidUtf8(pub->str()) || seq == nullptr || seq->type != Value::kUint ||
      (inc != nullptr && (inc->type != Value::kUint || IncarnationBeyondClocks(inc->u)))) {
    return;
  }
  // A new id beyond max_publishers gets nothing (the message was counted for its reason).
  const StringId publisher = LookupPublisher(pub->str());
  if (publisher == 0) return;
  result.publisher = publisher;
  result.incarnation = inc != nullptr ? inc->u : 0;
  result.seq = seq->u;
  PublisherCounters& counters = Publisher(publisher);
  counters.messages->Inc();
  const SequenceTracker::Judgement judged =
      sequences_.Judge(publisher, result.incarnation, result.seq);
  result.sequence = judged.verdict;
  result.missing = judged.missing;
  switch (judged.verdict) {
    case SequenceVerdict::kFirst:
    case SequenceVerdict::kInOrder:
    case SequenceVerdict::kRestart:
      sequences_.Advance(publisher, result.incarnation, result.seq);
      result.consumed = true;
      break;
    case SequenceVerdict::kGap:
      ++out_of_order_;
      counters.out_of_order->Inc();
      break;
    case SequenceVerdict::kDuplicate:
      ++duplicates_;
      counters.duplicates->Inc();
      break;
    default:
      break;
  }
}

void WireDecoder::RecordBadFrames(size_t total_bytes) {
  RecordRejectedMessage(RejectReason::kBadFrames, total_bytes);
}

void WireDecoder::RecordRejectedMessage(RejectReason reason, size_t total_bytes) {
  ++messages_;
  messages_counter_->Inc();
  bytes_counter_->Inc(total_bytes);
  ++reason_counts_[static_cast<size_t>(reason)];
  reason_counters_[static_cast<size_t>(reason)]->Inc();
}

DecodeResult WireDecoder::Decode(std::string_view payload, EventBatch& batch,
                                 const PublisherAuthorizer* authorizer) {
  DecodeResult result;
  ++messages_;
  messages_counter_->Inc();
  bytes_counter_->Inc(payload.size());

  if (payload.size() > options_.max_message_bytes) {
    RejectMessage(RejectReason::kMessageTooLarge, result);
    SetDetail(result, "payload of %zu bytes exceeds max_message_bytes %zu", payload.size(),
              options_.max_message_bytes);
    ConsumeRejected(payload, batch, result);
    return result;
  }

  const size_t start = batch.events.size();
  Walker walker(*this, batch, result, clock_.NowMs(), payload);
  bool parsed = false;
  try {
    parsed = walker.Parse();
  } catch (const std::bad_alloc&) {  // growing the batch; the message is dropped like a bad one
    parsed = false;
  }

  Envelope envelope;
  if (!CheckWalk(walker, parsed, payload, batch, start, result) ||
      !CheckEnvelope(walker, payload, batch, start, authorizer, envelope, result) ||
      !ApplySequence(envelope, batch, start, result)) {
    return result;
  }
  CommitEvents(walker, envelope, batch, start, result);
  return result;
}

bool WireDecoder::CheckWalk(const Walker& walker, bool parsed, std::string_view payload,
                            EventBatch& batch, size_t start, DecodeResult& result) {
  if (!parsed) {
    switch (walker.stop()) {
      case Walker::kBatchTooLarge:
        RejectDecoded(RejectReason::kBatchTooLarge, batch, start, result);
        SetDetail(result, "%u events exceed max_events_per_message %u", walker.events_declared(),
                  options_.max_events_per_message);
        ConsumeRejected(payload, batch, result);
        return false;
      case Walker::Stop::kTooDeep:
        RejectDecoded(RejectReason::kNotMsgpack, batch, start, result);
        SetDetail(result, "msgpack nested deeper than %d levels", kMaxDepth);
        return false;
      default:  // truncated or invalid; also kNone after a failed allocation
        RejectDecoded(RejectReason::kNotMsgpack, batch, start, result);
        SetDetail(result, "%s msgpack at byte %zu of %zu",
                  walker.stop() == Walker::Stop::kInvalid ? "invalid" : "truncated",
                  walker.stopped_at(), payload.size());
        return false;
    }
  }
  if (walker.consumed() != payload.size()) {
    RejectDecoded(RejectReason::kNotMsgpack, batch, start, result);
    SetDetail(result, "%zu trailing bytes after the msgpack value",
              payload.size() - walker.consumed());
    return false;
  }
  if (!walker.top_is_map()) {
    RejectDecoded(RejectReason::kBadEnvelope, batch, start, result);
    SetDetail(result, "payload is not a msgpack map");
    return false;
  }
  return true;
}

bool WireDecoder::CheckEnvelope(const Walker& walker, std::string_view payload, EventBatch& batch,
                                size_t start, const PublisherAuthorizer* authorizer,
                                Envelope& envelope, DecodeResult& result) {
  auto reject = [&](RejectReason reason) { RejectDecoded(reason, batch, start, result); };
  const Value* v = walker.env(kEnvVersion);
  if (v == nullptr || v->type != Value::kUint) {
    reject(RejectReason::kBadEnvelope);
    SetDetail(result, "\"v\" missing or not an unsigned integer");
    return false;
  }
  if (v->u != 1) {
    reject(RejectReason::kUnknownVersion);
    SetDetail(result, "protocol version %llu (this decoder reads 1)",
              static_cast<unsigned long long>(v->u));
    return false;
  }
  const Value* pub = walker.env(kEnvPub);
  if (pub == nullptr || pub->type != Value::kStr || pub->len == 0 || pub->len > kMaxNameBytes) {
    reject(RejectReason::kBadEnvelope);
    SetDetail(result, "\"pub\" missing or not a string of 1..%zu bytes", kMaxNameBytes);
    return false;
  }
  if (!IsValidUtf8(pub->str())) {
    reject(RejectReason::kBadEnvelope);
    SetDetail(result, "\"pub\" is not valid UTF-8");
    return false;
  }
  const Value* seq = walker.env(kEnvSeq);
  if (seq == nullptr || seq->type != Value::kUint) {
    reject(RejectReason::kBadEnvelope);
    SetDetail(result, "\"seq\" missing or not an unsigned integer");
    return false;
  }
  const Value* inc = walker.env(kEnvInc);
  if (inc != nullptr && inc->type != Value::kUint) {
    reject(RejectReason::kBadEnvelope);
    SetDetail(result, "\"inc\" not an unsigned integer");
    return false;
  }
  if (inc != nullptr && IncarnationBeyondClocks(inc->u)) {
    reject(RejectReason::kBadEnvelope);
    SetDetail(result,
              "\"inc\" %llu is beyond (ms since the epoch + 1 day) << 22, the incarnations of "
              "any clock",
              static_cast<unsigned long long>(inc->u));
    return false;
  }
  if (seq->u == std::numeric_limits<uint64_t>::max()) {
    // The expected sequence number (seq + 1) would wrap to 0 and the message be applied again.
    reject(RejectReason::kBadEnvelope);
    SetDetail(result, "\"seq\" 2^64 - 1 is out of range (the largest is 2^64 - 2)");
    return false;
  }
  if (!walker.events_is_array()) {
    reject(RejectReason::kBadEnvelope);
    SetDetail(result, "\"events\" missing or not an array");
    ConsumeRejected(payload, batch, result);
    return false;
  }
  if (authorizer != nullptr && !authorizer->MayPublishAs(pub->str())) {
    reject(RejectReason::kUnauthorizedPublisher);
    SetDetail(result, "the sender's key may not publish as \"%.*s\"",
              static_cast<int>(std::min<size_t>(pub->len, 64)), pub->str().data());
    return false;
  }
  const StringId publisher =
      walker.publisher() != 0 && interner_.Name(walker.publisher()) == pub->str()
          ? walker.publisher()
          : LookupPublisher(pub->str());
  if (publisher == 0) {
    reject(RejectReason::kPublisherLimit);
    result.refused_publisher = pub->str();
    result.incarnation = inc != nullptr ? inc->u : 0;
    result.seq = seq->u;
    if (publishers_.size() >= options_.max_publishers) {
      SetDetail(result, "new publisher id \"%.*s\" beyond max_publishers %u",
                static_cast<int>(std::min<size_t>(pub->len, 64)), pub->str().data(),
                options_.max_publishers);
    } else {
      SetDetail(result, "publisher id cannot be interned (interner full)");
    }
    return false;
  }
  envelope.publisher = publisher;
  envelope.incarnation = inc != nullptr ? inc->u : 0;
  envelope.seq = seq->u;
  result.publisher = publisher;
  result.seq = envelope.seq;
  result.incarnation = envelope.incarnation;
  return true;
}

bool WireDecoder::ApplySequence(const Envelope& envelope, EventBatch& batch, size_t start,
                                DecodeResult& result) {
  PublisherCounters& counters = Publisher(envelope.publisher);
  counters.messages->Inc();
  const SequenceTracker::Judgement judged =
      sequences_.Judge(envelope.publisher, envelope.incarnation, envelope.seq);
  const SequenceVerdict verdict = judged.verdict;
  result.sequence = verdict;
  result.missing = judged.missing;
  auto drop = [&] {
    batch.events.resize(start);
    result.accepted = 0;
    result.rejected = 0;
    result.first_reason = RejectReason::kNone;
  };
  if (options_.strict_sequence &&
      (verdict == SequenceVerdict::kGap || verdict == SequenceVerdict::kStale)) {
    // Not applied: the publisher resends from the first unacknowledged message (a gap), or its
    // incarnation is over (stale).
    drop();
    if (verdict == SequenceVerdict::kGap) {
      ++out_of_order_;
      counters.out_of_order->Inc();
    } else {
      SetDetail(result, "seq %llu of incarnation %llu, older than the current one %llu",
                static_cast<unsigned long long>(envelope.seq),
                static_cast<unsigned long long>(envelope.incarnation),
                static_cast<unsigned long long>(judged.current_incarnation));
    }
    return false;
  }
  if (verdict == SequenceVerdict::kDuplicate) {
    drop();
    ++duplicates_;
    counters.duplicates->Inc();
    SetDetail(result, "duplicate seq %llu (expected %llu)",
              static_cast<unsigned long long>(envelope.seq),
              static_cast<unsigned long long>(judged.expected));
    return false;
  }
  if (verdict == SequenceVerdict::kGap) {
    gaps_ += result.missing;
    counters.gaps->Inc(result.missing);
  } else if (verdict == SequenceVerdict::kLate) {
    ++late_;
    counters.late->Inc();
  } else if (verdict == SequenceVerdict::kRestart) {
    ++restarts_;
    counters.restarts->Inc();
  }
  sequences_.Advance(envelope.publisher, envelope.incarnation, envelope.seq);
  result.applied = true;
  return true;
}

void WireDecoder::CommitEvents(const Walker& walker, const Envelope& envelope, EventBatch& batch,
                               size_t start, DecodeResult& result) {
  // The events were stamped with the publisher known when each was appended; fix them up only if
  // that was not the final one (the envelope came after the events, or "pub" was repeated).
  const StringId publisher = envelope.publisher;
  const uint32_t accepted = walker.accepted();
  result.accepted = accepted;
  result.rejected = walker.rejected();
  if (walker.stamped_publisher() != publisher) {
    for (size_t i = start; i < batch.events.size(); ++i) batch.events[i].publisher = publisher;
  }
  if (accepted > 0) {
    if (start == 0) {
      batch.publisher = publisher;
    } else if (batch.publisher != publisher) {
      batch.publisher = 0;
    }
    events_ += accepted;
    events_counter_->Inc(accepted);
    max_event_time_ms_ = walker.max_time();
  }
  if (result.rejected > 0) {
    Publisher(publisher).rejected->Inc(result.rejected);
    const auto& reasons = walker.reasons();
    for (size_t i = 0; i < reasons.size(); ++i) {
      if (reasons[i] == 0) continue;
      reason_counts_[i] += reasons[i];
      reason_counters_[i]->Inc(reasons[i]);
    }
  }
}

}  // namespace inferscope
