// The query server's fast path (QueryServer::ServeFast, query/raw_request.h): which requests it
// reads itself, and, over real HTTP on 127.0.0.1, that its answers are byte for byte what httplib's
// path gives to the same request — statuses, headers, bodies, errors, tokens and rate limits —
// and that it keeps, pipelines and closes connections as httplib's path does.

#include "query/raw_request.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <string_view>
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
  // httplib's line limits: 8192 bytes with the CRLF, for the request line and each header line.
  ASSERT_TRUE(ParseRawRequest(Get("/v1/series?a=" + std::string(8164, 'a')), &r));
  EXPECT_EQ(r.params[0].second.size(), 8164u);
  ASSERT_TRUE(ParseRawRequest(Get("/v1/series", "X: " + std::string(8187, 'a') + "\r\n"), &r));
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
      Get("/v1/series", "X: " + std::string(8188, 'a') + "\r\n"),  // 8193 bytes with its CRLF
      Get("/v1/series?a=" + std::string(8165, 'a')),               // a request line of 8193
      Get("/v1/series", "Accept-Encoding: gzip\r\n"),              // httplib compresses
      Get("/v1/series", "accept-encoding: identity\r\n"),          // (whatever the coding)
      Get("/v1/series", "Range: bytes=0-9\r\n"),                   // httplib answers a part
      Get("/v1/series", "RANGE: x\r\n"),                           // or 416
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

