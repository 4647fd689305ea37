#include "query/server.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <exception>
#include <optional>
#include <regex>
#include <string>
#include <utility>

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "pipeline/thread_name.h"
#include "query/gated_server.h"
#include "query/handlers.h"
#include "query/openapi.h"
#include "query/raw_request.h"
#include "query/response_cache.h"
#include "query/response_log.h"
#include "state/state_store.h"

namespace inferscope {
namespace {

constexpr std::string_view kRequestsTotal = "inferscope_http_requests_total";
constexpr std::string_view kRequestsHelp = "HTTP requests served, by route and status";
constexpr std::string_view kLatency = "inferscope_http_request_seconds";
constexpr std::string_view kLatencyHelp = "HTTP request latency, by route";
constexpr std::string_view kFastPath = "inferscope_http_fast_path_requests_total";
constexpr std::string_view kFastPathHelp =
    "HTTP requests answered by the fast path (query/raw_request.h) rather than httplib, by route";
constexpr std::string_view kUnmatched = "unmatched";

void Send(const ApiReply& reply, httplib::Response& res) {
  res.status = reply.status;
  for (const auto& [name, value] : reply.headers) res.set_header(name, value);
  if (!reply.text.empty() || !reply.content_type.empty()) {
    res.set_content(reply.text, reply.content_type.c_str());
    return;
  }
  // Names come from publishers and may hold invalid UTF-8: replace rather than throw.
  res.body = reply.body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  res.set_header("Content-Type", "application/json");
}

// The request counter of one route by status, each looked up in the registry once (GetCounter
// takes the registry's lock and builds the label set).
class StatusCounters {
 public:
  StatusCounters(MetricsRegistry* metrics, std::string route)
      : metrics_(metrics), route_(std::move(route)) {}

  void Inc(int status) {
    if (status < kFirst || status >= kFirst + static_cast<int>(slots_.size())) {
      Get(status)->Inc();
      return;
    }
    std::atomic<Counter*>& slot = slots_[static_cast<size_t>(status - kFirst)];
    Counter* counter = slot.load(std::memory_order_acquire);
    if (counter == nullptr) {
      counter = Get(status);  // the registry returns the same counter to every caller
      slot.store(counter, std::memory_order_release);
    }
    counter->Inc();
  }

