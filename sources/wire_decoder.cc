#include "sources/wire_decoder.h"

#include <cmath>
#include <cstdio>
#include <limits>
#include <utility>

#include <msgpack.hpp>

namespace inferscope {
namespace {

constexpr std::string_view kReasonNames[kNumRejectReasons] = {
    "",
    "bad_frames",
    "not_msgpack",
    "bad_envelope",
    "unknown_version",
    "batch_too_large",
    "message_too_large",
    "publisher_limit",
    "missing_field",
    "wrong_type",
    "unknown_kind",
    "non_finite",
    "out_of_range",
    "empty_string",
    "string_too_long",
    "timestamp_out_of_range",
    "cardinality_limit",
};

// Deeper nesting is rejected (not_msgpack); it also keeps msgpack-c's parse stack at its initial
// reservation (MSGPACK_EMBED_STACK_SIZE = 32).
constexpr int kMaxDepth = 32;
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
enum EnvField : uint8_t { kEnvVersion, kEnvPub, kEnvSeq, kEnvEvents, kNumEnvFields, kEnvUnknown };

inline Field EventField(const char* s, uint32_t n) {
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
      std::string_view v(s, 4);
      if (v == "ttft") return kFieldTtft;
      if (v == "tpot") return kFieldTpot;
      if (v == "cost") return kFieldCost;
      return kFieldUnknown;
    }
  }
  return kFieldUnknown;
}

inline EnvField EnvelopeField(std::string_view s) {
  if (s == "v") return kEnvVersion;
  if (s == "pub") return kEnvPub;
  if (s == "seq") return kEnvSeq;
  if (s == "events") return kEnvEvents;
  return kEnvUnknown;
}

// One scalar as it appeared on the wire. Negative integers are kInt; non-negative ones are kUint
// whatever their msgpack width or signedness.
struct Value {
  enum Type : uint8_t { kUint, kInt, kFloat, kStr, kOther };
  Type type = kOther;
  uint64_t u = 0;
  int64_t i = 0;
  double d = 0;
  const char* s = nullptr;
  uint32_t len = 0;
  std::string_view str() const { return {s, len}; }
};