// Splits the bytes of pipelined responses (each with a Content-Length) into one per response; an
// incomplete last one is kept as it is.
std::vector<std::string> SplitResponses(std::string_view all) {
  std::vector<std::string> out;
  while (!all.empty()) {
    const size_t end = all.find("\r\n\r\n");
    if (end == std::string_view::npos) break;
    const size_t cl = all.substr(0, end).find("Content-Length: ");
    const size_t length = cl == std::string_view::npos
                              ? 0
                              : std::stoul(std::string(all.substr(cl + 16, end - cl - 16)));
    const size_t bytes = std::min(all.size(), end + 4 + length);
    out.emplace_back(all.substr(0, bytes));
    all.remove_prefix(bytes);
  }
  if (!all.empty()) out.emplace_back(all);
  return out;
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

  // Like ExpectSameAnswer for a whole request head of any form: `head` is the request line and
  // header lines (each ending in CRLF) without the empty line. The first copy is sent as is, the
  // second with a header that only httplib takes; both on a new connection, one response read.
  // `fast` is whether the fast path must answer the first.
  Parsed ExpectSameRaw(const std::string& head, bool fast) {
    const uint64_t before = FastServedAll();
    RawSocket fast_socket(server_->port());
    EXPECT_TRUE(fast_socket.Send(head + "\r\n"));
    const std::string fast_answer = fast_socket.ReadResponse();
    const uint64_t served = before + (fast ? 1 : 0);
    EXPECT_EQ(FastServedAll(), served) << Printable(head) << ": fast path";
    RawSocket slow_socket(server_->port());
    EXPECT_TRUE(slow_socket.Send(head + "X-Via: httplib%20path\r\n\r\n"));
    const std::string slow_answer = slow_socket.ReadResponse();
    EXPECT_EQ(FastServedAll(), served) << Printable(head) << ": answered by the fast path";
    EXPECT_EQ(fast_answer, slow_answer) << Printable(head);
    EXPECT_FALSE(fast_answer.empty()) << Printable(head);
    return Parse(fast_answer);
  }

  // Requests the fast path answered on either of its routes.
  uint64_t FastServedAll() {
    return FastServed("/v1/series") + FastServed("/v1/instances/{id}/summary");
  }

  // `text` for a failure message: control bytes escaped, long runs cut.
  static std::string Printable(const std::string& text) {
    std::string out;
    for (char c : text.substr(0, 200)) {
      if (c == '\r') {
        out += "\\r";
      } else if (c == '\n') {
        out += "\\n";
      } else if (static_cast<unsigned char>(c) < 0x20) {
        out += "\\x" + std::to_string(static_cast<int>(c));
      } else {
        out += c;
      }
    }
    return text.size() > 200 ? out + "...(" + std::to_string(text.size()) + " bytes)" : out;
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
  {
    // (On a connection of its own that closes at the end: RawSocket::ReadResponse returns all it
    // read, which may hold the next pipelined answer too.)
    RawSocket pipelined(server_->port());
    ASSERT_TRUE(pipelined.ok());
    ASSERT_TRUE(pipelined.Send(Get(summary) +
                               Get("/v1/series?instance=node-1&model=llama&metric=ttft_ms") +
                               Get("/v1/health", "Connection: close\r\n")));
    const std::vector<std::string> answers = SplitResponses(pipelined.ReadToEnd());
    ASSERT_EQ(answers.size(), 3u);
    EXPECT_EQ(Parse(answers[0]).body, first);
    Parsed second = Parse(answers[1]);
    EXPECT_EQ(second.status_line, "HTTP/1.1 200 OK");
    EXPECT_TRUE(json::parse(second.body).contains("points")) << second.body;
    EXPECT_EQ(Parse(answers[2]).headers["Connection"], "close");
  }
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

// A client that pipelines fast-path requests and does not read the answers (the slow-read attack)
// holds no worker: what its socket does not take goes to the gate, and the one worker serves
// others meanwhile. Read at last, every answer is there, whole and in order.
TEST_F(FastPathTest, AnswersAClientDoesNotReadHoldNoWorker) {
  QueryServer::Options options;
  options.threads = 1;
  StartServer(options);
  const std::string summary = "/v1/instances/node-1/summary?model=llama&metric=ttft_ms&window=1m";
  const std::string route = RouteOf(summary);
  RawSocket reader(server_->port(), /*receive_buffer=*/64 * 1024);
  ASSERT_TRUE(reader.ok());
  // Requests in batches of 500, each sent once the last is answered, until the socket takes no
  // more of an answer (the server's send buffer grows to 4 MB: some 7,000 answers of ~600 bytes).
  // One flood of all of them would fill both directions' windows and leave both ends' TCP in
  // zero-window probes.
  std::string batch;
  for (int i = 0; i < 500; ++i) batch += Get(summary);
  const uint64_t first = FastServed(route);
  int sent = 0;
  auto deferred = [&] {
    return metrics_.CounterValue("inferscope_http_responses_deferred_total") > 0;
  };
  while (!deferred() && sent < 40'000) {
    ASSERT_TRUE(reader.Send(batch));
    sent += 500;
    ASSERT_TRUE(testing::WaitFor([&] { return deferred() || FastServed(route) == first + sent; }));
  }
  ASSERT_TRUE(deferred());
  const Parsed other = ExpectSameAnswer(summary);  // on the only worker, meanwhile
  EXPECT_EQ(other.status_line, "HTTP/1.1 200 OK");
  for (int i = 0; i < sent; ++i) {
    const Parsed p = Parse(reader.ReadResponse());
    ASSERT_EQ(p.status_line, "HTTP/1.1 200 OK") << "answer " << i;
    ASSERT_EQ(p.body, other.body) << "answer " << i;
  }
}

// The attacks below send requests at the edges of the fast path's subset; each must be answered
// with the bytes httplib gives, by the fast path only where it says so.

constexpr std::string_view kSummary =
    "/v1/instances/node-1/summary?model=llama&metric=ttft_ms&window=1m";

TEST_F(FastPathTest, ContentCodingsAreLeftToHttplib) {
  // httplib (built with zlib and brotli) compresses a JSON answer when the first Accept-Encoding
  // holds "gzip" or "br"; the fast path writes it as is, so it leaves every Accept-Encoding to
  // httplib.
  StartServer();
  for (const char* coding : {"gzip", "br", "gzip, deflate, br", "deflate", "identity"}) {
    ExpectSameAnswer(std::string(kSummary), "Accept-Encoding: " + std::string(coding) + "\r\n",
                     /*fast_route=*/false);
  }
  ExpectSameAnswer(std::string(kSummary), "accept-encoding: gzip\r\n", /*fast_route=*/false);
}

TEST_F(FastPathTest, RangesAreLeftToHttplibWhichIgnoresThem) {
  // The fast path leaves every Range header to httplib, and the gate removes it before httplib
  // reads the header (gated_server.cc, HeaderForHttplib): the whole answer, never part of it, a
  // 416 or multipart/byteranges.
  StartServer();
  for (const char* range :
       {"bytes=0-9", "bytes=5-", "bytes=-3", "bytes=999999-", "lines=1-2", "x"}) {
    ExpectSameAnswer(std::string(kSummary), "Range: " + std::string(range) + "\r\n",
                     /*fast_route=*/false);
  }
  ExpectSameAnswer(std::string(kSummary), "range: bytes=0-0\r\n", /*fast_route=*/false);
  const uint64_t before = FastServedAll();
  Parsed p = Parse(Exchange(Get(kSummary, "Range: bytes=0-1,4-5\r\nConnection: close\r\n")));
  EXPECT_EQ(FastServedAll(), before);
  EXPECT_EQ(p.headers["Content-Type"], "application/json") << p.body;
  EXPECT_EQ(p.headers.count("Content-Range"), 0u);
  EXPECT_TRUE(json::parse(p.body, nullptr, false).is_object()) << p.body;
}

// A series target of exactly `bytes` bytes.
std::string SeriesTarget(size_t bytes) {
  std::string target = "/v1/series?instance=node-1&model=llama&metric=";
  target.append(bytes - target.size(), 'm');
  return target;
}

TEST_F(FastPathTest, RequestLinesAtHttplibsLimitAnswerAsHttplibDoes) {
  // httplib answers 414 to a request line over 8192 bytes with its CRLF ("GET " + target +
  // " HTTP/1.1\r\n": a target over 8177 bytes), below the gate's own 414 (a target over
  // max_url_bytes, 8192). httplib's 414 keeps the connection (it does not read the headers).
  QueryServer::Options options;
  options.idle_timeout_ms = 300;  // so Exchange's ReadToEnd ends this soon
  StartServer(options);
  for (size_t bytes : {8000, 8176, 8177}) {
    ExpectSameAnswer(SeriesTarget(bytes), "", /*fast_route=*/true);
  }
  for (size_t bytes : {8178, 8179, 8185, 8192}) {
    Parsed p = ExpectSameAnswer(SeriesTarget(bytes), "", /*fast_route=*/false);
    EXPECT_EQ(p.status_line, "HTTP/1.1 414 URI Too Long") << bytes;
  }
}

TEST_F(FastPathTest, HeaderLinesAtHttplibsLimitAnswerAsHttplibDoes) {
  // httplib answers 400 to a header line over 8192 bytes with its CRLF.
  StartServer();
  for (size_t bytes : {4000, 8189, 8190, 8191, 8192, 8193}) {
    const std::string line = "X-Pad: " + std::string(bytes - 7, 'p');
    Parsed p = ExpectSameAnswer(std::string(kSummary), line + "\r\n", /*fast_route=*/bytes <= 8190);
    EXPECT_EQ(p.status_line, bytes <= 8190 ? "HTTP/1.1 200 OK" : "HTTP/1.1 400 Bad Request")
        << bytes;
  }
  // A long head of short lines (under the gate's 16 KiB) is no limit of httplib's.
  std::string many;
  for (int i = 0; i < 150; ++i)
    many += "X-Pad-" + std::to_string(i) + ": " + std::string(80, 'q') + "\r\n";
  ExpectSameAnswer(std::string(kSummary), many, /*fast_route=*/true);
}

TEST_F(FastPathTest, HeaderNamesAnyCaseTheFirstValueTrimmed) {
  QueryServer::Options options;
  options.access.tokens = {
      {"reader", "reader-0123456789abcdef", static_cast<uint8_t>(Scope::kRead)}};
  StartServer(options);
  const std::string summary(kSummary);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"authorization: Bearer reader-0123456789abcdef\r\n", "HTTP/1.1 200 OK"},
      {"AUTHORIZATION: Bearer reader-0123456789abcdef\r\n", "HTTP/1.1 200 OK"},
      {"aUtHoRiZaTiOn:Bearer reader-0123456789abcdef\r\n", "HTTP/1.1 200 OK"},
      {"Authorization: \t Bearer reader-0123456789abcdef \t \r\n", "HTTP/1.1 200 OK"},
      {"Authorization: Bearer  reader-0123456789abcdef\r\n", ""},
      {"Authorization: bearer reader-0123456789abcdef\r\n", ""},
      {"Authorization: Bearer nope-0123456789abcdef\r\n"
       "Authorization: Bearer reader-0123456789abcdef\r\n",
       "HTTP/1.1 401 Unauthorized"},
      {"authorization: Bearer reader-0123456789abcdef\r\n"
       "Authorization: Bearer nope-0123456789abcdef\r\n",
       "HTTP/1.1 200 OK"},
      {"Authorization: Bearer reader-0123456789abcdef\r\nAUTHORIZATION: x\r\n", "HTTP/1.1 200 OK"},
  };
  for (const auto& [headers, status] : cases) {
    Parsed p = ExpectSameAnswer(summary, headers);
    if (!status.empty()) {
      EXPECT_EQ(p.status_line, status) << headers;
    }
  }
}

