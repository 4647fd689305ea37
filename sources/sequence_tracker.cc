#include "sources/sequence_tracker.h"

#include <algorithm>
#include <bit>

namespace inferscope {

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
    case SequenceVerdict::kStale:
      return "stale_incarnation";
    case SequenceVerdict::kLate:
      return "late";
  }
  return "none";
}

const SequenceTracker::Stream* SequenceTracker::Find(StringId publisher) const {
  if (publisher == last_publisher_ && last_stream_ != nullptr) return last_stream_;
  auto it = streams_.find(publisher);
  return it == streams_.end() ? nullptr : &it->second;
}

SequenceTracker::Stream& SequenceTracker::Get(StringId publisher) {
  if (publisher != last_publisher_ || last_stream_ == nullptr) {
    last_publisher_ = publisher;
    last_stream_ = &streams_[publisher];  // unordered_map never moves its elements
  }
  return *last_stream_;
}

SequenceTracker::Judgement SequenceTracker::Judge(StringId publisher, uint64_t incarnation,
                                                  uint64_t seq) const {
  Judgement j;
  const Stream* p = Find(publisher);
  if (p == nullptr) {
    // Acknowledged mode: a publisher the engine has never applied anything from starts at 0, so a
    // lost first message cannot be covered by a later cumulative ack.
    j.verdict = strict_ && seq != 0 ? SequenceVerdict::kGap : SequenceVerdict::kFirst;
    if (j.verdict == SequenceVerdict::kGap) j.missing = seq;
    return j;
  }
  j.expected = p->next_seq;
  j.current_incarnation = p->incarnation;
  if (incarnation != p->incarnation) {
    if (!strict_ || (incarnation > p->incarnation && seq == 0)) {
      j.verdict = SequenceVerdict::kRestart;  // a new incarnation starts a new sequence
    } else if (incarnation > p->incarnation) {
      j.verdict = SequenceVerdict::kGap;  // its first message (seq 0) is missing
      j.missing = seq;
    } else if (p->has_prev && incarnation == p->prev_incarnation && seq < p->prev_next_seq) {
      j.verdict = SequenceVerdict::kDuplicate;
    } else {
      j.verdict = SequenceVerdict::kStale;
    }
  } else if (seq == p->next_seq) {
    j.verdict = SequenceVerdict::kInOrder;
  } else if (seq > p->next_seq) {
    j.verdict = SequenceVerdict::kGap;
    j.missing = seq - p->next_seq;
  } else if (strict_) {
    // Far behind is no restart (restarts change the incarnation), and applying it would apply a
    // message twice.
    j.verdict = SequenceVerdict::kDuplicate;
  } else if (p->next_seq - seq <= kDuplicateWindow) {
    // A message a gap skipped is applied when it comes after all.
    j.verdict = p->IsMissing(seq) ? SequenceVerdict::kLate : SequenceVerdict::kDuplicate;
  } else {
    j.verdict = SequenceVerdict::kRestart;
  }
  return j;
}

void SequenceTracker::Stream::MarkMissing(uint64_t from, uint64_t to) {
  if (from >= to) return;
  if (missing_bits == nullptr) {
    missing_bits = std::make_unique<std::array<uint64_t, kDuplicateWindow / 64>>();
  }
  while (from < to) {
    const uint64_t bit = from % 64;
    const uint64_t n = std::min<uint64_t>(64 - bit, to - from);
    const uint64_t mask = (n == 64 ? ~uint64_t{0} : (uint64_t{1} << n) - 1) << bit;
    uint64_t& word = (*missing_bits)[(from % kDuplicateWindow) / 64];
    missing += static_cast<uint32_t>(std::popcount(mask & ~word));
    word |= mask;
    from += n;
  }
}

void SequenceTracker::Stream::Unmark(uint64_t seq) {
  if (missing == 0) return;  // in order, none missing: the common case
  uint64_t& word = (*missing_bits)[(seq % kDuplicateWindow) / 64];
  const uint64_t bit = uint64_t{1} << (seq % 64);
  if ((word & bit) == 0) return;
  word &= ~bit;
  --missing;
}

