#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

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

// Interner maps strings (instance, model, metric and publisher names) to integer ids, once, at
// decode time; everything downstream works with ids.
//
// Reclamation: the table holds at most `max_strings` names at once, and names nobody holds are
// reclaimed, so that a burst of one-off names (a cardinality attack) does not fill it for good.
// A holder that keeps an id and needs its name later takes a reference (Ref/Unref: the window
// operator for its series) or pins it for the process's life (Pin: publishers, the well-known
// metric names). Sweep() reclaims every name with no reference and no pin that was neither
// interned (a first sight through an InternCache counts; Sweep makes every cache start afresh)
// nor released since the Sweep before the previous one (two whole intervals). An id is never handed
// out twice: a reclaimed name's slot is reused under a new generation (the high bits of the id), so
// a stale id still held somewhere names nothing (Name() is empty, Ref() fails) rather than another
// string. The memory of a reclaimed name is freed two sweeps later, so a reader that loaded it just
// before stays valid.
//
// Shares: InternFor charges each name it adds to an owner (the publisher whose event named it) and
// refuses a new name once that owner holds `owner_limit` names it added, so one publisher cannot
// fill the table with names and starve the others until the sweeps reclaim them. A charge ends when
// the name is reclaimed. Refusals are counted by reason (the table is full; the owner's share is).
//
// Concurrency: Intern(), Find(), Ref(), Unref(), Pin() and Sweep() take a mutex (decoders put a
// per-thread InternCache in front, so the mutex is only taken the first time a thread sees a
// string after each sweep). Name() and epoch() are lock-free and may be called from any thread.
// Sweep() is meant for one thread (the engine's operator thread) between steps, once every sink
// has written what was routed before the previous sweep (the executor fences it).
class Interner {
 public:
  static constexpr size_t kChunkBits = 12;
  static constexpr size_t kChunkSize = size_t{1} << kChunkBits;
  static constexpr size_t kMaxChunks = 1024;
  static constexpr size_t kHardLimit = kChunkSize * kMaxChunks;  // slots: the low 22 bits of ids
  static constexpr int kSlotBits = 22;
  static constexpr StringId kSlotMask = (StringId{1} << kSlotBits) - 1;
  static constexpr uint32_t kMaxGeneration = (uint32_t{1} << (32 - kSlotBits)) - 1;
  static_assert(kHardLimit == (size_t{1} << kSlotBits));

  explicit Interner(size_t max_strings = 1'000'000);
  ~Interner();
  Interner(const Interner&) = delete;
  Interner& operator=(const Interner&) = delete;

  // Returns the id of `s`, adding it if new. Returns 0 when the table is full.
  StringId Intern(std::string_view s);
  // Like Intern, but a name it adds is charged to `owner` (a publisher id; 0 stands for "publisher
  // not known yet" and is an owner like the others), and a new name is refused (0) when `owner`
  // already holds `owner_limit` names. A name already interned is returned whoever added it and
  // charges nobody.
  StringId InternFor(std::string_view s, StringId owner, size_t owner_limit);
  // Names charged to `owner` that are still interned.
  size_t owned_by(StringId owner) const;
  // Returns the id of `s` if it is interned.
  std::optional<StringId> Find(std::string_view s) const;
  // The string of `id`; empty for 0, ids not handed out and reclaimed ids.
  std::string_view Name(StringId id) const;

  // References keep a name from being reclaimed. Ref returns false when `id` was reclaimed (its
  // name is gone); an id this interner never handed out is accepted and not tracked.
  bool Ref(StringId id);
  void Unref(StringId id);
  // Never reclaim `id` (publisher names: sources and checkpoints key state by them).
  void Pin(StringId id);

  // Reclaims the names nobody holds (see the class comment); returns how many.
  size_t Sweep();
  // Incremented by every Sweep; caches compare it to know they must start afresh.
  uint32_t epoch() const { return epoch_.load(std::memory_order_acquire); }

  // Names currently interned.
  size_t size() const { return live_.load(std::memory_order_acquire); }
  size_t max_strings() const { return max_strings_; }
  // Names reclaimed so far.
  uint64_t reclaimed() const { return reclaimed_.load(std::memory_order_relaxed); }
  // New names refused so far because the table was full (max_strings) or, in InternFor, because
  // the owner's share was used up.
  uint64_t refused_full() const { return refused_full_.load(std::memory_order_relaxed); }
  uint64_t refused_share() const { return refused_share_.load(std::memory_order_relaxed); }

 private:
  struct Entry {
    std::string name;
    StringId id = 0;
    uint32_t refs = 0;       // under mu_
    uint32_t last_used = 0;  // epoch of the last Intern/Unref; under mu_
    bool pinned = false;     // under mu_
    bool charged = false;    // added by InternFor: counted in owned_[owner] (under mu_)
    StringId owner = 0;      // under mu_
  };
  using Chunk = std::atomic<Entry*>;

  Entry* Lookup(StringId id) const;
  // Intern's body, under mu_; `charge` is null for Intern.
  StringId InternLocked(std::string_view s, const StringId* charge, size_t owner_limit);

  const size_t max_strings_;
  mutable std::mutex mu_;
  std::unordered_map<std::string_view, StringId> ids_;  // views into the entries' names
  std::array<std::atomic<Chunk*>, kMaxChunks> chunks_{};
  std::vector<uint16_t> generation_;    // per slot: the generation of its next id (under mu_)
  std::deque<uint32_t> free_slots_;     // reclaimed slots, reused oldest first (under mu_)
  uint32_t next_slot_ = 1;              // slots below it have been used (under mu_)
  std::vector<Entry*> retired_;         // reclaimed by the last Sweep
  std::vector<Entry*> retired_before_;  // reclaimed by the Sweep before; freed by the next
  // Names charged to each owner (InternFor), entries erased at 0: at most one per owner holding a
  // name (owners are publishers, which the sources bound).
  std::unordered_map<StringId, size_t> owned_;
  std::atomic<uint32_t> epoch_{1};
  std::atomic<size_t> live_{0};
  std::atomic<uint64_t> reclaimed_{0};
  std::atomic<uint64_t> refused_full_{0};
  std::atomic<uint64_t> refused_share_{0};
};

// InternCache is a thread-local front for an Interner: a fixed-size direct-mapped table from string
// hash to id. One hash per lookup; a hit compares the bytes once. It starts afresh after every
// Interner::Sweep (so that names in use are seen by the interner again). Not thread-safe: one per
// thread.
class InternCache {
 public:
  explicit InternCache(Interner& interner, size_t slots_log2 = 12);

  // Same contract as Interner::Intern.
  StringId Intern(std::string_view s);
  // Same contract as Interner::InternFor (a name the cache holds is returned without a charge).
  StringId InternFor(std::string_view s, StringId owner, size_t owner_limit);
  // Empties the cache if the interner swept since it was last filled; true if it did. Callers
  // that keep their own views of interned names drop them when this returns true.
  bool Sync();

 private:
  struct Slot {
    uint64_t hash = 0;
    StringId id = 0;
  };
  Interner& interner_;
  std::unique_ptr<Slot[]> slots_;
  size_t mask_;
  uint32_t epoch_;
};

}  // namespace inferscope
