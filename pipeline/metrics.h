#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace inferscope {

// Pieces of the Prometheus text format 0.0.4, shared by the registry's rendering and the query
// API's export: a sample value (shortest round-trip digits, NaN, +Inf, -Inf), an escaped label
// value (backslash, double quote, newline) and a family's # HELP / # TYPE lines.
void AppendPromValue(std::string& out, double v);
void AppendPromLabelValue(std::string& out, std::string_view value);
void AppendPromFamilyHeader(std::string& out, std::string_view name, std::string_view help,
                            std::string_view type);

// Label pairs of one metric series, e.g. {{"stage", "ingest"}, {"reason", "bad_type"}}.
using Labels = std::vector<std::pair<std::string, std::string>>;

// A monotonically increasing count. Increment from any thread; hot paths add per batch, not per
// event.
class Counter {
 public:
  void Inc(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// A value that goes up and down (queue depth, open panes).
class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double d);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// A Prometheus histogram with fixed upper bounds (seconds for durations, by convention).
class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void Observe(double v);
  const std::vector<double>& bounds() const { return bounds_; }
  // Cumulative count per bound, then +Inf; and the sum and count of observations.
  std::vector<uint64_t> CumulativeCounts() const;
  double sum() const { return sum_.load(std::memory_order_relaxed); }
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_.size() + 1 (the +Inf bucket)
  std::atomic<double> sum_{0};
  std::atomic<uint64_t> count_{0};
};

// Default buckets for latencies in seconds: 10 µs .. 10 s.
std::vector<double> LatencyBuckets();

// `v` as Prometheus text: the shortest digits that read back as the same double, in %g layout
// ("0.1", "0.0001", "1e-05", "2.5"), NaN, +Inf or -Inf. Used for values and for histogram `le`
// labels, so that a query for {le="0.1"} matches.
std::string FormatPrometheusDouble(double v);

// MetricsRegistry owns the engine's own metrics and renders them in the Prometheus text format.
//
// Get*() returns a pointer that stays valid for the registry's lifetime; components look their
// metrics up once (at Open) and keep the pointer, so the hot path never touches the registry.
// Concurrency: all methods are thread-safe.
// Limitations: label values that come from outside are bounded. A family tracks at most
// max_publishers_per_family() distinct values of the `publisher` label; label sets naming a further
// publisher get publisher="_other" instead (one shared series per remaining label set), and each
// such lookup is counted in inferscope_metrics_publishers_folded_total{family}. Independently, a
// family holds at most kMaxSeriesPerFamily label sets; further label sets share one series labelled
// overflow="true". So no label can grow memory or the exposition without bound.
class MetricsRegistry {
 public:
  static constexpr size_t kMaxSeriesPerFamily = 10'000;
  static constexpr size_t kDefaultMaxPublishersPerFamily = 256;
  static constexpr std::string_view kOtherPublisher = "_other";

  // Distinct `publisher` label values tracked per family (>= 1); applies to label sets looked up
  // after the call. Default kDefaultMaxPublishersPerFamily.
  void SetMaxPublishersPerFamily(size_t n);
  size_t max_publishers_per_family() const;

  // Adds the standard process_* metrics (process_cpu_seconds_total, process_resident_memory_bytes,
  // process_virtual_memory_bytes, process_open_fds, process_max_fds, process_start_time_seconds),
  // read from /proc/self at render time as the Prometheus client libraries define them.
  void AddProcessMetrics();

  Counter* GetCounter(std::string_view name, std::string_view help, const Labels& labels = {});
  Gauge* GetGauge(std::string_view name, std::string_view help, const Labels& labels = {});
  Histogram* GetHistogram(std::string_view name, std::string_view help, const Labels& labels = {},
                          std::vector<double> bounds = LatencyBuckets());
  // A gauge whose value is read by `fn` at render time (queue depths, table sizes). `fn` must stay
  // callable until the registry is destroyed or RemoveCallbacks(owner) is called.
  void AddCallbackGauge(std::string_view name, std::string_view help, const Labels& labels,
                        std::function<double()> fn, const void* owner = nullptr);
  void RemoveCallbacks(const void* owner);

  // The whole registry in Prometheus text exposition format 0.0.4.
  std::string RenderPrometheus() const;

  // Sum of a counter family over all its label sets, or over those matching `labels` (each given
  // pair must be present). For tests and the CLI.
  uint64_t CounterValue(std::string_view name, const Labels& labels = {}) const;
  // Every series of a counter or gauge family (callback gauges read now), with its labels; empty
  // for an unknown name or a histogram. For the CLI's status log (cli/status_log.h), not hot paths.
  std::vector<std::pair<Labels, double>> Values(std::string_view name) const;

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Callback {
    std::function<double()> fn;
    const void* owner;
  };
  struct Family {
    Type type;
    std::string help;
    std::map<Labels, std::unique_ptr<Counter>> counters;
    std::map<Labels, std::unique_ptr<Gauge>> gauges;
    std::map<Labels, std::unique_ptr<Histogram>> histograms;
    std::map<Labels, Callback> callbacks;
    std::set<std::string, std::less<>> publishers;  // distinct `publisher` values seen
    size_t size() const {
      return counters.size() + gauges.size() + histograms.size() + callbacks.size();
    }
  };

  Family& FamilyLocked(std::string_view name, std::string_view help, Type type);
  static Labels Key(const Family& family, const Labels& labels, size_t existing);
  // `labels` with the publisher bound applied (see the class comment).
  Labels BoundPublisherLocked(std::string_view name, Family& family, const Labels& labels);

  mutable std::mutex mu_;
  std::map<std::string, Family, std::less<>> families_;
  size_t max_publishers_ = kDefaultMaxPublishersPerFamily;
  bool process_metrics_ = false;
};

}  // namespace inferscope
