#include "query/access.h"

#include <arpa/inet.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <spdlog/spdlog.h>

namespace inferscope {
namespace {

constexpr size_t kMinSecretBytes = 16;
constexpr size_t kMaxSecretBytes = 1024;
constexpr size_t kMaxNameBytes = 64;

bool ValidName(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '.' || c == '-';
  });
}

// Why `secret` is not a usable token, or "".
std::string SecretProblem(std::string_view secret) {
  if (secret.size() < kMinSecretBytes || secret.size() > kMaxSecretBytes) {
    return "must be " + std::to_string(kMinSecretBytes) + ".." + std::to_string(kMaxSecretBytes) +
           " bytes long (got " + std::to_string(secret.size()) +
           "); `inferscope keygen`-style random tokens: head -c 32 /dev/urandom | base64";
  }
  for (char c : secret) {
    if (c <= ' ' || c > '~') return "must be printable ASCII without spaces";
  }
  return "";
}

// Parses a comma list of scope names into *out; the bad name in *bad.
bool ParseScopes(std::string_view text, uint8_t* out, std::string* bad) {
  uint8_t scopes = 0;
  std::stringstream in{std::string(text)};
  for (std::string part; std::getline(in, part, ',');) {
    if (part == "read") {
      scopes |= static_cast<uint8_t>(Scope::kRead);
    } else if (part == "write") {
      scopes |= static_cast<uint8_t>(Scope::kWrite);
    } else if (part == "admin") {
      scopes |= static_cast<uint8_t>(Scope::kAdmin);
    } else {
      *bad = part;
      return false;
    }
  }
  if (scopes == 0) {
    *bad = std::string(text);
    return false;
  }
  *out = scopes;
  return true;
}

Status CheckTokens(const std::vector<ApiToken>& tokens) {
  std::set<std::string_view> names, secrets;
  for (const ApiToken& t : tokens) {
    if (!ValidName(t.name)) {
      return Status::InvalidArgument("token name '" + t.name + "' must be 1.." +
                                     std::to_string(kMaxNameBytes) + " of [A-Za-z0-9_.-]");
    }
    if (std::string problem = SecretProblem(t.secret); !problem.empty()) {
      return Status::InvalidArgument("token '" + t.name + "': the token " + problem);
    }
    if (t.scopes == 0 || t.scopes > 7) {
      return Status::InvalidArgument("token '" + t.name + "': needs at least one scope");
    }
    if (!names.insert(t.name).second) {
      return Status::InvalidArgument("token name '" + t.name + "' is used twice");
    }
    if (!secrets.insert(t.secret).second) {
      return Status::InvalidArgument("token '" + t.name + "' has the same secret as another");
    }
  }
  return Status::Ok();
}

Result<std::vector<std::string>> GetStringList(const ConfigNode& node, std::string_view field) {
  const YAML::Node list = node.node()[std::string(field)];
  if (!list.IsSequence()) return node.Error(field, "expected a list of strings");
  std::vector<std::string> out;
  for (const auto& item : list) {
    if (!item.IsScalar() || item.Scalar().empty()) {
      return node.Error(field, "expected a list of non-empty strings");
    }
    out.push_back(item.Scalar());
  }
  return out;
}

}  // namespace

std::string_view ScopeName(Scope scope) {
  switch (scope) {
    case Scope::kRead:
      return "read";
    case Scope::kWrite:
      return "write";
    case Scope::kAdmin:
      return "admin";
  }
  return "";
}

std::string ScopeList(uint8_t scopes) {
  std::string out;
  for (Scope s : {Scope::kRead, Scope::kWrite, Scope::kAdmin}) {
    if ((scopes & static_cast<uint8_t>(s)) == 0) continue;
    if (!out.empty()) out += ',';
    out += ScopeName(s);
  }
  return out;
}

Status RateLimitOptions::Validate() const {
  if (!(rate >= 0) || rate > 1e9) {
    return Status::InvalidArgument("rate_limit.rate must be in 0..1e9 requests per second");
  }
  if (!(burst == 0 || (burst >= 1 && burst <= 1e9))) {
    return Status::InvalidArgument("rate_limit.burst must be 0 (= rate) or in 1..1e9");
  }
  if (max_clients < 16 || max_clients > 10'000'000) {
    return Status::InvalidArgument("rate_limit.max_clients must be in 16..10000000, got " +
                                   std::to_string(max_clients));
  }
  return Status::Ok();
}

