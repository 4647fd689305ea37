#include "pipeline/interner.h"

#include <algorithm>
#include <functional>

namespace inferscope {
namespace {

constexpr std::string_view kWellKnownNames[] = {
    "ttft_ms", "tpot_ms", "e2e_ms", "prompt_tokens", "output_tokens", "cached_tokens", "cost_usd", "quality",
};
static_assert(std::size(kWellKnownNames) == kNumWellKnownIds);

}  // namespace

Interner::Interner(size_t max_strings)
    : max_strings_(std::clamp<size_t>(max_strings, kNumWellKnownIds, kHardLimit - 1)) {
  for (std::string_view name : kWellKnownNames) Intern(name);
}

Interner::~Interner() {
  for (auto& chunk : chunks_) delete[] chunk.load(std::memory_order_relaxed);
}

StringId Interner::Intern(std::string_view s) {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = ids_.find(s); it != ids_.end()) return it->second;
  size_t n = size_.load(std::memory_order_relaxed);
  if (n >= max_strings_) return 0;
  StringId id = static_cast<StringId>(n + 1);
  size_t chunk = id >> kChunkBits;
  std::string* slots = chunks_[chunk].load(std::memory_order_relaxed);
  if (slots == nullptr) {
    slots = new std::string[kChunkSize];
    chunks_[chunk].store(slots, std::memory_order_release);
  }
  std::string& stored = slots[id & (kChunkSize - 1)];
  stored.assign(s);
  ids_.emplace(std::string_view(stored), id);
  size_.store(n + 1, std::memory_order_release);
  return id;
}

std::optional<StringId> Interner::Find(std::string_view s) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = ids_.find(s); it != ids_.end()) return it->second;
  return std::nullopt;
}

std::string_view Interner::Name(StringId id) const {
  if (id == 0 || id > size_.load(std::memory_order_acquire)) return {};
  const std::string* slots = chunks_[id >> kChunkBits].load(std::memory_order_acquire);
  return slots[id & (kChunkSize - 1)];
}

InternCache::InternCache(Interner& interner, size_t slots_log2)
    : interner_(interner),
      slots_(new Slot[size_t{1} << slots_log2]),
      mask_((size_t{1} << slots_log2) - 1) {}

StringId InternCache::Intern(std::string_view s) {
  uint64_t h = std::hash<std::string_view>{}(s) | 1;  // never 0, so empty slots never match
  Slot& slot = slots_[h & mask_];
  if (slot.hash == h && interner_.Name(slot.id) == s) return slot.id;
  StringId id = interner_.Intern(s);
  if (id != 0) slot = Slot{h, id};
  return id;
}

}  // namespace inferscope
