#include "pipeline/checkpoint.h"

#include <gtest/gtest.h>

#include "pipeline/coding.h"

namespace inferscope {
namespace {

TEST(CheckpointTest, AppliedSequenceRoundTripsWithIncarnations) {
  AppliedSequence a;
  a.incarnation = 0x0123456789abcdefull;
  a.seq = 41;
  Result<AppliedSequence> back = DecodeAppliedSequence(EncodeAppliedSequence(a));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->incarnation, a.incarnation);
  EXPECT_EQ(back->seq, 41u);
  EXPECT_FALSE(back->has_prev);

  a.has_prev = true;
  a.prev_incarnation = 7;
  a.prev_seq = UINT64_MAX - 1;
  back = DecodeAppliedSequence(EncodeAppliedSequence(a));
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->has_prev);
  EXPECT_EQ(back->prev_incarnation, 7u);
  EXPECT_EQ(back->prev_seq, UINT64_MAX - 1);
}

TEST(CheckpointTest, AppliedSequenceReadsTheRecordsOfEarlierVersions) {
  std::string legacy;
  AppendBigEndian64(&legacy, 499);  // before incarnations: 8 bytes of seq
  Result<AppliedSequence> a = DecodeAppliedSequence(legacy);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->incarnation, 0u);
  EXPECT_EQ(a->seq, 499u);
  EXPECT_FALSE(DecodeAppliedSequence("short").ok());
  std::string unknown_version = EncodeAppliedSequence(*a);
  unknown_version[0] = 0x02;
  EXPECT_FALSE(DecodeAppliedSequence(unknown_version).ok());
}

}  // namespace
}  // namespace inferscope
