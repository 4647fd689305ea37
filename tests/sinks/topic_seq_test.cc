// Loss detection on the result streams (docs/PROTOCOL.md, "Lost messages"): every payload carries
// `topic_seq`, its number among the messages of its topic; a subscriber that ZeroMQ dropped
// messages for (past the high-water mark) sees the gap.

#include <gtest/gtest.h>
#include <zmq_addon.hpp>

#include <msgpack.hpp>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "sinks/stream_sink.h"
#include "sinks/zmq_routing_sink.h"
#include "tests/sinks/zmq_sink_fixture.h"

namespace inferscope {
namespace {

using nlohmann::json;

// "k<i>" (appended: `"k" + std::string` trips GCC 12's -Wrestrict false positive at -O3).
std::string Key(uint32_t i) { return std::string("k").append(std::to_string(i)); }

// A msgpack map of `n` entries "k<i>": i.
std::string MsgpackMap(uint32_t n) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(n);
  for (uint32_t i = 0; i < n; ++i) {
    pk.pack(Key(i));
    pk.pack_uint32(i);
  }
  return std::string(buf.data(), buf.size());
}

std::map<std::string, msgpack::object> Unpack(const std::string& bytes,
                                              msgpack::object_handle* oh) {
  *oh = msgpack::unpack(bytes.data(), bytes.size());
  return oh->get().as<std::map<std::string, msgpack::object>>();
}

TEST(TopicSeqTest, MsgpackMapsOfEverySizeGetOneMoreEntry) {
  // fixmap, the fixmap that becomes a map16, map16; every msgpack uint width of the number.
  for (uint32_t n : {0u, 1u, 14u, 15u, 16u, 300u}) {
    for (uint64_t seq : {uint64_t{1}, uint64_t{0x7f}, uint64_t{0x80}, uint64_t{0xff},
                         uint64_t{0x100}, uint64_t{0xffff}, uint64_t{0x10000}, uint64_t{0xffffffff},
                         uint64_t{0x100000000}, std::numeric_limits<uint64_t>::max()}) {
      std::string out;
      ASSERT_TRUE(AppendTopicSeq(MsgpackMap(n), StreamFormat::kMsgpack, seq, &out));
      msgpack::object_handle oh;
      const auto m = Unpack(out, &oh);
      ASSERT_EQ(m.size(), n + 1) << n;
      EXPECT_EQ(m.at("topic_seq").as<uint64_t>(), seq) << n;
      for (uint32_t i = 0; i < n; ++i) EXPECT_EQ(m.at(Key(i)).as<uint32_t>(), i);
    }
  }
}

TEST(TopicSeqTest, JsonObjectsGetOneMoreMember) {
  std::string out;
  ASSERT_TRUE(AppendTopicSeq("{}", StreamFormat::kJson, 7, &out));
  EXPECT_EQ(json::parse(out), json({{"topic_seq", 7}}));
  ASSERT_TRUE(AppendTopicSeq(R"({"a":1,"b":{"c":[]}})", StreamFormat::kJson, 12, &out));
  EXPECT_EQ(json::parse(out), json::parse(R"({"a":1,"b":{"c":[]},"topic_seq":12})"));
}

TEST(TopicSeqTest, PayloadsThatAreNoMapAreRefused) {
  std::string out;
  EXPECT_FALSE(AppendTopicSeq("", StreamFormat::kMsgpack, 1, &out));
  EXPECT_FALSE(AppendTopicSeq("\x93\x01\x02\x03", StreamFormat::kMsgpack, 1, &out));  // array
  EXPECT_FALSE(AppendTopicSeq("\xde\x00", StreamFormat::kMsgpack, 1, &out));          // cut map16
  EXPECT_FALSE(AppendTopicSeq("[1]", StreamFormat::kJson, 1, &out));
  EXPECT_FALSE(AppendTopicSeq("{\"a\":1} ", StreamFormat::kJson, 1, &out));
}

routing::RoutingWeights Weights(const std::string& model) {
  routing::RoutingWeights w;
  w.model = model;
  w.strategy = routing::Strategy::kLowestLatency;
  w.time_ms = 1'700'000'000'000;
  w.backends = {{"vllm-0", 1.0, 0.9, routing::GateState::kHealthy}};
  return w;
}

// A subscriber that does not read while the sink publishes past the high-water mark loses
// messages; reading at last, it sees each topic's numbers jump where they were lost, and every
// number it sees is larger than the one before on that topic.
TEST(TopicSeqTest, ASlowSubscriberSeesTheGapsOfItsLostMessages) {
  auto made = ZmqRoutingSink::Create(
      ConfigNode("t.yaml", YAML::Load("{endpoint: 'tcp://127.0.0.1:*', sndhwm: 10}"), "options"));
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  std::unique_ptr<ZmqRoutingSink> sink = std::move(made).value();
  MetricsRegistry metrics;
  StageContext ctx;
  ctx.name = "routing_stream";
  ctx.metrics = &metrics;
  ASSERT_TRUE(sink->Open(ctx).ok());
  zmq::context_t zctx;
  zmq::socket_t sub(zctx, zmq::socket_type::sub);
  sub.set(zmq::sockopt::rcvhwm, 10);
  sub.set(zmq::sockopt::rcvbuf, 4096);
  sub.set(zmq::sockopt::subscribe, "routing.");
  sub.set(zmq::sockopt::rcvtimeo, 200);
  sub.connect(sink->Endpoint());

  // Wait out the slow joiner: publish on a third topic until one arrives.
  OutputBatch join;
  join.Mutable<kind::RoutingWeights>() = {Weights("join")};
  ASSERT_FALSE(testing::WriteUntilReceived(*sink, join, sub).empty());
  // 20,000 messages on two topics while the subscriber does not read.
  OutputBatch batch;
  batch.Mutable<kind::RoutingWeights>() = {Weights("a"), Weights("b")};
  for (int i = 0; i < 10'000; ++i) ASSERT_TRUE(sink->Write(batch).ok());

  std::map<std::string, uint64_t> last;
  uint64_t received = 0, lost = 0;
  auto read_all = [&] {
    std::vector<zmq::message_t> frames;
    while (zmq::recv_multipart(sub, std::back_inserter(frames))) {
      msgpack::object_handle oh = msgpack::unpack(frames[1].data<char>(), frames[1].size());
      const auto m = oh.get().as<std::map<std::string, msgpack::object>>();
      const std::string model = m.at("model").as<std::string>();
      const uint64_t seq = m.at("topic_seq").as<uint64_t>();
      frames.clear();
      if (model == "join") continue;
      ++received;
      const uint64_t before = last[model];
      ASSERT_GT(seq, before) << model;
      lost += seq - before - 1;
      last[model] = seq;
    }
  };
  read_all();
  // Messages dropped after the last one received show as a gap when the next one comes: more per
  // topic, now that the subscriber keeps up, until one of each has come (a stall of the machine
  // may still drop or delay a few).
  for (int i = 0; i < 50 && (last["a"] <= 10'000 || last["b"] <= 10'000); ++i) {
    ASSERT_TRUE(sink->Write(batch).ok());
    read_all();
  }
  EXPECT_GT(last["a"], 10'000u);
  EXPECT_GT(last["b"], 10'000u);
  ASSERT_GT(received, 0u);
  EXPECT_LT(received, 20'002u) << "nothing was dropped: the test proves nothing";
  // Every message is either received or seen as lost.
  EXPECT_EQ(received + lost, last["a"] + last["b"]);
  EXPECT_GT(lost, 0u);
}

}  // namespace
}  // namespace inferscope
