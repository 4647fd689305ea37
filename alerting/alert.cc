#include "alerting/alert.h"

#include <array>
#include <initializer_list>

#include "pipeline/coding.h"

namespace inferscope {
namespace {

constexpr std::array<std::string_view, kNumAnomalyTypes> kTypeNames = {
    "none",           "spike",          "dip",      "level_shift", "drift",
    "seasonal_break", "rate_of_change", "threshold"};
constexpr std::array<std::string_view, kNumSeverities> kSeverityNames = {"none", "info", "warning",
                                                                         "critical", "emergency"};
constexpr std::array<std::string_view, 4> kStateNames = {"pending", "firing", "resolved",
                                                         "retracted"};

template <typename Enum, size_t N>
std::optional<Enum> ParseName(const std::array<std::string_view, N>& names, std::string_view name) {
  for (size_t i = 0; i < N; ++i) {
    if (names[i] == name) return static_cast<Enum>(i);
  }
  return std::nullopt;
}

template <typename Enum, size_t N>
std::string_view NameOf(const std::array<std::string_view, N>& names, Enum value) {
  auto i = static_cast<size_t>(value);
  return i < N ? names[i] : names[0];
}

}  // namespace

std::string_view AnomalyTypeName(AnomalyType type) { return NameOf(kTypeNames, type); }
std::optional<AnomalyType> ParseAnomalyType(std::string_view name) {
  return ParseName<AnomalyType>(kTypeNames, name);
}
std::string_view SeverityName(Severity severity) { return NameOf(kSeverityNames, severity); }
std::optional<Severity> ParseSeverity(std::string_view name) {
  return ParseName<Severity>(kSeverityNames, name);
}
std::string_view AlertStateName(AlertState state) { return NameOf(kStateNames, state); }
std::optional<AlertState> ParseAlertState(std::string_view name) {
  return ParseName<AlertState>(kStateNames, name);
}

uint64_t AlertFingerprint(std::string_view rule, std::string_view instance, std::string_view model,
                          std::string_view metric, std::string_view stat) {
  uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a offset basis
  for (std::string_view part : {rule, instance, model, metric, stat}) {
    for (char c : part) {
      h ^= static_cast<unsigned char>(c);
      h *= 0x100000001b3ULL;  // FNV prime
    }
    h *= 0x100000001b3ULL;  // the 0 separator: "ab"+"c" and "a"+"bc" differ
  }
  return h;
}

std::string FingerprintHex(uint64_t fingerprint) { return Hex64(fingerprint); }

std::optional<uint64_t> ParseFingerprintHex(std::string_view text) {
  if (text.empty() || text.size() > 16) return std::nullopt;
  uint64_t v = 0;
  for (char c : text) {
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      d = c - 'A' + 10;
    } else {
      return std::nullopt;
    }
    v = (v << 4) | static_cast<uint64_t>(d);
  }
  return v;
}

}  // namespace inferscope
