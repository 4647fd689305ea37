#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "alerting/alert.h"
#include "pipeline/clock.h"
#include "pipeline/glob.h"
#include "pipeline/status.h"

namespace inferscope {

// One condition of a silence: an alert label equals `pattern`, where `*` matches any run of
// characters and `?` any one character (a pattern without them is an exact match).
struct SilenceMatcher {
  // "instance", "model", "metric", "stat", "rule", "type" or "severity".
  std::string field;
  std::string pattern;
};

// A silence mutes the alerts that match all its matchers while wall-clock time is in
// [starts_at_ms, ends_at_ms). Muted alerts are still tracked and stored (marked silenced) but not
// published on the alert stream.
struct Silence {
  std::string id;                        // 16 hex digits, assigned by SilenceRegistry::Add
  std::vector<SilenceMatcher> matchers;  // at least one
  int64_t starts_at_ms = 0;
  int64_t ends_at_ms = 0;  // > starts_at_ms
  int64_t created_at_ms = 0;
  std::string created_by;
  std::string comment;

  bool Matches(const Alert& alert) const;
  bool ActiveAt(int64_t now_ms) const { return now_ms >= starts_at_ms && now_ms < ends_at_ms; }
};

// {"id", "matchers": [{"field", "pattern"}], "starts_at", "ends_at" (epoch ms), "created_at",
// "created_by", "comment", "status": "pending"|"active"|"expired" (relative to now_ms)}.
nlohmann::json SilenceToJson(const Silence& silence, int64_t now_ms);
// Parses a silence as the API receives it: {"matchers": {field: pattern, ...} or
// [{"field","pattern"}...], "starts_at" (epoch ms or RFC 3339 is the caller's business: here epoch
// ms; default now_ms), "ends_at" (epoch ms) or "duration" ("2h"), "created_by", "comment"}.
// InvalidArgument naming the field on any problem. The id is not read.
Result<Silence> SilenceFromJson(const nlohmann::json& json, int64_t now_ms);

// Where SilenceRegistry keeps its silences across restarts: one JSON text per silence id.
// Implemented over the StateStore (its `silences` table) in state/silence_store.h.
// Concurrency: SilenceRegistry serialises its calls.
class SilenceStore {
 public:
  virtual ~SilenceStore() = default;
  // Calls `fn(id, json_text)` for every stored silence, in id order, until it returns false.
  virtual Status Scan(const std::function<bool(std::string_view, std::string_view)>& fn) const = 0;
  // Stores `json_text` under `id`, replacing what was stored.
  virtual Status Put(std::string_view id, std::string json_text) = 0;
  // Removes `id` (no effect when absent).
  virtual Status Delete(std::string_view id) = 0;
};

// SilenceRegistry holds the engine's silences: the query node adds, lists and deletes them; the
// alerting operators ask whether an alert is silenced.
//
// Lifecycle: construct → Load (reads the silences stored in the SilenceStore, if any) → use. With
// a store, Add and Remove write through before they change the registry, so a restarted engine
// finds the same silences.
// Concurrency: thread-safe; Match takes a shared lock (called on the operator thread only when an
// alert changes state), Add/Remove an exclusive one.
// Retention: a silence stays listed ("expired") for kExpiredRetentionMs after it ends, as
// Alertmanager keeps them (its --data.retention, 120 h), then it is deleted — at the next Load or
// Add — so expired silences never fill the registry.
// Limitations: at most kMaxSilences.
class SilenceRegistry {
 public:
  static constexpr size_t kMaxSilences = 10'000;
  static constexpr int64_t kExpiredRetentionMs = 120LL * 3600 * 1000;

  // `store` may be null (silences then live in memory only); `clock` must outlive the registry.
  SilenceRegistry(SilenceStore* store, const Clock* clock) : store_(store), clock_(clock) {}

  Status Load();
  // Validates, assigns an id and the creation time, stores and adds it. Unavailable when full.
  Result<Silence> Add(Silence silence);
  // NotFound when there is no silence `id`.
  Status Remove(std::string_view id);
  std::vector<Silence> List() const;
  std::optional<Silence> Get(std::string_view id) const;
  // The id of the first silence active at `now_ms` that matches `alert`.
  std::optional<std::string> Match(const Alert& alert, int64_t now_ms) const;

 private:
  // Deletes the silences that ended more than kExpiredRetentionMs before `now_ms` (mu_ held).
  Status DropLongExpired(int64_t now_ms);

  SilenceStore* store_;
  const Clock* clock_;
  mutable std::shared_mutex mu_;
  std::vector<Silence> silences_;
  uint64_t next_id_salt_ = 0;
};

}  // namespace inferscope