bool CorsOptions::Allows(std::string_view origin) const {
  if (origin.empty()) return false;
  for (const std::string& allowed : allowed_origins) {
    if (allowed == "*" || allowed == origin) return true;
  }
  return false;
}

Status CorsOptions::Validate() const {
  for (const std::string& origin : allowed_origins) {
    if (origin == "*") continue;
    const size_t scheme = origin.find("://");
    if (scheme == std::string::npos || scheme == 0 || origin.back() == '/' ||
        origin.find('/', scheme + 3) != std::string::npos || scheme + 3 == origin.size()) {
      return Status::InvalidArgument("cors.allowed_origins: '" + origin +
                                     "' is not an origin such as https://grafana.example.com "
                                     "(scheme://host[:port], no path) or \"*\"");
    }
  }
  if (max_age_s < 0 || max_age_s > 86'400) {
    return Status::InvalidArgument("cors.max_age must be in 0s..1d");
  }
  return Status::Ok();
}

Status AccessOptions::Validate() const {
  INFERSCOPE_RETURN_IF_ERROR(CheckTokens(tokens));
  INFERSCOPE_RETURN_IF_ERROR(rate_limit.Validate());
  return cors.Validate();
}

Status ExportOptions::Validate() const {
  if (window_ms < 1'000 || window_ms > 86'400'000) {
    return Status::InvalidArgument("export.window must be in 1s..1d");
  }
  if (max_series < 1 || max_series > 10'000'000) {
    return Status::InvalidArgument("export.max_series must be in 1..10000000, got " +
                                   std::to_string(max_series));
  }
  return Status::Ok();
}

Result<std::vector<ApiToken>> LoadTokenFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::IOError("cannot read the token file " + path);
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    spdlog::warn("token file {} is readable by others (mode {:o}); chmod 600 it", path,
                 st.st_mode & 0777);
  }
  std::vector<ApiToken> tokens;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    const std::string where = path + ":" + std::to_string(number) + ": ";
    std::istringstream fields(line);
    std::string name, scopes, secret, extra;
    if (!(fields >> name) || name[0] == '#') continue;
    if (!(fields >> scopes >> secret) || (fields >> extra)) {
      return Status::InvalidArgument(where +
                                     "expected NAME SCOPES TOKEN (e.g. grafana read 3f9c...)");
    }
    ApiToken token;
    token.name = name;
    token.secret = secret;
    std::string bad;
    if (!ParseScopes(scopes, &token.scopes, &bad)) {
      return Status::InvalidArgument(where + "unknown scope '" + bad +
                                     "' (expected a comma list of read, write, admin)");
    }
    tokens.push_back(std::move(token));
    if (Status s = CheckTokens(tokens); !s.ok()) {
      return Status::InvalidArgument(where + s.message());
    }
  }
  return tokens;
}

