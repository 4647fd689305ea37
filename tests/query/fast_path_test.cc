// The query server's fast path (QueryServer::ServeFast, query/raw_request.h): which requests it
// reads itself, and, over real HTTP on 127.0.0.1, that its answers are byte for byte what httplib's
// path gives to the same request — statuses, headers, bodies, errors, tokens and rate limits —
// and that it keeps, pipelines and closes connections as httplib's path does.

#include "query/raw_request.h"

#include <gtest/gtest.h>

#include <map>
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

std::string Get(std::string_view target, std::string_view headers = "") {
  return "GET " + std::string(target) + " HTTP/1.1\r\nHost: x\r\n" + std::string(headers) + "\r\n";
}

TEST(RawRequestTest, ReadsARequestInTheSubset) {
  const std::string text = Get("/v1/series?metric=ttft_ms&instance=a-1&metric=e2e_ms",
                               "Authorization:  Bearer tok \r\nauthorization: Bearer other\r\n"
                               "Connection: close\r\nUser-Agent: wrk/4.2\r\n");
  RawRequest r;
  ASSERT_TRUE(ParseRawRequest(text, &r));
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.path, "/v1/series");
  ASSERT_EQ(r.param_count, 3u);
  EXPECT_EQ(r.params[0].first, "metric");
  EXPECT_EQ(r.params[0].second, "ttft_ms");
  EXPECT_EQ(r.params[1].second, "a-1");
  EXPECT_EQ(r.params[2].second, "e2e_ms");
  EXPECT_EQ(r.authorization, "Bearer tok");  // the first, trimmed
  EXPECT_TRUE(r.connection_close);
  EXPECT_TRUE(r.origin.empty());

  ASSERT_TRUE(ParseRawRequest(Get("/v1/health", "Connection: Close\r\n"), &r));
  EXPECT_FALSE(r.connection_close);  // httplib compares with "close" exactly
  EXPECT_EQ(r.param_count, 0u);
  ASSERT_TRUE(ParseRawRequest(Get("/v1/x?a=", "Content-Length: 0\r\n"), &r));
  ASSERT_EQ(r.param_count, 1u);
  EXPECT_EQ(r.params[0].second, "");
}

TEST(RawRequestTest, LeavesEverythingOutsideTheSubsetToHttplib) {
  const std::string seventeen = [] {
    std::string q = "/v1/series?";
    for (int i = 0; i < 17; ++i) q += (i ? "&p" : "p") + std::to_string(i) + "=1";
    return q;
  }();
  const std::vector<std::string> refused = {
      "GET /v1/series HTTP/1.0\r\nHost: x\r\n\r\n",                // another version
      "get /v1/series HTTP/1.1\r\nHost: x\r\n\r\n",                // not an upper-case method
      "GET v1/series HTTP/1.1\r\nHost: x\r\n\r\n",                 // not an origin-form target
      "GET /v1/series  HTTP/1.1\r\nHost: x\r\n\r\n",               // two spaces
      Get("/v1/instances/a%2Fb/summary"),                          // percent-encoding
      Get("/v1/series?instance=a+b"),                              // '+' (a space in a query)
      Get("/v1/series?a=1?b=2"),                                   // a second '?'
      Get("/v1/series?a=1&&b=2"),                                  // an empty pair
      Get("/v1/series?a"),                                         // no '='
      Get("/v1/series?=1"),                                        // no name
      Get("/v1/series?a=1=2"),                                     // two '='
      Get("/v1/series?a=\"x\""),                                   // a quote
      Get("/v1/series#frag"),                                      // a fragment
      Get(seventeen),                                              // too many pairs
      Get("/v1/series", "Broken header\r\n"),                      // no colon
      Get("/v1/series", " Folded: x\r\n"),                         // obs-fold / space in the name
      Get("/v1/series", "Authorization:\r\n"),                     // empty value (httplib skips it)
      Get("/v1/series", "Authorization: Bearer a%41\r\n"),         // httplib decodes '%'
      Get("/v1/series", "X: a\rb\r\n"),                            // a bare CR
      Get("/v1/series", "X: a\nb\r\n"),                            // a bare LF
      Get("/v1/series", "X: \x01\r\n"),                            // a control byte
      Get("/v1/series", "X: caf\xc3\xa9\r\n"),                     // a non-ASCII byte
      Get("/v1/series", "Content-Length: 5\r\n"),                  // a body
      Get("/v1/series", "Transfer-Encoding: chunked\r\n"),         // a body
      Get("/v1/series", "Expect: 100-continue\r\n"),               // a body
      Get("/v1/series", "X: " + std::string(8200, 'a') + "\r\n"),  // over httplib's line limit
      "GET /v1/series HTTP/1.1\r\nHost: x\r\n",                    // no empty line
      "GET /v1/series HTTP/1.1\r\nHost: x\r\n\r\nGET",             // bytes after the head
  };
  for (const std::string& text : refused) {
    RawRequest r;
    EXPECT_FALSE(ParseRawRequest(text, &r)) << text;
  }
}

