#include "sources/sequence_tracker.h"

#include <algorithm>

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
  } else if (strict_ || p->next_seq - seq <= kDuplicateWindow) {
    // Acknowledged mode: far behind is no restart (restarts change the incarnation), and applying
    // it would apply a message twice. A message a gap skipped is applied when it comes after all.
    j.verdict = p->IsMissing(seq) ? SequenceVerdict::kLate : SequenceVerdict::kDuplicate;
  } else {
    j.verdict = SequenceVerdict::kRestart;
  }
  return j;
}

void SequenceTracker::Stream::SetMissing(uint64_t seq, bool value) {
  if (!value && missing == 0) return;  // in order, none missing: the common case
  uint64_t& word = missing_bits[(seq % kDuplicateWindow) / 64];
  const uint64_t bit = uint64_t{1} << (seq % 64);
  if (((word & bit) != 0) == value) return;
  word ^= bit;
  if (value) {
    ++missing;
  } else {
    --missing;
  }
}

void SequenceTracker::Advance(StringId publisher, uint64_t incarnation, uint64_t seq) {
  const bool tracking = Find(publisher) != nullptr;
  Stream& p = Get(publisher);
  if (tracking && incarnation == p.incarnation && seq < p.next_seq &&
      p.next_seq - seq <= kDuplicateWindow) {
    p.SetMissing(seq, false);  // a late message: the position stays
    return;
  }
  if (tracking && incarnation == p.incarnation && seq >= p.next_seq) {
    // The ring's slots from next_seq to seq are reused: those skipped become missing (at most the
    // window's worth), seq's is applied.
    if (seq - p.next_seq >= kDuplicateWindow) p.ClearMissing();
    const uint64_t from =
        seq >= kDuplicateWindow ? std::max(p.next_seq, seq + 1 - kDuplicateWindow) : p.next_seq;
    for (uint64_t s = from; s < seq; ++s) p.SetMissing(s, true);
    p.SetMissing(seq, false);
  } else {
    p.ClearMissing();  // first message, a restart or a new incarnation
  }
  if (tracking && incarnation != p.incarnation) {
    p.has_prev = true;
    p.prev_incarnation = p.incarnation;
    p.prev_next_seq = p.next_seq;
  }
  p.incarnation = incarnation;
  p.next_seq = seq + 1;
}

uint32_t SequenceTracker::MissingInWindow(StringId publisher) const {
  const Stream* p = Find(publisher);
  return p == nullptr ? 0 : p->missing;
}

void SequenceTracker::Restore(StringId publisher, uint64_t next_seq) {
  Stream& p = Get(publisher);
  p.incarnation = 0;
  p.next_seq = next_seq;
  p.ClearMissing();
}

void SequenceTracker::Restore(StringId publisher, const AppliedSequence& applied) {
  Stream& p = Get(publisher);
  p.incarnation = applied.incarnation;
  p.next_seq = applied.seq + 1;
  p.has_prev = applied.has_prev;
  p.prev_incarnation = applied.prev_incarnation;
  p.prev_next_seq = applied.prev_seq + 1;
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
