#include "sources/sequence_tracker.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace inferscope {
namespace {

constexpr StringId kPub = 7;
constexpr StringId kOther = 8;

// Judges a message and, when it is applied (first, in order, gap or restart in fire-and-forget
// mode; not a strict gap or stale), advances past it, as the decoder does.
SequenceVerdict Apply(SequenceTracker& t, uint64_t inc, uint64_t seq, StringId pub = kPub) {
  const SequenceTracker::Judgement j = t.Judge(pub, inc, seq);
  const bool applied =
      j.verdict == SequenceVerdict::kFirst || j.verdict == SequenceVerdict::kInOrder ||
      j.verdict == SequenceVerdict::kRestart || j.verdict == SequenceVerdict::kLate ||
      (!t.strict() && j.verdict == SequenceVerdict::kGap);
  if (applied) t.Advance(pub, inc, seq);
  return j.verdict;
}

TEST(SequenceTrackerTest, FireAndForgetVerdicts) {
  SequenceTracker t(/*strict=*/false);
  EXPECT_FALSE(t.NextSequence(kPub).has_value());
  EXPECT_EQ(Apply(t, 0, 100), SequenceVerdict::kFirst);  // any first number
  EXPECT_EQ(t.NextSequence(kPub), 101u);
  EXPECT_EQ(Apply(t, 0, 101), SequenceVerdict::kInOrder);
  const SequenceTracker::Judgement gap = t.Judge(kPub, 0, 105);
  EXPECT_EQ(gap.verdict, SequenceVerdict::kGap);
  EXPECT_EQ(gap.missing, 3u);  // 102, 103, 104
  EXPECT_EQ(gap.expected, 102u);
  EXPECT_EQ(Apply(t, 0, 105), SequenceVerdict::kGap);
  EXPECT_EQ(t.NextSequence(kPub), 106u);
  EXPECT_EQ(Apply(t, 0, 105), SequenceVerdict::kDuplicate);
  EXPECT_EQ(Apply(t, 0, 101), SequenceVerdict::kDuplicate);
  EXPECT_EQ(t.NextSequence(kPub), 106u);  // a duplicate does not move anything
  // Publishers are tracked apart.
  EXPECT_EQ(Apply(t, 0, 0, kOther), SequenceVerdict::kFirst);
  EXPECT_EQ(t.NextSequence(kPub), 106u);
  EXPECT_EQ(t.NextSequence(kOther), 1u);
}

TEST(SequenceTrackerTest, DuplicateWindowThenRestart) {
  SequenceTracker t(false);
  const uint64_t next = 5000;
  t.Restore(kPub, next);
  const uint64_t w = SequenceTracker::kDuplicateWindow;
  EXPECT_EQ(t.Judge(kPub, 0, next - 1).verdict, SequenceVerdict::kDuplicate);
  EXPECT_EQ(t.Judge(kPub, 0, next - w).verdict, SequenceVerdict::kDuplicate);
  EXPECT_EQ(t.Judge(kPub, 0, next - w - 1).verdict, SequenceVerdict::kRestart);
  EXPECT_EQ(Apply(t, 0, 0), SequenceVerdict::kRestart);
  EXPECT_EQ(t.NextSequence(kPub), 1u);
}

// A message the gap counted missing that comes after all (a JetStream resend stored after newer
// messages) is applied once; a second copy of it is a duplicate. The position does not move back.
TEST(SequenceTrackerTest, AMessageAGapSkippedIsAppliedOnceWhenItComesLate) {
  SequenceTracker t(false);
  EXPECT_EQ(Apply(t, 0, 10), SequenceVerdict::kFirst);
  EXPECT_EQ(Apply(t, 0, 14), SequenceVerdict::kGap);  // 11, 12, 13 missing
  EXPECT_EQ(t.MissingInWindow(kPub), 3u);
  EXPECT_EQ(Apply(t, 0, 12), SequenceVerdict::kLate);
  EXPECT_EQ(t.NextSequence(kPub), 15u);
  EXPECT_EQ(t.MissingInWindow(kPub), 2u);
  EXPECT_EQ(Apply(t, 0, 12), SequenceVerdict::kDuplicate);  // applied already
  EXPECT_EQ(Apply(t, 0, 10), SequenceVerdict::kDuplicate);  // never missing
  EXPECT_EQ(Apply(t, 0, 15), SequenceVerdict::kInOrder);
  EXPECT_EQ(Apply(t, 0, 11), SequenceVerdict::kLate);
  EXPECT_EQ(Apply(t, 0, 13), SequenceVerdict::kLate);
  EXPECT_EQ(t.MissingInWindow(kPub), 0u);
  EXPECT_EQ(Apply(t, 0, 13), SequenceVerdict::kDuplicate);
  EXPECT_EQ(t.NextSequence(kPub), 16u);
  // Acknowledged mode holds gaps back (never applied), so nothing there is ever late.
  SequenceTracker strict(true);
  EXPECT_EQ(Apply(strict, 0, 0), SequenceVerdict::kFirst);
  EXPECT_EQ(Apply(strict, 0, 3), SequenceVerdict::kGap);
  EXPECT_EQ(Apply(strict, 0, 2), SequenceVerdict::kGap);
  EXPECT_EQ(Apply(strict, 0, 0), SequenceVerdict::kDuplicate);
}

// The missing messages are remembered within kDuplicateWindow of the position: one that falls out
// of it is forgotten (far behind is a restart), as is everything at a restart, a new incarnation
// or a restored position.
TEST(SequenceTrackerTest, MissingMessagesAreForgottenOutsideTheWindowAndAtARestart) {
  const uint64_t w = SequenceTracker::kDuplicateWindow;
  SequenceTracker t(false);
  EXPECT_EQ(Apply(t, 0, 0), SequenceVerdict::kFirst);
  EXPECT_EQ(Apply(t, 0, 2), SequenceVerdict::kGap);  // 1 missing
  for (uint64_t s = 3; s < w + 1; ++s) ASSERT_EQ(Apply(t, 0, s), SequenceVerdict::kInOrder) << s;
  EXPECT_EQ(t.Judge(kPub, 0, 1).verdict, SequenceVerdict::kLate);  // w behind: the window's edge
  EXPECT_EQ(Apply(t, 0, w + 1), SequenceVerdict::kInOrder);
  EXPECT_EQ(t.MissingInWindow(kPub), 0u);
  EXPECT_EQ(t.Judge(kPub, 0, 1).verdict, SequenceVerdict::kRestart);

  // A gap wider than the window: its newest w - 1 messages are missing.
  EXPECT_EQ(Apply(t, 0, w + 1 + 3 * w), SequenceVerdict::kGap);
  EXPECT_EQ(t.MissingInWindow(kPub), w - 1);
  EXPECT_EQ(t.Judge(kPub, 0, 3 * w + 2).verdict, SequenceVerdict::kLate);
  EXPECT_EQ(t.Judge(kPub, 0, 4 * w).verdict, SequenceVerdict::kLate);
  EXPECT_EQ(t.Judge(kPub, 0, 3 * w + 1).verdict, SequenceVerdict::kRestart);

  // A gap right after the first message, near 0 (no wrap below zero).
  SequenceTracker low(false);
  EXPECT_EQ(Apply(low, 0, 0), SequenceVerdict::kFirst);
  EXPECT_EQ(Apply(low, 0, 5), SequenceVerdict::kGap);
  EXPECT_EQ(low.MissingInWindow(kPub), 4u);
  EXPECT_EQ(Apply(low, 0, 4), SequenceVerdict::kLate);

  EXPECT_EQ(Apply(low, 1, 7), SequenceVerdict::kRestart);  // a new incarnation
  EXPECT_EQ(low.MissingInWindow(kPub), 0u);
  EXPECT_EQ(Apply(low, 1, 9), SequenceVerdict::kGap);
  EXPECT_EQ(low.MissingInWindow(kPub), 1u);
  low.Restore(kPub, *low.Position(kPub));
  EXPECT_EQ(low.MissingInWindow(kPub), 0u);
  EXPECT_EQ(low.Judge(kPub, 1, 8).verdict, SequenceVerdict::kDuplicate);
}

// After a far-behind restart moves the position back, a gap never marks the numbers the
// incarnation had reached before missing: they may have been applied (2000 here).
TEST(SequenceTrackerTest, AGapAfterARestartDoesNotReopenNumbersAppliedBeforeIt) {
  SequenceTracker t(false);
  EXPECT_EQ(Apply(t, 0, 2000), SequenceVerdict::kFirst);
  EXPECT_EQ(Apply(t, 0, 0), SequenceVerdict::kRestart);
  EXPECT_EQ(Apply(t, 0, 2003), SequenceVerdict::kGap);
  EXPECT_EQ(t.MissingInWindow(kPub), 2u);  // 2001 and 2002 only
  EXPECT_EQ(Apply(t, 0, 2000), SequenceVerdict::kDuplicate);
  EXPECT_EQ(Apply(t, 0, 1990), SequenceVerdict::kDuplicate);
  EXPECT_EQ(Apply(t, 0, 2002), SequenceVerdict::kLate);
  // A new incarnation numbers afresh: its gaps mark anything.
  EXPECT_EQ(Apply(t, 1, 0), SequenceVerdict::kRestart);
  EXPECT_EQ(Apply(t, 1, 3), SequenceVerdict::kGap);
  EXPECT_EQ(Apply(t, 1, 1), SequenceVerdict::kLate);
}

// late_before_first (the JetStream source): the first message seen of a publisher marks the window
// before it missing, so a message stored late before a restart's resume point is applied after
// the restart as it would have been without one.
TEST(SequenceTrackerTest, LateBeforeFirstMarksTheWindowBeforeTheFirstMessageMissing) {
  const uint64_t w = SequenceTracker::kDuplicateWindow;
  SequenceTracker t(false, /*late_before_first=*/true);
  EXPECT_EQ(Apply(t, 0, 4), SequenceVerdict::kFirst);
  EXPECT_EQ(t.MissingInWindow(kPub), 4u);
  EXPECT_EQ(Apply(t, 0, 2), SequenceVerdict::kLate);
  EXPECT_EQ(Apply(t, 0, 2), SequenceVerdict::kDuplicate);
  EXPECT_EQ(Apply(t, 0, 5000), SequenceVerdict::kGap);
  EXPECT_EQ(Apply(t, 0, 5001 - w), SequenceVerdict::kLate);  // the window's oldest
  EXPECT_EQ(t.Judge(kPub, 0, 5000 - w).verdict, SequenceVerdict::kRestart);
  EXPECT_EQ(Apply(t, 0, 20000, kOther), SequenceVerdict::kFirst);
  EXPECT_EQ(t.MissingInWindow(kOther), w - 1);
  // Not in acknowledged mode.
  SequenceTracker strict(true, /*late_before_first=*/true);
  EXPECT_EQ(Apply(strict, 0, 0), SequenceVerdict::kFirst);
  EXPECT_EQ(Apply(strict, 1, 0), SequenceVerdict::kRestart);
  EXPECT_EQ(strict.MissingInWindow(kPub), 0u);
}

TEST(SequenceTrackerTest, FireAndForgetIncarnationChangeIsARestart) {
  SequenceTracker t(false);
  EXPECT_EQ(Apply(t, 1, 10), SequenceVerdict::kFirst);
  EXPECT_EQ(Apply(t, 2, 50), SequenceVerdict::kRestart);  // any number in the new incarnation
  EXPECT_EQ(t.CurrentIncarnation(kPub), 2u);
  EXPECT_EQ(Apply(t, 1, 11), SequenceVerdict::kRestart);  // even an older one
  EXPECT_EQ(t.CurrentIncarnation(kPub), 1u);
}

TEST(SequenceTrackerTest, StrictStartsAtZeroAndHoldsGapsBack) {
  SequenceTracker t(/*strict=*/true);
  const SequenceTracker::Judgement late_first = t.Judge(kPub, 0, 3);
  EXPECT_EQ(late_first.verdict, SequenceVerdict::kGap);  // 0..2 lost before the first
  EXPECT_EQ(late_first.missing, 3u);
  EXPECT_EQ(Apply(t, 0, 3), SequenceVerdict::kGap);
  EXPECT_FALSE(t.NextSequence(kPub).has_value());  // a strict gap is not applied
  EXPECT_EQ(Apply(t, 0, 0), SequenceVerdict::kFirst);
  EXPECT_EQ(Apply(t, 0, 1), SequenceVerdict::kInOrder);
  EXPECT_EQ(Apply(t, 0, 3), SequenceVerdict::kGap);
  EXPECT_EQ(t.NextSequence(kPub), 2u);
  // Behind is a duplicate however far: applying it would apply it twice.
  t.Restore(kPub, 1'000'000);
  EXPECT_EQ(t.Judge(kPub, 0, 0).verdict, SequenceVerdict::kDuplicate);
}

TEST(SequenceTrackerTest, StrictIncarnations) {
  SequenceTracker t(true);
  AppliedSequence applied;
  applied.incarnation = 5;
  applied.seq = 499;  // incarnation 5 applied 0..499
  t.Restore(kPub, applied);
  EXPECT_EQ(t.NextSequence(kPub, 5), 500u);
  EXPECT_EQ(t.NextSequence(kPub, 9), 0u);  // a newer incarnation starts at 0
  EXPECT_FALSE(t.NextSequence(kPub, 4).has_value());

  // A newer incarnation must start at 0.
  const SequenceTracker::Judgement missing_zero = t.Judge(kPub, 9, 2);
  EXPECT_EQ(missing_zero.verdict, SequenceVerdict::kGap);
  EXPECT_EQ(missing_zero.missing, 2u);
  EXPECT_EQ(Apply(t, 9, 0), SequenceVerdict::kRestart);
  EXPECT_EQ(Apply(t, 9, 1), SequenceVerdict::kInOrder);
  EXPECT_FALSE(t.NextSequence(kPub, 5).has_value());  // closed now

  // The previous incarnation: duplicates up to what it applied, stale after; older ones stale.
  EXPECT_EQ(t.Judge(kPub, 5, 499).verdict, SequenceVerdict::kDuplicate);
  EXPECT_EQ(t.Judge(kPub, 5, 0).verdict, SequenceVerdict::kDuplicate);
  const SequenceTracker::Judgement stale = t.Judge(kPub, 5, 500);
  EXPECT_EQ(stale.verdict, SequenceVerdict::kStale);
  EXPECT_EQ(stale.current_incarnation, 9u);
  EXPECT_EQ(t.Judge(kPub, 3, 0).verdict, SequenceVerdict::kStale);

  const std::optional<AppliedSequence> position = t.Position(kPub);
  ASSERT_TRUE(position.has_value());
  EXPECT_EQ(position->publisher, kPub);
  EXPECT_EQ(position->incarnation, 9u);
  EXPECT_EQ(position->seq, 1u);
  EXPECT_TRUE(position->has_prev);
  EXPECT_EQ(position->prev_incarnation, 5u);
  EXPECT_EQ(position->prev_seq, 499u);

  // A tracker restored from that position judges alike.
  SequenceTracker again(true);
  again.Restore(kPub, *position);
  EXPECT_EQ(again.Judge(kPub, 5, 10).verdict, SequenceVerdict::kDuplicate);
  EXPECT_EQ(again.Judge(kPub, 9, 1).verdict, SequenceVerdict::kDuplicate);
  EXPECT_EQ(again.Judge(kPub, 9, 2).verdict, SequenceVerdict::kInOrder);
}

TEST(SequenceTrackerTest, JudgeChangesNothing) {
  SequenceTracker t(true);
  EXPECT_EQ(t.Judge(kPub, 0, 0).verdict, SequenceVerdict::kFirst);
  EXPECT_EQ(t.Judge(kPub, 0, 0).verdict, SequenceVerdict::kFirst);
  EXPECT_FALSE(t.Position(kPub).has_value());
  EXPECT_FALSE(t.CurrentIncarnation(kPub).has_value());
  t.Advance(kPub, 0, 0);
  EXPECT_EQ(t.Judge(kPub, 0, 0).verdict, SequenceVerdict::kDuplicate);
  EXPECT_EQ(t.Judge(kPub, 0, 1).verdict, SequenceVerdict::kInOrder);
}

TEST(SequenceTrackerTest, VerdictNames) {
  EXPECT_EQ(SequenceVerdictName(SequenceVerdict::kFirst), "first");
  EXPECT_EQ(SequenceVerdictName(SequenceVerdict::kInOrder), "in_order");
  EXPECT_EQ(SequenceVerdictName(SequenceVerdict::kGap), "gap");
  EXPECT_EQ(SequenceVerdictName(SequenceVerdict::kDuplicate), "duplicate");
  EXPECT_EQ(SequenceVerdictName(SequenceVerdict::kRestart), "restart");
  EXPECT_EQ(SequenceVerdictName(SequenceVerdict::kStale), "stale_incarnation");
  EXPECT_EQ(SequenceVerdictName(SequenceVerdict::kLate), "late");
}

}  // namespace
}  // namespace inferscope