 private:
  static constexpr int kFirst = 100;
  Counter* Get(int status) {
    return metrics_->GetCounter(kRequestsTotal, kRequestsHelp,
                                {{"route", route_}, {"status", std::to_string(status)}});
  }
  MetricsRegistry* metrics_;
  const std::string route_;
  std::array<std::atomic<Counter*>, 500> slots_{};
};

// Appends `s` with its length in front (so that no two sequences of parts make the same key).
void AppendPart(std::string* key, std::string_view s) {
  const auto n = static_cast<uint32_t>(s.size());
  key->append(reinterpret_cast<const char*>(&n), sizeof(n));
  key->append(s);
}

}  // namespace

// One request as a route sees it, whichever reader parsed it (httplib, or the fast path's
// ParseRawRequest). Views into the reader's buffers.
struct RouteRequest {
  std::string_view method;
  std::string_view path;
  std::vector<std::string_view> captures;  // the route pattern's, in order
  // The query parameters ordered by name, a repeated one's values in request order (httplib's
  // multimap order).
  std::vector<std::pair<std::string_view, std::string_view>> params;
  std::string_view authorization;
  std::string_view body;
  // The peer's address, asked only when the rate limiter needs it.
  std::function<std::string()> remote_addr;
};

// One route's answer before a writer (httplib, or the fast path) puts it on the wire.
struct RouteResponse {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;  // besides the content type
  std::string content_type;
  std::string body;
};

// A route with what serving it needs: its declared query parameters, counters, histogram, cache,
// and (when its pattern allows) a matcher for the fast path. Shared by both readers, so a request
// is authenticated, limited, checked, cached, counted and timed the same way whichever read it.
struct RouteRuntime {
  const Route* route = nullptr;
  // The query parameters the OpenAPI document declares for this operation; any other is a 400. A
  // route the document lacks accepts any (tests/query/openapi_test.cc fails on it).
  std::optional<std::vector<std::string>> params;
  std::vector<std::string> repeatable;  // of `params`, those that may appear more than once
  Histogram* latency = nullptr;
  std::unique_ptr<StatusCounters> counters;
  std::string allow;  // what a read-only node allows on a write route's path (405's Allow header)
  Scope needed = Scope::kRead;
  ResponseCache* cache = nullptr;
  PathPattern fast_pattern;
  bool fast = false;               // the fast path serves this route
  Counter* fast_served = nullptr;  // requests the fast path answered
};

namespace {

// The response cache's key of a request to a cacheable route: the route, the path captures, the
// query parameters as the handler reads them (ordered by name; the first value of a repeated
// one) and the caller's scopes.
void CacheKey(const Route& route, const RouteRequest& req, uint8_t scopes, std::string* key) {
  key->clear();
  AppendPart(key, route.name);
  key->push_back(static_cast<char>(req.captures.size() + 1));
  for (std::string_view capture : req.captures) AppendPart(key, capture);
  const std::string_view* previous = nullptr;
  for (const auto& [name, value] : req.params) {
    if (previous != nullptr && *previous == name) continue;
    previous = &name;
    AppendPart(key, name);
    AppendPart(key, value);
  }
  key->push_back('\0');
  key->push_back(static_cast<char>(scopes));
}

// The first query parameter of `req` that `allowed` does not name: a 400 naming it and listing the
// route's parameters (from the OpenAPI document), so a misspelt `windw=10s` is not silently
// ignored. Then the first one given more than once with different values that is not
// `repeatable` (handlers read the first value: `limit=1&limit=2` would silently mean 1).
std::optional<ApiReply> UnknownParameter(const Clock& clock, const RouteRequest& req,
                                         const std::vector<std::string>& allowed,
                                         const std::vector<std::string>& repeatable) {
  // req.params is ordered by name, so repeats are neighbours.
  for (size_t i = 1; i < req.params.size(); ++i) {
    const std::string_view name = req.params[i].first;
    // An exact repeat (same value) is one parameter: httplib keeps one such pair, and both readers
    // must answer alike.
    if (name != req.params[i - 1].first || req.params[i].second == req.params[i - 1].second ||
        std::find(repeatable.begin(), repeatable.end(), name) != repeatable.end() ||
        std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
      continue;
    }
    const std::string shown(name.substr(0, 64));
    return ErrorReply(clock, 400, "VALIDATION_ERROR",
                      "parameter '" + shown + "' is given more than once (give it once)",
                      {{"parameter", shown}});
  }
  for (const auto& [name, value] : req.params) {
    if (std::find(allowed.begin(), allowed.end(), name) != allowed.end()) continue;
    std::string expected;
    for (const std::string& a : allowed) expected += (expected.empty() ? "" : ", ") + a;
    const std::string shown(name.substr(0, 64));
    return ErrorReply(clock, 400, "VALIDATION_ERROR",
                      "unknown parameter '" + shown + "' (expected " +
                          (expected.empty() ? std::string("none") : expected) + ")",
                      {{"parameter", shown}, {"allowed", allowed}});
  }
  return std::nullopt;
}

void Count(MetricsRegistry& metrics, std::string_view route, int status) {
  metrics
      .GetCounter(kRequestsTotal, kRequestsHelp,
                  {{"route", std::string(route)}, {"status", std::to_string(status)}})
      ->Inc();
}

// The reason phrase httplib sends with `status`.
std::string_view ReasonPhrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 409:
      return "Conflict";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Internal Server Error";  // httplib's phrase for a status it does not know
  }
}

bool LessCaseInsensitive(std::string_view a, std::string_view b) {
  return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    return std::tolower(static_cast<unsigned char>(x)) <
           std::tolower(static_cast<unsigned char>(y));
  });
}

// The numeric address of a socket's peer ("" when unknown), as httplib gives it in remote_addr.
std::string PeerAddress(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return std::string();
  char text[INET6_ADDRSTRLEN] = {};
  if (addr.ss_family == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&addr)->sin_addr, text, sizeof(text));
  } else if (addr.ss_family == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&addr)->sin6_addr, text, sizeof(text));
  }
  return text;
}

std::string_view CodeForStatus(int status) {
  switch (status) {
    case 401:
      return "UNAUTHORIZED";
    case 403:
      return "FORBIDDEN";
    case 404:
      return "NOT_FOUND";
    case 413:
      return "PAYLOAD_TOO_LARGE";
    case 414:
      return "URI_TOO_LONG";
    case 429:
      return "RATE_LIMITED";
    default:
      return status < 500 ? "VALIDATION_ERROR" : "INTERNAL_ERROR";
  }
}

}  // namespace

