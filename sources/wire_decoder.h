#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "pipeline/clock.h"
#include "pipeline/event.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "pipeline/names.h"
#include "pipeline/status.h"
#include "sources/sequence_tracker.h"

namespace inferscope {

// Why a message or an event was rejected (docs/PROTOCOL.md lists them). The first group rejects a
// whole message (counted in messages); the second rejects one event (counted in events).
enum class RejectReason : uint8_t {
  kNone = 0,
  // Message-level.
  kBadFrames,        // not exactly 2 frames (counted by the transport via RecordBadFrames)
  kNotMsgpack,       // not exactly one well-formed msgpack value, or nested deeper than 32
  kBadEnvelope,      // not a map, or v/pub/seq/events missing or of the wrong type
  kUnknownVersion,   // "v" is not 1
  kBatchTooLarge,    // more than max_events_per_message events
  kMessageTooLarge,  // payload larger than max_message_bytes
  // A new publisher id beyond max_publishers, or one the Interner is too full to take.
  kPublisherLimit,
  // CurveZMQ: the sender's key may not use this publisher id (PublisherAuthorizer).
  kUnauthorizedPublisher,
  // Event-level.
  kMissingField,
  kWrongType,
  kUnknownKind,
  kNonFinite,
  kOutOfRange,
  kEmptyString,
  kStringTooLong,
  kTimestampOutOfRange,
  kCardinalityLimit,  // an instance/model/metric string could not be interned
  kInvalidUtf8,       // an instance/model/metric name or error kind is not well-formed UTF-8
};
inline constexpr int kNumRejectReasons = 19;  // including kNone

// "bad_frames", "not_msgpack", ..., "cardinality_limit"; "" for kNone.
std::string_view RejectReasonName(RejectReason reason);
// True for the reasons that reject a whole message.
bool IsMessageLevel(RejectReason reason);

// The outcome of decoding one message.
struct DecodeResult {
  uint32_t accepted = 0;  // events appended to the batch
  uint32_t rejected = 0;  // events rejected one by one (the rest of the message was kept)
  // A message-level reason: nothing was appended (first_reason says why).
  bool message_rejected = false;
  StringId publisher = 0;  // 0 when the envelope could not be read
  // publisher_limit: the refused "pub" (a view into the payload, valid as long as it is), so that
  // acknowledged mode can tell the sender; empty otherwise.
  std::string_view refused_publisher;
  uint64_t incarnation = 0;  // the envelope's "inc" (0 when absent)
  uint64_t seq = 0;
  SequenceVerdict sequence = SequenceVerdict::kNone;
  // The message's events were appended (it was not rejected, not a duplicate and, with
  // strict_sequence, not out of order).
  bool applied = false;
  // strict_sequence: the message was rejected as a whole for a reason that resending cannot change
  // (first_reason: batch_too_large, message_too_large, bad_envelope) but its publisher, incarnation
  // and sequence number were readable and in order: its sequence number is consumed as if it had
  // been applied (so later messages are not held behind it), and the publisher is told it is
  // refused for good.
  bool consumed = false;
  uint64_t missing = 0;  // kGap: number of messages missing before this one
  // The first reason anything in the message was rejected, with a human-readable detail for
  // (rate-limited) logging; kNone when everything was accepted.
  RejectReason first_reason = RejectReason::kNone;
  std::string_view detail() const { return {detail_buf.data(), detail_len}; }

