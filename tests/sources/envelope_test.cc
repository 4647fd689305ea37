// PeekEnvelope: the publisher id, incarnation and sequence number of a protocol-v1 payload, read
// without decoding its events (`inferscope bridge` routes messages by them).

#include <gtest/gtest.h>

#include <string>

#include "clients/cpp/publisher.h"
#include "sources/envelope.h"

namespace inferscope {
namespace {

TEST(EnvelopeTest, ReadsPublisherSequenceAndIncarnationOfClientPayloads) {
  client::BatchEncoder enc("gateway-7", 41);
  client::RequestOutcome r;
  r.instance = "gpu-1";
  r.model = "llama";
  r.e2e_ms = 120;
  enc.AddRequest(r);
  std::string payload(enc.Finish());
  Envelope e;
  ASSERT_TRUE(PeekEnvelope(payload, &e));
  EXPECT_EQ(e.publisher, "gateway-7");
  EXPECT_TRUE(e.has_seq);
  EXPECT_EQ(e.seq, 41u);
  EXPECT_EQ(e.incarnation, 0u);

  client::BatchEncoder acked("gateway-8");
  acked.enable_incarnation(5);
  acked.AddRequest(r);
  payload = std::string(acked.Finish());
  ASSERT_TRUE(PeekEnvelope(payload, &e));
  EXPECT_EQ(e.publisher, "gateway-8");
  EXPECT_EQ(e.incarnation, 5u);
  EXPECT_EQ(e.seq, 0u);
}

TEST(EnvelopeTest, RefusesWhatIsNotAnEnvelope) {
  Envelope e;
  EXPECT_FALSE(PeekEnvelope("", &e));
  EXPECT_FALSE(PeekEnvelope("not msgpack", &e));
  EXPECT_FALSE(PeekEnvelope(std::string("\x81\xa1v\x01", 4), &e));             // no "pub"
  EXPECT_FALSE(PeekEnvelope(std::string("\x81\xa3pub\x07", 6), &e));           // "pub" not a string
  EXPECT_FALSE(PeekEnvelope(std::string("\x82\xa3pub\xa1x\xa3seq", 10), &e));  // truncated
  // The envelope's publisher is a view into the payload: keep the payload alive while it is read.
  const std::string valid("\x81\xa3pub\xa1x", 7);
  EXPECT_TRUE(PeekEnvelope(valid, &e));
  EXPECT_EQ(e.publisher, "x");
  EXPECT_FALSE(e.has_seq);
}

}  // namespace
}  // namespace inferscope
