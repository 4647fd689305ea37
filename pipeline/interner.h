#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "pipeline/event.h"

namespace inferscope {

// Ids that every Interner assigns at construction, in this order, so operators can use them as
// constants. They are the metric names derived from request outcomes.
enum WellKnownId : StringId {
  kMetricTtft = 1,      // "ttft_ms"
  kMetricTpot,          // "tpot_ms"
  kMetricE2e,           // "e2e_ms"
  kMetricPromptTokens,  // "prompt_tokens"
  kMetricOutputTokens,  // "output_tokens"
  kMetricCachedTokens,  // "cached_tokens"
  kMetricCost,          // "cost_usd"
  kMetricQuality,       // "quality"
  kNumWellKnownIds = kMetricQuality,
};

// Interner maps strings (instance, model, metric and publisher names) to dense integer ids, once, at
// decode time; everything downstream works with ids.
//
// Concurrency: Intern() and Find() take a mutex (decoders put a per-thread InternCache in front, so
// the mutex is only taken the first time a thread sees a string). Name() is lock-free and may be
// called from any thread for any id that has been returned by Intern().
// Limitations: ids are never freed; the table holds at most `max_strings` entries (bounded memory),
// after which Intern() returns 0 for new strings.
class Interner {
 public:
  static constexpr size_t kChunkBits = 12;
  static constexpr size_t kChunkSize = size_t{1} << kChunkBits;
  static constexpr size_t kMaxChunks = 1024;
  static constexpr size_t kHardLimit = kChunkSize * kMaxChunks;

  explicit Interner(size_t max_strings = 1'000'000);
  ~Interner();
  Interner(const Interner&) = delete;
  Interner& operator=(const Interner&) = delete;

  // Returns the id of `s`, adding it if new. Returns 0 when the table is full.
  StringId Intern(std::string_view s);
  // Returns the id of `s` if it was interned.
  std::optional<StringId> Find(std::string_view s) const;
  // The string of `id`; empty for 0 or ids not yet handed out.
  std::string_view Name(StringId id) const;
  // Number of ids handed out (ids are 1..size()).
  size_t size() const { return size_.load(std::memory_order_acquire); }
  size_t max_strings() const { return max_strings_; }

 private:
  const size_t max_strings_;
  mutable std::mutex mu_;
  std::unordered_map<std::string_view, StringId> ids_;  // views into chunks_
  std::array<std::atomic<std::string*>, kMaxChunks> chunks_{};
  std::atomic<size_t> size_{0};
};

// InternCache is a thread-local front for an Interner: a fixed-size direct-mapped table from string
// hash to id. One hash per lookup; a hit compares the bytes once. Not thread-safe: one per thread.
class InternCache {
 public:
  explicit InternCache(Interner& interner, size_t slots_log2 = 12);

  // Same contract as Interner::Intern.
  StringId Intern(std::string_view s);

 private:
  struct Slot {
    uint64_t hash = 0;
    StringId id = 0;
  };
  Interner& interner_;
  std::unique_ptr<Slot[]> slots_;
  size_t mask_;
};

}  // namespace inferscope