  std::array<char, 160> detail_buf{};
  uint8_t detail_len = 0;
};

// Decides whether the sender of the message being decoded may publish under a publisher id (with
// CurveZMQ, by the sender's client key: see auth/curve.h). Decode asks it once per message whose
// envelope is valid, before the publisher id is interned or its sequence number looked at.
class PublisherAuthorizer {
 public:
  virtual ~PublisherAuthorizer() = default;
  virtual bool MayPublishAs(std::string_view publisher) const = 0;
};

struct WireDecoderOptions {
  // Acknowledged mode (docs/PROTOCOL.md §9): messages are numbered per publisher incarnation
  // ("inc"); the first message of a publisher or of a newer incarnation must have seq 0; a message
  // ahead of the expected sequence number (a gap) is not applied, since the publisher resends
  // everything unacknowledged in order; a message behind it is a duplicate, however far behind; a
  // message of an older incarnation is a duplicate when the previous incarnation had applied it,
  // else refused for good (kStale); a message rejected as a whole whose sequence number is in order
  // consumes it (DecodeResult::consumed). Default false: an incarnation change is a restart.
  bool strict_sequence = false;
  // Fire-and-forget only: a publisher's first message marks the numbers within the duplicate window
  // before it missing, so that they are applied if they come later (SequenceTracker). Set by the
  // jetstream source, which resumes after its checkpoint in the stream: a number not seen before
  // can only be a message stored late there. Default false.
  bool late_before_first = false;
  // Events later than now + max_future_skew_ms (processing time, from the Clock) are rejected.
  // Default 5 minutes; >= 0.
  int64_t max_future_skew_ms = 5 * 60 * 1000;
  // Events earlier than min(the latest accepted event time, now) - max_past_ms are rejected
  // (historical data moves the reference back; an event ahead of the clock does not move it
  // forward). Default 1 hour; > 0.
  int64_t max_past_ms = 60 * 60 * 1000;
  // At most this many events per message. Default 65536; 1..2^24.
  uint32_t max_events_per_message = 65536;
  // Longest instance/model/metric name in bytes. Default and maximum kMaxNameBytes (255,
  // pipeline/names.h: what the state store keeps); 1..kMaxNameBytes. (Names, the error kind and the
  // publisher id must also be well-formed UTF-8: see pipeline/utf8.h.)
  uint32_t max_string_bytes = kMaxNameBytes;
  // Largest payload in bytes. Default 16 MiB; 16..2^31.
  size_t max_message_bytes = size_t{16} << 20;
  // Publisher ids this decoder keeps state for (sequence position, per-publisher counters, the id
  // pinned in the Interner), for the process's life: a message (or a hello) from a new id beyond
  // it is rejected (publisher_limit) before anything is created for the id. Publishers restored
  // from a checkpoint are always taken and count. Default 4096; 1..1048576.
  uint32_t max_publishers = 4096;
  // New instance/model/metric names one publisher may add to the Interner (its share; names are
  // charged to the publisher whose event named them first, until reclaimed); beyond it an event
  // with a new name is rejected (cardinality_limit). 0 (the default): a quarter of the Interner's
  // max_strings. 0..2^22.
  size_t max_strings_per_publisher = 0;

  Status Validate() const;
};

// WireDecoder turns protocol-v1 payloads (docs/PROTOCOL.md) into Events, zero-copy: one pass over
// the bytes with a bounds-checked msgpack cursor (sources/msgpack_cursor.h) that knows this schema
// validates each event, interns its strings (a direct-mapped table of recent strings in front of an
// InternCache) and appends the accepted events to a batch; then the envelope is checked, the
// message's sequence number judged (SequenceTracker: gaps, duplicates, restarts, incarnations) and
// the events committed or taken back.
//
// It keeps the latest accepted event time (for max_past_ms) and the source metrics:
//   inferscope_source_messages_total{stage}             every message handed to Decode or
//                                                       RecordBadFrames
//   inferscope_source_bytes_total{stage}                their payload bytes
//   inferscope_source_events_total{stage}               events accepted
//   inferscope_source_rejected_total{stage,reason}      message-level reasons count messages,
//                                                       event-level reasons count events
//   inferscope_source_rejected_by_publisher_total{stage,publisher}  rejected events of publishers
//                                                       whose envelope was valid
//   inferscope_source_sequence_gaps_total{stage,publisher}          missing messages
//   inferscope_source_duplicates_total{stage,publisher}             dropped duplicate messages
//   inferscope_source_late_messages_total{stage,publisher}          messages a gap counted missing
//                                                       that came later (applied; fire-and-forget)
//   inferscope_source_publisher_restarts_total{stage,publisher}
//
// Performance: no allocation per message or per event in steady state (the batch's capacity is
// reused; the parser keeps no heap state); counters are added once per message; per-publisher
// counters are looked up once per publisher.
// Robustness: every read is bounds-checked, nesting is limited to 32 levels without recursion, so
// any byte string is decoded or rejected with a reason.
// Concurrency: not thread-safe; one decoder per source thread.
class WireDecoder {
 public:
  // Duplicates are recognised this far behind the expected sequence number; further back is a
  // publisher restart.
  static constexpr uint64_t kDuplicateWindow = SequenceTracker::kDuplicateWindow;

  // `interner`, `clock` and `metrics` (may be null: metrics are then kept privately) must outlive
  // the decoder. `options` must be valid (see Validate).
  WireDecoder(const WireDecoderOptions& options, Interner& interner, const Clock& clock,
              MetricsRegistry* metrics, std::string stage);
  ~WireDecoder();
  WireDecoder(const WireDecoder&) = delete;
  WireDecoder& operator=(const WireDecoder&) = delete;

