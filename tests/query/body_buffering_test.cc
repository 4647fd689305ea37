// The query server's connection gate reads whole request bodies (query/gated_server.h): clients
// sending bodies slowly hold no worker, within a shared memory budget and a cap on connections per
// client address. Each test talks to a real server on 127.0.0.1 through raw sockets.

#include <gtest/gtest.h>
#include <httplib.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "query/server.h"
#include "state/state_store.h"
#include "tests/query/raw_socket.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using nlohmann::json;

// A JSON body of exactly `bytes` bytes (at least 13) that POST /v1/routing/select reads whole: a
// model name, then blanks. Cut short, it is no JSON (400); whole, the route answers 503 (this
// server runs no routing learner).
std::string Padded(size_t bytes) {
  const std::string start = "{\"model\":\"x\"";
  return start + std::string(bytes - start.size() - 1, ' ') + "}";
}

std::string ChunkOf(std::string_view data) {
  char size[20];
  std::snprintf(size, sizeof(size), "%zx\r\n", data.size());
  return size + std::string(data) + "\r\n";
}

// `data` as a chunked body, in chunks of `chunk` bytes, with its last chunk.
std::string Chunked(std::string_view data, size_t chunk) {
  std::string out;
  for (size_t at = 0; at < data.size(); at += chunk) out += ChunkOf(data.substr(at, chunk));
  return out + "0\r\n\r\n";
}

std::string HeadWithLength(size_t length) {
  return "POST /v1/routing/select HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
         "Content-Length: " +
         std::to_string(length) + "\r\n\r\n";
}

const char kChunkedHead[] =
    "POST /v1/routing/select HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    "Transfer-Encoding: chunked\r\n\r\n";

std::string BodyOf(const std::string& response) {
  const size_t end = response.find("\r\n\r\n");
  return end == std::string::npos ? std::string() : response.substr(end + 4);
}

// Whether `response` is the route's answer to a whole body (see Padded).
bool RouteReadTheBody(const std::string& response) {
  return response.rfind("HTTP/1.1 503", 0) == 0 &&
         response.find("no_routing_learner") != std::string::npos;
}

class GateBodyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StateStoreOptions options;
    options.path = dir_.str();
    auto opened = StateStore::Open(options, &metrics_);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    store_ = std::move(opened).value();
  }

  void StartServer(QueryServer::Options options = {}) {
    server_ = std::make_unique<QueryServer>(
        options, store_.get(), &metrics_, &clock_, [] { return json::object(); },
        std::vector<Registry::Entry>{});
    Status s = server_->Start();
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  // GET /v1/health on a new connection; its status, or -1 when there was no answer within 20 s
  // (generous: on a loaded machine an answer takes milliseconds; a held worker takes the body
  // deadline, which these tests set far longer).
  int HealthStatus() {
    httplib::Client client("127.0.0.1", server_->port());
    client.set_connection_timeout(std::chrono::seconds(20));
    client.set_read_timeout(std::chrono::seconds(20));
    auto res = client.Get("/v1/health");
    return res ? res->status : -1;
  }

  // What the gate holds of request bodies (the gauge).
  double BufferedBodyBytes() {
    const auto values = metrics_.Values("inferscope_http_request_body_bytes_buffered");
    return values.empty() ? -1 : values.front().second;
  }

  uint64_t Closed(const std::string& reason) {
    return metrics_.CounterValue("inferscope_http_connections_closed_total", {{"reason", reason}});
  }

  testing::TempDir dir_;
  MetricsRegistry metrics_;
  ManualClock clock_{1'750'000'000'000};
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<QueryServer> server_;
};