TEST(PathPatternTest, MatchesLiteralAndCapturedSegments) {
  PathPattern summary;
  ASSERT_TRUE(summary.Compile("/v1/instances/([^/]+)/summary"));
  std::vector<std::string_view> captures;
  ASSERT_TRUE(summary.Match("/v1/instances/node-1/summary", &captures));
  ASSERT_EQ(captures.size(), 1u);
  EXPECT_EQ(captures[0], "node-1");
  EXPECT_FALSE(summary.Match("/v1/instances//summary", &captures));
  EXPECT_FALSE(summary.Match("/v1/instances/a/b/summary", &captures));
  EXPECT_FALSE(summary.Match("/v1/instances/a/summary/", &captures));
  EXPECT_FALSE(summary.Match("/v1/instances/a/summar", &captures));
  EXPECT_FALSE(summary.Match("/v1/instances/a", &captures));
  PathPattern series;
  ASSERT_TRUE(series.Compile("/v1/series"));
  EXPECT_TRUE(series.Match("/v1/series", &captures));
  EXPECT_TRUE(captures.empty());
  EXPECT_FALSE(series.Match("/v1/series/", &captures));
  EXPECT_FALSE(series.Match("/v1/seriesx", &captures));
  // Other regular expressions are left to httplib.
  for (const char* pattern : {"/v1/(.*)", "/v1/a.b", "/ui/(.+)", "v1/series", "/v1//x", "/"}) {
    PathPattern p;
    EXPECT_FALSE(p.Compile(pattern)) << pattern;
  }
}

// Splits a response into its status line, headers by name and body.
struct Parsed {
  std::string status_line;
  std::map<std::string, std::string> headers;
  std::string body;
};

Parsed Parse(const std::string& response) {
  Parsed p;
  const size_t end = response.find("\r\n\r\n");
  if (end == std::string::npos) return p;
  p.body = response.substr(end + 4);
  std::string_view head(response.data(), end);
  size_t line_end = head.find("\r\n");
  p.status_line = std::string(head.substr(0, line_end));
  while (line_end != std::string_view::npos) {
    head.remove_prefix(line_end + 2);
    line_end = head.find("\r\n");
    const std::string_view line = head.substr(0, line_end);
    const size_t colon = line.find(": ");
    p.headers[std::string(line.substr(0, colon))] = std::string(line.substr(colon + 2));
  }
  return p;
}

class FastPathTest : public ::testing::Test {
 protected:
  static constexpr int64_t kPaneMs = 10'000;