TEST_F(FastPathTest, QueryFormsAnswerAsHttplibDoes) {
  StartServer();
  // Read by the fast path: empty values, repeated names (400 naming the parameter), a pair
  // repeated exactly (httplib keeps one, so it is no repeat), ';' (no separator to httplib), every
  // target byte.
  for (const char* target : {
           "/v1/instances/node-1/summary?model=llama&metric=ttft_ms&window=",
           "/v1/instances/node-1/summary?model=&metric=ttft_ms",
           "/v1/instances/node-1/summary?model=llama&metric=ttft_ms&metric=e2e_ms",
           "/v1/instances/node-1/summary?metric=e2e_ms&model=llama&metric=ttft_ms",
           "/v1/instances/node-1/summary?model=llama&model=llama&metric=ttft_ms",
           "/v1/instances/node-1/summary?model=llama;metric&metric=ttft_ms",
           "/v1/instances/node-1/summary?model=llama&metric=ttft_ms;x",
           "/v1/instances/node-1/summary?model=ll:a@m!a$'()*,-._~&metric=ttft_ms",
           "/v1/instances/node-1/summary",
           "/v1/series?instance=node-1&model=llama&metric=ttft_ms&step=10s&step=1m",
       }) {
    ExpectSameAnswer(target, "", /*fast_route=*/true);
  }
  // Left to httplib: '?' with nothing after, a trailing or doubled '&', a pair without '=' or
  // name, two '=' in a pair (';' separates nothing), a second '?', '+', '%'.
  for (const char* target : {
           "/v1/instances/node-1/summary?model=llama;metric=ttft_ms",
           "/v1/instances/node-1/summary?model=llama&metric=ttft_ms;x=1",
           "/v1/instances/node-1/summary?",
           "/v1/instances/node-1/summary?model=llama&metric=ttft_ms&",
           "/v1/instances/node-1/summary?&model=llama&metric=ttft_ms",
           "/v1/instances/node-1/summary?model=llama&&metric=ttft_ms",
           "/v1/instances/node-1/summary?model&metric=ttft_ms",
           "/v1/instances/node-1/summary?=llama&metric=ttft_ms",
           "/v1/instances/node-1/summary??model=llama&metric=ttft_ms",
           "/v1/instances/node-1/summary?model=llama?metric=ttft_ms",
           "/v1/instances/node-1/summary?model=ll+ama&metric=ttft_ms",
           "/v1/instances/node-1/summary?model=ll%61ma&metric=ttft_ms",
       }) {
    ExpectSameAnswer(target, "", /*fast_route=*/false);
  }
}

