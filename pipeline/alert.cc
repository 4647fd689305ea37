#include "pipeline/alert.h"

#include <array>

namespace inferscope {
namespace {

constexpr std::array<std::string_view, kNumAnomalyTypes> kTypeNames = {
    "none",           "spike",          "dip",      "level_shift", "drift",
    "seasonal_break", "rate_of_change", "threshold"};
constexpr std::array<std::string_view, kNumSeverities> kSeverityNames = {"none", "info", "warning",
                                                                         "critical", "emergency"};
constexpr std::array<std::string_view, 3> kStateNames = {"pending", "firing", "resolved"};

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

}  // namespace inferscope
