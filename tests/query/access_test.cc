// Access control of the query API (query/access.h): tokens and scopes, rate limits, body and URL
// limits, CORS, the loopback-only rule, and the Prometheus export (query/export_handlers.cc). The
// server tests run a real QueryServer on 127.0.0.1 (port 0, read back) over a real RocksDB store
// and talk real HTTP to it.

#include "query/access.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <charconv>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "query/handlers.h"
#include "query/server.h"
#include "state/state_store.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using nlohmann::json;

constexpr char kReader[] = "reader-token-0123456789abcdef";
constexpr char kWriter[] = "writer-token-0123456789abcdef";
constexpr char kAdmin[] = "admin-token-0123456789abcdef0";

std::vector<ApiToken> TestTokens() {
  return {{"grafana", kReader, static_cast<uint8_t>(Scope::kRead)},
          {"ops-bot", kWriter, static_cast<uint8_t>(Scope::kWrite)},
          {"root", kAdmin, static_cast<uint8_t>(Scope::kAdmin)}};
}

httplib::Headers Bearer(const std::string& token) {
  return {{"Authorization", std::string("Bearer ") + token}};
}

void ExpectError(const httplib::Result& res, int status, const std::string& code) {
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, status) << res->body;
  EXPECT_EQ(res->get_header_value("Content-Type"), "application/json");
  json body = json::parse(res->body, nullptr, false);
  ASSERT_TRUE(body.is_object()) << res->body;
  ASSERT_TRUE(body.contains("error")) << res->body;
  EXPECT_EQ(body["error"]["code"], code) << res->body;
  EXPECT_TRUE(body["error"]["message"].is_string()) << res->body;
  EXPECT_TRUE(body["error"]["details"].is_object()) << res->body;
  ASSERT_TRUE(body["timestamp"].is_string()) << res->body;
  EXPECT_TRUE(ParseTimeMs(body["timestamp"].get<std::string>()).has_value()) << res->body;
}

TEST(TokenSetTest, FindsTheTokenAndSaysWhyNot) {
  TokenSet tokens(TestTokens());
  TokenSet::Outcome outcome;
  EXPECT_EQ(tokens.Authenticate("", &outcome), nullptr);
  EXPECT_EQ(outcome, TokenSet::Outcome::kMissing);
  EXPECT_EQ(tokens.Authenticate("Basic dXNlcjpwYXNz", &outcome), nullptr);
  EXPECT_EQ(outcome, TokenSet::Outcome::kMalformed);
  EXPECT_EQ(tokens.Authenticate("Bearer reader-token-0123456789abcdeX", &outcome), nullptr);
  EXPECT_EQ(outcome, TokenSet::Outcome::kUnknown);
  // A prefix of a secret, and a secret with more after it, are not the secret.
  EXPECT_EQ(tokens.Authenticate("Bearer reader-token-0123456789abcde", &outcome), nullptr);
  EXPECT_EQ(tokens.Authenticate(std::string("Bearer ") + kReader + "0", &outcome), nullptr);
  const ApiToken* found = tokens.Authenticate(std::string("Bearer ") + kWriter, &outcome);
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(outcome, TokenSet::Outcome::kOk);
  EXPECT_EQ(found->name, "ops-bot");
  // The scheme is case-insensitive (RFC 7235).
  found = tokens.Authenticate(std::string("bearer ") + kAdmin, &outcome);
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found->name, "root");
}

TEST(ScopeTest, AdminHoldsEveryScope) {
  const uint8_t read = static_cast<uint8_t>(Scope::kRead);
  const uint8_t admin = static_cast<uint8_t>(Scope::kAdmin);
  EXPECT_TRUE(HasScope(read, Scope::kRead));
  EXPECT_FALSE(HasScope(read, Scope::kWrite));
  EXPECT_FALSE(HasScope(read, Scope::kAdmin));
  EXPECT_FALSE(HasScope(static_cast<uint8_t>(Scope::kWrite), Scope::kRead));
  for (Scope s : {Scope::kRead, Scope::kWrite, Scope::kAdmin}) EXPECT_TRUE(HasScope(admin, s));
  EXPECT_EQ(ScopeList(read | static_cast<uint8_t>(Scope::kWrite)), "read,write");
}

