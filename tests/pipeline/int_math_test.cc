#include "pipeline/int_math.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>

namespace inferscope {
namespace {

constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

TEST(IntMathTest, FloorDivRoundsTowardsNegativeInfinity) {
  EXPECT_EQ(FloorDiv(7, 2), 3);
  EXPECT_EQ(FloorDiv(6, 2), 3);
  EXPECT_EQ(FloorDiv(0, 10'000), 0);
  EXPECT_EQ(FloorDiv(-1, 10'000), -1);  // the pane [-10 s, 0) holds -1 ms
  EXPECT_EQ(FloorDiv(-10'000, 10'000), -1);
  EXPECT_EQ(FloorDiv(-10'001, 10'000), -2);
  EXPECT_EQ(FloorDiv(-7, -2), 3);
  EXPECT_EQ(FloorDiv(7, -2), -4);
  EXPECT_EQ(FloorDiv(kMax, 1), kMax);
  EXPECT_EQ(FloorDiv(kMin, 1), kMin);
  EXPECT_EQ(FloorDiv(kMin + 1, 1000), (kMin + 1) / 1000 - 1);
}

TEST(IntMathTest, FloorDivTimesDivisorIsTheAlignedStart) {
  for (int64_t b : {1, 3, 1000, 10'000, 3'600'000}) {
    for (int64_t a = -25'000; a <= 25'000; a += 997) {
      const int64_t start = FloorDiv(a, b) * b;
      EXPECT_LE(start, a) << a << " / " << b;
      EXPECT_GT(start + b, a) << a << " / " << b;
      EXPECT_EQ(start % b, 0);
    }
  }
}

TEST(IntMathTest, SaturatingAddClampsInsteadOfOverflowing) {
  EXPECT_EQ(SaturatingAdd(2, 3), 5);
  EXPECT_EQ(SaturatingAdd(-2, 3), 1);
  EXPECT_EQ(SaturatingAdd(kMax - 1, 1), kMax);
  // 60000000000d twice, in ms: wrapped to a negative sum before.
  constexpr int64_t k60e9Days = 60'000'000'000LL * 86'400'000LL;
  EXPECT_EQ(SaturatingAdd(k60e9Days, k60e9Days), kMax);
  EXPECT_EQ(SaturatingAdd(kMax, kMax), kMax);
  EXPECT_EQ(SaturatingAdd(kMin, -1), kMin);
  EXPECT_EQ(SaturatingAdd(kMin, kMax), -1);
}

TEST(IntMathTest, ZigZagInterleavesSigns) {
  EXPECT_EQ(ZigZag(0), 0u);
  EXPECT_EQ(ZigZag(-1), 1u);
  EXPECT_EQ(ZigZag(1), 2u);
  EXPECT_EQ(ZigZag(-2), 3u);
  EXPECT_EQ(ZigZag(2), 4u);
  EXPECT_EQ(ZigZag(kMax), std::numeric_limits<uint64_t>::max() - 1);
  EXPECT_EQ(ZigZag(kMin), std::numeric_limits<uint64_t>::max());
  static_assert(ZigZag(-3) == 5u && UnZigZag(5) == -3);
}

TEST(IntMathTest, UnZigZagInvertsZigZag) {
  for (int64_t v :
       {int64_t{0}, int64_t{1}, int64_t{-1}, int64_t{63}, int64_t{-64}, int64_t{1'700'000'000'000},
        int64_t{-1'700'000'000'000}, kMax, kMin, kMin + 1}) {
    EXPECT_EQ(UnZigZag(ZigZag(v)), v) << v;
  }
  for (uint64_t u = 0; u < 1000; ++u) EXPECT_EQ(ZigZag(UnZigZag(u)), u);
}

}  // namespace
}  // namespace inferscope