  // Decodes one payload, appending its accepted events to `batch` (events already in the batch
  // are kept). Never fails and never throws: everything wrong is reported in the result and
  // counted. Sets batch.publisher to the publisher when the batch holds only its events, else to 0.
  // With an `authorizer`, a message whose publisher id it refuses is rejected
  // (unauthorized_publisher) without touching that publisher's state.
  DecodeResult Decode(std::string_view payload, EventBatch& batch,
                      const PublisherAuthorizer* authorizer = nullptr);

  // Forgets every publisher (admissions, sequence positions) and the totals below, as if
  // constructed anew with the same options, Interner, clock and metrics; the registered counters
  // keep counting and the caches of interned names stay (the Interner is the same). Costs far less
  // than a construction (two 4096-slot name caches and ~20 counter look-ups): for fuzzing and tests
  // that decode many independent inputs.
  void Reset();

  // Sets the sequence number expected next from `publisher` in incarnation 0 (tests).
  void RestoreSequence(StringId publisher, uint64_t next_seq);
  // Restores a publisher's position from a checkpoint record: `applied.seq + 1` is expected next
  // in `applied.incarnation`; the previous incarnation is kept for duplicate detection.
  void RestoreSequence(StringId publisher, const AppliedSequence& applied);
  // The sequence number expected next from `publisher` in its current incarnation; nullopt before
  // its first message.
  std::optional<uint64_t> NextSequence(StringId publisher) const;
  // The sequence number expected next from `publisher` in `incarnation`: the current one's next; 0
  // for a newer incarnation than the current one; nullopt for an older one (it is closed) and for
  // a publisher never heard of.
  std::optional<uint64_t> NextSequence(StringId publisher, uint64_t incarnation) const;
  // The publisher's current incarnation; nullopt before its first message.
  std::optional<uint64_t> CurrentIncarnation(StringId publisher) const;
  // The publisher's position (current incarnation, last consumed sequence number, previous
  // incarnation), as checkpointed; nullopt before its first message.
  std::optional<AppliedSequence> Position(StringId publisher) const;

  // Counts a transport message that did not have exactly 2 frames (reason bad_frames).
  void RecordBadFrames(size_t total_bytes);
  // Counts a transport message the source rejected itself (a hello with a publisher id its sender
  // may not use: unauthorized_publisher; a hello from a new id beyond max_publishers:
  // publisher_limit).
  void RecordRejectedMessage(RejectReason reason, size_t total_bytes);

  // The id of publisher `name` (well-formed: 1..kMaxNameBytes bytes of UTF-8), admitted now
  // (interned, pinned, counters made) if it is new and fewer than max_publishers are known; 0 when
  // refused (the table is full, or the Interner is). For a hello (acknowledged mode).
  StringId AdmitPublisher(std::string_view name);
  // Publishers this decoder keeps state for, and those with a sequence position (<= publishers()).
  size_t publishers() const { return publishers_.size(); }
  size_t sequence_positions() const { return sequences_.size(); }
  // The share of new Interner names each publisher may add (max_strings_per_publisher resolved).
  size_t string_share() const { return string_share_; }

  // Totals since construction, for tests and logging.
  uint64_t rejected_count(RejectReason reason) const {
    return reason_counts_[static_cast<size_t>(reason)];
  }
  uint64_t messages() const { return messages_; }
  uint64_t events() const { return events_; }
  uint64_t gaps() const { return gaps_; }
  uint64_t duplicates() const { return duplicates_; }
  uint64_t late() const { return late_; }
  uint64_t restarts() const { return restarts_; }
  uint64_t out_of_order() const { return out_of_order_; }
  // The latest accepted event time (0 before the first event).
  int64_t max_event_time_ms() const { return max_event_time_ms_; }

  const WireDecoderOptions& options() const { return options_; }

 private:
  class Walker;
  // A message's identity once its envelope passed every check.
  struct Envelope {
    StringId publisher = 0;
    uint64_t incarnation = 0;
    uint64_t seq = 0;
  };
  // Per-publisher counters (labelled with the publisher id), looked up once per publisher.
  struct PublisherCounters {
    Counter* messages = nullptr;  // valid envelopes (the status log's publisher activity)
    Counter* rejected = nullptr;
    Counter* gaps = nullptr;
    Counter* duplicates = nullptr;
    Counter* late = nullptr;
    Counter* restarts = nullptr;
    Counter* out_of_order = nullptr;
  };

