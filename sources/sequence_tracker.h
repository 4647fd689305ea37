#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <unordered_map>

#include "pipeline/event.h"
#include "pipeline/interner.h"

namespace inferscope {

// What the sequence number of a message says about its publisher's stream.
enum class SequenceVerdict : uint8_t {
  kNone = 0,   // the message was rejected before its sequence number was looked at
  kFirst,      // first message seen from this publisher: tracking starts here
  kInOrder,    // seq == expected
  kGap,        // seq > expected: `missing` messages were lost
  kDuplicate,  // expected - 1024 <= seq < expected, not counted missing: the message was dropped
  kRestart,    // seq < expected - 1024, or a new incarnation: the publisher restarted; accepted,
               // tracking reset
  // strict: the message's incarnation is older than the publisher's current one, and it is not a
  // duplicate of what that incarnation had applied: refused for good, not applied.
  kStale,
  // fire-and-forget: expected - 1024 <= seq < expected and a gap counted this message missing: it
  // arrived after newer ones (a JetStream resend stored after them); applied, once.
  kLate,
};
// "none", "first", "in_order", "gap", "duplicate", "restart", "stale_incarnation", "late".
std::string_view SequenceVerdictName(SequenceVerdict verdict);

// SequenceTracker keeps where each publisher's message stream stands — its incarnation, the
// sequence number expected next, and the incarnation before it — and judges the sequence number of
// each new message against it (docs/PROTOCOL.md §4 and, strict, §9).
//
// Fire-and-forget (strict = false): the first message starts tracking at any number; a number
// ahead of the expected one is a gap (accepted, the messages in between counted missing); up to
// kDuplicateWindow behind is late if a gap counted it missing (applied, once: a message stored
// after newer ones, such as a JetStream publisher's resend after a lost acknowledgement), else a
// duplicate (dropped); further behind, or another incarnation, is a publisher restart (accepted,
// tracking starts again, the missing ones forgotten).
// Acknowledged mode (strict = true): messages count from 0 within each incarnation; ahead of the
// expected number is a gap that is not applied (the publisher resends in order); behind it is a
// duplicate however far; a newer incarnation restarts at 0; an older one is a duplicate of what the
// previous incarnation had applied, else stale (refused for good).
//
// A number is marked missing only once: never below the highest position the incarnation had
// reached (after a far-behind restart, the numbers up to it may have been applied).
//
// late_before_first (fire-and-forget, for a source that resumes after its checkpoint in a log,
// the JetStream source): a publisher's first message marks the kDuplicateWindow numbers before it
// missing. There, a number behind the first one seen that was not delivered before it can only be
// a message stored late — messages before the checkpoint are never delivered again — so the run
// after a restart applies the same messages as a run without one. (A second copy of one message
// stored in the log, which the stream's Nats-Msg-Id deduplication prevents within its window,
// would be applied again across a restart either way.)
//
// Judge only looks; Advance moves a publisher past a message once the caller applied (or
// consumed) it, so a rejected message leaves no trace. Positions are checkpointed as
// AppliedSequence and restored with Restore; the missing numbers are not (a restored publisher has
// none): over ZeroMQ a lost message never comes later, and the JetStream source restores no
// publisher positions (late_before_first covers them).
// Concurrency: not thread-safe; owned by one decoder.
class SequenceTracker {
 public:
  // Duplicates are recognised this far behind the expected sequence number (fire-and-forget);
  // further back is a publisher restart.
  static constexpr uint64_t kDuplicateWindow = 1024;

  struct Judgement {
    SequenceVerdict verdict = SequenceVerdict::kNone;
    uint64_t missing = 0;  // kGap: messages missing before this one
    // The publisher's position before this message (0 before its first message): for details.
    uint64_t expected = 0;
    uint64_t current_incarnation = 0;
  };

  explicit SequenceTracker(bool strict, bool late_before_first = false)
      : strict_(strict), late_before_first_(!strict && late_before_first) {}

  // The verdict on message `seq` of `incarnation` from `publisher`. Changes nothing.
  Judgement Judge(StringId publisher, uint64_t incarnation, uint64_t seq) const;
  // Moves the publisher's position past `seq` of `incarnation` (a message applied or consumed),
  // recording the messages it skips as missing; a late one (kLate) is no longer missing and the
  // position stays. A new incarnation keeps the current one as the previous (for duplicates,
  // strict).
  void Advance(StringId publisher, uint64_t incarnation, uint64_t seq);

  // Sets the sequence number expected next from `publisher` in incarnation 0, none missing (tests).
  void Restore(StringId publisher, uint64_t next_seq);
  // Restores a publisher's position from a checkpoint record: `applied.seq + 1` is expected next
  // in `applied.incarnation`, none missing; the previous incarnation is kept for duplicate
  // detection.
  void Restore(StringId publisher, const AppliedSequence& applied);

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

  // Forgets every publisher's position, as if constructed anew.
  void Clear() {
    streams_.clear();
    last_publisher_ = 0;
    last_stream_ = nullptr;
  }

  bool strict() const { return strict_; }
  // Publishers with a position.
  size_t size() const { return streams_.size(); }
  // The messages of `publisher` counted missing within kDuplicateWindow of its position (a late
  // one arriving is applied).
  uint32_t MissingInWindow(StringId publisher) const;

 private:
  struct Stream {
    uint64_t incarnation = 0;
    uint64_t next_seq = 0;
    // The incarnation before the current one and the sequence number it expected next (>= 1).
    bool has_prev = false;
    uint64_t prev_incarnation = 0;
    uint64_t prev_next_seq = 0;
    // The highest next_seq of the incarnation: numbers below it are never marked missing.
    uint64_t reached = 0;
    // The numbers counted missing among the kDuplicateWindow before next_seq (fire-and-forget):
    // bit (s % kDuplicateWindow) for sequence number s, `missing` of them set. Allocated at the
    // publisher's first gap (most never have one; acknowledged mode never).
    uint32_t missing = 0;
    std::unique_ptr<std::array<uint64_t, kDuplicateWindow / 64>> missing_bits;

    bool IsMissing(uint64_t seq) const {
      return missing > 0 && ((*missing_bits)[(seq % kDuplicateWindow) / 64] >> (seq % 64) & 1) != 0;
    }
    // Marks [from, to) missing (to - from <= kDuplicateWindow), with whole words.
    void MarkMissing(uint64_t from, uint64_t to);
    void Unmark(uint64_t seq);
    void ClearMissing() {
      if (missing == 0) return;
      missing_bits->fill(0);
      missing = 0;
    }
  };

  const Stream* Find(StringId publisher) const;
  Stream& Get(StringId publisher);

  const bool strict_;
  const bool late_before_first_;
  // Entries are never erased (publisher ids are pinned by the decoder), so pointers stay valid.
  std::unordered_map<StringId, Stream> streams_;
  // The publisher of the previous Advance and its entry: most messages come from the same
  // publisher as the one before.
  StringId last_publisher_ = 0;
  Stream* last_stream_ = nullptr;
};

}  // namespace inferscope
