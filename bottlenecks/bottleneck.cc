#include "bottlenecks/bottleneck.h"

#include <array>

namespace inferscope {
namespace {

constexpr std::array<std::string_view, kNumBottleneckTypes> kTypeNames = {
    "MEMORY_PRESSURE", "RESOURCE_SATURATION", "CACHE_INEFFICIENCY", "LOW_THROUGHPUT",
    "QUEUE_BUILDUP",   "ERROR_SPIKE",         "HIGH_LATENCY"};
constexpr std::array<std::string_view, 5> kSeverityNames = {"NONE", "LOW", "MEDIUM", "HIGH",
                                                            "CRITICAL"};
constexpr std::array<std::string_view, 3> kStateNames = {"active", "resolved", "retracted"};
constexpr std::array<std::string_view, 2> kBasisNames = {"absolute", "peer"};
constexpr std::array<std::string_view, kNumBottleneckChanges> kChangeNames = {
    "raised", "severity_changed", "primary_changed", "resolved", "confirmed", "retracted"};

template <typename E, size_t N>
std::string_view NameOf(const std::array<std::string_view, N>& names, E value) {
  const auto i = static_cast<size_t>(value);
  return i < N ? names[i] : "unknown";
}

template <typename E, size_t N>
std::optional<E> Parse(const std::array<std::string_view, N>& names, std::string_view text) {
  for (size_t i = 0; i < N; ++i) {
    if (names[i] == text) return static_cast<E>(i);
  }
  return std::nullopt;
}

}  // namespace

std::string_view BottleneckTypeName(BottleneckType type) { return NameOf(kTypeNames, type); }
std::optional<BottleneckType> ParseBottleneckType(std::string_view name) {
  return Parse<BottleneckType>(kTypeNames, name);
}
std::string_view BottleneckSeverityName(BottleneckSeverity severity) {
  return NameOf(kSeverityNames, severity);
}
std::optional<BottleneckSeverity> ParseBottleneckSeverity(std::string_view name) {
  return Parse<BottleneckSeverity>(kSeverityNames, name);
}
std::string_view BottleneckStateName(BottleneckState state) { return NameOf(kStateNames, state); }
std::optional<BottleneckState> ParseBottleneckState(std::string_view name) {
  return Parse<BottleneckState>(kStateNames, name);
}
std::string_view BottleneckBasisName(BottleneckBasis basis) { return NameOf(kBasisNames, basis); }
std::optional<BottleneckBasis> ParseBottleneckBasis(std::string_view name) {
  return Parse<BottleneckBasis>(kBasisNames, name);
}
std::string_view BottleneckChangeName(BottleneckChange change) {
  return NameOf(kChangeNames, change);
}
std::optional<BottleneckChange> ParseBottleneckChange(std::string_view name) {
  return Parse<BottleneckChange>(kChangeNames, name);
}

uint64_t BottleneckId(std::string_view instance, std::string_view model, BottleneckType type) {
  uint64_t h = 0xcbf29ce484222325ULL;
  auto mix = [&h](std::string_view s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 0x100000001b3ULL;
    }
    h ^= 0;
    h *= 0x100000001b3ULL;
  };
  mix(instance);
  mix(model);
  mix(BottleneckTypeName(type));
  return h;
}

std::string FormatChain(const std::vector<BottleneckType>& chain) {
  std::string out;
  for (BottleneckType t : chain) {
    if (!out.empty()) out += " > ";
    out += BottleneckTypeName(t);
  }
  return out;
}

}  // namespace inferscope