Status QueryServer::Options::Validate() const {
  if (host.empty()) return Status::InvalidArgument("query server: host must not be empty");
  if (port < 0 || port > 65535) {
    return Status::InvalidArgument("query server: port must be in 0..65535, got " +
                                   std::to_string(port));
  }
  if (threads < 1 || threads > 256) {
    return Status::InvalidArgument("query server: threads must be in 1..256, got " +
                                   std::to_string(threads));
  }
  auto check_ms = [](const char* name, int64_t v) {
    if (v < 1 || v > 3'600'000) {
      return Status::InvalidArgument(std::string("query server: ") + name +
                                     " must be in 1..3600000 ms, got " + std::to_string(v));
    }
    return Status::Ok();
  };
  INFERSCOPE_RETURN_IF_ERROR(check_ms("header_timeout_ms", header_timeout_ms));
  INFERSCOPE_RETURN_IF_ERROR(check_ms("idle_timeout_ms", idle_timeout_ms));
  INFERSCOPE_RETURN_IF_ERROR(check_ms("read_timeout_ms", read_timeout_ms));
  INFERSCOPE_RETURN_IF_ERROR(check_ms("write_timeout_ms", write_timeout_ms));
  if (max_connections < 1 || max_connections > 1'000'000) {
    return Status::InvalidArgument("query server: max_connections must be in 1..1000000, got " +
                                   std::to_string(max_connections));
  }
  if (max_connections_per_address < 1 || max_connections_per_address > 1'000'000) {
    return Status::InvalidArgument(
        "query server: max_connections_per_address must be in 1..1000000, got " +
        std::to_string(max_connections_per_address));
  }
  if (listen_backlog < 1 || listen_backlog > 65'535) {
    return Status::InvalidArgument("query server: listen_backlog must be in 1..65535, got " +
                                   std::to_string(listen_backlog));
  }
  if (max_header_bytes < 1024 || max_header_bytes > 1024 * 1024) {
    return Status::InvalidArgument("query server: max_header_bytes must be in 1024..1048576, got " +
                                   std::to_string(max_header_bytes));
  }
  if (max_body_bytes < 1 || max_body_bytes > 1024 * 1024 * 1024) {
    return Status::InvalidArgument("query server: max_body_bytes must be in 1..1073741824, got " +
                                   std::to_string(max_body_bytes));
  }
  // httplib itself answers 414 to targets over 8192 bytes (CPPHTTPLIB_REQUEST_URI_MAX_LENGTH).
  if (max_url_bytes < 256 || max_url_bytes > 8'192 || max_url_bytes >= max_header_bytes) {
    return Status::InvalidArgument(
        "query server: max_url_bytes must be in 256..8192 and below max_header_bytes, got " +
        std::to_string(max_url_bytes));
  }
  if (max_pending_response_bytes < 64 * 1024 || max_pending_response_bytes > (size_t{1} << 40)) {
    return Status::InvalidArgument(
        "query server: max_pending_response_bytes must be in 65536..1099511627776, got " +
        std::to_string(max_pending_response_bytes));
  }
  if (max_buffered_body_bytes < 64 * 1024 || max_buffered_body_bytes > (size_t{1} << 40)) {
    return Status::InvalidArgument(
        "query server: max_buffered_body_bytes must be in 65536..1099511627776, got " +
        std::to_string(max_buffered_body_bytes));
  }
  if (response_cache_bytes > (size_t{1} << 40)) {
    return Status::InvalidArgument(
        "query server: response_cache_bytes must be at most 1 TiB, got " +
        std::to_string(response_cache_bytes));
  }
  if (Status s = access.Validate(); !s.ok()) return s.WithContext("query server");
  if (Status s = export_options.Validate(); !s.ok()) return s.WithContext("query server");
  if (access.tokens.empty() && !IsLoopbackHost(host)) {
    return Status::InvalidArgument(
        "query server: listening on '" + host +
        "', which is not a loopback address, needs API tokens: configure them (topology "
        "query.tokens or query.token_file; query-node --tokens FILE) or listen on 127.0.0.1");
  }
  return Status::Ok();
}

namespace {

// Raises the soft open-file limit to `wanted` when the hard limit allows; returns the soft limit.
rlim_t RaiseOpenFileLimit(rlim_t wanted) {
  struct rlimit lim {};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return wanted;
  if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < wanted) {
    struct rlimit raised = lim;
    raised.rlim_cur = lim.rlim_max == RLIM_INFINITY ? wanted : std::min(wanted, lim.rlim_max);
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) lim = raised;
  }
  return lim.rlim_cur;
}

}  // namespace