TEST_F(FastPathTest, RequestLinesPathsAndOddBytesAnswerAsHttplibDoes) {
  StartServer();
  const std::string query = "?model=llama&metric=ttft_ms";
  // Read by the fast path: no Host header, a ".." or "." segment as the instance (httplib does not
  // normalise paths: its pattern captures them as the fast path does).
  ExpectSameRaw("GET /v1/instances/node-1/summary" + query + " HTTP/1.1\r\n", true);
  ExpectSameRaw("GET /v1/instances/../summary" + query + " HTTP/1.1\r\nHost: x\r\n", true);
  ExpectSameRaw("GET /v1/instances/./summary" + query + " HTTP/1.1\r\nHost: x\r\n", true);
  // Left to httplib (404, 400 or its answer to the same route).
  for (const std::string& head : {
           "GET /v1//series" + query + " HTTP/1.1\r\nHost: x\r\n",
           "GET /v1/series/" + query + " HTTP/1.1\r\nHost: x\r\n",
           "GET /v1/./series" + query + " HTTP/1.1\r\nHost: x\r\n",
           "GET //v1/series" + query + " HTTP/1.1\r\nHost: x\r\n",
           "GET /v1/instances/node-1/../node-1/summary" + query + " HTTP/1.1\r\nHost: x\r\n",
           "GET /v1/instances//summary" + query + " HTTP/1.1\r\nHost: x\r\n",
           "get /v1/instances/node-1/summary" + query + " HTTP/1.1\r\nHost: x\r\n",
           "Get /v1/instances/node-1/summary" + query + " HTTP/1.1\r\nHost: x\r\n",
           // (a HEAD answer's Content-Length has no body after it: closed, so the read ends)
           "HEAD /v1/instances/node-1/summary" + query +
               " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n",
           "GET http://x/v1/instances/node-1/summary" + query + " HTTP/1.1\r\nHost: x\r\n",
           "GET /v1/instances/node-1/summary" + query + " HTTP/1.0\r\nHost: x\r\n",
           "GET /v1/instances/node-1/summary" + query +
               " HTTP/1.0\r\nHost: x\r\nConnection: Keep-Alive\r\n",
           "GET /v1/instances/node-1/summary" + query + " http/1.1\r\nHost: x\r\n",
           "GET /v1/instances/node-1/summary" + query + " HTTP/1.1 \r\nHost: x\r\n",
           "GET  /v1/instances/node-1/summary" + query + " HTTP/1.1\r\nHost: x\r\n",
           "GET\t/v1/instances/node-1/summary" + query + " HTTP/1.1\r\nHost: x\r\n",
           "GET /v1/instances/node-1/summary" + query + "\tHTTP/1.1\r\nHost: x\r\n",
           std::string("GET /v1/instances/node-1/summary\0", 34) + query +
               " HTTP/1.1\r\nHost: x\r\n",
           "GET /v1/instances/node-1/summary" + query + " HTTP/1.1\r\nHost: x\r\nX: a" +
               std::string(1, '\0') + "b\r\n",
           "GET /v1/instances/node-1/summary" + query + " HTTP/1.1\r\nHost: x\r\nX" +
               std::string(1, '\0') + ": b\r\n",
           "GET /v1/instances/node-1/summary" + query + " HTTP/1.1\r\nHost : x\r\n",
           "GET /v1/instances/node-1/summary" + query + " HTTP/1.1\r\nHost: x\r\n x: folded\r\n",
       }) {
    ExpectSameRaw(head, false);
  }
}