  void SetUp() override {
    StateStoreOptions options;
    options.path = dir_.str() + "/state";
    options.clock = &clock_;
    auto opened = StateStore::Open(options, &metrics_);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    store_ = std::move(opened).value();
    // Two minutes of panes of node-1/llama/ttft_ms, closed by the watermark.
    std::vector<WindowSummary> panes;
    for (int i = 0; i < 12; ++i) {
      WindowSummary pane;
      pane.series = {interner_.Intern("node-1"), interner_.Intern("llama"),
                     interner_.Intern("ttft_ms")};
      pane.start_ms = kStart + i * kPaneMs;
      pane.end_ms = pane.start_ms + kPaneMs;
      pane.max_event_time_ms = pane.end_ms - 1;
      for (int v = 1; v <= 20; ++v) {
        pane.agg.Add(10.0 * v + i, pane.start_ms);
        pane.agg.AddEvent(v == 7);
      }
      panes.push_back(pane);
    }
    Status s = store_->WritePanes(panes, interner_, kStart + 12 * kPaneMs);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  void StartServer(QueryServer::Options options = {}) {
    server_ = std::make_unique<QueryServer>(
        options, store_.get(), &metrics_, &clock_, [] { return json::object(); },
        std::vector<Registry::Entry>{});
    Status s = server_->Start();
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  // The response to `request` on a new connection that asks to close after it.
  std::string Exchange(const std::string& request) {
    RawSocket socket(server_->port());
    EXPECT_TRUE(socket.ok());
    EXPECT_TRUE(socket.Send(request));
    return socket.ReadToEnd();
  }

  uint64_t Requests(const std::string& route, int status) {
    return metrics_.CounterValue("inferscope_http_requests_total",
                                 {{"route", route}, {"status", std::to_string(status)}});
  }

  // `target` with `headers` through the fast path and through httplib's (a header the fast path
  // leaves to httplib: a value with '%'); both must answer the same bytes. Returns the answer.
  // `fast_route` is whether the fast path answers the first (false for a target that is no fast
  // route).
  Parsed ExpectSameAnswer(const std::string& target, const std::string& headers = "",
                          bool fast_route = true) {
    const std::string route = RouteOf(target);
    const uint64_t before = FastServed(route);
    const std::string fast = Exchange(Get(target, headers + "Connection: close\r\n"));
    const uint64_t served = before + (fast_route ? 1 : 0);
    EXPECT_EQ(FastServed(route), served) << target << ": fast path";
    const std::string slow =
        Exchange(Get(target, headers + "X-Via: httplib%20path\r\nConnection: close\r\n"));
    EXPECT_EQ(FastServed(route), served) << target << ": answered by the fast path";
    EXPECT_EQ(fast, slow) << target;
    return Parse(fast);
  }

  // The route (its pattern) of a target on one of the fast routes.
  static std::string RouteOf(const std::string& target) {
    return target.starts_with("/v1/series") ? "/v1/series" : "/v1/instances/{id}/summary";
  }

  uint64_t FastServed(const std::string& route) {
    return metrics_.CounterValue("inferscope_http_fast_path_requests_total", {{"route", route}});
  }

  static constexpr int64_t kStart = 1'750'000'020'000;
  testing::TempDir dir_;
  MetricsRegistry metrics_;
  ManualClock clock_{kStart + 13 * kPaneMs};
  Interner interner_;
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<QueryServer> server_;
};

TEST_F(FastPathTest, AnswersAsHttplibDoesForEveryOutcomeOfTheReadRoutes) {
  StartServer();
  const std::string summary = "/v1/instances/node-1/summary?model=llama&metric=ttft_ms&window=1m";
  const std::string series = "/v1/series?instance=node-1&model=llama&metric=ttft_ms&step=10s";
  const uint64_t summary_ok = Requests("/v1/instances/{id}/summary", 200);
  for (int round = 0; round < 2; ++round) {  // a miss, then a cache hit
    Parsed p = ExpectSameAnswer(summary);
    EXPECT_EQ(p.status_line, "HTTP/1.1 200 OK");
    EXPECT_EQ(p.headers["Content-Type"], "application/json");
    EXPECT_EQ(p.headers["Connection"], "close");
    EXPECT_EQ(p.headers["Content-Length"], std::to_string(p.body.size()));
    json body = json::parse(p.body);
    ASSERT_TRUE(body.contains("windows")) << p.body;
    EXPECT_FALSE(body["windows"].empty()) << p.body;
    p = ExpectSameAnswer(series);
    EXPECT_EQ(p.status_line, "HTTP/1.1 200 OK");
  }
  EXPECT_EQ(Requests("/v1/instances/{id}/summary", 200), summary_ok + 4);
  // Errors: an unknown parameter, a bad value, no data, a path that is no route.
  Parsed p = ExpectSameAnswer("/v1/instances/node-1/summary?model=llama&metric=ttft_ms&windw=10s");
  EXPECT_EQ(p.status_line, "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(json::parse(p.body)["error"]["details"]["parameter"], "windw");
  p = ExpectSameAnswer("/v1/instances/node-1/summary?metric=ttft_ms&window=abc");
  EXPECT_EQ(p.status_line, "HTTP/1.1 400 Bad Request");
  ExpectSameAnswer("/v1/instances/nobody/summary?metric=ttft_ms");
  ExpectSameAnswer("/v1/series?instance=node-1");
  p = ExpectSameAnswer("/v1/instances/node-1/summary/extra", "", /*fast_route=*/false);
  EXPECT_EQ(p.status_line, "HTTP/1.1 404 Not Found");
  // The order of parameters does not matter to the answer (nor to its cache key).
  EXPECT_EQ(Parse(Exchange(Get("/v1/instances/node-1/summary?window=1m&metric=ttft_ms&model=llama",
                               "Connection: close\r\n")))
                .body,
            Parse(Exchange(Get(summary, "Connection: close\r\n"))).body);
}

TEST_F(FastPathTest, TokensScopesAndRateLimitsAnswerAsHttplibDoes) {
  QueryServer::Options options;
  options.access.tokens = {
      {"reader", "reader-0123456789abcdef", static_cast<uint8_t>(Scope::kRead)},
      {"writer", "writer-0123456789abcdef", static_cast<uint8_t>(Scope::kWrite)}};
  options.access.rate_limit.rate = 1;
  options.access.rate_limit.burst = 6;
  StartServer(options);
  const std::string summary = "/v1/instances/node-1/summary?model=llama&metric=ttft_ms";
  Parsed p = ExpectSameAnswer(summary);  // no token
  EXPECT_EQ(p.status_line, "HTTP/1.1 401 Unauthorized");
  EXPECT_EQ(p.headers["WWW-Authenticate"], "Bearer realm=\"inferscope\"");
  p = ExpectSameAnswer(summary, "Authorization: Bearer nope-0123456789abcdef\r\n");
  EXPECT_EQ(p.status_line, "HTTP/1.1 401 Unauthorized");
  p = ExpectSameAnswer(summary, "Authorization: Bearer writer-0123456789abcdef\r\n");
  EXPECT_EQ(p.status_line, "HTTP/1.1 403 Forbidden");
  EXPECT_EQ(json::parse(p.body)["error"]["details"]["required_scope"], "read");
  // The reader's bucket (6, refilling 1/s): 6 answers, then 429 with Retry-After on both paths.
  // (Each ExpectSameAnswer sends twice.)
  const std::string reader = "Authorization: Bearer reader-0123456789abcdef\r\n";
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(ExpectSameAnswer(summary, reader).status_line, "HTTP/1.1 200 OK");
  }
  p = ExpectSameAnswer(summary, reader);
  EXPECT_EQ(p.status_line, "HTTP/1.1 429 Too Many Requests");
  EXPECT_FALSE(p.headers["Retry-After"].empty());
  EXPECT_EQ(Requests("/v1/instances/{id}/summary", 429), 2u);
}

TEST_F(FastPathTest, KeepsPipelinesAndClosesConnectionsAsAsked) {
  StartServer();
  const std::string summary = "/v1/instances/node-1/summary?model=llama&metric=ttft_ms&window=1m";
  RawSocket socket(server_->port());
  ASSERT_TRUE(socket.ok());
  // Kept alive: three requests one after the other, then two pipelined in one send.
  std::string first;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(socket.Send(Get(summary)));
    Parsed p = Parse(socket.ReadResponse());
    EXPECT_EQ(p.status_line, "HTTP/1.1 200 OK");
    EXPECT_EQ(p.headers["Keep-Alive"], "timeout=5, max=5");
    EXPECT_EQ(p.headers.count("Connection"), 0u);
    if (i == 0) first = p.body;
    EXPECT_EQ(p.body, first);
  }
  ASSERT_TRUE(
      socket.Send(Get(summary) + Get("/v1/series?instance=node-1&model=llama&metric=ttft_ms")));
  EXPECT_EQ(Parse(socket.ReadResponse()).body, first);
  Parsed second = Parse(socket.ReadResponse());
  EXPECT_EQ(second.status_line, "HTTP/1.1 200 OK");
  EXPECT_TRUE(json::parse(second.body).contains("points")) << second.body;
  // A routes the fast path leaves to httplib on the same connection, then close.
  ASSERT_TRUE(socket.Send(Get("/v1/health")));
  EXPECT_EQ(Parse(socket.ReadResponse()).status_line, "HTTP/1.1 200 OK");
  ASSERT_TRUE(socket.Send(Get(summary, "Connection: close\r\n")));
  const std::string last = socket.ReadToEnd();
  EXPECT_TRUE(socket.closed_by_server());
  Parsed p = Parse(last);
  EXPECT_EQ(p.headers["Connection"], "close");
  EXPECT_EQ(p.body, first);
}

}  // namespace
}  // namespace inferscope
