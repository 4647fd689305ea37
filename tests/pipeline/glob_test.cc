#include "pipeline/glob.h"

#include <gtest/gtest.h>

namespace inferscope {
namespace {

TEST(GlobMatchTest, StarAndQuestionMark) {
  EXPECT_TRUE(GlobMatch("vllm-*", "vllm-12"));
  EXPECT_TRUE(GlobMatch("*", ""));
  EXPECT_TRUE(GlobMatch("v?lm-1", "vllm-1"));
  EXPECT_TRUE(GlobMatch("*-1*", "vllm-12"));
  EXPECT_FALSE(GlobMatch("vllm-*", "tgi-1"));
  EXPECT_FALSE(GlobMatch("vllm", "vllm-1"));
  EXPECT_TRUE(GlobMatch("a*b*c", "axxbyyc"));
  EXPECT_FALSE(GlobMatch("a*b*c", "axxbyy"));
}

}  // namespace
}  // namespace inferscope