TEST(RateLimiterTest, RefillsAtTheRateAndSaysWhenToRetry) {
  MetricsRegistry metrics;
  RateLimitOptions o;
  o.rate = 0.5;  // one request every 2 s
  o.burst = 3;
  RateLimiter limiter(o, &metrics);
  const int64_t t0 = 1'000'000'000'000;
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.Acquire("a", t0).allowed) << i;
  RateLimiter::Decision refused = limiter.Acquire("a", t0);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.retry_after_s, 2);
  // Another client has its own bucket.
  EXPECT_TRUE(limiter.Acquire("b", t0).allowed);
  // 1.5 s later: 0.75 of a request, so still refused, retry after the 0.5 s left (rounded up).
  refused = limiter.Acquire("a", t0 + 1'500'000'000);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.retry_after_s, 1);
  EXPECT_TRUE(limiter.Acquire("a", t0 + 2'000'000'000).allowed);
  EXPECT_FALSE(limiter.Acquire("a", t0 + 2'000'000'000).allowed);
  EXPECT_EQ(metrics.GetCounter("inferscope_http_rate_limited_total", "")->value(), 3);
}

// "c<i>", appended (GCC 12 warns falsely, -Wrestrict, on "literal" + std::string).
std::string ClientKey(int i) {
  std::string key = "c";
  key += std::to_string(i);
  return key;
}

TEST(RateLimiterTest, MemoryStaysBoundedWithManyClients) {
  MetricsRegistry metrics;
  RateLimitOptions o;
  o.rate = 1;
  o.burst = 1;
  o.max_clients = 16;
  RateLimiter limiter(o, &metrics);
  const int64_t t0 = 1'000'000'000'000;
  // 100 clients at once: 16 get buckets, the rest share the overflow bucket (one request in it).
  int allowed = 0;
  for (int i = 0; i < 100; ++i) allowed += limiter.Acquire(ClientKey(i), t0).allowed;
  EXPECT_EQ(limiter.size(), 16u);
  EXPECT_EQ(allowed, 17);
  EXPECT_EQ(metrics.GetCounter("inferscope_http_rate_limit_overflow_total", "")->value(), 84);
  // Once the buckets have refilled they are as good as new: the table makes room for new clients.
  const int64_t t1 = t0 + 5'000'000'000;
  for (int i = 100; i < 110; ++i) {
    EXPECT_TRUE(limiter.Acquire(ClientKey(i), t1).allowed) << i;
  }
  EXPECT_LE(limiter.size(), 16u);
  EXPECT_EQ(metrics.GetCounter("inferscope_http_rate_limit_overflow_total", "")->value(), 84);
}

TEST(AccessConfigTest, TokenFileErrorsNameTheLine) {
  testing::TempDir dir;
  const std::string path = dir.str() + "/tokens";
  std::ofstream(path) << "# name scopes token\n\ngrafana read " << kReader << "\n"
                      << "ops write,admin " << kWriter << "\n";
  Result<std::vector<ApiToken>> tokens = LoadTokenFile(path);
  ASSERT_TRUE(tokens.ok()) << tokens.status().ToString();
  ASSERT_EQ(tokens->size(), 2u);
  EXPECT_EQ((*tokens)[1].name, "ops");
  EXPECT_EQ((*tokens)[1].scopes,
            static_cast<uint8_t>(Scope::kWrite) | static_cast<uint8_t>(Scope::kAdmin));

  std::ofstream(path) << "grafana read " << kReader << "\nbot delete " << kWriter << "\n";
  tokens = LoadTokenFile(path);
  ASSERT_FALSE(tokens.ok());
  EXPECT_NE(tokens.status().message().find(path + ":2: unknown scope 'delete'"), std::string::npos)
      << tokens.status().message();
  std::ofstream(path) << "bot read short\n";
  tokens = LoadTokenFile(path);
  ASSERT_FALSE(tokens.ok());
  EXPECT_NE(tokens.status().message().find(path + ":1: "), std::string::npos);
  EXPECT_NE(tokens.status().message().find("16..1024 bytes"), std::string::npos);
  std::ofstream(path) << "a read " << kReader << "\nb read " << kReader << "\n";
  EXPECT_FALSE(LoadTokenFile(path).ok());  // the same secret twice
}

TEST(AccessConfigTest, TopologyErrorsNameFileLineAndField) {
  auto parse = [](const std::string& yaml) {
    YAML::Node doc = YAML::Load(yaml);
    return ParseQueryAccess(ConfigNode("t.yaml", doc["query"], "query"));
  };
  Result<QuerySectionAccess> ok =
      parse(std::string("query:\n  tokens:\n    - name: grafana\n") + "      token: " + kReader +
            "\n      scopes: [read]\n"
            "  rate_limit: {rate: 5, burst: 10}\n"
            "  cors: {allowed_origins: [\"https://g.example\"]}\n"
            "  export: {window: 30s, max_series: 50}\n"
            "  max_connections_per_address: 1000\n");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->max_connections_per_address, 1000u);
  EXPECT_EQ(ok->access.tokens.size(), 1u);
  EXPECT_EQ(ok->access.rate_limit.rate, 5);
  EXPECT_EQ(ok->export_options.window_ms, 30'000);
  EXPECT_EQ(ok->export_options.max_series, 50u);

  Result<QuerySectionAccess> bad =
      parse(std::string("query:\n  tokens:\n    - name: grafana\n") + std::string("      token: ") +
            kReader + "\n      scopes: [reed]\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("t.yaml:5:15: query.tokens[0].scopes: unknown scope"),
            std::string::npos)
      << bad.status().message();
  bad = parse("query:\n  cors:\n    allowed_origins: [\"https://g.example/path\"]\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("t.yaml:3:22: query.cors.allowed_origins"),
            std::string::npos)
      << bad.status().message();
  bad = parse("query:\n  max_connections_per_address: 0\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("max_connections_per_address"), std::string::npos)
      << bad.status().message();
  bad = parse("query:\n  rate_limit: {rate: -1}\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("query.rate_limit.rate"), std::string::npos)
      << bad.status().message();
}

TEST(AccessConfigTest, LoopbackHosts) {
  for (const char* host : {"127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"}) {
    EXPECT_TRUE(IsLoopbackHost(host)) << host;
  }
  for (const char* host : {"0.0.0.0", "::", "10.0.0.1", "192.168.1.10", "example.com", ""}) {
    EXPECT_FALSE(IsLoopbackHost(host)) << host;
  }
}

constexpr int64_t kPaneMs = 10'000;
constexpr int64_t kWatermark = 665'000;  // the latest closed 1-minute window is [600000, 660000)

class AccessServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StateStoreOptions options;
    options.path = dir_.str();
    auto opened = StateStore::Open(options, &metrics_);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    store_ = std::move(opened).value();
    // Two instances, panes over 00:09:00-00:12:00: latencies, tokens, one gauge.
    std::vector<WindowSummary> panes;
    auto add = [&](const std::string& instance, const std::string& model, const std::string& metric,
                   int64_t start, const std::vector<double>& values, size_t errors) {
      WindowSummary pane;
      pane.series = {interner_.Intern(instance), interner_.Intern(model), interner_.Intern(metric)};
      pane.start_ms = start;
      pane.end_ms = start + kPaneMs;
      pane.max_event_time_ms = start + kPaneMs - 1;
      for (size_t i = 0; i < values.size(); ++i) {
        pane.agg.Add(values[i], start + static_cast<int64_t>(i));
        pane.agg.AddEvent(i < errors);
      }
      panes.push_back(std::move(pane));
    };
    for (int k = 0; k < 18; ++k) {
      const int64_t start = 540'000 + k * kPaneMs;
      for (const std::string instance : {"vllm-0", "tgi-1"}) {
        const double scale = instance == "vllm-0" ? 1.0 : 3.0;
        std::vector<double> ttft, tpot, e2e, out;
        for (int j = 1; j <= 20; ++j) {
          ttft.push_back(scale * (50 + 7 * j + k));
          tpot.push_back(scale * (10 + j % 5));
          e2e.push_back(scale * (400 + 13 * j + 2 * k));
          out.push_back(100 + j);
        }
        add(instance, "llama-3.1-8b", "ttft_ms", start, ttft, 0);
        add(instance, "llama-3.1-8b", "tpot_ms", start, tpot, 0);
        add(instance, "llama-3.1-8b", "e2e_ms", start, e2e, k % 3 == 0 ? 2 : 0);
        add(instance, "llama-3.1-8b", "output_tokens", start, out, 0);
        add(instance, "llama-3.1-8b", "kv_cache_usage", start, {0.25, 0.5 + 0.01 * k}, 0);
      }
    }
    ASSERT_TRUE(store_->WritePanes(panes, interner_, kWatermark).ok());
  }

  // Starts a server with `options` (host 127.0.0.1, port 0 unless set).
  void Start(QueryServer::Options options) {
    server_ = std::make_unique<QueryServer>(
        options, store_.get(), &metrics_, &clock_,
        [] {
          return json{{"version", "test"}};
        },
        std::vector<Registry::Entry>{});
    Status s = server_->Start();
    ASSERT_TRUE(s.ok()) << s.ToString();
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
  }

  static QueryServer::Options WithTokens() {
    QueryServer::Options o;
    o.access.tokens = TestTokens();
    return o;
  }

  testing::TempDir dir_;
  MetricsRegistry metrics_;
  Interner interner_;
  ManualClock clock_{1'750'000'000'000};
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<QueryServer> server_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(AccessServerTest, MissingOrBadTokenIs401WithWwwAuthenticate) {
  ASSERT_NO_FATAL_FAILURE(Start(WithTokens()));
  auto res = client_->Get("/v1/instances");
  ExpectError(res, 401, "UNAUTHORIZED");
  EXPECT_EQ(res->get_header_value("WWW-Authenticate"), "Bearer realm=\"inferscope\"");
  EXPECT_EQ(json::parse(res->body)["error"]["details"]["reason"], "missing_token");
  res = client_->Get("/v1/instances", Bearer("not-a-token-0123456789abcdef"));
  ExpectError(res, 401, "UNAUTHORIZED");
  EXPECT_EQ(res->get_header_value("WWW-Authenticate"),
            "Bearer realm=\"inferscope\", error=\"invalid_token\"");
  res = client_->Get("/v1/instances", {{"Authorization", std::string("Basic ") + kReader}});
  ExpectError(res, 401, "UNAUTHORIZED");
  // The export is guarded like every other route; health is not.
  ExpectError(client_->Get("/v1/export/prometheus"), 401, "UNAUTHORIZED");
  res = client_->Get("/v1/health");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  res = client_->Get("/v1/instances", Bearer(kReader));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
  EXPECT_NE(metrics_.RenderPrometheus().find(
                "inferscope_http_requests_total{route=\"/v1/instances\",status=\"401\"} 3"),
            std::string::npos);
}

TEST_F(AccessServerTest, MissingScopeIs403NamingIt) {
  ASSERT_NO_FATAL_FAILURE(Start(WithTokens()));
  // A read token may not write.
  auto res = client_->Post("/v1/silences", Bearer(kReader), "{}", "application/json");
  ExpectError(res, 403, "FORBIDDEN");
  json body = json::parse(res->body);
  EXPECT_EQ(body["error"]["details"]["required_scope"], "write");
  EXPECT_EQ(body["error"]["details"]["token"], "grafana");
  EXPECT_EQ(res->get_header_value("WWW-Authenticate"),
            "Bearer realm=\"inferscope\", error=\"insufficient_scope\", scope=\"write\"");
  // A write-only token may not read.
  ExpectError(client_->Get("/v1/instances", Bearer(kWriter)), 403, "FORBIDDEN");
  // With the write scope the request reaches the handler (which has no silence registry here).
  res = client_->Post("/v1/silences", Bearer(kWriter), "{}", "application/json");
  ASSERT_TRUE(res);
  EXPECT_NE(res->status, 403) << res->body;
  EXPECT_NE(res->status, 401) << res->body;
  // Admin routes need admin; admin may do everything.
  ExpectError(client_->Get("/v1/access", Bearer(kReader)), 403, "FORBIDDEN");
  res = client_->Get("/v1/access", Bearer(kAdmin));
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  body = json::parse(res->body);
  ASSERT_EQ(body["tokens"].size(), 3u);
  EXPECT_EQ(body["tokens"][0], (json{{"name", "grafana"}, {"scopes", {"read"}}}));
  for (const char* secret : {kReader, kWriter, kAdmin}) {
    EXPECT_EQ(res->body.find(secret), std::string::npos) << "a secret in /v1/access";
  }
  res = client_->Get("/v1/instances", Bearer(kAdmin));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

TEST_F(AccessServerTest, RateLimitIs429WithRetryAfter) {
  QueryServer::Options o = WithTokens();
  o.access.rate_limit.rate = 1;
  o.access.rate_limit.burst = 2;
  ASSERT_NO_FATAL_FAILURE(Start(o));
  // The clock is manual: no refill happens between these requests.
  for (int i = 0; i < 2; ++i) {
    auto res = client_->Get("/v1/instances", Bearer(kReader));
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200) << i;
  }
  auto res = client_->Get("/v1/instances", Bearer(kReader));
  ExpectError(res, 429, "RATE_LIMITED");
  EXPECT_EQ(res->get_header_value("Retry-After"), "1");
  EXPECT_EQ(json::parse(res->body)["error"]["details"]["retry_after_s"], 1);
  // Per token: another token still has its burst.
  res = client_->Get("/v1/instances", Bearer(kAdmin));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  // Requests without a valid token are limited by address (guessing is limited too).
  ExpectError(client_->Get("/v1/instances"), 401, "UNAUTHORIZED");
  ExpectError(client_->Get("/v1/instances", Bearer("guess-0123456789abcdefgh")), 401,
              "UNAUTHORIZED");
  ExpectError(client_->Get("/v1/instances"), 429, "RATE_LIMITED");
  // One second later the bucket holds one request again.
  clock_.Advance(1'000);
  res = client_->Get("/v1/instances", Bearer(kReader));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  ExpectError(client_->Get("/v1/instances", Bearer(kReader)), 429, "RATE_LIMITED");
}

TEST_F(AccessServerTest, AnonymousClientsAreLimitedWithoutTokens) {
  QueryServer::Options o;
  o.access.rate_limit.rate = 2;
  ASSERT_NO_FATAL_FAILURE(Start(o));
  for (int i = 0; i < 2; ++i) {
    auto res = client_->Get("/v1/instances");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200) << i;
  }
  auto res = client_->Get("/v1/instances");
  ExpectError(res, 429, "RATE_LIMITED");
  EXPECT_EQ(res->get_header_value("Retry-After"), "1");
}

TEST_F(AccessServerTest, OversizeBodyIs413AndOversizeUrlIs414) {
  QueryServer::Options o;
  o.max_body_bytes = 1024;
  o.max_url_bytes = 1024;
  ASSERT_NO_FATAL_FAILURE(Start(o));
  auto res =
      client_->Post("/v1/analysis/detect-bottlenecks", std::string(4096, ' '), "application/json");
  ExpectError(res, 413, "PAYLOAD_TOO_LARGE");
  res = client_->Get(std::string("/v1/instances?cursor=") + std::string(2000, 'a'));
  ExpectError(res, 414, "URI_TOO_LONG");
  // Just under the limit is fine (a 400 from the handler for the malformed cursor, not a 414).
  res = client_->Get(std::string("/v1/instances?cursor=") + std::string(900, 'a'));
  ExpectError(res, 400, "VALIDATION_ERROR");
  // A URL longer than the whole header limit still gets 414, not 431.
  res = client_->Get(std::string("/v1/instances?cursor=") + std::string(20'000, 'a'));
  ExpectError(res, 414, "URI_TOO_LONG");
  EXPECT_NE(metrics_.RenderPrometheus().find(
                "inferscope_http_connections_closed_total{reason=\"url_too_long\"} 2"),
            std::string::npos);
}

TEST_F(AccessServerTest, CorsOnlyForConfiguredOrigins) {
  ASSERT_NO_FATAL_FAILURE(Start(QueryServer::Options{}));
  // Default: no CORS headers, preflights refused.
  auto res = client_->Get("/v1/instances", {{"Origin", "https://grafana.example.com"}});
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_FALSE(res->has_header("Access-Control-Allow-Origin"));
  res = client_->Options("/v1/instances", {{"Origin", "https://grafana.example.com"},
                                           {"Access-Control-Request-Method", "GET"}});
  ExpectError(res, 403, "FORBIDDEN");
  EXPECT_FALSE(res->has_header("Access-Control-Allow-Origin"));
  server_->Stop();

  QueryServer::Options o = WithTokens();
  o.access.cors.allowed_origins = {"https://grafana.example.com"};
  o.access.cors.max_age_s = 120;
  ASSERT_NO_FATAL_FAILURE(Start(o));
  // The preflight needs no token (browsers send none).
  res = client_->Options("/v1/instances", {{"Origin", "https://grafana.example.com"},
                                           {"Access-Control-Request-Method", "GET"},
                                           {"Access-Control-Request-Headers", "authorization"}});
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 204) << res->body;
  EXPECT_EQ(res->get_header_value("Access-Control-Allow-Origin"), "https://grafana.example.com");
  EXPECT_NE(res->get_header_value("Access-Control-Allow-Headers").find("Authorization"),
            std::string::npos);
  EXPECT_NE(res->get_header_value("Access-Control-Allow-Methods").find("GET"), std::string::npos);
  EXPECT_EQ(res->get_header_value("Access-Control-Max-Age"), "120");
  res = client_->Options("/v1/instances", {{"Origin", "https://evil.example"},
                                           {"Access-Control-Request-Method", "GET"}});
  ExpectError(res, 403, "FORBIDDEN");
  EXPECT_FALSE(res->has_header("Access-Control-Allow-Origin"));
  // Actual requests: the allowed origin can read answers, errors included; others get no header.
  httplib::Headers headers = Bearer(kReader);
  headers.emplace("Origin", "https://grafana.example.com");
  res = client_->Get("/v1/instances", headers);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Access-Control-Allow-Origin"), "https://grafana.example.com");
  EXPECT_EQ(res->get_header_value("Vary"), "Origin");
  res = client_->Get("/v1/instances", {{"Origin", "https://grafana.example.com"}});
  ExpectError(res, 401, "UNAUTHORIZED");
  EXPECT_EQ(res->get_header_value("Access-Control-Allow-Origin"), "https://grafana.example.com");
  EXPECT_NE(res->get_header_value("Access-Control-Expose-Headers").find("WWW-Authenticate"),
            std::string::npos);
  res = client_->Get("/v1/instances", {{"Origin", "https://evil.example"},
                                       {"Authorization", std::string("Bearer ") + kReader}});
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_FALSE(res->has_header("Access-Control-Allow-Origin"));
}

TEST_F(AccessServerTest, NonLoopbackWithoutTokensIsRefused) {
  QueryServer::Options o;
  o.host = "0.0.0.0";
  QueryServer server(o, store_.get(), &metrics_, &clock_, [] { return json::object(); }, {});
  Status s = server.Start();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("'0.0.0.0', which is not a loopback address, needs API tokens"),
            std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("query.tokens"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("--tokens"), std::string::npos) << s.message();
  // With tokens it listens (on every address; the test talks to it over loopback).
  o.access.tokens = TestTokens();
  ASSERT_NO_FATAL_FAILURE(Start(o));
  auto res = client_->Get("/v1/instances", Bearer(kReader));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

// The value of the sample `line_prefix` ("name{labels}") in a Prometheus text page.
std::optional<double> Sample(const std::string& text, const std::string& line_prefix) {
  const std::string needle = std::string("\n") + line_prefix + " ";
  const size_t at = text.find(needle);
  if (at == std::string::npos) return std::nullopt;
  const size_t start = at + needle.size();
  const size_t end = text.find('\n', start);
  double v = 0;
  auto [ptr, ec] = std::from_chars(text.data() + start, text.data() + end, v);
  if (ec != std::errc() || ptr != text.data() + end) return std::nullopt;
  return v;
}

TEST_F(AccessServerTest, ExportEqualsTheSummaryOfTheLatestClosedWindow) {
  ASSERT_NO_FATAL_FAILURE(Start(QueryServer::Options{}));
  auto res = client_->Get("/v1/export/prometheus");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/plain; version=0.0.4");
  const std::string text = std::string("\n") + res->body;
  EXPECT_EQ(Sample(text, "inferscope_export_window_start_timestamp_seconds"), 600.0);
  EXPECT_EQ(Sample(text, "inferscope_export_window_end_timestamp_seconds"), 660.0);
  EXPECT_EQ(Sample(text, "inferscope_export_series"), 10.0);
  EXPECT_EQ(Sample(text, "inferscope_export_series_dropped"), 0.0);
  EXPECT_NE(text.find("# TYPE inferscope_ttft_seconds summary\n"), std::string::npos);

  for (const std::string instance : {"vllm-0", "tgi-1"}) {
    const std::string labels = std::string("{instance=\"") + instance + "\",model=\"llama-3.1-8b\"";
    auto summary = [&](const std::string& metric) {
      auto r = client_->Get(std::string("/v1/instances/") + instance +
                            "/summary?model=llama-3.1-8b&metric=" + metric +
                            "&window=1m&from=600000&to=660000");
      EXPECT_TRUE(r);
      EXPECT_EQ(r->status, 200) << r->body;
      json body = json::parse(r->body);
      EXPECT_EQ(body["windows"].size(), 1u) << body;
      return body["windows"][0];
    };
    for (const auto& [metric, family] :
         std::map<std::string, std::string>{{"ttft_ms", "inferscope_ttft_seconds"},
                                            {"tpot_ms", "inferscope_tpot_seconds"},
                                            {"e2e_ms", "inferscope_e2e_seconds"}}) {
      json w = summary(metric);
      ASSERT_EQ(w["start"], 600'000);
      const std::map<std::string, std::string> quantiles = {{"0", "min"},    {"0.5", "p50"},
                                                            {"0.9", "p90"},  {"0.95", "p95"},
                                                            {"0.99", "p99"}, {"1", "max"}};
      for (const auto& [q, field] : quantiles) {
        std::optional<double> got = Sample(text, family + labels + ",quantile=\"" + q + "\"}");
        ASSERT_TRUE(got) << family << " " << q << "\n" << text;
        EXPECT_EQ(*got, w[field].get<double>() / 1000) << family << " " << q;
      }
      EXPECT_EQ(Sample(text, family + "_mean" + labels + "}"), w["mean"].get<double>() / 1000);
    }
    json e2e = summary("e2e_ms");
    EXPECT_EQ(Sample(text, std::string("inferscope_requests_per_second") + labels + "}"),
              e2e["events"].get<double>() / 60);
    EXPECT_EQ(Sample(text, std::string("inferscope_window_requests") + labels + "}"), 120.0);
    EXPECT_EQ(Sample(text, std::string("inferscope_error_ratio") + labels + "}"),
              e2e["error_ratio"].get<double>());
    EXPECT_GT(e2e["error_ratio"].get<double>(), 0);
    json out = summary("output_tokens");
    EXPECT_EQ(Sample(text, std::string("inferscope_output_tokens_per_second") + labels + "}"),
              out["sum"].get<double>() / 60);
    // The gauge's last value: the last pane of the window (k = 11) ends with 0.5 + 0.11.
    EXPECT_EQ(Sample(text, std::string("inferscope_reported_value") + labels +
                               ",gauge=\"kv_cache_usage\"}"),
              0.5 + 0.01 * 11);
  }

  // Another window by parameter; unknown parameters are refused.
  res = client_->Get("/v1/export/prometheus?window=10s");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  EXPECT_EQ(
      Sample(std::string("\n") + res->body, "inferscope_export_window_start_timestamp_seconds"),
      650.0);
  ExpectError(client_->Get("/v1/export/prometheus?windw=10s"), 400, "VALIDATION_ERROR");
  ExpectError(client_->Get("/v1/export/prometheus?window=15s"), 400, "VALIDATION_ERROR");
}

TEST_F(AccessServerTest, ExportSeriesCapCountsWhatWasCutOff) {
  QueryServer::Options o;
  o.export_options.max_series = 4;
  ASSERT_NO_FATAL_FAILURE(Start(o));
  auto res = client_->Get("/v1/export/prometheus");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  const std::string text = std::string("\n") + res->body;
  EXPECT_EQ(Sample(text, "inferscope_export_series"), 4.0);
  EXPECT_EQ(Sample(text, "inferscope_export_series_dropped"), 6.0);
  // Only the first instance in index order (tgi-1: shorter name) is exported, partly.
  EXPECT_EQ(text.find("instance=\"vllm-0\""), std::string::npos);
  client_->Get("/v1/export/prometheus");
  EXPECT_NE(metrics_.RenderPrometheus().find("inferscope_export_series_dropped_total 12"),
            std::string::npos)
      << metrics_.RenderPrometheus();
}

// Every metric the Grafana dashboard in docs/ queries is one the export produces (so the dashboard
// cannot drift from the export), and every panel queries something.
TEST_F(AccessServerTest, GrafanaDashboardReadsOnlyExportedMetrics) {
  ASSERT_NO_FATAL_FAILURE(Start(QueryServer::Options{}));
  auto res = client_->Get("/v1/export/prometheus");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  std::set<std::string> exported;
  std::istringstream lines(res->body);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("# TYPE ", 0) == 0) exported.insert(line.substr(7, line.find(' ', 7) - 7));
  }
  ASSERT_GE(exported.size(), 15u) << res->body;

  const std::string text = testing::ReadFile(testing::SourceDir() + "/docs/grafana-dashboard.json");
  json dashboard = json::parse(text, nullptr, false);
  ASSERT_TRUE(dashboard.is_object()) << "docs/grafana-dashboard.json is not valid JSON";
  ASSERT_TRUE(dashboard["panels"].is_array());
  std::vector<std::string> queries;
  for (const json& panel : dashboard["panels"]) {
    ASSERT_TRUE(panel.contains("targets")) << panel["title"];
    ASSERT_FALSE(panel["targets"].empty()) << panel["title"];
    for (const json& target : panel["targets"]) queries.push_back(target["expr"]);
  }
  for (const json& variable : dashboard["templating"]["list"]) {
    queries.push_back(variable["definition"]);
  }
  const std::regex name_re(R"(inferscope_[a-z0-9_]+)");
  size_t names = 0;
  for (const std::string& query : queries) {
    for (auto it = std::sregex_iterator(query.begin(), query.end(), name_re);
         it != std::sregex_iterator(); ++it) {
      ++names;
      EXPECT_TRUE(exported.count(it->str())) << it->str() << " in '" << query << "'";
    }
  }
  EXPECT_GE(names, queries.size());
}

}  // namespace
}  // namespace inferscope