  // A direct-mapped table of recently interned strings in front of cache_: instance, model and
  // metric names repeat from event to event, and a hit costs a cheap hash of the first and last
  // bytes plus one compare against the interned copy (whose bytes never move).
  struct RecentString {
    const char* data = nullptr;
    uint32_t len = 0;
    StringId id = 0;
  };
  static constexpr int kRecentBits = 12;

  // Interns an event's name, charging a new one to `owner`'s share (0: the publisher is not known
  // yet, "pub" follows the events).
  StringId InternRecent(const char* s, uint32_t len, StringId owner);
  // The id of publisher `name` if it is known, or interned (not yet admitted: Publisher() does
  // that) when there is room for one more; 0 when refused. Creates nothing for a refused id.
  StringId LookupPublisher(std::string_view name);
  // The publisher's counters; admits it on first sight: pins its id (sequence state and counters
  // are keyed by it for the process's life) and indexes its name.
  PublisherCounters& Publisher(StringId id);
  Counter* MakeCounter(std::string_view name, std::string_view help, const Labels& labels);
  void RejectMessage(RejectReason reason, DecodeResult& result);

  // The steps of Decode, in order. Each returns false once the message is settled (rejected,
  // dropped or held back), with `result` filled in and the batch back at `start` events.
  // Message-level verdicts of the walk: msgpack well-formedness, trailing bytes, batch size, and
  // whether the payload is a map.
  // `parsed`: what Walker::Parse returned.
  bool CheckWalk(const Walker& walker, bool parsed, std::string_view payload, EventBatch& batch,
                 size_t start, DecodeResult& result);
  // The envelope's fields (v, pub, seq, inc, events), the authorizer, and interning the
  // publisher id.
  bool CheckEnvelope(const Walker& walker, std::string_view payload, EventBatch& batch,
                     size_t start, const PublisherAuthorizer* authorizer, Envelope& envelope,
                     DecodeResult& result);
  // The sequence verdict: counts gaps, duplicates, late messages and restarts, and advances the
  // publisher's position when the message is to be applied.
  bool ApplySequence(const Envelope& envelope, EventBatch& batch, size_t start,
                     DecodeResult& result);
  // Commits the events the walk appended: publisher stamps, batch.publisher, counters.
  void CommitEvents(const Walker& walker, const Envelope& envelope, EventBatch& batch, size_t start,
                    DecodeResult& result);
  // Takes back what the walk appended and rejects the message for `reason`.
  void RejectDecoded(RejectReason reason, EventBatch& batch, size_t start, DecodeResult& result);
  // strict_sequence: a message rejected as a whole for `reason` (already counted): when its
  // envelope names a publisher and an in-order sequence number, consumes it.
  void ConsumeRejected(std::string_view payload, EventBatch& batch, DecodeResult& result);

  const WireDecoderOptions options_;
  Interner& interner_;
  InternCache cache_;
  std::unique_ptr<RecentString[]> recent_;  // 1 << kRecentBits slots
  const Clock& clock_;
  MetricsRegistry* const metrics_;
  const std::string stage_;
  MetricsRegistry own_metrics_;  // used when `metrics` is null

  Counter* messages_counter_;
  Counter* events_counter_;
  Counter* bytes_counter_;
  std::array<Counter*, kNumRejectReasons> reason_counters_{};

  SequenceTracker sequences_;
  std::unordered_map<StringId, PublisherCounters> publishers_;  // at most max_publishers + restored
  // The admitted publishers by name (views into the Interner's copies, which pinning keeps).
  std::unordered_map<std::string_view, StringId> publisher_ids_;
  Gauge* publishers_gauge_ = nullptr;
  size_t string_share_ = 0;
  // The publisher of the previous message and its counters (publishers_ never erases, so the
  // pointer stays valid): most messages come from the same publisher as the one before.
  StringId last_publisher_ = 0;
  PublisherCounters* last_publisher_counters_ = nullptr;
  std::array<uint64_t, kNumRejectReasons> reason_counts_{};
  uint64_t messages_ = 0;
  uint64_t events_ = 0;
  uint64_t gaps_ = 0;
  uint64_t duplicates_ = 0;
  uint64_t late_ = 0;
  uint64_t restarts_ = 0;
  uint64_t out_of_order_ = 0;
  int64_t max_event_time_ms_ = 0;
};

}  // namespace inferscope
