#include "alerting/silence.h"

#include <algorithm>
#include <array>
#include <random>

#include "pipeline/config.h"
#include "pipeline/json_text.h"
#include "pipeline/names.h"

namespace inferscope {
namespace {

using nlohmann::json;

constexpr std::array<std::string_view, 7> kFields = {"instance", "model", "metric",  "stat",
                                                     "rule",     "type",  "severity"};
constexpr size_t kMaxMatchers = 16;
constexpr size_t kMaxTextBytes = 1024;

std::string_view FieldOf(const Alert& a, std::string_view field) {
  if (field == "instance") return a.instance;
  if (field == "model") return a.model;
  if (field == "metric") return a.metric;
  if (field == "stat") return a.stat;
  if (field == "rule") return a.rule;
  if (field == "type") return AnomalyTypeName(a.type);
  if (field == "severity") return SeverityName(a.severity);
  return {};
}

Status Invalid(std::string_view field, std::string message) {
  return Status::InvalidArgument(std::string(field) + ": " + message);
}

Status AddMatcher(std::string field, const json& pattern, std::vector<SilenceMatcher>* out) {
  if (std::find(kFields.begin(), kFields.end(), field) == kFields.end()) {
    return Invalid("matchers",
                   "unknown field '" + field +
                       "' (expected instance, model, metric, stat, rule, type or severity)");
  }
  if (!pattern.is_string()) return Invalid("matchers." + field, "expected a string pattern");
  std::string p = pattern.get<std::string>();
  if (p.empty() || p.size() > kMaxNameBytes) {
    return Invalid("matchers." + field,
                   "pattern must be 1.." + std::to_string(kMaxNameBytes) + " bytes");
  }
  out->push_back({std::move(field), std::move(p)});
  return Status::Ok();
}

}  // namespace

bool Silence::Matches(const Alert& alert) const {
  if (matchers.empty()) return false;
  for (const SilenceMatcher& m : matchers) {
    if (!GlobMatch(m.pattern, FieldOf(alert, m.field))) return false;
  }
  return true;
}

json SilenceToJson(const Silence& s, int64_t now_ms) {
  json matchers = json::array();
  for (const SilenceMatcher& m : s.matchers) {
    matchers.push_back({{"field", m.field}, {"pattern", m.pattern}});
  }
  const char* status =
      now_ms < s.starts_at_ms ? "pending" : (now_ms < s.ends_at_ms ? "active" : "expired");
  return {{"id", s.id},
          {"matchers", std::move(matchers)},
          {"starts_at", s.starts_at_ms},
          {"ends_at", s.ends_at_ms},
          {"created_at", s.created_at_ms},
          {"created_by", s.created_by},
          {"comment", s.comment},
          {"status", status}};
}

Result<Silence> SilenceFromJson(const json& j, int64_t now_ms) {
  if (!j.is_object()) return Status::InvalidArgument("a silence must be a JSON object");
  for (const auto& [key, value] : j.items()) {
    static constexpr std::array<std::string_view, 9> kKnown = {"id",      "matchers", "starts_at",
                                                               "ends_at", "duration", "created_by",
                                                               "comment", "status",   "created_at"};
    if (std::find(kKnown.begin(), kKnown.end(), key) == kKnown.end()) {
      return Invalid(key, "unknown field");
    }
  }
  Silence s;
  auto matchers = j.find("matchers");
  if (matchers == j.end()) return Invalid("matchers", "required");
  if (matchers->is_object()) {
    for (const auto& [field, pattern] : matchers->items()) {
      INFERSCOPE_RETURN_IF_ERROR(AddMatcher(field, pattern, &s.matchers));
    }
  } else if (matchers->is_array()) {
    for (const json& m : *matchers) {
      if (!m.is_object() || !m.contains("field") || !m["field"].is_string() ||
          !m.contains("pattern")) {
        return Invalid("matchers", "each matcher needs string 'field' and 'pattern'");
      }
      INFERSCOPE_RETURN_IF_ERROR(
          AddMatcher(m["field"].get<std::string>(), m["pattern"], &s.matchers));
    }
  } else {
    return Invalid("matchers",
                   "expected an object {field: pattern} or an array of {field, pattern}");
  }
  if (s.matchers.empty()) return Invalid("matchers", "at least one matcher is required");
  if (s.matchers.size() > kMaxMatchers) return Invalid("matchers", "at most 16 matchers");

  auto time_field = [&](const char* name, int64_t def, int64_t* out) -> Status {
    auto it = j.find(name);
    if (it == j.end()) {
      *out = def;
      return Status::Ok();
    }
    if (!it->is_number_integer()) return Invalid(name, "expected epoch milliseconds");
    *out = it->get<int64_t>();
    if (*out < 0) return Invalid(name, "must not be negative");
    return Status::Ok();
  };
  INFERSCOPE_RETURN_IF_ERROR(time_field("starts_at", now_ms, &s.starts_at_ms));
  if (j.contains("ends_at") && j.contains("duration")) {
    return Invalid("ends_at", "give ends_at or duration, not both");
  }
  if (auto d = j.find("duration"); d != j.end()) {
    std::optional<int64_t> ms =
        d->is_string() ? ParseDurationMs(d->get<std::string>()) : std::nullopt;
    if (!ms || *ms <= 0)
      return Invalid("duration", "expected a positive duration such as 30m or 2h");
    s.ends_at_ms = s.starts_at_ms + *ms;
  } else {
    if (!j.contains("ends_at")) return Invalid("ends_at", "ends_at or duration is required");
    INFERSCOPE_RETURN_IF_ERROR(time_field("ends_at", 0, &s.ends_at_ms));
  }
  if (s.ends_at_ms <= s.starts_at_ms) return Invalid("ends_at", "must be after starts_at");
  for (const char* name : {"created_by", "comment"}) {
    auto it = j.find(name);
    if (it == j.end()) continue;
    if (!it->is_string() || it->get<std::string>().size() > kMaxTextBytes) {
      return Invalid(name, "expected a string of at most 1024 bytes");
    }
    (std::string_view(name) == "comment" ? s.comment : s.created_by) = it->get<std::string>();
  }
  s.created_at_ms = j.value("created_at", now_ms);
  if (auto id = j.find("id"); id != j.end() && id->is_string()) s.id = id->get<std::string>();
  return s;
}

Status SilenceRegistry::Load() {
  if (store_ == nullptr) return Status::Ok();
  std::vector<Silence> loaded;
  Status parse_error;
  Status st = store_->Scan([&](std::string_view key, std::string_view value) {
    json j = json::parse(value, nullptr, false);
    // Stored silences were validated when created; re-validating with their own creation
    // time keeps the rule that ends_at > starts_at without rejecting silences that expired.
    Result<Silence> s = j.is_object() ? SilenceFromJson(j, j.value("created_at", int64_t{0}))
                                      : Result<Silence>(Status::Corruption("not JSON"));
    if (!s.ok()) {
      parse_error =
          Status::Corruption("silence '" + std::string(key) + "': " + s.status().message());
      return false;
    }
    s->id = std::string(key);
    loaded.push_back(std::move(s).value());
    return true;
  });
  INFERSCOPE_RETURN_IF_ERROR(st);
  INFERSCOPE_RETURN_IF_ERROR(parse_error);
  std::unique_lock lock(mu_);
  silences_ = std::move(loaded);
  return DropLongExpired(clock_->NowMs());
}

Status SilenceRegistry::DropLongExpired(int64_t now_ms) {
  for (auto it = silences_.begin(); it != silences_.end();) {
    if (now_ms - it->ends_at_ms <= kExpiredRetentionMs) {
      ++it;
      continue;
    }
    if (store_ != nullptr) INFERSCOPE_RETURN_IF_ERROR(store_->Delete(it->id));
    it = silences_.erase(it);
  }
  return Status::Ok();
}

Result<Silence> SilenceRegistry::Add(Silence silence) {
  if (silence.matchers.empty())
    return Status::InvalidArgument("matchers: at least one is required");
  if (silence.ends_at_ms <= silence.starts_at_ms) {
    return Status::InvalidArgument("ends_at: must be after starts_at");
  }
  std::unique_lock lock(mu_);
  INFERSCOPE_RETURN_IF_ERROR(DropLongExpired(clock_->NowMs()));
  if (silences_.size() >= kMaxSilences) {
    return Status::Unavailable("too many silences (" + std::to_string(kMaxSilences) +
                               "); delete some first");
  }
  // Ids: random 64 bits (so they do not repeat across restarts) mixed with a counter.
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  silence.id = FingerprintHex(rng() ^ (++next_id_salt_ * 0x9E3779B97F4A7C15ULL));
  silence.created_at_ms = clock_->NowMs();
  if (store_ != nullptr) {
    json j = SilenceToJson(silence, silence.created_at_ms);
    j.erase("status");
    INFERSCOPE_RETURN_IF_ERROR(store_->Put(silence.id, ToJsonText(j)));
  }
  silences_.push_back(silence);
  return silence;
}

Status SilenceRegistry::Remove(std::string_view id) {
  std::unique_lock lock(mu_);
  auto it = std::find_if(silences_.begin(), silences_.end(),
                         [&](const Silence& s) { return s.id == id; });
  if (it == silences_.end()) return Status::NotFound("no silence '" + std::string(id) + "'");
  if (store_ != nullptr) {
    INFERSCOPE_RETURN_IF_ERROR(store_->Delete(id));
  }
  silences_.erase(it);
  return Status::Ok();
}

std::vector<Silence> SilenceRegistry::List() const {
  std::shared_lock lock(mu_);
  return silences_;
}

std::optional<Silence> SilenceRegistry::Get(std::string_view id) const {
  std::shared_lock lock(mu_);
  for (const Silence& s : silences_) {
    if (s.id == id) return s;
  }
  return std::nullopt;
}

std::optional<std::string> SilenceRegistry::Match(const Alert& alert, int64_t now_ms) const {
  std::shared_lock lock(mu_);
  for (const Silence& s : silences_) {
    if (s.ActiveAt(now_ms) && s.Matches(alert)) return s.id;
  }
  return std::nullopt;
}

}  // namespace inferscope