QueryServer::QueryServer(Options options, StateStore* store, MetricsRegistry* metrics,
                         const Clock* clock, std::function<nlohmann::json()> health_info,
                         std::vector<Registry::Entry> capabilities)
    : options_(std::move(options)), ctx_(std::make_unique<ApiContext>()) {
  ctx_->store = store;
  ctx_->metrics = metrics;
  ctx_->clock = clock;
  ctx_->health_info = std::move(health_info);
  ctx_->capabilities = std::move(capabilities);
}

QueryServer::~QueryServer() { Stop(); }

void QueryServer::SetSilences(SilenceRegistry* silences) { ctx_->silences = silences; }

void QueryServer::SetWorkflows(WorkflowRegistry* workflows) { ctx_->workflows = workflows; }

void QueryServer::SetRouting(routing::RoutingRegistry* routing) { ctx_->routing = routing; }

void QueryServer::ServeRoute(const RouteRuntime& rt, const RouteRequest& req,
                             RouteResponse* out) const {
  const ApiContext* ctx = ctx_.get();
  const Route& route = *rt.route;
  const int64_t started_ns = ctx->clock->MonotonicNs();
  ApiReply reply;
  out->headers.clear();
  // The cache key (reused per thread) and the view it was looked up in; `cached`: answered from
  // the cache.
  thread_local std::string key;
  ResponseCache::View view;
  bool cached = false;
  try {
    const bool authenticate = route.requires_auth && !tokens_->empty();
    TokenSet::Outcome outcome = TokenSet::Outcome::kOk;
    const ApiToken* token =
        authenticate ? tokens_->Authenticate(req.authorization, &outcome) : nullptr;
    RateLimiter::Decision limit;
    std::string address;
    if (limiter_->enabled()) {
      // A client is its token; without a valid one, its address (so guessing is limited too).
      if (token == nullptr) address = req.remote_addr();
      limit = limiter_->Acquire(token != nullptr ? "token:" + token->name : "address:" + address,
                                started_ns);
    }
    if (!limit.allowed) {
      reply =
          ErrorReply(*ctx->clock, 429, "RATE_LIMITED",
                     "too many requests from " +
                         (token != nullptr ? "token '" + token->name + "'" : "address " + address) +
                         "; retry after " + std::to_string(limit.retry_after_s) + " s",
                     {{"retry_after_s", limit.retry_after_s}});
      out->headers.emplace_back("Retry-After", std::to_string(limit.retry_after_s));
    } else if (authenticate && token == nullptr) {
      const bool missing = outcome == TokenSet::Outcome::kMissing;
      reply =
          ErrorReply(*ctx->clock, 401, "UNAUTHORIZED",
                     missing ? "a valid 'Authorization: Bearer <token>' header is required"
                     : outcome == TokenSet::Outcome::kMalformed
                         ? "the Authorization header must be 'Bearer <token>'"
                         : "the bearer token is not valid",
                     {{"reason", missing                                    ? "missing_token"
                                 : outcome == TokenSet::Outcome::kMalformed ? "malformed_header"
                                                                            : "invalid_token"}});
      // RFC 6750 §3: no error code when the request had no credentials.
      out->headers.emplace_back("WWW-Authenticate",
                                missing ? std::string("Bearer realm=\"inferscope\"")
                                        : std::string("Bearer realm=\"inferscope\", "
                                                      "error=\"invalid_token\""));
    } else if (authenticate && !HasScope(token->scopes, rt.needed)) {
      const std::string scope(ScopeName(rt.needed));
      reply = ErrorReply(*ctx->clock, 403, "FORBIDDEN",
                         "token '" + token->name + "' lacks the '" + scope + "' scope that " +
                             route.method + " " + route.name + " needs",
                         {{"required_scope", scope},
                          {"token", token->name},
                          {"scopes", ScopeList(token->scopes)}});
      out->headers.emplace_back(
          "WWW-Authenticate",
          "Bearer realm=\"inferscope\", error=\"insufficient_scope\", scope=\"" + scope + "\"");
    } else if (options_.read_only && route.writes) {
      const std::string& engine_url = options_.engine_url;
      reply = ErrorReply(
          *ctx->clock, 405, "READ_ONLY",
          "this query node is read-only: " + route.method + " " + route.name +
              " changes state, which only the engine does; send it to the engine's API" +
              (engine_url.empty() ? std::string() : " at " + engine_url),
          {{"method", route.method},
           {"route", route.name},
           {"engine_url", engine_url.empty() ? nlohmann::json() : nlohmann::json(engine_url)}});
      out->headers.emplace_back("Allow", rt.allow);
    } else if (std::optional<ApiReply> unknown =
                   rt.params ? UnknownParameter(*ctx->clock, req, *rt.params, rt.repeatable)
                             : std::nullopt) {
      reply = std::move(*unknown);
    } else {
      if (rt.cache != nullptr) {
        CacheKey(route, req, token != nullptr ? token->scopes : 0, &key);
        // The version first: whatever is read after it is at least that view.
        view.version = ctx->store->ViewVersion();
        view.watermark_ms = ctx->store->Watermark();
        view.now_ms = ctx->clock->NowMs();
        view.store = ctx->store;
        cached = rt.cache->Lookup(key, view, &out->body);
      }
      if (!cached) {
        ApiRequest api_request;
        for (std::string_view capture : req.captures) api_request.path_params.emplace_back(capture);
        for (const auto& [name, value] : req.params) api_request.params.emplace(name, value);
        api_request.body = req.body;
        reply = route.handler(*ctx, api_request);
      }
    }
  } catch (const std::exception& e) {
    reply = ErrorReply(*ctx->clock, 500, "INTERNAL_ERROR",
                       std::string("unexpected error: ") + e.what());
  } catch (...) {
    reply = ErrorReply(*ctx->clock, 500, "INTERNAL_ERROR", "unexpected error");
  }
  if (cached) {
    out->status = 200;
    out->content_type = "application/json";
  } else {
    out->status = reply.status;
    for (auto& header : reply.headers) out->headers.push_back(std::move(header));
    if (!reply.text.empty() || !reply.content_type.empty()) {
      out->body = std::move(reply.text);
      out->content_type = reply.content_type;
    } else {
      // Names come from publishers and may hold invalid UTF-8: replace rather than throw.
      out->body = reply.body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      out->content_type = "application/json";
    }
    if (rt.cache != nullptr && reply.status == 200 && reply.cache) {
      rt.cache->Insert(key, view.version, *reply.cache, out->body);
    }
  }
  if (log_ != nullptr) {
    log_->Record(req.method, &route.name, req.path, out->status, out->content_type, out->body);
  }
  rt.counters->Inc(out->status);
  rt.latency->Observe(static_cast<double>(ctx->clock->MonotonicNs() - started_ns) / 1e9);
}