void SequenceTracker::Advance(StringId publisher, uint64_t incarnation, uint64_t seq) {
  const bool tracking = Find(publisher) != nullptr;
  Stream& p = Get(publisher);
  if (tracking && incarnation == p.incarnation && seq < p.next_seq &&
      p.next_seq - seq <= kDuplicateWindow) {
    p.Unmark(seq);  // a late message: the position stays
    return;
  }
  const uint64_t window_start = seq >= kDuplicateWindow ? seq + 1 - kDuplicateWindow : 0;
  if (tracking && incarnation == p.incarnation && seq >= p.next_seq) {
    // The ring's slots from next_seq to seq are reused: those skipped become missing (the
    // window's worth at most, none the incarnation had reached before), seq's is applied.
    if (seq - p.next_seq >= kDuplicateWindow) p.ClearMissing();
    p.MarkMissing(std::max({p.next_seq, window_start, p.reached}), seq);
    p.Unmark(seq);
  } else {
    // The first message, a restart or a new incarnation. A restart within the incarnation keeps
    // what it had reached.
    p.ClearMissing();
    if (!tracking || incarnation != p.incarnation) p.reached = 0;
    if (!tracking && late_before_first_) p.MarkMissing(window_start, seq);
  }
  if (tracking && incarnation != p.incarnation) {
    p.has_prev = true;
    p.prev_incarnation = p.incarnation;
    p.prev_next_seq = p.next_seq;
  }
  p.incarnation = incarnation;
  p.next_seq = seq + 1;
  p.reached = std::max(p.reached, p.next_seq);
}

uint32_t SequenceTracker::MissingInWindow(StringId publisher) const {
  const Stream* p = Find(publisher);
  return p == nullptr ? 0 : p->missing;
}

void SequenceTracker::Restore(StringId publisher, uint64_t next_seq) {
  Stream& p = Get(publisher);
  p.incarnation = 0;
  p.next_seq = next_seq;
  p.reached = next_seq;
  p.ClearMissing();
}

void SequenceTracker::Restore(StringId publisher, const AppliedSequence& applied) {
  Stream& p = Get(publisher);
  p.incarnation = applied.incarnation;
  p.next_seq = applied.seq + 1;
  p.has_prev = applied.has_prev;
  p.prev_incarnation = applied.prev_incarnation;
  p.prev_next_seq = applied.prev_seq + 1;
  p.reached = p.next_seq;
  p.ClearMissing();
}

std::optional<uint64_t> SequenceTracker::NextSequence(StringId publisher) const {
  const Stream* p = Find(publisher);
  if (p == nullptr) return std::nullopt;
  return p->next_seq;
}

std::optional<uint64_t> SequenceTracker::NextSequence(StringId publisher,
                                                      uint64_t incarnation) const {
  const Stream* p = Find(publisher);
  if (p == nullptr) return std::nullopt;
  if (incarnation == p->incarnation) return p->next_seq;
  if (incarnation > p->incarnation) return 0;
  return std::nullopt;
}

std::optional<uint64_t> SequenceTracker::CurrentIncarnation(StringId publisher) const {
  const Stream* p = Find(publisher);
  if (p == nullptr) return std::nullopt;
  return p->incarnation;
}

std::optional<AppliedSequence> SequenceTracker::Position(StringId publisher) const {
  const Stream* p = Find(publisher);
  if (p == nullptr) return std::nullopt;
  AppliedSequence a;
  a.publisher = publisher;
  a.incarnation = p->incarnation;
  a.seq = p->next_seq - 1;
  a.has_prev = p->has_prev;
  a.prev_incarnation = p->prev_incarnation;
  a.prev_seq = p->prev_next_seq - 1;
  return a;
}

}  // namespace inferscope