// Reads a number as a double. kNone on success.
inline RejectReason AsDouble(const Value& v, double& out) {
  switch (v.type) {
    case Value::kUint:
      out = static_cast<double>(v.u);
      return RejectReason::kNone;
    case Value::kInt:
      out = static_cast<double>(v.i);
      return RejectReason::kNone;
    case Value::kFloat:
      out = v.d;
      return std::isfinite(out) ? RejectReason::kNone : RejectReason::kNonFinite;
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

void SetDetail(DecodeResult& result, const char* fmt, auto... args) {
  int n = std::snprintf(result.detail_buf.data(), result.detail_buf.size(), fmt, args...);
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
  return reason >= RejectReason::kBadFrames && reason <= RejectReason::kPublisherLimit;
}

std::string_view SequenceVerdictName(SequenceVerdict verdict) {
  switch (verdict) {
    case SequenceVerdict::kNone:
      return "none";
    case SequenceVerdict::kFirst:
      return "first";
    case SequenceVerdict::kInOrder:
      return "in_order";
    case SequenceVerdict::kGap:
      return "gap";
    case SequenceVerdict::kDuplicate:
      return "duplicate";
    case SequenceVerdict::kRestart:
      return "restart";
  }
  return "none";
}

Status WireDecoderOptions::Validate() const {
  if (max_future_skew_ms < 0) return Status::InvalidArgument("max_future_skew must be >= 0");
  if (max_past_ms <= 0) return Status::InvalidArgument("max_past must be > 0");
  if (max_events_per_message < 1 || max_events_per_message > (1u << 24)) {
    return Status::InvalidArgument("max_events_per_message must be in 1..16777216");
  }
  if (max_string_bytes < 1 || max_string_bytes > 65535) {
    return Status::InvalidArgument("max_string_bytes must be in 1..65535");
  }
  if (max_message_bytes < 16 || max_message_bytes > (size_t{1} << 31)) {
    return Status::InvalidArgument("max_message_bytes must be in 16..2147483648");
  }
  return Status::Ok();
}

// Walker is the msgpack-c visitor for one payload: a small state machine over the levels
// top → envelope map → events array → event map. Values nobody asked for (unknown keys, wrong-typed
// containers) are skipped by counting nesting. Events are validated when their map ends and
// appended to the batch straight away; Decode() rolls them back if the envelope turns out bad.
class WireDecoder::Walker {
 public:
  Walker(WireDecoder& d, EventBatch& batch, DecodeResult& result, int64_t now_ms)
      : d_(d),
        batch_(batch),
        result_(result),
        now_ms_(now_ms),
        max_time_(d.max_event_time_ms_),
        string_limit_(d.options_.max_string_bytes) {}

  // --- msgpack-c visitor interface ---
  bool visit_nil() { return Scalar(Value{}); }
  bool visit_boolean(bool) { return Scalar(Value{}); }
  bool visit_positive_integer(uint64_t v) {
    Value x;
    x.type = Value::kUint;
    x.u = v;
    return Scalar(x);
  }
  bool visit_negative_integer(int64_t v) {
    Value x;
    if (v >= 0) {
      x.type = Value::kUint;
      x.u = static_cast<uint64_t>(v);
    } else {
      x.type = Value::kInt;
      x.i = v;
    }
    return Scalar(x);
  }
  bool visit_float32(float v) { return visit_float64(static_cast<double>(v)); }
  bool visit_float64(double v) {
    Value x;
    x.type = Value::kFloat;
    x.d = v;
    return Scalar(x);
  }
  bool visit_str(const char* v, uint32_t size) {
    Value x;
    x.type = Value::kStr;
    x.s = v;
    x.len = size;
    return Scalar(x);
  }
  bool visit_bin(const char*, uint32_t) { return Scalar(Value{}); }
  bool visit_ext(const char*, uint32_t) { return Scalar(Value{}); }
  bool start_array(uint32_t n) { return StartContainer(/*is_map=*/false, n); }
  bool start_array_item() { return true; }
  bool end_array_item() { return true; }
  bool end_array() { return EndContainer(); }
  bool start_map(uint32_t n) { return StartContainer(/*is_map=*/true, n); }
  bool start_map_key() {
    if (skip_ == 0) in_key_ = true;
    return true;
  }
  bool end_map_key() { return true; }
  bool start_map_value() {
    if (skip_ == 0) in_key_ = false;
    return true;
  }
  bool end_map_value() { return true; }
  bool end_map() { return EndContainer(); }
  void parse_error(size_t parsed, size_t error) {
    parse_failed_at_ = error;
    (void)parsed;
  }
  void insufficient_bytes(size_t parsed, size_t error) {
    truncated_ = true;
    parse_failed_at_ = error;
    (void)parsed;
  }
  bool referenced() const { return false; }
  void set_referenced(bool) {}

  // --- results ---
  RejectReason stop_reason() const { return stop_reason_; }
  bool top_is_map() const { return top_is_map_; }
  bool truncated() const { return truncated_; }
  size_t parse_failed_at() const { return parse_failed_at_; }
  const Value* env(EnvField f) const { return (env_seen_ & (1u << f)) ? &env_[f] : nullptr; }
  bool events_is_array() const { return events_is_array_; }
  uint32_t events_declared() const { return events_declared_; }
  uint32_t accepted() const { return accepted_; }
  uint32_t rejected() const { return rejected_; }
  int64_t max_time() const { return max_time_; }
  // The interned publisher if "pub" was valid when seen (0 otherwise; may be stale if "pub" was
  // repeated).
  StringId publisher() const { return publisher_; }
  const std::array<uint32_t, kNumRejectReasons>& reasons() const { return reasons_; }

 private:
  enum Level : uint8_t { kTop, kEnvelope, kEvents, kEvent, kDone };

  bool Scalar(const Value& v) {
    if (skip_ > 0) return true;
    switch (level_) {
      case kTop:
        level_ = kDone;  // top-level value is not a map
        return true;
      case kEnvelope:
        if (in_key_) {
          env_field_ = v.type == Value::kStr ? EnvelopeField(v.str()) : kEnvUnknown;
        } else if (env_field_ < kNumEnvFields) {
          env_[env_field_] = v;
          env_seen_ |= 1u << env_field_;
          // Intern the publisher before the events' strings when it comes first (as clients
          // write it), so that a full Interner rejects events rather than whole messages.
          if (env_field_ == kEnvPub && v.type == Value::kStr && v.len > 0 && v.len <= 255) {
            publisher_ = d_.cache_.Intern(v.str());
          }
        }
        return true;
      case kEvents:
        ++event_index_;
        RejectEvent(RejectReason::kWrongType, "event is not a map");
        return true;
      case kEvent:
        if (in_key_) {
          field_ = v.type == Value::kStr ? EventField(v.s, v.len) : kFieldUnknown;
        } else if (field_ != kFieldUnknown) {
          fields_[field_] = v;
          seen_ |= 1u << field_;
        }
        return true;
      case kDone:
        return true;
    }
    return true;
  }

  bool StartContainer(bool is_map, uint32_t n) {
    if (++depth_ > kMaxDepth) {
      stop_reason_ = RejectReason::kNotMsgpack;
      return false;
    }
    if (skip_ > 0) {
      ++skip_;
      return true;
    }
    switch (level_) {
      case kTop:
        if (is_map) {
          top_is_map_ = true;
          level_ = kEnvelope;
          return true;
        }
        level_ = kDone;
        break;
      case kEnvelope:
        if (!in_key_ && env_field_ == kEnvEvents && !is_map && !events_is_array_) {
          env_seen_ |= 1u << kEnvEvents;
          events_is_array_ = true;
          events_declared_ = n;
          if (n > d_.options_.max_events_per_message) {
            stop_reason_ = RejectReason::kBatchTooLarge;
            return false;
          }
          level_ = kEvents;
          return true;
        }
        if (!in_key_ && env_field_ < kNumEnvFields) {
          env_[env_field_] = Value{};  // wrong type: a container
          env_seen_ |= 1u << env_field_;
        }
        if (in_key_) env_field_ = kEnvUnknown;
        break;
      case kEvents:
        ++event_index_;
        if (is_map) {
          level_ = kEvent;
          seen_ = 0;
          return true;
        }
        RejectEvent(RejectReason::kWrongType, "event is not a map");
        break;
      case kEvent:
        if (in_key_) {
          field_ = kFieldUnknown;
        } else if (field_ != kFieldUnknown) {
          fields_[field_] = Value{};  // wrong type: a container
          seen_ |= 1u << field_;
        }
        break;
      case kDone:
        break;
    }
    skip_ = 1;
    return true;
  }

  bool EndContainer() {
    --depth_;
    if (skip_ > 0) {
      --skip_;
      return true;
    }
    switch (level_) {
      case kEvent:
        FinishEvent();
        level_ = kEvents;
        break;
      case kEvents:
        level_ = kEnvelope;
        break;
      case kEnvelope:
        level_ = kDone;
        break;
      default:
        break;
    }
    return true;
  }

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
    return RejectReason::kNone;
  }

  // An optional (or required) non-negative latency/cost; sets the bit in `present` when given.
  RejectReason NonNegative(Field f, double& out, uint16_t bit, Event& e, bool required) {
    if (!Has(f)) return required ? RejectReason::kMissingField : RejectReason::kNone;
    RejectReason r = AsDouble(fields_[f], out);
    if (r != RejectReason::kNone) return r;
    if (out < 0) return RejectReason::kOutOfRange;
    e.present |= bit;
    return RejectReason::kNone;
  }

  RejectReason Tokens(Field f, uint32_t& out, uint16_t bit, Event& e) {
    if (!Has(f)) return RejectReason::kNone;
    uint64_t n = 0;
    RejectReason r = AsCount(fields_[f], n);
    if (r != RejectReason::kNone) return r;
    if (n > kMaxTokens) return RejectReason::kOutOfRange;
    out = static_cast<uint32_t>(n);
    e.present |= bit;
    return RejectReason::kNone;
  }

  void FinishEvent() {
    Event e;
    RejectReason r = RejectReason::kNone;
    Field bad = kFieldUnknown;
    auto check = [&](RejectReason got, Field f) {
      if (r == RejectReason::kNone && got != RejectReason::kNone) {
        r = got;
        bad = f;
      }
    };

    // Kind.
    if (!Has(kFieldKind)) {
      check(RejectReason::kMissingField, kFieldKind);
    } else if (fields_[kFieldKind].type != Value::kStr) {
      check(RejectReason::kWrongType, kFieldKind);
    } else {
      std::string_view k = fields_[kFieldKind].str();
      if (k == "r") {
        e.kind = EventKind::kRequest;
      } else if (k == "g") {
        e.kind = EventKind::kGauge;
      } else {
        check(RejectReason::kUnknownKind, kFieldKind);
      }
    }
    check(CheckName(kFieldInstance), kFieldInstance);
    check(CheckName(kFieldModel), kFieldModel);

    // Time.
    if (r == RejectReason::kNone) {
      uint64_t t = 0;
      if (!Has(kFieldTime)) {
        check(RejectReason::kMissingField, kFieldTime);
      } else if (RejectReason tr = AsCount(fields_[kFieldTime], t); tr != RejectReason::kNone) {
        check(tr == RejectReason::kOutOfRange ? RejectReason::kTimestampOutOfRange : tr,
              kFieldTime);
      } else if (t == 0 || t > static_cast<uint64_t>(now_ms_ + d_.options_.max_future_skew_ms) ||
                 static_cast<int64_t>(t) < max_time_ - d_.options_.max_past_ms) {
        check(RejectReason::kTimestampOutOfRange, kFieldTime);
      } else {
        e.time_ms = static_cast<int64_t>(t);
      }
    }

    if (r == RejectReason::kNone && e.kind == EventKind::kRequest) {
      check(NonNegative(kFieldE2e, e.e2e_ms, kHasE2e, e, /*required=*/true), kFieldE2e);
      check(NonNegative(kFieldTtft, e.ttft_ms, kHasTtft, e, false), kFieldTtft);
      check(NonNegative(kFieldTpot, e.tpot_ms, kHasTpot, e, false), kFieldTpot);
      check(Tokens(kFieldPrompt, e.prompt_tokens, kHasPromptTokens, e), kFieldPrompt);
      check(Tokens(kFieldOutput, e.output_tokens, kHasOutputTokens, e), kFieldOutput);
      check(Tokens(kFieldCached, e.cached_tokens, kHasCachedTokens, e), kFieldCached);
      if (Has(kFieldErr)) {
        const Value& v = fields_[kFieldErr];
        if (v.type != Value::kStr) {
          check(RejectReason::kWrongType, kFieldErr);
        } else if (v.len > 0) {
          e.error = ParseErrorKind(v.str());
        }
      }
      check(NonNegative(kFieldCost, e.cost_usd, kHasCost, e, false), kFieldCost);
      RejectReason qr = NonNegative(kFieldQuality, e.quality, kHasQuality, e, false);
      if (qr == RejectReason::kNone && e.Has(kHasQuality) && e.quality > 1) {
        qr = RejectReason::kOutOfRange;
      }
      check(qr, kFieldQuality);
    } else if (r == RejectReason::kNone) {
      check(CheckName(kFieldName), kFieldName);
      if (!Has(kFieldValue)) {
        check(RejectReason::kMissingField, kFieldValue);
      } else {
        check(AsDouble(fields_[kFieldValue], e.value), kFieldValue);
      }
    }

    // Intern last, so that rejected events never take a slot of the Interner.
    if (r == RejectReason::kNone) {
      e.instance = d_.cache_.Intern(fields_[kFieldInstance].str());
      e.model = d_.cache_.Intern(fields_[kFieldModel].str());
      if (e.kind == EventKind::kGauge) e.metric = d_.cache_.Intern(fields_[kFieldName].str());
      if (e.instance == 0 || e.model == 0 || (e.kind == EventKind::kGauge && e.metric == 0)) {
        r = RejectReason::kCardinalityLimit;
      }
    }

    if (r != RejectReason::kNone) {
      RejectEvent(r, DescribeValue(bad), bad);
      return;
    }
    if (e.time_ms > max_time_) max_time_ = e.time_ms;
    batch_.events.push_back(e);
    ++accepted_;
  }

  // A short description of the offending value for the rejection detail.
  const char* DescribeValue(Field f) {
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
  const int64_t now_ms_;
  int64_t max_time_;
  const uint32_t string_limit_;

  Level level_ = kTop;
  bool in_key_ = false;
  int depth_ = 0;
  uint32_t skip_ = 0;
  RejectReason stop_reason_ = RejectReason::kNone;
  bool top_is_map_ = false;
  bool truncated_ = false;
  size_t parse_failed_at_ = 0;

  EnvField env_field_ = kEnvUnknown;
  std::array<Value, kNumEnvFields> env_{};
  uint32_t env_seen_ = 0;
  bool events_is_array_ = false;
  uint32_t events_declared_ = 0;
  StringId publisher_ = 0;

  Field field_ = kFieldUnknown;
  std::array<Value, kNumFields> fields_{};
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
      clock_(clock),
      metrics_(metrics != nullptr ? metrics : &own_metrics_),
      stage_(std::move(stage)) {
  const Labels stage_label = {{"stage", stage_}};
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
        "bad_envelope, unknown_version, batch_too_large, message_too_large, publisher_limit), "
        "events for the others.",
        {{"stage", stage_}, {"reason", std::string(RejectReasonName(reason))}});
  }
}

WireDecoder::~WireDecoder() = default;

Counter* WireDecoder::MakeCounter(std::string_view name, std::string_view help,
                                  const Labels& labels) {
  return metrics_->GetCounter(name, help, labels);
}

WireDecoder::PublisherState& WireDecoder::Publisher(StringId id) {
  auto [it, inserted] = publishers_.try_emplace(id);
  if (inserted) {
    const Labels labels = {{"stage", stage_}, {"publisher", std::string(interner_.Name(id))}};
    PublisherState& p = it->second;
    p.rejected = MakeCounter("inferscope_source_rejected_by_publisher_total",
                             "Events rejected, by publisher (valid envelopes only).", labels);
    p.gaps = MakeCounter("inferscope_source_sequence_gaps_total",
                         "Messages missing according to the publisher's sequence numbers.", labels);
    p.duplicates =
        MakeCounter("inferscope_source_duplicates_total", "Duplicate messages dropped.", labels);
    p.restarts =
        MakeCounter("inferscope_source_publisher_restarts_total",
                    "Publisher restarts (sequence number far behind the expected one).", labels);
  }
  return it->second;
}

void WireDecoder::RejectMessage(RejectReason reason, DecodeResult& result) {
  result.message_rejected = true;
  result.accepted = 0;
  result.rejected = 0;
  result.first_reason = reason;
  ++reason_counts_[static_cast<size_t>(reason)];
  reason_counters_[static_cast<size_t>(reason)]->Inc();
}

void WireDecoder::RecordBadFrames(size_t total_bytes) {
  ++messages_;
  messages_counter_->Inc();
  bytes_counter_->Inc(total_bytes);
  ++reason_counts_[static_cast<size_t>(RejectReason::kBadFrames)];
  reason_counters_[static_cast<size_t>(RejectReason::kBadFrames)]->Inc();
}

// flatten: GCC otherwise leaves msgpack-c's parser and the visitor calls out of line (2-3x slower).
// Not under AddressSanitizer, where flattening makes this one function take >10 minutes to compile.
#if defined(__SANITIZE_ADDRESS__)
#define INFERSCOPE_DECODE_FLATTEN
#else
#define INFERSCOPE_DECODE_FLATTEN __attribute__((flatten))
#endif
INFERSCOPE_DECODE_FLATTEN DecodeResult WireDecoder::Decode(std::string_view payload,
                                                           EventBatch& batch) {
  DecodeResult result;
  ++messages_;
  messages_counter_->Inc();
  bytes_counter_->Inc(payload.size());

  if (payload.size() > options_.max_message_bytes) {
    RejectMessage(RejectReason::kMessageTooLarge, result);
    SetDetail(result, "payload of %zu bytes exceeds max_message_bytes %zu", payload.size(),
              options_.max_message_bytes);
    return result;
  }

  const size_t start = batch.events.size();
  Walker walker(*this, batch, result, clock_.NowMs());
  size_t off = 0;
  bool parsed = false;
  try {
    parsed = msgpack::parse(payload.data(), payload.size(), off, walker);
  } catch (...) {  // msgpack-c throws on a few malformed ext headers and on bad_alloc
    parsed = false;
  }

  auto reject = [&](RejectReason reason) {
    batch.events.resize(start);
    result.first_reason = RejectReason::kNone;  // a message-level reason replaces event details
    RejectMessage(reason, result);
  };

  if (walker.stop_reason() == RejectReason::kBatchTooLarge) {
    reject(RejectReason::kBatchTooLarge);
    SetDetail(result, "%u events exceed max_events_per_message %u", walker.events_declared(),
              options_.max_events_per_message);
    return result;
  }
  if (walker.stop_reason() == RejectReason::kNotMsgpack) {
    reject(RejectReason::kNotMsgpack);
    SetDetail(result, "msgpack nested deeper than %d levels", kMaxDepth);
    return result;
  }
  if (!parsed || off != payload.size()) {
    reject(RejectReason::kNotMsgpack);
    if (!parsed) {
      SetDetail(result, "%s msgpack at byte %zu of %zu",
                walker.truncated() ? "truncated" : "invalid", walker.parse_failed_at(),
                payload.size());
    } else {
      SetDetail(result, "%zu trailing bytes after the msgpack value", payload.size() - off);
    }
    return result;
  }
  if (!walker.top_is_map()) {
    reject(RejectReason::kBadEnvelope);
    SetDetail(result, "payload is not a msgpack map");
    return result;
  }

  // Envelope.
  const Value* v = walker.env(kEnvVersion);
  if (v == nullptr || v->type != Value::kUint) {
    reject(RejectReason::kBadEnvelope);
    SetDetail(result, "\"v\" missing or not an unsigned integer");
    return result;
  }
  if (v->u != 1) {
    reject(RejectReason::kUnknownVersion);
    SetDetail(result, "protocol version %llu (this decoder reads 1)",
              static_cast<unsigned long long>(v->u));
    return result;
  }
  const Value* pub = walker.env(kEnvPub);
  if (pub == nullptr || pub->type != Value::kStr || pub->len == 0 || pub->len > 255) {
    reject(RejectReason::kBadEnvelope);
    SetDetail(result, "\"pub\" missing or not a string of 1..255 bytes");
    return result;
  }
  const Value* seq = walker.env(kEnvSeq);
  if (seq == nullptr || seq->type != Value::kUint) {
    reject(RejectReason::kBadEnvelope);
    SetDetail(result, "\"seq\" missing or not an unsigned integer");
    return result;
  }
  if (!walker.events_is_array()) {
    reject(RejectReason::kBadEnvelope);
    SetDetail(result, "\"events\" missing or not an array");
    return result;
  }
  const StringId publisher =
      walker.publisher() != 0 && interner_.Name(walker.publisher()) == pub->str()
          ? walker.publisher()
          : cache_.Intern(pub->str());
  if (publisher == 0) {
    reject(RejectReason::kPublisherLimit);
    SetDetail(result, "publisher id cannot be interned (interner full)");
    return result;
  }
  result.publisher = publisher;
  result.seq = seq->u;

  // Sequence.
  PublisherState& p = Publisher(publisher);
  const uint64_t s = seq->u;
  if (!p.tracking) {
    result.sequence = SequenceVerdict::kFirst;
  } else if (s == p.next_seq) {
    result.sequence = SequenceVerdict::kInOrder;
  } else if (s > p.next_seq) {
    result.sequence = SequenceVerdict::kGap;
    result.missing = s - p.next_seq;
  } else if (p.next_seq - s <= kDuplicateWindow) {
    result.sequence = SequenceVerdict::kDuplicate;
  } else {
    result.sequence = SequenceVerdict::kRestart;
  }

  if (result.sequence == SequenceVerdict::kDuplicate) {
    batch.events.resize(start);
    result.accepted = 0;
    result.rejected = 0;
    result.first_reason = RejectReason::kNone;
    ++duplicates_;
    p.duplicates->Inc();
    SetDetail(result, "duplicate seq %llu (expected %llu)", static_cast<unsigned long long>(s),
              static_cast<unsigned long long>(p.next_seq));
    return result;
  }
  if (result.sequence == SequenceVerdict::kGap) {
    gaps_ += result.missing;
    p.gaps->Inc(result.missing);
  } else if (result.sequence == SequenceVerdict::kRestart) {
    ++restarts_;
    p.restarts->Inc();
  }
  p.tracking = true;
  p.next_seq = s + 1;

  // Commit the events.
  const uint32_t accepted = walker.accepted();
  result.accepted = accepted;
  result.rejected = walker.rejected();
  for (size_t i = start; i < batch.events.size(); ++i) batch.events[i].publisher = publisher;
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
    p.rejected->Inc(result.rejected);
    const auto& reasons = walker.reasons();
    for (size_t i = 0; i < reasons.size(); ++i) {
      if (reasons[i] == 0) continue;
      reason_counts_[i] += reasons[i];
      reason_counters_[i]->Inc(reasons[i]);
    }
  }
  return result;
}

}  // namespace inferscope
