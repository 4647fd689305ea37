#pragma once

// EventClock is the learner's "now" in event time, robust to one far-future timestamp.
//
// "Now" is the newest event time seen, except that an event more than `max_future_skew` ahead
// of it does not move it on its own: such an event is a suspect (a publisher with a wrong clock,
// a corrupt timestamp). It is fed at now + max_future_skew (Observe's return value), and it is
// counted. Only when `confirmations` suspects have been seen (the stream really jumped ahead:
// after a quiet gap, a replay that skips) does now move, to the smallest of them — so one
// outlier, however far ahead, never moves now beyond max_future_skew, and a real jump is
// followed at its second event. Events at or behind now + max_future_skew advance now as usual.
//
// Not thread-safe (the operator thread owns it). No clock is read.

#include <algorithm>
#include <cstdint>

namespace inferscope::routing {

class EventClock {
 public:
  // max_future_skew_ms >= 0; confirmations >= 1 (1: every event moves now, the old behaviour).
  explicit EventClock(int64_t max_future_skew_ms = 10'000, int confirmations = 2)
      : skew_ms_(std::max<int64_t>(0, max_future_skew_ms)),
        confirmations_(std::max(1, confirmations)) {}

  // Takes one event time; returns the time to feed the event with (its own, or now + skew for a
  // suspect that did not move now).
  int64_t Observe(int64_t t_ms) {
    if (now_ms_ == INT64_MIN) {
      now_ms_ = t_ms;
      return t_ms;
    }
    const int64_t limit = Limit();
    if (t_ms <= limit) {
      now_ms_ = std::max(now_ms_, t_ms);
      return t_ms;
    }
    ++suspects_total_;
    pending_min_ms_ = pending_ == 0 ? t_ms : std::min(pending_min_ms_, t_ms);
    if (++pending_ < confirmations_) return limit;
    now_ms_ = pending_min_ms_;
    pending_ = 0;
    ++jumps_;
    return std::min(t_ms, Limit());
  }

  // INT64_MIN before the first event.
  int64_t now_ms() const { return now_ms_; }
  int64_t max_future_skew_ms() const { return skew_ms_; }
  // Events that were ahead of now + skew when they came (fed clamped or moved now with others).
  uint64_t suspects() const { return suspects_total_; }
  // Times now moved by a confirmed jump.
  uint64_t jumps() const { return jumps_; }

  // Restores now (a checkpoint); pending suspects are forgotten.
  void Reset(int64_t now_ms) {
    now_ms_ = now_ms;
    pending_ = 0;
  }

 private:
  int64_t Limit() const { return now_ms_ > INT64_MAX - skew_ms_ ? INT64_MAX : now_ms_ + skew_ms_; }

  int64_t skew_ms_;
  int confirmations_;
  int64_t now_ms_ = INT64_MIN;
  int pending_ = 0;
  int64_t pending_min_ms_ = 0;
  uint64_t suspects_total_ = 0, jumps_ = 0;
};

}  // namespace inferscope::routing
