#include "pipeline/bounded_queue.h"

#include <gtest/gtest.h>

#include <thread>

namespace inferscope {
namespace {

TEST(BoundedQueueTest, FifoAndCapacity) {
  BoundedQueue<int> q(2);
  int a = 1, b = 2, c = 3;
  EXPECT_TRUE(q.TryPush(a));
  EXPECT_TRUE(q.TryPush(b));
  EXPECT_FALSE(q.TryPush(c));
  EXPECT_EQ(q.size(), 2u);
  EXPECT_EQ(q.TryPop(), 1);
  EXPECT_EQ(q.TryPop(), 2);
  EXPECT_FALSE(q.TryPop().has_value());
}

TEST(BoundedQueueTest, BlockedProducerResumesAndCloseDrains) {
  BoundedQueue<int> q(1);
  std::thread producer([&] {
    for (int i = 0; i < 1000; ++i) {
      int v = i;
      ASSERT_TRUE(q.Push(v));
    }
    q.Close();
  });
  int expected = 0;
  while (std::optional<int> v = q.Pop()) EXPECT_EQ(*v, expected++);
  producer.join();
  EXPECT_EQ(expected, 1000);
  int late = 5;
  EXPECT_FALSE(q.Push(late));
  EXPECT_EQ(late, 5);
}

TEST(BoundedQueueTest, PopForTimesOut) {
  BoundedQueue<int> q(1);
  EXPECT_FALSE(q.PopFor(std::chrono::milliseconds(1)).has_value());
}

}  // namespace
}  // namespace inferscope
