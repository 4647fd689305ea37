#include "pipeline/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace inferscope {
namespace {

void AppendDouble(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
  } else if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
  } else {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.17g", v);
    out += buf;
  }
}

void AppendEscaped(std::string& out, std::string_view value) {
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

void AppendLabels(std::string& out, const Labels& labels, std::string_view extra_name = {},
                  std::string_view extra_value = {}) {
  if (labels.empty() && extra_name.empty()) return;
  out += '{';
  bool first = true;
  for (const auto& [k, v] : labels) {
    if (!first) out += ',';
    first = false;
    out += k;
    out += "=\"";
    AppendEscaped(out, v);
    out += '"';
  }
  if (!extra_name.empty()) {
    if (!first) out += ',';
    out += extra_name;
    out += "=\"";
    out += extra_value;
    out += '"';
  }
  out += '}';
}

}  // namespace

void Gauge::Add(double d) {
  double cur = value_.load(std::memory_order_relaxed);
  while (!value_.compare_exchange_weak(cur, cur + d, std::memory_order_relaxed)) {
  }
}

Histogram::Histogram(std::vector<double> upper_bounds) : bounds_(std::move(upper_bounds)) {
  std::sort(bounds_.begin(), bounds_.end());
  buckets_ = std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1);
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double v) {
  size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  double cur = sum_.load(std::memory_order_relaxed);
  while (!sum_.compare_exchange_weak(cur, cur + v, std::memory_order_relaxed)) {
  }
}

std::vector<uint64_t> Histogram::CumulativeCounts() const {
  std::vector<uint64_t> out(bounds_.size() + 1);
  uint64_t total = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    total += buckets_[i].load(std::memory_order_relaxed);
    out[i] = total;
  }
  return out;
}

std::vector<double> LatencyBuckets() {
  return {1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1, 2.5, 10};
}

MetricsRegistry::Family& MetricsRegistry::FamilyLocked(std::string_view name, std::string_view help,
                                                       Type type) {
  auto it = families_.find(name);
  if (it == families_.end()) {
    it = families_.emplace(std::string(name), Family{type, std::string(help), {}, {}, {}, {}}).first;
  }
  return it->second;
}

Labels MetricsRegistry::Key(const Family& family, const Labels& labels, size_t existing) {
  if (existing > 0 || family.size() < kMaxSeriesPerFamily) return labels;
  return Labels{{"overflow", "true"}};
}

Counter* MetricsRegistry::GetCounter(std::string_view name, std::string_view help, const Labels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  Family& f = FamilyLocked(name, help, Type::kCounter);
  auto& slot = f.counters[Key(f, labels, f.counters.count(labels))];
  if (!slot) slot = std::make_unique<Counter>();
  return slot.get();
}

Gauge* MetricsRegistry::GetGauge(std::string_view name, std::string_view help, const Labels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  Family& f = FamilyLocked(name, help, Type::kGauge);
  auto& slot = f.gauges[Key(f, labels, f.gauges.count(labels))];
  if (!slot) slot = std::make_unique<Gauge>();
  return slot.get();
}

Histogram* MetricsRegistry::GetHistogram(std::string_view name, std::string_view help,
                                         const Labels& labels, std::vector<double> bounds) {
  std::lock_guard<std::mutex> lock(mu_);
  Family& f = FamilyLocked(name, help, Type::kHistogram);
  auto& slot = f.histograms[Key(f, labels, f.histograms.count(labels))];
  if (!slot) slot = std::make_unique<Histogram>(std::move(bounds));
  return slot.get();
}

void MetricsRegistry::AddCallbackGauge(std::string_view name, std::string_view help,
                                       const Labels& labels, std::function<double()> fn,
                                       const void* owner) {
  std::lock_guard<std::mutex> lock(mu_);
  Family& f = FamilyLocked(name, help, Type::kGauge);
  f.callbacks[labels] = Callback{std::move(fn), owner};
}

void MetricsRegistry::RemoveCallbacks(const void* owner) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [name, f] : families_) {
    std::erase_if(f.callbacks, [owner](const auto& kv) { return kv.second.owner == owner; });
  }
}

std::string MetricsRegistry::RenderPrometheus() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  out.reserve(families_.size() * 256);
  for (const auto& [name, f] : families_) {
    if (f.size() == 0) continue;
    out += "# HELP ";
    out += name;
    out += ' ';
    out += f.help;
    out += "\n# TYPE ";
    out += name;
    out += f.type == Type::kCounter ? " counter\n" : f.type == Type::kGauge ? " gauge\n" : " histogram\n";
    for (const auto& [labels, c] : f.counters) {
      out += name;
      AppendLabels(out, labels);
      out += ' ';
      out += std::to_string(c->value());
      out += '\n';
    }
    for (const auto& [labels, g] : f.gauges) {
      out += name;
      AppendLabels(out, labels);
      out += ' ';
      AppendDouble(out, g->value());
      out += '\n';
    }
    for (const auto& [labels, cb] : f.callbacks) {
      out += name;
      AppendLabels(out, labels);
      out += ' ';
      AppendDouble(out, cb.fn());
      out += '\n';
    }
    for (const auto& [labels, h] : f.histograms) {
      std::vector<uint64_t> cum = h->CumulativeCounts();
      for (size_t i = 0; i < cum.size(); ++i) {
        out += name;
        out += "_bucket";
        std::string le;
        if (i < h->bounds().size()) {
          AppendDouble(le, h->bounds()[i]);
        } else {
          le = "+Inf";
        }
        AppendLabels(out, labels, "le", le);
        out += ' ';
        out += std::to_string(cum[i]);
        out += '\n';
      }
      out += name;
      out += "_sum";
      AppendLabels(out, labels);
      out += ' ';
      AppendDouble(out, h->sum());
      out += '\n';
      out += name;
      out += "_count";
      AppendLabels(out, labels);
      out += ' ';
      out += std::to_string(h->count());
      out += '\n';
    }
  }
  return out;
}

uint64_t MetricsRegistry::CounterValue(std::string_view name, const Labels& labels) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = families_.find(name);
  if (it == families_.end()) return 0;
  uint64_t total = 0;
  for (const auto& [key, c] : it->second.counters) {
    const auto& series_labels = key;  // clang 14 cannot capture a structured binding
    bool match = std::all_of(labels.begin(), labels.end(), [&](const auto& want) {
      return std::find(series_labels.begin(), series_labels.end(), want) != series_labels.end();
    });
    if (match) total += c->value();
  }
  return total;
}

}  // namespace inferscope