TEST_F(FastPathTest, ConnectionHeadersKeepOrCloseAsHttplibDoes) {
  QueryServer::Options options;
  options.idle_timeout_ms = 300;  // a kept connection's ReadToEnd ends this soon
  StartServer(options);
  const std::string line = "GET " + std::string(kSummary) + " HTTP/1.1\r\nHost: x\r\n";
  // httplib closes only on a first Connection value of exactly "close" (its name in any case).
  const std::vector<std::pair<std::string, bool>> cases = {
      {"", false},
      {"Connection: keep-alive\r\n", false},
      {"connection: close\r\n", true},
      {"CONNECTION: close\r\n", true},
      {"Connection:close\r\n", true},
      {"Connection: close \t\r\n", true},
      {"Connection: Close\r\n", false},
      {"Connection: close, te\r\n", false},
      {"Connection: keep-alive\r\nConnection: close\r\n", false},
      {"Connection: close\r\nConnection: keep-alive\r\n", true},
  };
  for (const auto& [headers, close] : cases) {
    Parsed p = ExpectSameRaw(line + headers, true);
    EXPECT_EQ(p.headers.count("Connection"), close ? 1u : 0u) << headers;
    EXPECT_EQ(p.headers.count("Keep-Alive"), close ? 0u : 1u) << headers;
    // And the server keeps or closes the connection as it says.
    RawSocket socket(server_->port());
    ASSERT_TRUE(socket.Send(line + headers + "\r\n" + line + "\r\n"));
    const std::string all = socket.ReadToEnd();  // a kept connection ends at the idle timeout
    size_t responses = 0;
    for (size_t at = all.find("HTTP/1.1 "); at != std::string::npos;
         at = all.find("HTTP/1.1 ", at + 1)) {
      ++responses;
    }
    EXPECT_EQ(responses, close ? 1u : 2u) << headers;
  }
}

