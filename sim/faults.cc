#include "sim/faults.h"

#include <charconv>
#include <cmath>
#include <optional>

#include "pipeline/config.h"
#include "pipeline/glob.h"

namespace inferscope::sim {
namespace {

struct KindInfo {
  FaultKind kind;
  std::string_view name;
  double default_factor;
};
constexpr KindInfo kKinds[] = {
    {FaultKind::kKvCacheSmall, "kv_cache_small", 0.1},
    {FaultKind::kSlotLimitLow, "slot_limit_low", 0.0625},
    {FaultKind::kSlowGpu, "slow_gpu", 3},
    {FaultKind::kPrefixCacheOff, "prefix_cache_off", 1},
    {FaultKind::kErrorBurst, "error_burst", 0.3},
    {FaultKind::kLoadDouble, "load_double", 2},
    {FaultKind::kDown, "down", 1},
    {FaultKind::kLatencyDrift, "latency_drift", 4},
    {FaultKind::kBrownout, "brownout", 0.1},
    {FaultKind::kPriceChange, "price_change", 3},
    {FaultKind::kQualityDrop, "quality_drop", 0.5},
    {FaultKind::kFlapping, "flapping", 30},
};

// A duration with an explicit unit: a bare number is refused (seconds or milliseconds?).
std::optional<int64_t> ParseTime(std::string_view text) {
  if (text.empty() || (text.back() >= '0' && text.back() <= '9')) return std::nullopt;
  return ParseDurationMs(text);
}

}  // namespace

std::string_view FaultKindName(FaultKind kind) {
  for (const KindInfo& k : kKinds) {
    if (k.kind == kind) return k.name;
  }
  return "unknown";
}

double DefaultFactor(FaultKind kind) {
  for (const KindInfo& k : kKinds) {
    if (k.kind == kind) return k.default_factor;
  }
  return 1;
}

bool Fault::Matches(std::string_view instance_name) const {
  return instance == "fleet" || GlobMatch(instance, instance_name);
}

bool Fault::DownAt(double t_ms) const {
  if (!ActiveAt(t_ms)) return false;
  if (kind == FaultKind::kDown) return true;
  if (kind != FaultKind::kFlapping) return false;
  const double period_ms = factor * 1000;
  return std::fmod(t_ms - start_ms, period_ms) < period_ms / 2;
}

Result<Fault> ParseFault(std::string_view spec) {
  auto error = [&](std::string_view what) {
    return Status::InvalidArgument("fault '" + std::string(spec) + "': " + std::string(what));
  };
  std::string_view parts[5];
  size_t n = 0;
  for (std::string_view rest = spec;;) {
    size_t colon = rest.find(':');
    if (n == 4) return error("expected kind:instance:START-END[:factor], got too many ':'");
    parts[n++] = rest.substr(0, colon);
    if (colon == std::string_view::npos) break;
    rest.remove_prefix(colon + 1);
  }
  if (n < 3)
    return error("expected kind:instance:START-END[:factor], e.g. slow_gpu:vllm-0:60s-180s");
  Fault f;
  const KindInfo* info = nullptr;
  for (const KindInfo& k : kKinds) {
    if (k.name == parts[0]) info = &k;
  }
  if (info == nullptr) {
    std::string known;
    for (const KindInfo& k : kKinds) known += (known.empty() ? "" : ", ") + std::string(k.name);
    return error("unknown kind '" + std::string(parts[0]) + "' (expected one of " + known + ")");
  }
  f.kind = info->kind;
  if (parts[1].empty()) return error("the instance is empty (a name, a glob such as vllm-*, or *)");
  f.instance = std::string(parts[1]);
  size_t dash = parts[2].find('-');
  if (dash == std::string_view::npos) {
    return error("expected START-END, e.g. 60s-180s, got '" + std::string(parts[2]) + "'");
  }
  std::optional<int64_t> start = ParseTime(parts[2].substr(0, dash));
  std::optional<int64_t> end = ParseTime(parts[2].substr(dash + 1));
  if (!start || !end) {
    return error("START and END must be durations with a unit (ms, s, m, h), e.g. 60s-3m, got '" +
                 std::string(parts[2]) + "'");
  }
  if (*end <= *start) return error("END must be after START");
  f.start_ms = static_cast<double>(*start);
  f.end_ms = static_cast<double>(*end);
  f.factor = info->default_factor;
  if (n == 4) {
    if (f.kind == FaultKind::kPrefixCacheOff) return error("prefix_cache_off takes no factor");
    if (f.kind == FaultKind::kDown) return error("down takes no factor");
    double v = 0;
    std::string_view text = parts[3];
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || ptr != text.data() + text.size() || !std::isfinite(v) || v <= 0) {
      return error("the factor must be a number > 0, got '" + std::string(text) + "'");
    }
    if ((f.kind == FaultKind::kErrorBurst || f.kind == FaultKind::kBrownout) && v > 1) {
      return error(std::string(info->name) + "'s factor is a probability in (0, 1], got '" +
                   std::string(text) + "'");
    }
    f.factor = v;
  }
  return f;
}

}  // namespace inferscope::sim
