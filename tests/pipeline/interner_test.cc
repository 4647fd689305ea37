#include "pipeline/interner.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace inferscope {
namespace {

TEST(InternerTest, WellKnownIdsComeFirst) {
  Interner interner;
  EXPECT_EQ(interner.Name(kMetricTtft), "ttft_ms");
  EXPECT_EQ(interner.Name(kMetricQuality), "quality");
  EXPECT_EQ(interner.Intern("e2e_ms"), kMetricE2e);
  EXPECT_EQ(interner.size(), static_cast<size_t>(kNumWellKnownIds));
}

TEST(InternerTest, SameStringSameId) {
  Interner interner;
  StringId a = interner.Intern("node-1");
  EXPECT_EQ(interner.Intern("node-1"), a);
  EXPECT_NE(interner.Intern("node-2"), a);
  EXPECT_EQ(interner.Name(a), "node-1");
  EXPECT_EQ(interner.Find("node-1"), a);
  EXPECT_FALSE(interner.Find("node-3").has_value());
  EXPECT_EQ(interner.Name(0), "");
  EXPECT_EQ(interner.Name(999999), "");
}

TEST(InternerTest, FullTableReturnsZero) {
  Interner interner(kNumWellKnownIds + 2);
  EXPECT_NE(interner.Intern("a"), 0u);
  EXPECT_NE(interner.Intern("b"), 0u);
  EXPECT_EQ(interner.Intern("c"), 0u);
  EXPECT_NE(interner.Intern("a"), 0u);  // known strings still resolve
}

TEST(InternerTest, CrossesChunksAndStaysReadableConcurrently) {
  Interner interner;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&interner, t] {
      InternCache cache(interner, 6);
      for (int i = 0; i < 10000; ++i) {
        // Built piecewise: GCC 12 warns falsely (-Wrestrict) on "literal" + std::string chains.
        std::string s = std::to_string(i % 5000);
        s += '-';
        s += std::to_string(t % 2);
        StringId id = cache.Intern(s);
        ASSERT_NE(id, 0u);
        ASSERT_EQ(interner.Name(id), s);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(interner.size(), kNumWellKnownIds + 10000u);
}

TEST(InternCacheTest, CollisionsResolveToTheRightId) {
  Interner interner;
  InternCache cache(interner, 1);  // two slots: constant collisions
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 100; ++i) {
      std::string s = std::to_string(i);  // not "x" + ...: GCC 12 warns falsely (-Wrestrict)
      EXPECT_EQ(interner.Name(cache.Intern(s)), s);
    }
  }
}

}  // namespace
}  // namespace inferscope