// The review's starvation (notes/review-http-api.md, finding 4): bodies larger than the gate's
// 16 KiB window, and chunked bodies, went to a worker at once, which then waited for them; as many
// slow clients as workers stalled every other request until the body deadline. Now the gate reads
// them: with twice as many slow clients as workers, each part-way through its body, a GET is
// answered, the slow clients have no answer yet, and each gets its route's answer once its body
// is complete.
TEST_F(GateBodyTest, SlowBodiesDoNotHoldTheWorkers) {
  QueryServer::Options options;
  options.threads = 8;
  options.read_timeout_ms = 600'000;  // a worker waiting for a body would wait past the test
  ASSERT_NO_FATAL_FAILURE(StartServer(options));
  constexpr size_t kBody = 100'000;
  constexpr int kEach = 8;
  const std::string body = Padded(kBody);
  std::vector<std::unique_ptr<RawSocket>> by_length, chunked;
  for (int i = 0; i < kEach; ++i) {
    by_length.push_back(std::make_unique<RawSocket>(server_->port()));
    ASSERT_TRUE(by_length.back()->Send(HeadWithLength(kBody) + body.substr(0, 1'000)));
    chunked.push_back(std::make_unique<RawSocket>(server_->port()));
    ASSERT_TRUE(chunked.back()->Send(kChunkedHead + ChunkOf(body.substr(0, 1'000))));
  }
  // The slow clients go on sending, a little at a time, while another client asks.
  size_t sent = 1'000;
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < kEach; ++i) {
      ASSERT_TRUE(by_length[i]->Send(body.substr(sent, 10)));
      ASSERT_TRUE(chunked[i]->Send(ChunkOf(body.substr(sent, 10))));
    }
    sent += 10;
    ASSERT_EQ(HealthStatus(), 200) << "round " << round << ": slow bodies held the workers";
  }
  for (int i = 0; i < kEach; ++i) {
    EXPECT_FALSE(by_length[i]->HasInput()) << "answered before its body was complete: " << i;
    EXPECT_FALSE(chunked[i]->HasInput()) << "answered before its body was complete: " << i;
  }
  for (int i = 0; i < kEach; ++i) {
    ASSERT_TRUE(by_length[i]->Send(body.substr(sent)));
    ASSERT_TRUE(chunked[i]->Send(Chunked(body.substr(sent), 30'000)));
  }
  for (int i = 0; i < kEach; ++i) {
    const std::string a = by_length[i]->ReadResponse();
    EXPECT_TRUE(RouteReadTheBody(a)) << a.substr(0, 300);
    const std::string b = chunked[i]->ReadResponse();
    EXPECT_TRUE(RouteReadTheBody(b)) << b.substr(0, 300);
  }
  EXPECT_EQ(Closed("read_timeout"), 0u);
}

// A body exactly at max_body_bytes is read and served; one byte more gets 413: a Content-Length
// before any of the body is read, a chunked body at the size line of the chunk that takes it over.
TEST_F(GateBodyTest, BodiesAtTheLimitAreServedAndOneByteOverGets413) {
  QueryServer::Options options;
  options.max_body_bytes = 100'000;  // beyond the 16 KiB window: the gate reads these bodies
  ASSERT_NO_FATAL_FAILURE(StartServer(options));
  const std::string at_limit = Padded(100'000);
  {
    RawSocket s(server_->port());
    ASSERT_TRUE(s.Send(HeadWithLength(at_limit.size()) + at_limit));
    const std::string response = s.ReadResponse();
    EXPECT_TRUE(RouteReadTheBody(response)) << response.substr(0, 300);
  }
  {
    RawSocket s(server_->port());
    ASSERT_TRUE(s.Send(kChunkedHead + Chunked(at_limit, 30'000)));
    const std::string response = s.ReadResponse();
    EXPECT_TRUE(RouteReadTheBody(response)) << response.substr(0, 300);
  }
  const std::string over = Padded(100'001);
  {
    // Only the header: the answer must not wait for the body.
    RawSocket s(server_->port());
    ASSERT_TRUE(s.Send(HeadWithLength(over.size())));
    const std::string response = s.ReadToEnd();
    ASSERT_EQ(response.rfind("HTTP/1.1 413", 0), 0u) << response.substr(0, 300);
    const json body = json::parse(BodyOf(response), nullptr, false);
    EXPECT_EQ(body["error"]["code"], "PAYLOAD_TOO_LARGE") << response;
    EXPECT_NE(body["error"]["message"].get<std::string>().find("100000"), std::string::npos);
    EXPECT_TRUE(s.closed_by_server());
  }
  {
    // 99,990 bytes in chunks, then a chunk of 11 announced (its data never sent).
    RawSocket s(server_->port());
    std::string chunks = Chunked(over.substr(0, 99'990), 30'000);
    chunks.resize(chunks.size() - 5);  // without the last chunk
    ASSERT_TRUE(s.Send(kChunkedHead + chunks + "b\r\n"));
    const std::string response = s.ReadToEnd();
    ASSERT_EQ(response.rfind("HTTP/1.1 413", 0), 0u) << response.substr(0, 300);
    EXPECT_EQ(json::parse(BodyOf(response), nullptr, false)["error"]["code"], "PAYLOAD_TOO_LARGE");
    EXPECT_TRUE(s.closed_by_server());
  }
  EXPECT_EQ(Closed("body_too_large"), 2u);
  EXPECT_EQ(HealthStatus(), 200);
  EXPECT_TRUE(testing::WaitFor([&] { return BufferedBodyBytes() == 0; }));
}

// A client that stops sending its body is answered 408 at the body deadline (read_timeout_ms after
// its header), counted, and what the gate held for it is released; no worker waited.
TEST_F(GateBodyTest, ABodyNotCompleteWithinTheReadTimeoutGets408) {
  QueryServer::Options options;
  options.read_timeout_ms = 300;
  options.threads = 1;
  ASSERT_NO_FATAL_FAILURE(StartServer(options));
  const std::string body = Padded(100'000);
  RawSocket by_length(server_->port());
  ASSERT_TRUE(by_length.Send(HeadWithLength(body.size()) + body.substr(0, 20'000)));
  RawSocket chunked(server_->port());
  ASSERT_TRUE(chunked.Send(kChunkedHead + ChunkOf(body.substr(0, 20'000))));
  for (RawSocket* s : {&by_length, &chunked}) {
    const std::string response = s->ReadToEnd();
    ASSERT_EQ(response.rfind("HTTP/1.1 408", 0), 0u) << response.substr(0, 300);
    const json reply = json::parse(BodyOf(response), nullptr, false);
    EXPECT_EQ(reply["error"]["code"], "REQUEST_TIMEOUT") << response;
    EXPECT_EQ(reply["error"]["details"]["reason"], "read_timeout") << response;
    EXPECT_TRUE(s->closed_by_server());
  }
  // Counted and released as the connections close, which the client may see first.
  EXPECT_TRUE(testing::WaitFor([&] { return Closed("read_timeout") == 2u; }))
      << Closed("read_timeout");
  EXPECT_TRUE(testing::WaitFor([&] { return BufferedBodyBytes() == 0; })) << BufferedBodyBytes();
  EXPECT_EQ(HealthStatus(), 200);
}

// The bodies the gate holds are bounded by max_buffered_body_bytes: a Content-Length body the
// budget has no room for is answered 503 UNAVAILABLE with Retry-After before it is read, a
// chunked body when its buffer would go over; both counted. Everything else goes on: the bodies
// held are served once complete, a request without a large body is served meanwhile, and the
// refused client is served when it comes back.
TEST_F(GateBodyTest, BodiesOverTheBudgetGet503WithRetryAfter) {
  QueryServer::Options options;
  options.max_buffered_body_bytes = 1024 * 1024;
  options.read_timeout_ms = 600'000;
  ASSERT_NO_FATAL_FAILURE(StartServer(options));
  // Three bodies of 300,000 bytes, two thirds sent: each holds 200,000..300,100 bytes, so all
  // three fit (at most 900,300) and together hold at least 600,300.
  const std::string body = Padded(300'000);
  std::vector<std::unique_ptr<RawSocket>> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(std::make_unique<RawSocket>(server_->port()));
    ASSERT_TRUE(held.back()->Send(HeadWithLength(body.size()) + body.substr(0, 200'000)));
    ASSERT_TRUE(testing::WaitFor([&] { return BufferedBodyBytes() >= 200'000.0 * (i + 1); }))
        << BufferedBodyBytes();
  }
  EXPECT_LE(BufferedBodyBytes(), static_cast<double>(options.max_buffered_body_bytes));
  // A declared 500,000 bytes do not fit in what is left (at most 448,276): 503 before the body.
  const std::string large = Padded(500'000);
  {
    RawSocket refused(server_->port());
    ASSERT_TRUE(refused.Send(HeadWithLength(large.size())));
    const std::string response = refused.ReadToEnd();
    ASSERT_EQ(response.rfind("HTTP/1.1 503", 0), 0u) << response.substr(0, 300);
    EXPECT_NE(response.find("\r\nRetry-After: 1\r\n"), std::string::npos) << response;
    const json reply = json::parse(BodyOf(response), nullptr, false);
    EXPECT_EQ(reply["error"]["code"], "UNAVAILABLE") << response;
    EXPECT_EQ(reply["error"]["details"]["reason"], "body_backlog") << response;
    EXPECT_EQ(reply["error"]["details"]["retry_after_s"], 1) << response;
    EXPECT_TRUE(reply["timestamp"].is_string());
    EXPECT_TRUE(refused.closed_by_server());
  }
  EXPECT_EQ(Closed("body_backlog"), 1u);
  // A chunked body is refused when it grows past what is left. (Its client may see the 503 or a
  // reset, depending on how much of its body the server had left unread.)
  {
    RawSocket refused(server_->port());
    refused.Send(kChunkedHead + Chunked(large, 50'000));
    refused.ReadToEnd();
  }
  EXPECT_TRUE(testing::WaitFor([&] { return Closed("body_backlog") == 2; }));
  EXPECT_LE(BufferedBodyBytes(), static_cast<double>(options.max_buffered_body_bytes));
  // Requests without a large body are served meanwhile (the budget covers only bodies the gate
  // reads; a small one stays in the socket for the worker).
  EXPECT_EQ(HealthStatus(), 200);
  {
    RawSocket small(server_->port());
    const std::string small_body = Padded(1'000);
    ASSERT_TRUE(small.Send(HeadWithLength(small_body.size()) + small_body));
    const std::string response = small.ReadResponse();
    EXPECT_TRUE(RouteReadTheBody(response)) << response.substr(0, 300);
  }
  // The held bodies complete and are served; the budget is free again.
  for (auto& s : held) ASSERT_TRUE(s->Send(body.substr(200'000)));
  for (auto& s : held) {
    const std::string response = s->ReadResponse();
    EXPECT_TRUE(RouteReadTheBody(response)) << response.substr(0, 300);
  }
  EXPECT_TRUE(testing::WaitFor([&] { return BufferedBodyBytes() == 0; })) << BufferedBodyBytes();
  {
    RawSocket again(server_->port());
    ASSERT_TRUE(again.Send(HeadWithLength(large.size()) + large));
    const std::string response = again.ReadResponse();
    EXPECT_TRUE(RouteReadTheBody(response)) << response.substr(0, 300);
  }
  EXPECT_EQ(Closed("body_backlog"), 2u);
  EXPECT_EQ(metrics_.CounterValue("inferscope_http_request_bodies_read_total"), 4u);
}

// One body is never refused for the budget alone: a budget smaller than max_body_bytes still lets
// one body of that size through.
TEST_F(GateBodyTest, OneBodyAloneAlwaysFitsTheBudget) {
  QueryServer::Options options;
  options.max_buffered_body_bytes = 64 * 1024;
  ASSERT_NO_FATAL_FAILURE(StartServer(options));
  const std::string body = Padded(500'000);
  RawSocket s(server_->port());
  ASSERT_TRUE(s.Send(kChunkedHead + Chunked(body, 100'000)));
  const std::string response = s.ReadResponse();
  EXPECT_TRUE(RouteReadTheBody(response)) << response.substr(0, 300);
  EXPECT_EQ(Closed("body_backlog"), 0u);
}

// At most max_connections_per_address connections from one client address: the next one is closed
// at accept without a reply (counted); other addresses are not affected, and a freed slot serves
// the address again.
TEST_F(GateBodyTest, ConnectionsBeyondThePerAddressCapAreClosedAtAccept) {
  QueryServer::Options options;
  options.max_connections_per_address = 4;
  ASSERT_NO_FATAL_FAILURE(StartServer(options));
  std::vector<std::unique_ptr<RawSocket>> held;
  for (int i = 0; i < 4; ++i) {
    held.push_back(std::make_unique<RawSocket>(server_->port()));
    ASSERT_TRUE(held.back()->ok());
  }
  ASSERT_TRUE(testing::WaitFor([&] { return server_->open_connections() == 4; }));
  RawSocket extra(server_->port());
  ASSERT_TRUE(extra.ok());
  EXPECT_EQ(extra.ReadToEnd(), "");
  EXPECT_TRUE(extra.closed_by_server());
  EXPECT_EQ(Closed("address_limit"), 1u);

  // Another client address (127.0.0.2 is loopback too) is served.
  const std::string health = "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n";
  RawSocket other(server_->port(), 0, "127.0.0.2");
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(other.Send(health));
  EXPECT_EQ(other.ReadResponse().rfind("HTTP/1.1 200", 0), 0u);

  // One of the four goes away: the address may connect again.
  held.pop_back();
  ASSERT_TRUE(testing::WaitFor([&] { return server_->open_connections() == 4; }));
  RawSocket again(server_->port());
  ASSERT_TRUE(again.Send(health));
  EXPECT_EQ(again.ReadResponse().rfind("HTTP/1.1 200", 0), 0u);
  EXPECT_EQ(Closed("address_limit"), 1u);
}

// The gate reads a body up to its end and no further: a pipelined request after a large or a
// chunked body is answered in order on the same connection, and a client that waits for
// "100 Continue" gets one, then its answer, and its connection is kept.
TEST_F(GateBodyTest, KeepAliveAndPipeliningAfterBodiesTheGateRead) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const std::string body = Padded(50'000);
  const std::string health = "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n";
  RawSocket s(server_->port());
  ASSERT_TRUE(s.Send(HeadWithLength(body.size()) + body + health));
  std::string response = s.ReadResponse();
  EXPECT_TRUE(RouteReadTheBody(response)) << response.substr(0, 300);
  EXPECT_EQ(s.ReadResponse().rfind("HTTP/1.1 200", 0), 0u);

  // Chunked, with a chunk extension and a trailer field (dropped), then the next request.
  std::string rest = Chunked(body.substr(10'000), 7'000);
  rest.resize(rest.size() - 5);  // without its last chunk
  ASSERT_TRUE(s.Send(std::string(kChunkedHead) + "2710;name=value\r\n" + body.substr(0, 10'000) +
                     "\r\n" + rest + "0\r\nX-Checksum: abc\r\n\r\n" + health));
  response = s.ReadResponse();
  EXPECT_TRUE(RouteReadTheBody(response)) << response.substr(0, 300);
  EXPECT_EQ(s.ReadResponse().rfind("HTTP/1.1 200", 0), 0u);
  ASSERT_TRUE(s.Send(std::string(kChunkedHead) + Chunked(body, 20'000) + health));
  response = s.ReadResponse();
  EXPECT_TRUE(RouteReadTheBody(response)) << response.substr(0, 300);
  EXPECT_EQ(s.ReadResponse().rfind("HTTP/1.1 200", 0), 0u);

  // Expect: 100-continue on a body beyond the window, and on a small one.
  for (const std::string& expected : {body, Padded(100)}) {
    ASSERT_TRUE(
        s.Send("POST /v1/routing/select HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
               "Content-Length: " +
               std::to_string(expected.size()) + "\r\n\r\n"));
    const std::string interim = s.ReadResponse();
    EXPECT_EQ(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    ASSERT_TRUE(s.Send(expected));
    response = s.ReadResponse();
    EXPECT_TRUE(RouteReadTheBody(response)) << response.substr(0, 300);
    EXPECT_EQ(response.find("100 Continue"), std::string::npos) << response.substr(0, 300);
  }
  ASSERT_TRUE(s.Send(health));
  EXPECT_EQ(s.ReadResponse().rfind("HTTP/1.1 200", 0), 0u);
  EXPECT_FALSE(s.HasInput());  // nothing more: one answer per request
}

// Malformed chunk framing is refused by the gate: 400 in the one error shape, counted.
TEST_F(GateBodyTest, MalformedChunkedBodiesGet400) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  for (const std::string& framing : std::vector<std::string>{
           "zz\r\n", "0x10\r\n0123456789abcdef\r\n0\r\n\r\n", "-1\r\n", "3\r\nabcXY\r\n0\r\n\r\n",
           "3\r\nabc\r\n0\r\n" + std::string(20'000, 'a') + "\r\n\r\n"}) {
    SCOPED_TRACE(framing.substr(0, 20));
    RawSocket s(server_->port());
    ASSERT_TRUE(s.Send(kChunkedHead + framing));
    const std::string response = s.ReadToEnd();
    ASSERT_EQ(response.rfind("HTTP/1.1 400", 0), 0u) << response.substr(0, 300);
    const json reply = json::parse(BodyOf(response), nullptr, false);
    EXPECT_EQ(reply["error"]["code"], "VALIDATION_ERROR") << response;
    EXPECT_EQ(reply["error"]["details"]["reason"], "bad_chunk") << response;
  }
  EXPECT_EQ(Closed("bad_chunk"), 5u);
}

}  // namespace
}  // namespace inferscope
