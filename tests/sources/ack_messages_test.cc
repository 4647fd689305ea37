#include "sources/ack_messages.h"

#include <gtest/gtest.h>

#include <random>

#include <msgpack.hpp>

namespace inferscope {
namespace {

TEST(AckMessagesTest, RoundTrips) {
  Result<HelloMessage> hello = ParseHello(EncodeHello({"gw-1", 42}));
  ASSERT_TRUE(hello.ok()) << hello.status().ToString();
  EXPECT_EQ(hello->publisher, "gw-1");
  EXPECT_EQ(hello->incarnation, 42u);

  AckMessage ack{"gw-1", 42, 10, 11, 42};
  Result<AckMessage> a = ParseAck(EncodeAck(ack));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->incarnation, 42u);
  EXPECT_EQ(a->ack, 10u);
  EXPECT_EQ(a->next, 11u);
  EXPECT_EQ(a->latest, 42u);
  a = ParseAck(EncodeAck({"gw-1", 42, std::nullopt, std::nullopt, std::nullopt}));
  ASSERT_TRUE(a.ok());
  EXPECT_FALSE(a->ack.has_value());
  EXPECT_FALSE(a->next.has_value());

  Result<NackMessage> n = ParseNack(EncodeNack({"gw-1", 42, 7, "batch_too_large", true, 42}));
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(n->seq, 7u);
  EXPECT_EQ(n->reason, "batch_too_large");
  EXPECT_TRUE(n->consumed);
}

TEST(AckMessagesTest, LegacyHelloHasIncarnationZero) {
  msgpack::sbuffer b;
  msgpack::packer<msgpack::sbuffer> pk(b);
  pk.pack_map(2);
  pk.pack("v");
  pk.pack(1);
  pk.pack("pub");
  pk.pack("old-client");
  Result<HelloMessage> hello = ParseHello({b.data(), b.size()});
  ASSERT_TRUE(hello.ok());
  EXPECT_EQ(hello->incarnation, 0u);
}

TEST(AckMessagesTest, RejectsBadInputWithAReason) {
  EXPECT_FALSE(ParseHello("").ok());
  EXPECT_FALSE(ParseHello("\x91\x01").ok());                              // an array
  EXPECT_FALSE(ParseHello("\x81\xa3pub\xa0").ok());                       // no v, empty pub
  EXPECT_FALSE(ParseHello(std::string("\xdd\xff\xff\xff\xff", 5)).ok());  // array32 of 4 G
  EXPECT_FALSE(ParseHello(std::string("\xdf\xff\xff\xff\xff", 5)).ok());  // map32 of 4 G
  EXPECT_FALSE(ParseHello(EncodeHello({"gw-1", 1}) + "x").ok());          // trailing bytes
  EXPECT_FALSE(ParseHello(EncodeHello({std::string(256, 'p'), 1})).ok());
  Result<HelloMessage> bad_utf8 = ParseHello(EncodeHello({std::string("gw-\xff\xfe", 5), 1}));
  ASSERT_FALSE(bad_utf8.ok());  // never interned: the decoder refuses such a "pub" too
  EXPECT_NE(bad_utf8.status().message().find("UTF-8"), std::string::npos);
  EXPECT_FALSE(ParseNack(EncodeAck({"gw-1", 1, 1, 2, 1})).ok());  // no seq, no reason

  std::mt19937_64 rng(8);
  const std::string good = EncodeNack({"gw-1", 42, 7, "batch_too_large", true, 42});
  for (int i = 0; i < 20000; ++i) {
    std::string bytes = good;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) bytes[rng() % bytes.size()] = static_cast<char>(rng());
    if (rng() % 3 == 0) bytes.resize(rng() % bytes.size());
    (void)ParseHello(bytes);  // must neither crash nor throw
    (void)ParseAck(bytes);
    (void)ParseNack(bytes);
  }
}

}  // namespace
}  // namespace inferscope