TEST_F(FastPathTest, GateAndReaderAgreeWhereARequestEnds) {
  // Request smuggling: the gate (Inspect) measures a request by its first empty line and its
  // Content-Length; the fast path may answer only a request that both read as ending there, and
  // whatever follows on the connection is the next request as httplib would read it.
  QueryServer::Options options;
  options.idle_timeout_ms = 300;  // a kept connection's ReadToEnd ends this soon
  StartServer(options);
  const std::string line = "GET " + std::string(kSummary) + " HTTP/1.1\r\nHost: x\r\n";
  const std::string health = "GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  {
    // A zero length, then a pipelined request: both answered, the first by the fast path.
    const uint64_t before = FastServedAll();
    RawSocket socket(server_->port());
    ASSERT_TRUE(socket.Send(line + "Content-Length: 0\r\n\r\n" + health));
    const std::string all = socket.ReadToEnd();
    EXPECT_EQ(FastServedAll(), before + 1);
    EXPECT_NE(all.find("HTTP/1.1 200 OK"), std::string::npos);
    EXPECT_NE(all.find("\"status\":\"ok\""), all.npos) << all.substr(0, 400);
  }
  // Bodies the gate counts in the request, whatever their framing: never the fast path's, and a
  // body that looks like a request is never answered as one.
  const std::string smuggled = "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n";
  for (const std::string& framing : {
           "Content-Length: " + std::to_string(smuggled.size()) + "\r\n",
           "Content-Length : " + std::to_string(smuggled.size()) + "\r\n",
           "Content-Length:\t" + std::to_string(smuggled.size()) + "\t\r\n",
           "Content-Length: 0\r\nContent-Length: " + std::to_string(smuggled.size()) + "\r\n",
           "content-length: 0" + std::to_string(smuggled.size()) + "\r\n",
           std::string("Transfer-Encoding: chunked\r\n"),
           std::string("Transfer-Encoding: identity\r\nContent-Length: 0\r\n"),
       }) {
    const uint64_t before = FastServedAll();
    RawSocket socket(server_->port());
    ASSERT_TRUE(socket.Send(line + framing + "\r\n" + smuggled));
    const std::string all = socket.ReadToEnd();
    EXPECT_EQ(FastServedAll(), before) << Printable(framing);
    EXPECT_EQ(all.find("\"status\":\"ok\""), std::string::npos) << Printable(framing);
  }
}

}  // namespace
}  // namespace inferscope
