// The query server against hostile requests (the HTTP API review, notes/review-http-api.md):
// deeply nested JSON bodies, Range headers, chunked bodies over the size limit, and JSON bodies
// sent with a form content type (`curl -d`). Each test talks to a real server on 127.0.0.1.

#include <gtest/gtest.h>
#include <httplib.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "query/handlers.h"
#include "query/server.h"
#include "state/state_store.h"
#include "tests/query/raw_socket.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using nlohmann::json;

// The body of a raw HTTP response.
std::string BodyOf(const std::string& response) {
  const size_t end = response.find("\r\n\r\n");
  return end == std::string::npos ? std::string() : response.substr(end + 4);
}

// `depth` nested arrays around nothing: "[[...]]".
std::string NestedArrays(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

class QueryServerRequestTest : public ::testing::Test {
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

  httplib::Result Post(const std::string& path, const std::string& body,
                       const std::string& content_type = "application/json") {
    httplib::Client client("127.0.0.1", server_->port());
    client.set_read_timeout(std::chrono::seconds(10));
    return client.Post(path, body, content_type);
  }

  // One request on a new connection that asks to close after it; the whole response.
  std::string Exchange(const std::string& request) {
    RawSocket socket(server_->port());
    EXPECT_TRUE(socket.ok());
    EXPECT_TRUE(socket.Send(request));
    return socket.ReadToEnd();
  }

  uint64_t Closed(const std::string& reason) {
    return metrics_.CounterValue("inferscope_http_connections_closed_total", {{"reason", reason}});
  }

  int HealthStatus() {
    httplib::Client client("127.0.0.1", server_->port());
    auto res = client.Get("/v1/health");
    return res ? res->status : -1;
  }

  testing::TempDir dir_;
  MetricsRegistry metrics_;
  ManualClock clock_{1'750'000'000'000};
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<QueryServer> server_;
};

TEST(JsonNestingDepthTest, CountsBracketsOutsideStrings) {
  EXPECT_EQ(JsonNestingDepth("", 64), 0u);
  EXPECT_EQ(JsonNestingDepth("1", 64), 0u);
  EXPECT_EQ(JsonNestingDepth(R"({"a":[1,{"b":[]}]})", 64), 4u);
  EXPECT_EQ(JsonNestingDepth(R"({"a":"[[[{{{"})", 64), 1u);
  EXPECT_EQ(JsonNestingDepth(R"({"a":"\"[[[\\"})", 64), 1u);  // escaped quote, then backslash
  EXPECT_EQ(JsonNestingDepth(R"([[]][[[]]])", 64), 3u);
  // Stops at the first level past the limit.
  EXPECT_EQ(JsonNestingDepth(NestedArrays(100'000), 64), 65u);
}

// The review's crash: the error message echoed a 60,000-deep value by serialising it (recursion
// per level on the http-worker's stack), and the bottleneck options were serialised and parsed
// as YAML. Without the depth limit this test's process dies with SIGSEGV.
TEST_F(QueryServerRequestTest, BodiesNestedDeeperThanTheLimitAre400AndTheServerLives) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  // 500,000 levels: 1 MB, under the 1 MiB body limit (the review saw crashes from 60,000).
  const std::string deep = NestedArrays(500'000);
  const std::vector<std::pair<std::string, std::string>> requests = {
      {"/v1/routing/select", R"({"model":"x","required_capabilities":)" + deep + "}"},
      {"/v1/analysis/detect-bottlenecks",
       R"({"instances":[],"options":{"high_latency":)" + deep + "}}"},
      {"/v1/optimization/recommend", R"({"instance":"i","options":{"high_latency":)" + deep + "}}"},
  };
  for (const auto& [path, body] : requests) {
    SCOPED_TRACE(path);
    auto res = Post(path, body);
    ASSERT_TRUE(res) << "no answer: " << httplib::to_string(res.error());
    EXPECT_EQ(res->status, 400) << res->body.substr(0, 300);
    json reply = json::parse(res->body, nullptr, false);
    ASSERT_TRUE(reply.is_object()) << res->body.substr(0, 300);
    EXPECT_EQ(reply["error"]["code"], "VALIDATION_ERROR");
    EXPECT_EQ(reply["error"]["details"]["max_depth"], kMaxJsonBodyDepth);
    EXPECT_NE(reply["error"]["message"].get<std::string>().find("64 levels"), std::string::npos)
        << reply.dump();
    EXPECT_LT(res->body.size(), 1000u);
  }
  EXPECT_EQ(HealthStatus(), 200);
}

// A body exactly at the limit reaches the handler (its own error here: a list is no capability),
// and the value the message echoes is shown by kind, not serialised.
TEST_F(QueryServerRequestTest, BodyAtTheDepthLimitReachesTheHandler) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  // The object is level 1, so 63 arrays make 64 levels.
  auto res = Post("/v1/routing/select", R"({"model":"x","required_capabilities":)" +
                                            NestedArrays(kMaxJsonBodyDepth - 1) + "}");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400) << res->body;
  json reply = json::parse(res->body, nullptr, false);
  EXPECT_EQ(reply["error"]["details"]["field"], "required_capabilities") << res->body;
  EXPECT_NE(reply["error"]["message"].get<std::string>().find("unknown capability an array of 1"),
            std::string::npos)
      << res->body;
  // One level more is refused before parsing.
  res = Post("/v1/routing/select",
             R"({"model":"x","required_capabilities":)" + NestedArrays(kMaxJsonBodyDepth) + "}");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_EQ(json::parse(res->body, nullptr, false)["error"]["details"]["max_depth"],
            kMaxJsonBodyDepth)
      << res->body;
  // A long string is echoed cut to 64 bytes.
  res = Post("/v1/routing/select",
             R"({"model":"x","required_capabilities":[")" + std::string(5'000, 'v') + R"("]})");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_NE(res->body.find("\\\"" + std::string(64, 'v') + "\\\"..."), std::string::npos)
      << res->body.substr(0, 300);
  EXPECT_EQ(res->body.find(std::string(65, 'v')), std::string::npos);
}

// httplib honoured Range on every route: 2,700 ranges of "0-" made a 355 MB multipart answer of
// the OpenAPI document (built in memory, past the response budget), a range past the end a 416
// with an empty body, and error bodies came out cut. The API ignores Range: the whole answer, 200.
TEST_F(QueryServerRequestTest, RangeHeadersAreIgnored) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const std::string plain =
      Exchange("GET /v1/openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  ASSERT_EQ(plain.rfind("HTTP/1.1 200", 0), 0u) << plain.substr(0, 300);
  ASSERT_GT(BodyOf(plain).size(), 10'000u);
  std::string many = "bytes=0-";
  for (int i = 0; i < 2'000; ++i) many += ",0-";
  for (const std::string& range : {many, std::string("bytes=0-9"), std::string("bytes=999999-"),
                                   std::string("bytes=abc"), std::string("bytes=5-1,0-")}) {
    SCOPED_TRACE(range.substr(0, 20));
    const std::string ranged =
        Exchange("GET /v1/openapi.json HTTP/1.1\r\nHost: x\r\nRange: " + range +
                 "\r\nConnection: close\r\n\r\n");
    EXPECT_EQ(ranged.rfind("HTTP/1.1 200", 0), 0u) << ranged.substr(0, 300);
    const std::string head = ranged.substr(0, ranged.find("\r\n\r\n"));
    EXPECT_EQ(head.find("Content-Range"), std::string::npos) << head;
    EXPECT_NE(head.find("Content-Type: application/json"), std::string::npos) << head;
    EXPECT_EQ(BodyOf(ranged), BodyOf(plain));
  }
  // An error answer is whole too, and a lower-case header name is just as ignored.
  const std::string error =
      Exchange("GET /v1/nope HTTP/1.1\r\nHost: x\r\nrange: bytes=0-9\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(error.rfind("HTTP/1.1 404", 0), 0u) << error;
  json body = json::parse(BodyOf(error), nullptr, false);
  ASSERT_TRUE(body.is_object()) << error;
  EXPECT_EQ(body["error"]["code"], "NOT_FOUND");
}

// A chunked body is cut at the size line that takes it over max_body_bytes: the server answers
// 413 without waiting for (or buffering) that chunk's data. Without the limit the server waits
// for the megabyte the client never sends, and this client's read times out.
TEST_F(QueryServerRequestTest, ChunkedBodyIsCutAtTheChunkThatTakesItOverTheLimit) {
  QueryServer::Options options;
  options.read_timeout_ms = 60'000;  // longer than RawSocket's 10 s: a wait would fail the test
  ASSERT_NO_FATAL_FAILURE(StartServer(options));
  RawSocket s(server_->port());
  ASSERT_TRUE(
      s.Send("POST /v1/routing/select HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Transfer-Encoding: chunked\r\n\r\n"
             "a\r\n{\"model\":\"\r\n"
             "100000\r\naaaa"));  // 1 MiB more announced; 10 + 1,048,576 bytes > 1 MiB
  const std::string response = s.ReadToEnd();
  ASSERT_EQ(response.rfind("HTTP/1.1 413", 0), 0u) << response.substr(0, 300);
  json body = json::parse(BodyOf(response), nullptr, false);
  ASSERT_TRUE(body.is_object()) << response;
  EXPECT_EQ(body["error"]["code"], "PAYLOAD_TOO_LARGE");
  EXPECT_NE(body["error"]["message"].get<std::string>().find("1048576"), std::string::npos);
  EXPECT_TRUE(s.closed_by_server());
  EXPECT_EQ(Closed("body_too_large"), 1u);
  EXPECT_EQ(HealthStatus(), 200);
}

// The review's upload: a chunked body over the limit in many chunks, all sent. Without the limit
// the whole body was read and the route answered it (here 503: no routing learner).
TEST_F(QueryServerRequestTest, ChunkedBodyOverTheLimitGets413) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  std::string data = "{\"model\":\"" + std::string(1024 * 1024 + 100 - 12, 'a') + "\"}";
  ASSERT_EQ(data.size(), 1024u * 1024 + 100);
  std::string request =
      "POST /v1/routing/select HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Transfer-Encoding: chunked\r\n\r\n";
  for (size_t at = 0; at < data.size(); at += 64 * 1024) {
    const std::string piece = data.substr(at, 64 * 1024);
    char size[16];
    std::snprintf(size, sizeof(size), "%zx\r\n", piece.size());
    request += size + piece + "\r\n";
  }
  request += "0\r\n\r\n";
  RawSocket s(server_->port());
  ASSERT_TRUE(s.Send(request));
  const std::string response = s.ReadToEnd();
  ASSERT_EQ(response.rfind("HTTP/1.1 413", 0), 0u) << response.substr(0, 300);
  EXPECT_EQ(json::parse(BodyOf(response), nullptr, false)["error"]["code"], "PAYLOAD_TOO_LARGE");
  EXPECT_EQ(Closed("body_too_large"), 1u);
}

// Chunked bodies within the limit are read as before, and a body of unknown length that is not
// chunked (the gate reads it until the connection closes) is limited too.
TEST_F(QueryServerRequestTest, ChunkedBodyWithinTheLimitIsServed) {
  QueryServer::Options options;
  options.max_body_bytes = 64;
  ASSERT_NO_FATAL_FAILURE(StartServer(options));
  // 60 data bytes in chunks (more than 64 bytes on the wire): the route answers (503, no learner).
  std::string response = Exchange(
      "POST /v1/routing/select HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
      "Connection: close\r\n\r\n"
      "1;ext=1\r\n{\r\n3\r\n\"mo\r\n8\r\ndel\":\"x\"\r\n30\r\n}" +
      std::string(47, ' ') + "\r\n0\r\n\r\n");
  EXPECT_EQ(response.rfind("HTTP/1.1 503", 0), 0u) << response;
  EXPECT_NE(response.find("no_routing_learner"), std::string::npos) << response;
  response = Exchange(
      "POST /v1/routing/select HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n"
      "Connection: close\r\n\r\n" +
      std::string(100, 'x'));
  EXPECT_EQ(response.rfind("HTTP/1.1 413", 0), 0u) << response;
}

// `curl -d '{...}'` sends Content-Type application/x-www-form-urlencoded: httplib decoded the JSON
// into a query parameter, refused as unknown (400), and answered 413 to such bodies over 8 KiB.
// The API reads every body as JSON; query parameters come from the URL only.
TEST_F(QueryServerRequestTest, JsonBodyWithAFormContentTypeIsReadAsJson) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  for (const std::string type :
       {"application/x-www-form-urlencoded", "application%2Fx-www-form-urlencoded; charset=utf-8",
        "multipart/form-data; boundary=x", "text/plain"}) {
    SCOPED_TRACE(type);
    auto res = Post("/v1/routing/select", R"({"model": "llama-3.1-8b-instruct"})", type);
    ASSERT_TRUE(res);
    // The body was read: the model passed validation, and this server runs no learner.
    EXPECT_EQ(res->status, 503) << res->body;
    EXPECT_NE(res->body.find("no_routing_learner"), std::string::npos) << res->body;
  }
  auto res = Post("/v1/routing/select", R"({"model":"x")" + std::string(10'000, ' ') + "}",
                  "application/x-www-form-urlencoded");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503) << res->body;
  res = Post("/v1/routing/select?strategy=fast", R"({"model":"x"})",
             "application/x-www-form-urlencoded");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400) << res->body;
  EXPECT_EQ(json::parse(res->body, nullptr, false)["error"]["details"]["parameter"], "strategy")
      << res->body;
}

// httplib read "Content-Length: -1" as 2^64 - 1 (413) and "0x10" as 0.
TEST_F(QueryServerRequestTest, ContentLengthThatIsNoNumberIs400) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  for (const std::string length : {"-1", "0x10", "1e3", ""}) {
    SCOPED_TRACE(length);
    const std::string response = Exchange(
        "POST /v1/routing/select HTTP/1.1\r\nHost: x\r\n"
        "Content-Length: " +
        length + "\r\n\r\n{}");
    EXPECT_EQ(response.rfind("HTTP/1.1 400", 0), 0u) << response;
    json body = json::parse(BodyOf(response), nullptr, false);
    ASSERT_TRUE(body.is_object()) << response;
    EXPECT_EQ(body["error"]["code"], "VALIDATION_ERROR");
    EXPECT_NE(body["error"]["message"].get<std::string>().find("Content-Length"),
              std::string::npos);
  }
  EXPECT_EQ(Closed("bad_length"), 4u);
}

// A wrong method on a path that has routes was a 404 "no route"; it is a 405 naming the methods
// the path answers, in the Allow header and in the one error shape.
TEST_F(QueryServerRequestTest, WrongMethodOnAnExistingPathIs405WithAllow) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  struct Case {
    const char* method;
    const char* path;
    const char* allow;
  };
  for (const Case& c :
       {Case{"PUT", "/v1/health", "GET, HEAD"}, Case{"DELETE", "/v1/instances", "GET, HEAD"},
        Case{"PUT", "/v1/silences", "GET, HEAD, POST"}, Case{"GET", "/v1/routing/select", "POST"},
        Case{"POST", "/v1/silences/abc", "DELETE"}}) {
    SCOPED_TRACE(std::string(c.method) + " " + c.path);
    const std::string response = Exchange(std::string(c.method) + " " + c.path +
                                          " HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                                          "Connection: close\r\n\r\n");
    EXPECT_EQ(response.rfind("HTTP/1.1 405", 0), 0u) << response;
    EXPECT_NE(response.find("\r\nAllow: " + std::string(c.allow) + "\r\n"), std::string::npos)
        << response;
    json body = json::parse(BodyOf(response), nullptr, false);
    ASSERT_TRUE(body.is_object()) << response;
    EXPECT_EQ(body["error"]["code"], "METHOD_NOT_ALLOWED");
    EXPECT_EQ(body["error"]["details"]["allowed"], c.allow);
  }
  // A path no route has stays a 404.
  const std::string response = Exchange(
      "PUT /v1/nope HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(response.rfind("HTTP/1.1 404", 0), 0u) << response;
}

// On a read-only node (the query node) the write routes answer 405 READ_ONLY; a path's Allow
// lists only what the node answers, the same in both 405s: empty for /v1/silences/{id}, which
// has no read method (RFC 9110 §10.2.1: an empty Allow is a resource that allows none).
TEST_F(QueryServerRequestTest, ReadOnlyNodeAllowsOnlyItsReadMethods) {
  QueryServer::Options options;
  options.read_only = true;
  ASSERT_NO_FATAL_FAILURE(StartServer(options));
  struct Case {
    const char* method;
    const char* path;
    const char* code;
    const char* allow;
  };
  for (const Case& c : {Case{"DELETE", "/v1/silences/abc", "READ_ONLY", ""},
                        Case{"GET", "/v1/silences/abc", "METHOD_NOT_ALLOWED", ""},
                        Case{"POST", "/v1/silences", "READ_ONLY", "GET"},
                        Case{"PUT", "/v1/silences", "METHOD_NOT_ALLOWED", "GET, HEAD"}}) {
    SCOPED_TRACE(std::string(c.method) + " " + c.path);
    const std::string response = Exchange(std::string(c.method) + " " + c.path +
                                          " HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                                          "Connection: close\r\n\r\n");
    EXPECT_EQ(response.rfind("HTTP/1.1 405", 0), 0u) << response;
    const std::string head = response.substr(0, response.find("\r\n\r\n") + 2);
    EXPECT_NE(head.find("\r\nAllow: " + std::string(c.allow) + "\r\n"), std::string::npos) << head;
    EXPECT_EQ(json::parse(BodyOf(response), nullptr, false)["error"]["code"], c.code) << response;
  }
}

// A repeated query parameter was silently read as its first value (`limit=1&limit=2` gave one
// item); it is a 400 naming it, on both readers (httplib, and the fast path's for summary).
// `instances` of the comparison report is declared repeatable (names with commas).
// A '?' inside a query value (RFC 3986 allows it; the docs' globs use it) is part of the value.
// Before, httplib ended the query at it: `limit=1?` was read as limit=1 (a 200), and `limit=a?b`
// got a generic 400 naming nothing.
TEST_F(QueryServerRequestTest, AQuestionMarkInsideTheQueryIsPartOfTheValue) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  for (const std::string target : {"/v1/instances?limit=1?", "/v1/instances?limit=a?b"}) {
    SCOPED_TRACE(target);
    const std::string response =
        Exchange("GET " + target + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    EXPECT_EQ(response.rfind("HTTP/1.1 400", 0), 0u) << response;
    json body = json::parse(BodyOf(response), nullptr, false);
    EXPECT_EQ(body["error"]["details"]["parameter"], "limit") << response;
  }
  const std::string ok =
      Exchange("GET /v1/instances?limit=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(ok.rfind("HTTP/1.1 200", 0), 0u) << ok;
}

TEST_F(QueryServerRequestTest, RepeatedQueryParameterIs400NamingIt) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  httplib::Client client("127.0.0.1", server_->port());
  for (const std::string target :
       {"/v1/instances?limit=1&limit=2", "/v1/instances/i/summary?window=10s&window=1m",
        "/v1/instances/i/summary?window=10s&model=m&window=1m"}) {
    SCOPED_TRACE(target);
    auto res = client.Get(target);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 400) << res->body;
    json body = json::parse(res->body, nullptr, false);
    EXPECT_EQ(body["error"]["details"]["parameter"],
              target.find("limit") != std::string::npos ? "limit" : "window")
        << res->body;
  }
  // Once, or repeated with the same value (httplib keeps one such pair), is fine.
  for (const std::string target : {"/v1/instances?limit=1", "/v1/instances?limit=1&limit=1"}) {
    auto res = client.Get(target);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200) << res->body;
  }
  auto res = client.Get("/v1/reports/comparison?instances=a&instances=b");
  ASSERT_TRUE(res);
  EXPECT_NE(res->status, 400) << res->body;
}

}  // namespace
}  // namespace inferscope
