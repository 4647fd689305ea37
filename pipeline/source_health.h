#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace inferscope {

// SourceHealth collects the health of what sources pull from (scrape targets) and of the broker
// connections sources hold (the jetstream source's NATS connection), for the engine's /v1/health.
// An engine service (StageContext::services): sources look it up at Open and report after each
// attempt (targets) or on each change of state (connections).
//
// Concurrency: thread-safe. Bounded: at most kMaxEntries targets are kept (further ones are
// counted, not stored); connections are one per source stage.
class SourceHealth {
 public:
  static constexpr size_t kMaxEntries = 100'000;

  struct Target {
    std::string stage;
    std::string target;  // the URL
    std::string instance;
    bool up = false;
    std::string last_error;  // reason and detail of the last failed attempt ("" when none yet)
    int64_t last_attempt_ms = 0;
    int64_t last_error_ms = 0;
    uint64_t failures = 0;  // failed attempts so far
  };

  // The connection of a source stage to its broker.
  struct Connection {
    std::string stage;
    std::string kind;      // the source type ("jetstream")
    std::string endpoint;  // as configured (for NATS: the comma-separated URLs)
    std::string server;    // the server connected to; "" while disconnected
    bool connected = false;
    int64_t since_ms = 0;  // when it entered this state (wall clock, ms since the epoch)
    // The last fetch that completed with the connection up (wall clock, ms; 0: none yet).
    int64_t last_fetch_ms = 0;
    uint64_t disconnects = 0;  // connection losses so far
    uint64_t reconnects = 0;   // reconnections so far
  };

  // Stores `target` as its (stage, target) entry. Allocates only for a new entry (or longer
  // strings than the entry held): a source may report after every attempt.
  void Report(const Target& target);
  void Remove(const std::string& stage, const std::string& target);
  std::vector<Target> Snapshot() const;
  // Stores `connection` as its stage's entry (replacing the previous one).
  void ReportConnection(const Connection& connection);
  void RemoveConnection(const std::string& stage);
  std::vector<Connection> Connections() const;
  uint64_t dropped() const;

 private:
  using Key = std::pair<std::string, std::string>;
  using KeyView = std::pair<std::string_view, std::string_view>;
  // Orders keys and (stage, target) views alike, so that a lookup copies no string.
  struct KeyLess {
    using is_transparent = void;
    static KeyView View(const Key& k) { return {k.first, k.second}; }
    static KeyView View(const KeyView& k) { return k; }
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const {
      return View(a) < View(b);
    }
  };
  mutable std::mutex mu_;
  std::map<Key, Target, KeyLess> targets_;
  std::map<std::string, Connection, std::less<>> connections_;
  uint64_t dropped_ = 0;
};

inline void SourceHealth::Report(const Target& target) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = targets_.find(KeyView(target.stage, target.target));
  if (it == targets_.end()) {
    if (targets_.size() >= kMaxEntries) {
      ++dropped_;
      return;
    }
    targets_.emplace(Key(target.stage, target.target), target);
    return;
  }
  it->second = target;
}

inline void SourceHealth::Remove(const std::string& stage, const std::string& target) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = targets_.find(KeyView(stage, target));
  if (it != targets_.end()) targets_.erase(it);
}

inline std::vector<SourceHealth::Target> SourceHealth::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Target> out;
  out.reserve(targets_.size());
  for (const auto& [key, t] : targets_) out.push_back(t);
  return out;
}

inline void SourceHealth::ReportConnection(const Connection& connection) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = connections_.find(connection.stage);
  if (it == connections_.end()) {
    connections_.emplace(connection.stage, connection);
  } else {
    it->second = connection;
  }
}

inline void SourceHealth::RemoveConnection(const std::string& stage) {
  std::lock_guard<std::mutex> lock(mu_);
  connections_.erase(stage);
}

inline std::vector<SourceHealth::Connection> SourceHealth::Connections() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Connection> out;
  out.reserve(connections_.size());
  for (const auto& [stage, c] : connections_) out.push_back(c);
  return out;
}

inline uint64_t SourceHealth::dropped() const {
  std::lock_guard<std::mutex> lock(mu_);
  return dropped_;
}

}  // namespace inferscope
