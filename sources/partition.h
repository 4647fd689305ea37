#pragma once

#include <cstdint>
#include <string_view>

namespace inferscope {

// The partition of a key (an instance name; for `inferscope bridge`, a publisher id) among
// `partitions` (>= 1): the 32-bit FNV-1a hash of its bytes modulo `partitions` (docs/PROTOCOL.md,
// "JetStream"). Publishers in other languages compute the same: offset basis 2166136261, prime
// 16777619, each byte XORed in and then multiplied, modulo 2^32.
constexpr uint32_t Fnv1a32(std::string_view bytes) {
  uint32_t h = 2166136261u;
  for (char c : bytes) {
    h ^= static_cast<uint8_t>(c);
    h *= 16777619u;
  }
  return h;
}

constexpr uint32_t PartitionOf(std::string_view key, uint32_t partitions) {
  return partitions == 0 ? 0 : Fnv1a32(key) % partitions;
}

}  // namespace inferscope
