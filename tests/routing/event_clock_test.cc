#include "routing/event_clock.h"

#include <gtest/gtest.h>

namespace inferscope::routing {
namespace {

TEST(EventClockTest, FollowsTheNewestEventTime) {
  EventClock c(10'000);
  EXPECT_EQ(c.now_ms(), INT64_MIN);
  EXPECT_EQ(c.Observe(1'000), 1'000);
  EXPECT_EQ(c.Observe(5'000), 5'000);
  EXPECT_EQ(c.Observe(3'000), 3'000);  // out of order: fed with its own time, now unchanged
  EXPECT_EQ(c.now_ms(), 5'000);
  EXPECT_EQ(c.Observe(15'000), 15'000);  // exactly at the skew: a normal advance
  EXPECT_EQ(c.now_ms(), 15'000);
  EXPECT_EQ(c.suspects(), 0u);
}

TEST(EventClockTest, OneFarFutureEventDoesNotMoveNowBeyondTheSkew) {
  EventClock c(10'000);
  c.Observe(100'000);
  // One event a day ahead: fed at now + skew, now does not move.
  EXPECT_EQ(c.Observe(100'000 + 86'400'000), 110'000);
  EXPECT_EQ(c.now_ms(), 100'000);
  EXPECT_EQ(c.suspects(), 1u);
  // The stream goes on normally; now follows it, never beyond now + skew of the real events.
  for (int64_t t = 100'100; t <= 160'000; t += 100) {
    EXPECT_EQ(c.Observe(t), t);
    EXPECT_LE(c.now_ms(), t);
  }
  EXPECT_EQ(c.now_ms(), 160'000);
  EXPECT_EQ(c.jumps(), 0u);
}

TEST(EventClockTest, ARealJumpIsFollowedAtItsSecondEvent) {
  EventClock c(10'000);
  c.Observe(0);
  EXPECT_EQ(c.Observe(60'000), 10'000);  // a quiet minute: the first event is a suspect
  EXPECT_EQ(c.now_ms(), 0);
  EXPECT_EQ(c.Observe(60'500), 60'500);  // the second confirms: now jumps to the smaller one
  EXPECT_EQ(c.now_ms(), 60'000);
  EXPECT_EQ(c.jumps(), 1u);
  EXPECT_EQ(c.Observe(61'000), 61'000);
  EXPECT_EQ(c.now_ms(), 61'000);
}

TEST(EventClockTest, AnOutlierPendingDoesNotWinALaterJump) {
  EventClock c(10'000);
  c.Observe(0);
  c.Observe(INT64_MAX / 2);  // a corrupt timestamp, pending
  EXPECT_EQ(c.now_ms(), 0);
  c.Observe(5'000);
  c.Observe(40'000);  // a real gap: confirms the jump, to the smaller of the two suspects
  EXPECT_EQ(c.now_ms(), 40'000);
}

TEST(EventClockTest, OneConfirmationIsTheUnguardedClock) {
  EventClock c(10'000, 1);
  c.Observe(0);
  EXPECT_EQ(c.Observe(1'000'000), 1'000'000);
  EXPECT_EQ(c.now_ms(), 1'000'000);
}

TEST(EventClockTest, NoOverflowNearTheEndOfTime) {
  EventClock c(10'000);
  c.Observe(INT64_MAX - 5);
  EXPECT_EQ(c.Observe(INT64_MAX), INT64_MAX);
  EXPECT_EQ(c.now_ms(), INT64_MAX);
}

}  // namespace
}  // namespace inferscope::routing
