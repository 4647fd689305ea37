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

namespace inferscope {
namespace {

// Reclamation (issue 8, item 8): names nobody holds go at the second sweep after their last use;
// referenced and pinned names stay; an old id never names another string.
TEST(InternerReclaimTest, SweepReclaimsUnheldNamesAfterAFullInterval) {
  Interner interner(kNumWellKnownIds + 3);
  const StringId held = interner.Intern("held");
  const StringId pinned = interner.Intern("pinned");
  const StringId loose = interner.Intern("loose");
  ASSERT_TRUE(interner.Ref(held));
  interner.Pin(pinned);
  EXPECT_EQ(interner.Intern("full"), 0u);  // the table is full

  EXPECT_EQ(interner.Sweep(), 0u);  // "loose" was used in this interval
  EXPECT_EQ(interner.Sweep(), 0u);  // and must stay unused for two
  EXPECT_EQ(interner.Name(loose), "loose");
  EXPECT_EQ(interner.Sweep(), 1u);
  EXPECT_EQ(interner.Name(loose), "");
  EXPECT_FALSE(interner.Find("loose").has_value());
  EXPECT_FALSE(interner.Ref(loose));  // stale: its name is gone
  EXPECT_EQ(interner.size(), kNumWellKnownIds + 2u);
  EXPECT_EQ(interner.reclaimed(), 1u);

  // The slot is reused under a new generation: a different id.
  const StringId full = interner.Intern("full");
  ASSERT_NE(full, 0u);
  EXPECT_NE(full, loose);
  EXPECT_EQ(full & Interner::kSlotMask, loose & Interner::kSlotMask);
  EXPECT_EQ(interner.Name(loose), "");
  EXPECT_EQ(interner.Name(full), "full");

  // Released names wait a full interval too; well-known names are never reclaimed.
  interner.Unref(held);
  EXPECT_EQ(interner.Sweep(), 0u);  // "held" released and "full" interned in this interval
  EXPECT_EQ(interner.Sweep(), 0u);
  EXPECT_EQ(interner.Name(held), "held");
  EXPECT_EQ(interner.Sweep(), 2u);
  EXPECT_EQ(interner.Name(held), "");
  EXPECT_EQ(interner.Name(full), "");
  EXPECT_EQ(interner.Name(pinned), "pinned");
  EXPECT_EQ(interner.Name(kMetricTtft), "ttft_ms");
  EXPECT_EQ(interner.Intern("ttft_ms"), kMetricTtft);
}

// Each owner (publisher) may add at most its share of new names; names already interned cost
// nothing; a reclaimed name returns its charge; refusals are counted by reason.
TEST(InternerShareTest, OwnersAreRefusedBeyondTheirShare) {
  Interner interner(kNumWellKnownIds + 20);
  const StringId a = interner.Intern("publisher-a");
  const StringId b = interner.Intern("publisher-b");
  for (int i = 0; i < 5; ++i) {
    EXPECT_NE(interner.InternFor("a-" + std::to_string(i), a, 5), 0u) << i;
  }
  EXPECT_EQ(interner.owned_by(a), 5u);
  EXPECT_EQ(interner.InternFor("a-5", a, 5), 0u);
  EXPECT_FALSE(interner.Find("a-5").has_value());
  EXPECT_EQ(interner.refused_share(), 1u);
  EXPECT_NE(interner.InternFor("a-0", a, 5), 0u);    // already there: no charge
  EXPECT_NE(interner.InternFor("a-1", b, 5), 0u);    // someone else's name: no charge to b
  EXPECT_NE(interner.InternFor("b-new", b, 5), 0u);  // b's own share is untouched
  EXPECT_EQ(interner.owned_by(b), 1u);
  EXPECT_NE(interner.InternFor("anon-0", 0, 1), 0u);  // 0 ("not known yet") is an owner too
  EXPECT_EQ(interner.InternFor("anon-1", 0, 1), 0u);
  EXPECT_EQ(interner.refused_share(), 2u);

  // Reclaiming a's names (nobody holds them) gives its share back.
  interner.Pin(a);
  interner.Pin(b);
  for (int i = 0; i < 3; ++i) interner.Sweep();
  EXPECT_EQ(interner.owned_by(a), 0u);
  EXPECT_EQ(interner.owned_by(b), 0u);
  EXPECT_NE(interner.InternFor("a-5", a, 5), 0u);

  // The table limit still applies, counted apart.
  Interner tiny(kNumWellKnownIds + 1);
  EXPECT_NE(tiny.InternFor("x", a, 100), 0u);
  EXPECT_EQ(tiny.InternFor("y", a, 100), 0u);
  EXPECT_EQ(tiny.refused_full(), 1u);
  EXPECT_EQ(tiny.refused_share(), 0u);
}

TEST(InternerReclaimTest, CachesStartAfreshAfterASweep) {
  Interner interner;
  InternCache cache(interner, 4);
  const StringId a = cache.Intern("a");
  interner.Sweep();
  interner.Sweep();
  interner.Sweep();  // "a" was not seen again for two intervals: reclaimed
  EXPECT_EQ(interner.Name(a), "");
  const StringId again = cache.Intern("a");
  EXPECT_NE(again, a);
  EXPECT_EQ(interner.Name(again), "a");
  // A name in use through the cache is seen by the interner after each sweep, so it stays.
  for (int i = 0; i < 5; ++i) {
    interner.Sweep();
    EXPECT_EQ(cache.Intern("a"), again);
  }
}

}  // namespace
}  // namespace inferscope
