#include "pipeline/metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace inferscope {

void AppendPromValue(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
  } else if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
  } else {
    char buf[64];
    // The shortest digits that read back as `v`, laid out as printf's %g would (exponent below
    // 1e-4): "0.1", "0.0001", "1e-05" — the form the Prometheus client libraries print.
    auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::general);
    out.append(buf, ec == std::errc() ? end : buf);
  }
}

void AppendPromLabelValue(std::string& out, std::string_view value) {
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

void AppendPromFamilyHeader(std::string& out, std::string_view name, std::string_view help,
                            std::string_view type) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

namespace {

constexpr std::string_view kPublisherLabel = "publisher";
constexpr std::string_view kFoldedTotal = "inferscope_metrics_publishers_folded_total";
constexpr std::string_view kFoldedHelp =
    "Metric lookups whose publisher label was replaced by \"_other\" because the family already "
    "tracks the maximum number of publishers";

double ToDouble(const std::string& text) { return std::strtod(text.c_str(), nullptr); }

// The process_* metrics, read from /proc/self now.
void AppendProcessMetrics(std::string& out) {
  auto family = [&out](std::string_view name, std::string_view help, std::string_view type,
                       double value) {
    AppendPromFamilyHeader(out, name, help, type);
    out += name;
    out += ' ';
    AppendPromValue(out, value);
    out += '\n';
  };
  // /proc/self/stat: fields after the parenthesised command name; utime (14), stime (15),
  // starttime (22), vsize (23) and rss (24) counted from 1 as in proc(5).
  std::ifstream stat_file("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
  const size_t close = stat.rfind(')');
  if (close != std::string::npos) {
    std::istringstream fields(stat.substr(close + 2));
    std::vector<std::string> f;  // f[0] is field 3 (state)
    for (std::string field; fields >> field;) f.push_back(field);
    if (f.size() >= 22) {
      const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
      const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
      const double utime = ToDouble(f[11]), stime = ToDouble(f[12]);
      const double start_ticks = ToDouble(f[19]);
      family("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
             "counter", (utime + stime) / ticks);
      family("process_resident_memory_bytes", "Resident memory size in bytes.", "gauge",
             ToDouble(f[21]) * page);
      family("process_virtual_memory_bytes", "Virtual memory size in bytes.", "gauge",
             ToDouble(f[20]));
      // Boot time from /proc/stat ("btime <epoch seconds>").
      std::ifstream proc_stat("/proc/stat");
      for (std::string line; std::getline(proc_stat, line);) {
        if (line.rfind("btime ", 0) == 0) {
          family("process_start_time_seconds",
                 "Start time of the process since unix epoch in seconds.", "gauge",
                 ToDouble(line.substr(6)) + start_ticks / ticks);
          break;
        }
      }
    }
  }
  std::error_code ec;
  size_t fds = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++fds;
  }
  if (!ec) family("process_open_fds", "Number of open file descriptors.", "gauge", fds);
  struct rlimit lim {};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    family("process_max_fds", "Maximum number of open file descriptors.", "gauge",
           lim.rlim_cur == RLIM_INFINITY ? INFINITY : static_cast<double>(lim.rlim_cur));
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
    AppendPromLabelValue(out, v);
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

std::string FormatPrometheusDouble(double v) {
  std::string out;
  AppendPromValue(out, v);
  return out;
}

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
  return {1e-5,   5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2,
          2.5e-2, 5e-2, 0.1,  0.25,   0.5,  1,    2.5,    10};
}

MetricsRegistry::Family& MetricsRegistry::FamilyLocked(std::string_view name, std::string_view help,
                                                       Type type) {
  auto it = families_.find(name);
  if (it == families_.end()) {
    it = families_.emplace(std::string(name), Family{type, std::string(help), {}, {}, {}, {}, {}})
             .first;
  }
  return it->second;
}

Labels MetricsRegistry::Key(const Family& family, const Labels& labels, size_t existing) {
  if (existing > 0 || family.size() < kMaxSeriesPerFamily) return labels;
  return Labels{{"overflow", "true"}};
}

void MetricsRegistry::SetMaxPublishersPerFamily(size_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  max_publishers_ = std::max<size_t>(n, 1);
}

size_t MetricsRegistry::max_publishers_per_family() const {
  std::lock_guard<std::mutex> lock(mu_);
  return max_publishers_;
}

void MetricsRegistry::AddProcessMetrics() {
  std::lock_guard<std::mutex> lock(mu_);
  process_metrics_ = true;
}

Labels MetricsRegistry::BoundPublisherLocked(std::string_view name, Family& family,
                                             const Labels& labels) {
  auto it = std::find_if(labels.begin(), labels.end(),
                         [](const auto& kv) { return kv.first == kPublisherLabel; });
  if (it == labels.end() || it->second == kOtherPublisher) return labels;
  if (family.publishers.count(it->second) > 0) return labels;
  if (family.publishers.size() < max_publishers_) {
    family.publishers.insert(it->second);
    return labels;
  }
  Labels folded = labels;
  folded[static_cast<size_t>(it - labels.begin())].second = std::string(kOtherPublisher);
  Family& counter = FamilyLocked(kFoldedTotal, kFoldedHelp, Type::kCounter);
  auto& slot = counter.counters[Labels{{"family", std::string(name)}}];
  if (!slot) slot = std::make_unique<Counter>();
  slot->Inc();
  return folded;
}

Counter* MetricsRegistry::GetCounter(std::string_view name, std::string_view help,
                                     const Labels& raw_labels) {
  std::lock_guard<std::mutex> lock(mu_);
  Family& f = FamilyLocked(name, help, Type::kCounter);
  const Labels labels = BoundPublisherLocked(name, f, raw_labels);
  auto& slot = f.counters[Key(f, labels, f.counters.count(labels))];
  if (!slot) slot = std::make_unique<Counter>();
  return slot.get();
}

Gauge* MetricsRegistry::GetGauge(std::string_view name, std::string_view help,
                                 const Labels& raw_labels) {
  std::lock_guard<std::mutex> lock(mu_);
  Family& f = FamilyLocked(name, help, Type::kGauge);
  const Labels labels = BoundPublisherLocked(name, f, raw_labels);
  auto& slot = f.gauges[Key(f, labels, f.gauges.count(labels))];
  if (!slot) slot = std::make_unique<Gauge>();
  return slot.get();
}

Histogram* MetricsRegistry::GetHistogram(std::string_view name, std::string_view help,
                                         const Labels& raw_labels, std::vector<double> bounds) {
  std::lock_guard<std::mutex> lock(mu_);
  Family& f = FamilyLocked(name, help, Type::kHistogram);
  const Labels labels = BoundPublisherLocked(name, f, raw_labels);
  auto& slot = f.histograms[Key(f, labels, f.histograms.count(labels))];
  if (!slot) slot = std::make_unique<Histogram>(std::move(bounds));
  return slot.get();
}

void MetricsRegistry::AddCallbackGauge(std::string_view name, std::string_view help,
                                       const Labels& raw_labels, std::function<double()> fn,
                                       const void* owner) {
  std::lock_guard<std::mutex> lock(mu_);
  Family& f = FamilyLocked(name, help, Type::kGauge);
  const Labels labels = BoundPublisherLocked(name, f, raw_labels);
  if (f.callbacks.count(labels) == 0 && f.size() >= kMaxSeriesPerFamily) return;
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
    AppendPromFamilyHeader(out, name, f.help,
                           f.type == Type::kCounter ? "counter"
                           : f.type == Type::kGauge ? "gauge"
                                                    : "histogram");
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
      AppendPromValue(out, g->value());
      out += '\n';
    }
    for (const auto& [labels, cb] : f.callbacks) {
      out += name;
      AppendLabels(out, labels);
      out += ' ';
      AppendPromValue(out, cb.fn());
      out += '\n';
    }
    for (const auto& [labels, h] : f.histograms) {
      std::vector<uint64_t> cum = h->CumulativeCounts();
      for (size_t i = 0; i < cum.size(); ++i) {
        out += name;
        out += "_bucket";
        std::string le;
        if (i < h->bounds().size()) {
          AppendPromValue(le, h->bounds()[i]);
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
      AppendPromValue(out, h->sum());
      out += '\n';
      out += name;
      out += "_count";
      AppendLabels(out, labels);
      out += ' ';
      out += std::to_string(h->count());
      out += '\n';
    }
  }
  if (process_metrics_) AppendProcessMetrics(out);
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

std::vector<std::pair<Labels, double>> MetricsRegistry::Values(std::string_view name) const {
  std::vector<std::pair<Labels, double>> out;
  // Callbacks are read under the lock, as at render time, so none runs after RemoveCallbacks.
  std::lock_guard<std::mutex> lock(mu_);
  auto it = families_.find(name);
  if (it == families_.end()) return out;
  const Family& f = it->second;
  for (const auto& [labels, c] : f.counters) {
    out.emplace_back(labels, static_cast<double>(c->value()));
  }
  for (const auto& [labels, g] : f.gauges) out.emplace_back(labels, g->value());
  for (const auto& [labels, cb] : f.callbacks) out.emplace_back(labels, cb.fn());
  return out;
}

}  // namespace inferscope
