#pragma once

// Access control of the query API: bearer tokens with scopes, per-client rate limits, CORS, and
// where they are configured (the topology's `query` section, a token file). QueryServer applies
// them to every request (query/server.cc); docs/API_ACCESS.md is the user-facing contract.

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "pipeline/config.h"
#include "pipeline/metrics.h"
#include "pipeline/status.h"
#include "pipeline/string_hash.h"

namespace inferscope {

// What a token may do. `read`: every GET and the computing POSTs that change nothing
// (detect-bottlenecks, recommend, optimize, routing select); `write`: the routes that change state
// (silences, workflows: Route::writes); `admin`: everything, including the admin routes
// (GET /v1/access). Stored as a bit set.
enum class Scope : uint8_t { kRead = 1, kWrite = 2, kAdmin = 4 };

// "read", "write" or "admin"; "" for a set of several.
std::string_view ScopeName(Scope scope);
// "read,write" for a bit set.
std::string ScopeList(uint8_t scopes);
// Whether a token with `scopes` may use a route needing `needed` (admin holds every scope).
inline bool HasScope(uint8_t scopes, Scope needed) {
  return (scopes & static_cast<uint8_t>(Scope::kAdmin)) != 0 ||
         (scopes & static_cast<uint8_t>(needed)) != 0;
}

// One bearer token.
struct ApiToken {
  std::string name;    // who holds it: 1..64 of [A-Za-z0-9_.-]; the rate-limit key, logs, metrics
  std::string secret;  // the token itself: 16..1024 printable ASCII bytes without spaces
  uint8_t scopes = 0;  // bits of Scope; at least one
};

// Per-client token buckets (requests per second). A client is a token (by name) or, for requests
// without a valid token, the peer address ("anonymous").
struct RateLimitOptions {
  double rate = 0;              // requests per second per client; 0 (default) = no limit
  double burst = 0;             // bucket size; 0 = max(1, rate); else >= 1
  size_t max_clients = 10'000;  // buckets kept (tokens + anonymous addresses); 16..10,000,000

  Status Validate() const;
};

// Cross-origin requests from browsers (https://fetch.spec.whatwg.org/#http-cors-protocol).
struct CorsOptions {
  // Origins allowed to read responses: exact ("https://grafana.example.com") or "*" (any). Empty
  // (default): no CORS headers at all, and preflights answer 403.
  std::vector<std::string> allowed_origins;
  int64_t max_age_s = 600;  // how long a browser may cache a preflight; 0..86,400

  bool enabled() const { return !allowed_origins.empty(); }
  // Whether `origin` (an Origin header) may read responses.
  bool Allows(std::string_view origin) const;
  Status Validate() const;
};

// Everything the query server enforces per request besides its connection limits.
struct AccessOptions {
  // Tokens (from the topology and the token file together). Empty: no authentication, and the
  // server refuses to listen on anything but a loopback address.
  std::vector<ApiToken> tokens;
  RateLimitOptions rate_limit;
  CorsOptions cors;

  Status Validate() const;
};

// The Prometheus export (GET /v1/export/prometheus; query/export_handlers.cc).
struct ExportOptions {
  int64_t window_ms = 60'000;  // the window exported: the latest closed one of this length
  // At most this many stored series (instance, model, metric) are read per scrape; the rest are
  // counted (inferscope_export_series_dropped) and left out. 1..10,000,000.
  size_t max_series = 10'000;

  Status Validate() const;
};

// A token file: one token per line, `NAME SCOPES TOKEN` separated by blanks, SCOPES a comma list
// of read, write, admin; blank lines and lines starting with '#' are ignored. Errors name
// "file:line". The file should be readable by the server's user only (a warning is logged
// otherwise).
Result<std::vector<ApiToken>> LoadTokenFile(const std::string& path);

// The access and export settings of a topology's `query` section (its fields `tokens`,
// `token_file`, `rate_limit`, `cors`, `export`; `listen`, `max_url_bytes`, `max_body_bytes` and
// `max_connections_per_address` are read by the caller). `token_file` is relative to the topology
// file's directory. Errors name file:line:col and the field.
struct QuerySectionAccess {
  AccessOptions access;
  ExportOptions export_options;
  size_t max_url_bytes = 0;                // 0: not given
  size_t max_body_bytes = 0;               // 0: not given
  size_t max_connections_per_address = 0;  // 0: not given
};
Result<QuerySectionAccess> ParseQueryAccess(const ConfigNode& query);

// Whether `host` (an address to listen on) is a loopback address: 127.0.0.0/8, ::1, localhost.
bool IsLoopbackHost(std::string_view host);

// TokenSet finds the token of an Authorization header.
//
// The presented token is compared with every configured secret, in time that depends only on its
// own length and the number of tokens (no early exit, no comparison of lengths first), so response
// times say nothing about how much of a secret a guess matched.
// Concurrency: immutable after construction; thread-safe.
class TokenSet {
 public:
  explicit TokenSet(std::vector<ApiToken> tokens) : tokens_(std::move(tokens)) {}

  bool empty() const { return tokens_.empty(); }
  const std::vector<ApiToken>& tokens() const { return tokens_; }

  enum class Outcome { kOk, kMissing, kMalformed, kUnknown };
  // The token of `authorization` ("Bearer <token>", scheme case-insensitive), or null with why.
  const ApiToken* Authenticate(std::string_view authorization, Outcome* outcome) const;

 private:
  std::vector<ApiToken> tokens_;
};

// RateLimiter is a table of token buckets, one per client key, with bounded memory.
//
// A bucket holds up to `burst` requests and refills at `rate` per second; a request takes one.
// The table holds at most max_clients buckets: a bucket that has refilled completely is the same
// as a new one, so when the table is full those are dropped (at most one sweep per second); a new
// client that still finds no room shares one overflow bucket (counted in
// inferscope_http_rate_limit_overflow_total), so memory stays bounded whatever the number of
// addresses.
// Concurrency: thread-safe (one mutex, held for a hash lookup).
class RateLimiter {
 public:
  RateLimiter(RateLimitOptions options, MetricsRegistry* metrics);

  bool enabled() const { return options_.rate > 0; }

  struct Decision {
    bool allowed = true;
    int64_t retry_after_s = 0;  // when refused: whole seconds until a request would be allowed
  };
  // Takes one request from `key`'s bucket at monotonic time `now_ns`.
  Decision Acquire(std::string_view key, int64_t now_ns);

  // Buckets held (for tests and GET /v1/access).
  size_t size() const;

 private:
  struct Bucket {
    double tokens;
    int64_t updated_ns;
  };
  Decision Take(Bucket& bucket, int64_t now_ns);
  void SweepLocked(int64_t now_ns);

  const RateLimitOptions options_;
  const double burst_;
  Counter* overflow_ = nullptr;
  Counter* limited_ = nullptr;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Bucket, StringHash, std::equal_to<>> buckets_;
  Bucket overflow_bucket_;
  int64_t last_sweep_ns_ = 0;
  bool swept_ = false;
};

}  // namespace inferscope