bool QueryServer::ServeFast(std::string_view request, int fd, std::string* response,
                            bool* close) const {
  RawRequest raw;
  if (!ParseRawRequest(request, &raw) || raw.method != "GET") return false;
  // CORS response headers are added by httplib's post-routing handler: leave those requests to it.
  if (!raw.origin.empty() && options_.access.cors.enabled()) return false;
  thread_local RouteRequest req;
  const RouteRuntime* rt = nullptr;
  for (const auto& candidate : routes_) {
    if (candidate->fast && candidate->route->method == raw.method &&
        candidate->fast_pattern.Match(raw.path, &req.captures)) {
      rt = candidate.get();
      break;
    }
  }
  if (rt == nullptr) return false;
  req.method = raw.method;
  req.path = raw.path;
  req.params.assign(raw.params.begin(),
                    raw.params.begin() + static_cast<ptrdiff_t>(raw.param_count));
  std::stable_sort(req.params.begin(), req.params.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  req.authorization = raw.authorization;
  req.body = {};
  req.remote_addr = [fd] { return PeerAddress(fd); };
  thread_local RouteResponse out;
  ServeRoute(*rt, req, &out);
  rt->fast_served->Inc();
  *close = *close || raw.connection_close;
  // What httplib writes for the same answer (its header order: names sorted case-insensitively).
  response->clear();
  response->append("HTTP/1.1 ");
  response->append(std::to_string(out.status));
  response->push_back(' ');
  response->append(ReasonPhrase(out.status));
  response->append("\r\n");
  out.headers.emplace_back("Content-Length", std::to_string(out.body.size()));
  out.headers.emplace_back("Content-Type", out.content_type);
  if (*close) {
    out.headers.emplace_back("Connection", "close");
  } else {
    out.headers.emplace_back("Keep-Alive", keep_alive_);
  }
  std::sort(out.headers.begin(), out.headers.end(),
            [](const auto& a, const auto& b) { return LessCaseInsensitive(a.first, b.first); });
  for (const auto& [name, value] : out.headers) {
    response->append(name);
    response->append(": ");
    response->append(value);
    response->append("\r\n");
  }
  response->append("\r\n");
  response->append(out.body);
  return true;
}

void QueryServer::RegisterRoutes() {
  log_ = ResponseLog::FromEnvironment();
  for (const Route& route : Routes()) {
    auto rt = std::make_unique<RouteRuntime>();
    rt->route = &route;
    rt->params = DocumentedQueryParameters(route.method, route.name, &rt->repeatable);
    if (!rt->params) {
      spdlog::warn("query server: {} {} is not in the OpenAPI document (docs/openapi.json)",
                   route.method, route.name);
    }
    rt->latency = ctx_->metrics->GetHistogram(kLatency, kLatencyHelp, {{"route", route.name}});
    for (const Route& other : Routes()) {
      if (other.pattern == route.pattern && !other.writes) {
        rt->allow += (rt->allow.empty() ? "" : ", ") + other.method;
      }
    }
    rt->needed = route.admin ? Scope::kAdmin : route.writes ? Scope::kWrite : Scope::kRead;
    rt->counters = std::make_unique<StatusCounters>(ctx_->metrics, route.name);
    rt->cache = route.cacheable ? cache_.get() : nullptr;
    // The fast path takes the cacheable reads (the hot ones) whose pattern it can match itself.
    rt->fast = route.cacheable && route.method == "GET" && !route.writes &&
               rt->fast_pattern.Compile(route.pattern);
    if (rt->fast) {
      rt->fast_served =
          ctx_->metrics->GetCounter(kFastPath, kFastPathHelp, {{"route", route.name}});
    }
    const RouteRuntime* runtime = rt.get();
    httplib::Server::Handler handler = [this, runtime](const httplib::Request& req,
                                                       httplib::Response& res) {
      thread_local RouteRequest view;
      thread_local RouteResponse out;
      view.method = req.method;
      view.path = req.path;
      view.captures.clear();
      for (size_t i = 1; i < req.matches.size(); ++i) {
        const auto& m = req.matches[i];  // a capture of req.path
        view.captures.push_back(std::string_view(req.path).substr(
            static_cast<size_t>(m.first - req.path.cbegin()), static_cast<size_t>(m.length())));
      }
      view.params.assign(req.params.begin(), req.params.end());  // a multimap: ordered by name
      const std::string authorization = req.get_header_value("Authorization");
      view.authorization = authorization;
      view.body = req.body;
      view.remote_addr = [&req] { return req.remote_addr; };
      ServeRoute(*runtime, view, &out);
      res.status = out.status;
      for (const auto& [name, value] : out.headers) res.set_header(name, value);
      res.set_content(out.body, out.content_type.c_str());
    };
    if (route.method == "GET") {
      server_->Get(route.pattern, std::move(handler));
    } else if (route.method == "POST") {
      server_->Post(route.pattern, std::move(handler));
    } else if (route.method == "DELETE") {
      server_->Delete(route.pattern, std::move(handler));
    }
    routes_.push_back(std::move(rt));
  }
  const ApiContext* ctx = ctx_.get();
  ResponseLog* log = log_;
  // Each route pattern with the methods its routes answer (HEAD with GET: httplib answers it from
  // the GET handler; on a read-only node not the write routes, as RouteRuntime::allow), so that a
  // request httplib routes nowhere because only its method is wrong answers 405 with `Allow` rather
  // than 404.
  auto methods = std::make_shared<std::vector<std::pair<std::regex, std::string>>>();
  for (size_t i = 0; i < Routes().size(); ++i) {
    const Route& route = Routes()[i];
    bool first = true;
    for (size_t j = 0; j < i; ++j) first = first && Routes()[j].pattern != route.pattern;
    if (!first) continue;
    std::string allow;
    for (std::string_view method : {"GET", "POST", "DELETE"}) {
      if (std::none_of(Routes().begin(), Routes().end(), [&](const Route& other) {
            // A read-only node's write routes answer 405 READ_ONLY: not allowed there.
            return other.pattern == route.pattern && other.method == method &&
                   !(options_.read_only && other.writes);
          })) {
        continue;
      }
      allow += (allow.empty() ? "" : ", ") + std::string(method);
      if (method == "GET") allow += ", HEAD";
    }
    methods->emplace_back(std::regex(route.pattern), std::move(allow));
  }

  // CORS (query/access.h): preflights are answered without a token; every response to an allowed
  // origin carries Access-Control-Allow-Origin (the post-routing handler runs for errors too).
  const CorsOptions* cors = &options_.access.cors;
  server_->Options(".*", [ctx, cors](const httplib::Request& req, httplib::Response& res) {
    const std::string origin = req.get_header_value("Origin");
    ApiReply reply;
    if (!cors->enabled()) {
      reply = ErrorReply(*ctx->clock, 403, "FORBIDDEN",
                         "cross-origin requests are not enabled on this server (topology "
                         "query.cors.allowed_origins)",
                         {{"origin", origin}});
    } else if (!cors->Allows(origin)) {
      reply = ErrorReply(*ctx->clock, 403, "FORBIDDEN",
                         "origin '" + origin + "' is not in query.cors.allowed_origins",
                         {{"origin", origin}});
    } else {
      res.status = 204;
      res.set_header("Access-Control-Allow-Methods", "GET, POST, DELETE");
      res.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type");
      res.set_header("Access-Control-Max-Age", std::to_string(cors->max_age_s));
      Count(*ctx->metrics, "preflight", 204);
      return;
    }
    Send(reply, res);
    Count(*ctx->metrics, "preflight", reply.status);
  });
  if (cors->enabled()) {
    server_->set_post_routing_handler([cors](const httplib::Request& req, httplib::Response& res) {
      const std::string origin = req.get_header_value("Origin");
      if (!cors->Allows(origin)) return;
      res.set_header("Access-Control-Allow-Origin", origin);
      res.set_header("Vary", "Origin");
      res.set_header("Access-Control-Expose-Headers", "Retry-After, WWW-Authenticate");
    });
  }

  // Unknown routes and httplib's own errors (bad request lines...) get the same error shape. The
  // error handler also sees our handlers' error replies; those already have a body.
  server_->set_error_handler(httplib::Server::HandlerWithResponse(
      [ctx, log, methods, max_body = options_.max_body_bytes](const httplib::Request& req,
                                                              httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        if (res.status == 404) {
          for (const auto& [pattern, allow] : *methods) {
            if (!std::regex_match(req.path, pattern)) continue;
            res.status = 405;
            res.set_header("Allow", allow);
            Send(ErrorReply(
                     *ctx->clock, 405, "METHOD_NOT_ALLOWED",
                     req.method + " is not allowed on " + req.path + " (allowed: " + allow + ")",
                     {{"method", req.method}, {"path", req.path}, {"allowed", allow}}),
                 res);
            if (log != nullptr) {
              log->Record(req.method, nullptr, req.path, res.status, "application/json", res.body);
            }
            Count(*ctx->metrics, kUnmatched, res.status);
            return httplib::Server::HandlerResponse::Handled;
          }
        }
        std::string message =
            res.status == 404 ? "no route for " + req.method + " " + req.path
            : res.status == 413
                ? "the request body is larger than " + std::to_string(max_body) + " bytes"
                : "request failed with HTTP status " + std::to_string(res.status);
        nlohmann::json details = {{"method", req.method}, {"path", req.path}};
        Send(ErrorReply(*ctx->clock, res.status, CodeForStatus(res.status), std::move(message),
                        std::move(details)),
             res);
        if (log != nullptr) {
          log->Record(req.method, nullptr, req.path, res.status,
                      res.get_header_value("Content-Type"), res.body);
        }
        Count(*ctx->metrics, kUnmatched, res.status);
        return httplib::Server::HandlerResponse::Handled;
      }));
  server_->set_exception_handler(
      [ctx](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
        Send(ErrorReply(*ctx->clock, 500, "INTERNAL_ERROR", "unexpected error"), res);
      });
}

Status QueryServer::Start() {
  INFERSCOPE_RETURN_IF_ERROR(options_.Validate());
  if (ctx_->store == nullptr || ctx_->metrics == nullptr || ctx_->clock == nullptr) {
    return Status::InvalidArgument("query server: store, metrics and clock are required");
  }
  if (server_ != nullptr) return Status::Internal("query server: already started");
  tokens_ = std::make_unique<TokenSet>(options_.access.tokens);
  limiter_ = std::make_unique<RateLimiter>(options_.access.rate_limit, ctx_->metrics);
  ctx_->access = &options_.access;
  ctx_->limiter = limiter_.get();
  if (options_.response_cache_bytes > 0) {
    cache_ = std::make_unique<ResponseCache>(options_.response_cache_bytes, ctx_->metrics);
  }
  ctx_->export_options = options_.export_options;
  ctx_->export_dropped = ctx_->metrics->GetCounter(
      "inferscope_export_series_dropped_total",
      "Stored series left out of GET /v1/export/prometheus by its series cap (export.max_series)");
  constexpr rlim_t kReservedFds = 256;  // RocksDB files, ZeroMQ sockets, logs
  const rlim_t fd_limit =
      RaiseOpenFileLimit(static_cast<rlim_t>(options_.max_connections) + kReservedFds);
  GateOptions gate;
  gate.threads = options_.threads;
  gate.header_timeout_ms = options_.header_timeout_ms;
  gate.idle_timeout_ms = options_.idle_timeout_ms;
  gate.read_timeout_ms = options_.read_timeout_ms;
  gate.write_timeout_ms = options_.write_timeout_ms;
  gate.max_connections = static_cast<size_t>(options_.max_connections);
  if (fd_limit < gate.max_connections + kReservedFds) {
    gate.max_connections = fd_limit > 2 * kReservedFds ? fd_limit - kReservedFds : kReservedFds;
    spdlog::warn("query server: the open-file limit ({}) allows only {} connections, not {}",
                 fd_limit, gate.max_connections, options_.max_connections);
  }
  gate.max_connections_per_address = static_cast<size_t>(options_.max_connections_per_address);
  gate.max_header_bytes = options_.max_header_bytes;
  gate.max_body_bytes = options_.max_body_bytes;
  gate.max_url_bytes = options_.max_url_bytes;
  gate.max_pending_response_bytes = options_.max_pending_response_bytes;
  gate.max_buffered_body_bytes = options_.max_buffered_body_bytes;
  gate.listen_backlog = options_.listen_backlog;
  const Clock* clock = ctx_->clock;
  server_ = std::make_unique<GatedServer>(
      gate, ctx_->metrics,
      [clock](int status, std::string_view code, std::string message, std::string_view reason,
              int retry_after_s) {
        nlohmann::json details = {{"reason", reason}};
        if (retry_after_s > 0) details["retry_after_s"] = retry_after_s;
        return ErrorReply(*clock, status, code, std::move(message), std::move(details))
            .body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      });
  const int64_t keep_alive_s = (options_.idle_timeout_ms + 999) / 1000;
  server_->set_keep_alive_timeout(keep_alive_s);
  keep_alive_ = "timeout=" + std::to_string(keep_alive_s) +
                ", max=" + std::to_string(CPPHTTPLIB_KEEPALIVE_MAX_COUNT);
  RegisterRoutes();
  server_->SetFastPath([this](std::string_view request, int fd, std::string* response,
                              bool* close) { return ServeFast(request, fd, response, close); });

  if (options_.port == 0) {
    port_ = server_->bind_to_any_port(options_.host);
  } else {
    port_ = server_->bind_to_port(options_.host, options_.port) ? options_.port : -1;
  }
  if (port_ <= 0) {
    server_.reset();
    routes_.clear();
    port_ = 0;
    return Status::IOError("query server: cannot bind " + options_.host + ":" +
                           std::to_string(options_.port));
  }
  if (Status gated = server_->StartGate(); !gated.ok()) {
    server_.reset();
    routes_.clear();
    port_ = 0;
    return gated;
  }
  thread_done_.store(false);
  thread_ = std::thread([this] {
    SetThreadName("http-accept");
    server_->listen_after_bind();
    thread_done_.store(true);
  });
  // Stop() only takes effect once the accept loop runs, so do not return before it does.
  while (!server_->is_running() && !thread_done_.load()) std::this_thread::yield();
  const AccessOptions& access = options_.access;
  if (access.tokens.empty()) {
    spdlog::warn(
        "query API on {}:{}: no API tokens configured, so no authentication and loopback only "
        "(configure query.tokens or query.token_file to listen elsewhere)",
        options_.host, port_);
  } else {
    spdlog::info(
        "query API on {}:{}: {} API token(s); rate limit {}; CORS {}", options_.host, port_,
        access.tokens.size(),
        access.rate_limit.rate > 0 ? std::to_string(access.rate_limit.rate) + "/s per client"
                                   : std::string("off"),
        access.cors.enabled() ? std::to_string(access.cors.allowed_origins.size()) + " origin(s)"
                              : std::string("off"));
  }
  return Status::Ok();
}

size_t QueryServer::open_connections() const {
  return server_ == nullptr ? 0 : server_->open_connections();
}

void QueryServer::Stop() {
  if (server_ == nullptr) return;
  server_->stop();
  if (thread_.joinable()) thread_.join();
  server_->StopGate();
  server_.reset();
  routes_.clear();
  cache_.reset();
  port_ = 0;
}

}  // namespace inferscope