Result<QuerySectionAccess> ParseQueryAccess(const ConfigNode& query) {
  QuerySectionAccess out;
  if (query.Has("tokens")) {
    const YAML::Node list = query.node()["tokens"];
    if (!list.IsSequence()) {
      return query.Error("tokens", "expected a list of {name, token, scopes}");
    }
    for (size_t i = 0; i < list.size(); ++i) {
      ConfigNode item(query.file(), list[i], query.path() + ".tokens[" + std::to_string(i) + "]");
      if (!list[i].IsMap()) return item.Error("", "expected a mapping {name, token, scopes}");
      INFERSCOPE_RETURN_IF_ERROR(item.CheckKnownFields({"name", "token", "scopes"}));
      ApiToken token;
      Result<std::string> name = item.GetString("name");
      if (!name.ok()) return name.status();
      if (!ValidName(*name)) {
        return item.Error("name", "must be 1..64 of [A-Za-z0-9_.-]");
      }
      token.name = *name;
      Result<std::string> secret = item.GetString("token");
      if (!secret.ok()) return secret.status();
      if (std::string problem = SecretProblem(*secret); !problem.empty()) {
        return item.Error("token", "the token " + problem);
      }
      token.secret = *secret;
      if (!item.Has("scopes"))
        return item.Error("scopes", "required: a list of read, write, admin");
      Result<std::vector<std::string>> scopes = GetStringList(item, "scopes");
      if (!scopes.ok()) return scopes.status();
      for (const std::string& s : *scopes) {
        std::string bad;
        uint8_t bits = 0;
        if (!ParseScopes(s, &bits, &bad)) {
          return item.Error("scopes", "unknown scope '" + bad + "' (read, write or admin)");
        }
        token.scopes |= bits;
      }
      if (token.scopes == 0) return item.Error("scopes", "needs at least one scope");
      out.access.tokens.push_back(std::move(token));
      if (Status s = CheckTokens(out.access.tokens); !s.ok()) return item.Error("", s.message());
    }
  }
  Result<std::string> token_file = query.GetString("token_file", std::string());
  if (!token_file.ok()) return token_file.status();
  if (!token_file->empty()) {
    std::filesystem::path path(*token_file);
    if (path.is_relative() && query.file() != "<builder>") {
      path = std::filesystem::path(query.file()).parent_path() / path;
    }
    Result<std::vector<ApiToken>> loaded = LoadTokenFile(path.string());
    if (!loaded.ok()) return query.Error("token_file", loaded.status().message());
    for (ApiToken& t : *loaded) out.access.tokens.push_back(std::move(t));
    if (Status s = CheckTokens(out.access.tokens); !s.ok()) {
      return query.Error("token_file", s.message());
    }
  }

  Result<std::optional<ConfigNode>> rate =
      Section(query, "rate_limit", {"rate", "burst", "max_clients"});
  if (!rate.ok()) return rate.status();
  if (*rate) {
    const ConfigNode& r = **rate;
    INFERSCOPE_RETURN_IF_ERROR(ReadDouble(r, "rate", &out.access.rate_limit.rate, 0, 1e9));
    INFERSCOPE_RETURN_IF_ERROR(ReadDouble(r, "burst", &out.access.rate_limit.burst, 0, 1e9));
    if (out.access.rate_limit.burst != 0 && out.access.rate_limit.burst < 1) {
      return r.Error("burst", "must be 0 (= rate) or at least 1");
    }
    int64_t max_clients = static_cast<int64_t>(out.access.rate_limit.max_clients);
    INFERSCOPE_RETURN_IF_ERROR(ReadInt(r, "max_clients", &max_clients, 16, 10'000'000));
    out.access.rate_limit.max_clients = static_cast<size_t>(max_clients);
  }

  Result<std::optional<ConfigNode>> cors = Section(query, "cors", {"allowed_origins", "max_age"});
  if (!cors.ok()) return cors.status();
  if (*cors) {
    const ConfigNode& c = **cors;
    if (c.Has("allowed_origins")) {
      Result<std::vector<std::string>> origins = GetStringList(c, "allowed_origins");
      if (!origins.ok()) return origins.status();
      out.access.cors.allowed_origins = std::move(origins).value();
    }
    int64_t max_age_ms = out.access.cors.max_age_s * 1000;
    INFERSCOPE_RETURN_IF_ERROR(ReadDuration(c, "max_age", &max_age_ms, 0));
    out.access.cors.max_age_s = max_age_ms / 1000;
    if (Status s = out.access.cors.Validate(); !s.ok()) {
      return c.Error(c.Has("allowed_origins") ? "allowed_origins" : "max_age", s.message());
    }
  }

  Result<std::optional<ConfigNode>> exp = Section(query, "export", {"window", "max_series"});
  if (!exp.ok()) return exp.status();
  if (*exp) {
    const ConfigNode& e = **exp;
    INFERSCOPE_RETURN_IF_ERROR(ReadDuration(e, "window", &out.export_options.window_ms, 1'000));
    int64_t max_series = static_cast<int64_t>(out.export_options.max_series);
    INFERSCOPE_RETURN_IF_ERROR(ReadInt(e, "max_series", &max_series, 1, 10'000'000));
    out.export_options.max_series = static_cast<size_t>(max_series);
    if (Status s = out.export_options.Validate(); !s.ok()) return e.Error("window", s.message());
  }

  int64_t max_url = 0, max_body = 0, max_per_address = 0;
  INFERSCOPE_RETURN_IF_ERROR(ReadInt(query, "max_url_bytes", &max_url, 256, 8192));
  INFERSCOPE_RETURN_IF_ERROR(ReadInt(query, "max_body_bytes", &max_body, 1, 1024 * 1024 * 1024));
  INFERSCOPE_RETURN_IF_ERROR(
      ReadInt(query, "max_connections_per_address", &max_per_address, 1, 1'000'000));
  out.max_url_bytes = static_cast<size_t>(max_url);
  out.max_body_bytes = static_cast<size_t>(max_body);
  out.max_connections_per_address = static_cast<size_t>(max_per_address);
  return out;
}

bool IsLoopbackHost(std::string_view host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host == "localhost") return true;
  const std::string text(host);
  in_addr v4{};
  if (::inet_pton(AF_INET, text.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  in6_addr v6{};
  if (::inet_pton(AF_INET6, text.c_str(), &v6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
    // ::ffff:127.x.y.z
    return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
  }
  return false;
}

const ApiToken* TokenSet::Authenticate(std::string_view authorization, Outcome* outcome) const {
  if (authorization.empty()) {
    *outcome = Outcome::kMissing;
    return nullptr;
  }
  constexpr std::string_view kScheme = "bearer ";
  if (authorization.size() <= kScheme.size() ||
      !std::equal(kScheme.begin(), kScheme.end(), authorization.begin(), [](char a, char b) {
        return a == std::tolower(static_cast<unsigned char>(b));
      })) {
    *outcome = Outcome::kMalformed;
    return nullptr;
  }
  std::string_view presented = authorization.substr(kScheme.size());
  while (!presented.empty() && presented.front() == ' ') presented.remove_prefix(1);
  while (!presented.empty() && presented.back() == ' ') presented.remove_suffix(1);
  // Every secret is compared over the presented token's length, without an early exit.
  const ApiToken* found = nullptr;
  for (const ApiToken& token : tokens_) {
    const std::string& secret = token.secret;  // never empty (CheckTokens)
    unsigned diff = secret.size() == presented.size() ? 0u : 1u;
    for (size_t i = 0; i < presented.size(); ++i) {
      diff |= static_cast<unsigned char>(presented[i]) ^
              static_cast<unsigned char>(secret[i % secret.size()]);
    }
    // Branch-free select: found stays the first match.
    const bool match = diff == 0 && found == nullptr;
    found = match ? &token : found;
  }
  *outcome = found != nullptr ? Outcome::kOk : Outcome::kUnknown;
  return found;
}

RateLimiter::RateLimiter(RateLimitOptions options, MetricsRegistry* metrics)
    : options_(options),
      burst_(options.burst > 0 ? options.burst : std::max(1.0, options.rate)),
      overflow_bucket_{burst_, 0} {
  overflow_ = metrics->GetCounter(
      "inferscope_http_rate_limit_overflow_total",
      "Requests of clients that found the rate limiter's table full (rate_limit.max_clients) and "
      "shared its overflow bucket");
  limited_ = metrics->GetCounter("inferscope_http_rate_limited_total",
                                 "Requests refused with 429 by the per-client rate limit");
  buckets_.reserve(std::min<size_t>(options.max_clients, 1024));
}

RateLimiter::Decision RateLimiter::Take(Bucket& bucket, int64_t now_ns) {
  if (now_ns > bucket.updated_ns) {
    const double elapsed_s = static_cast<double>(now_ns - bucket.updated_ns) / 1e9;
    bucket.tokens = std::min(burst_, bucket.tokens + elapsed_s * options_.rate);
    bucket.updated_ns = now_ns;
  }
  if (bucket.tokens >= 1.0) {
    bucket.tokens -= 1.0;
    return {};
  }
  limited_->Inc();
  const double wait_s = (1.0 - bucket.tokens) / options_.rate;
  return {false, std::max<int64_t>(1, static_cast<int64_t>(std::ceil(wait_s)))};
}

void RateLimiter::SweepLocked(int64_t now_ns) {
  const double refill_s = burst_ / options_.rate;
  for (auto it = buckets_.begin(); it != buckets_.end();) {
    const double idle_s = static_cast<double>(now_ns - it->second.updated_ns) / 1e9;
    if (it->second.tokens + idle_s * options_.rate >= burst_ || idle_s >= refill_s) {
      it = buckets_.erase(it);
    } else {
      ++it;
    }
  }
  last_sweep_ns_ = now_ns;
  swept_ = true;
}

RateLimiter::Decision RateLimiter::Acquire(std::string_view key, int64_t now_ns) {
  if (!enabled()) return {};
  std::lock_guard<std::mutex> lock(mu_);
  auto it = buckets_.find(key);
  if (it != buckets_.end()) return Take(it->second, now_ns);
  if (buckets_.size() >= options_.max_clients &&
      (!swept_ || now_ns - last_sweep_ns_ >= 1'000'000'000)) {
    SweepLocked(now_ns);
  }
  if (buckets_.size() >= options_.max_clients) {
    overflow_->Inc();
    return Take(overflow_bucket_, now_ns);
  }
  Bucket& bucket = buckets_.emplace(std::string(key), Bucket{burst_, now_ns}).first->second;
  return Take(bucket, now_ns);
}

size_t RateLimiter::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return buckets_.size();
}

}  // namespace inferscope
