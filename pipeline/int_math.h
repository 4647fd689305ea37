#pragma once

#include <cstdint>
#include <limits>

namespace inferscope {

// Integer helpers shared by the window operators, the state store, the query node and the value
// encodings. Header-only and inline: FloorDiv runs per event in window_aggregate's hot path.

// a / b rounded towards negative infinity (C++ division truncates towards zero), so that times
// before the epoch fall into the pane, bucket or window that contains them. b != 0.
constexpr int64_t FloorDiv(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

// a + b, clamped to the int64 range instead of overflowing (undefined behaviour): for sums of
// configured durations that are checked against a bound, so that huge values are refused rather
// than wrapped into small ones.
constexpr int64_t SaturatingAdd(int64_t a, int64_t b) {
  int64_t sum = 0;
  if (!__builtin_add_overflow(a, b, &sum)) return sum;
  return b > 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
}

// The zigzag mapping of signed onto unsigned integers (0, -1, 1, -2, ... → 0, 1, 2, 3, ...), so
// that small magnitudes of either sign make short varints. UnZigZag(ZigZag(v)) == v for every v.
constexpr uint64_t ZigZag(int64_t v) {
  return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
}
constexpr int64_t UnZigZag(uint64_t v) {
  return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1);
}

}  // namespace inferscope
