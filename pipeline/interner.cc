#include "pipeline/interner.h"

#include <algorithm>
#include <functional>

namespace inferscope {
namespace {

constexpr std::string_view kWellKnownNames[] = {
    "ttft_ms",       "tpot_ms",       "e2e_ms",   "prompt_tokens",
    "output_tokens", "cached_tokens", "cost_usd", "quality",
};
static_assert(std::size(kWellKnownNames) == kNumWellKnownIds);

}  // namespace

Interner::Interner(size_t max_strings)
    : max_strings_(std::clamp<size_t>(max_strings, kNumWellKnownIds, kHardLimit - 1)) {
  for (std::string_view name : kWellKnownNames) Pin(Intern(name));
}

Interner::~Interner() {
  for (auto& chunk : chunks_) {
    Chunk* slots = chunk.load(std::memory_order_relaxed);
    if (slots == nullptr) continue;
    for (size_t i = 0; i < kChunkSize; ++i) delete slots[i].load(std::memory_order_relaxed);
    delete[] slots;
  }
  for (Entry* e : retired_) delete e;
  for (Entry* e : retired_before_) delete e;
}

StringId Interner::Intern(std::string_view s) {
  std::lock_guard<std::mutex> lock(mu_);
  return InternLocked(s, nullptr, 0);
}

StringId Interner::InternFor(std::string_view s, StringId owner, size_t owner_limit) {
  std::lock_guard<std::mutex> lock(mu_);
  return InternLocked(s, &owner, owner_limit);
}

size_t Interner::owned_by(StringId owner) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = owned_.find(owner);
  return it != owned_.end() ? it->second : 0;
}

StringId Interner::InternLocked(std::string_view s, const StringId* charge, size_t owner_limit) {
  const uint32_t epoch = epoch_.load(std::memory_order_relaxed);
  if (auto it = ids_.find(s); it != ids_.end()) {
    Lookup(it->second)->last_used = epoch;
    return it->second;
  }
  const size_t live = live_.load(std::memory_order_relaxed);
  if (live >= max_strings_ || (free_slots_.empty() && next_slot_ >= kHardLimit)) {
    refused_full_.fetch_add(1, std::memory_order_relaxed);
    return 0;
  }
  size_t* owned = nullptr;
  if (charge != nullptr) {
    auto it = owned_.find(*charge);
    if ((it != owned_.end() ? it->second : 0) >= owner_limit) {
      refused_share_.fetch_add(1, std::memory_order_relaxed);
      return 0;
    }
    owned = it != owned_.end() ? &it->second : &owned_[*charge];
  }
  uint32_t slot = 0;
  if (!free_slots_.empty()) {
    slot = free_slots_.front();
    free_slots_.pop_front();
  } else {
    slot = next_slot_++;
  }
  if (generation_.size() <= slot)
    generation_.resize(std::max<size_t>(slot + 1, generation_.size() * 2));
  const StringId id = (StringId{generation_[slot]} << kSlotBits) | slot;
  std::atomic<Chunk*>& chunk = chunks_[slot >> kChunkBits];
  Chunk* slots = chunk.load(std::memory_order_relaxed);
  if (slots == nullptr) {
    slots = new Chunk[kChunkSize];
    for (size_t i = 0; i < kChunkSize; ++i) slots[i].store(nullptr, std::memory_order_relaxed);
    chunk.store(slots, std::memory_order_release);
  }
  auto* entry = new Entry;
  entry->name.assign(s);
  entry->id = id;
  entry->last_used = epoch;
  if (owned != nullptr) {
    ++*owned;
    entry->charged = true;
    entry->owner = *charge;
  }
  slots[slot & (kChunkSize - 1)].store(entry, std::memory_order_release);
  ids_.emplace(std::string_view(entry->name), id);
  live_.store(live + 1, std::memory_order_release);
  return id;
}

std::optional<StringId> Interner::Find(std::string_view s) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = ids_.find(s); it != ids_.end()) return it->second;
  return std::nullopt;
}

