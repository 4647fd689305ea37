// The query server against hostile requests (the HTTP API review, notes/review-http-api.md):
// deeply nested JSON bodies, Range headers, chunked bodies over the size limit, and JSON bodies
// sent with a form content type (`curl -d`). Each test talks to a real server on 127.0.0.1.

#include <gtest/gtest.h>
#include <httplib.h>

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

}  // namespace
}  // namespace inferscope