Interner::Entry* Interner::Lookup(StringId id) const {
  const StringId slot = id & kSlotMask;
  if (slot == 0) return nullptr;
  const Chunk* slots = chunks_[slot >> kChunkBits].load(std::memory_order_acquire);
  if (slots == nullptr) return nullptr;
  Entry* entry = slots[slot & (kChunkSize - 1)].load(std::memory_order_acquire);
  return entry != nullptr && entry->id == id ? entry : nullptr;
}

std::string_view Interner::Name(StringId id) const {
  const Entry* entry = Lookup(id);
  return entry != nullptr ? std::string_view(entry->name) : std::string_view();
}

bool Interner::Ref(StringId id) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry* entry = Lookup(id);
  if (entry == nullptr) return (id & kSlotMask) >= next_slot_ && id != 0;  // never handed out
  ++entry->refs;
  entry->last_used = epoch_.load(std::memory_order_relaxed);
  return true;
}

void Interner::Unref(StringId id) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry* entry = Lookup(id);
  if (entry == nullptr || entry->refs == 0) return;
  --entry->refs;
  entry->last_used = epoch_.load(std::memory_order_relaxed);
}

void Interner::Pin(StringId id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (Entry* entry = Lookup(id); entry != nullptr) entry->pinned = true;
}

size_t Interner::Sweep() {
  std::lock_guard<std::mutex> lock(mu_);
  for (Entry* e : retired_before_) delete e;
  retired_before_ = std::move(retired_);
  retired_.clear();
  const uint32_t epoch = epoch_.load(std::memory_order_relaxed);
  size_t reclaimed = 0;
  for (uint32_t slot = 1; slot < next_slot_; ++slot) {
    Chunk& cell =
        chunks_[slot >> kChunkBits].load(std::memory_order_relaxed)[slot & (kChunkSize - 1)];
    Entry* entry = cell.load(std::memory_order_relaxed);
    // Unused for two whole intervals: an event decoded through a cache before the previous
    // sweep (which does not mark the name) has long been processed and written.
    if (entry == nullptr || entry->pinned || entry->refs != 0 || entry->last_used + 1 >= epoch) {
      continue;
    }
    cell.store(nullptr, std::memory_order_release);
    ids_.erase(std::string_view(entry->name));
    if (entry->charged) {
      auto owned = owned_.find(entry->owner);
      if (owned != owned_.end() && --owned->second == 0) owned_.erase(owned);
    }
    retired_.push_back(entry);
    // A slot whose generations are used up is retired for good (one slot per 1,023 reuses).
    if (++generation_[slot] <= kMaxGeneration) free_slots_.push_back(slot);
    ++reclaimed;
  }
  live_.fetch_sub(reclaimed, std::memory_order_release);
  reclaimed_.fetch_add(reclaimed, std::memory_order_relaxed);
  epoch_.store(epoch + 1, std::memory_order_release);
  return reclaimed;
}

InternCache::InternCache(Interner& interner, size_t slots_log2)
    : interner_(interner),
      slots_(new Slot[size_t{1} << slots_log2]),
      mask_((size_t{1} << slots_log2) - 1),
      epoch_(interner.epoch()) {}

bool InternCache::Sync() {
  const uint32_t epoch = interner_.epoch();
  if (epoch == epoch_) return false;
  std::fill(slots_.get(), slots_.get() + mask_ + 1, Slot{});
  epoch_ = epoch;
  return true;
}

StringId InternCache::Intern(std::string_view s) {
  Sync();
  uint64_t h = std::hash<std::string_view>{}(s) | 1;  // never 0, so empty slots never match
  Slot& slot = slots_[h & mask_];
  if (slot.hash == h && interner_.Name(slot.id) == s) return slot.id;
  StringId id = interner_.Intern(s);
  if (id != 0) slot = Slot{h, id};
  return id;
}

StringId InternCache::InternFor(std::string_view s, StringId owner, size_t owner_limit) {
  Sync();
  uint64_t h = std::hash<std::string_view>{}(s) | 1;
  Slot& slot = slots_[h & mask_];
  if (slot.hash == h && interner_.Name(slot.id) == s) return slot.id;
  StringId id = interner_.InternFor(s, owner, owner_limit);
  if (id != 0) slot = Slot{h, id};
  return id;
}

}  // namespace inferscope
