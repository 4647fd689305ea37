#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "pipeline/config.h"
#include "pipeline/source.h"
#include "pipeline/source_health.h"
#include "pipeline/status.h"
#include "sources/prom_convert.h"

namespace inferscope {

// One scrape target: where to scrape and what its events are called.
struct ScrapeTargetConfig {
  std::string url;       // "http://10.0.0.7:8000/metrics" (http only; https if built with it)
  std::string instance;  // default: host:port of the URL
  std::string model;     // when the page has no model label; default "_"
  PromEngine engine = PromEngine::kAuto;

  bool operator==(const ScrapeTargetConfig&) const = default;
};

// Parses a Prometheus file_sd file (JSON or YAML: a list of {targets: [host:port...], labels:
// {...}}). Labels used: `__scheme__` (http), `__metrics_path__` (/metrics), `instance`, `model`,
// `engine`. Errors name the file and the entry.
Result<std::vector<ScrapeTargetConfig>> ParseFileSd(const std::string& path);

// PromScrapeSource scrapes Prometheus /metrics pages of serving engines and GPU exporters and
// turns them into gauge events through the mapping tables (sources/prom_mapping.h;
// docs/SOURCES.md).
//
// Lifecycle: Open checks the options, reads the file_sd file when there is one, and starts
// `concurrency` fetch threads; Run (the source thread) hands due targets to the fetch threads, and
// converts and emits the pages they bring back, one batch per page; Close stops the fetchers.
// Scheduling: each target every `interval`, first at a fixed offset within `jitter` × interval
// derived from its URL (so targets spread over the interval, and the same target keeps its phase);
// a target still in flight is not scraped twice. The source thread keeps the targets that are not
// in flight in a min-heap of due times, sleeps until the earliest (or a finished fetch), and hands
// each due target to the fetch threads waking exactly one of them: its cost per scrape does not
// grow with the number of targets, and a steady scrape allocates nothing of its own (the HTTP
// client library does allocate per request). The file_sd file is re-read when its modification
// time changes (checked every `file_sd_refresh`); targets that left are dropped with their state.
// Failures: a refused connection, a timeout (connect, or the whole response beyond `timeout`), an
// HTTP status other than 200, a response beyond `max_response_bytes`, or a page without a single
// valid sample among invalid lines ("garbage") make the target down: an `up` gauge event of 0
// (1 when up) per scrape, inferscope_scrape_errors_total{stage,reason}, the target's last error in
// /v1/health (SourceHealth service). A failing target never holds the others up.
// Events: instance from the target (its `instance` or host:port), model from the page's model
// label (`model_labels`) or the target's `model`; event time = when the page was received;
// publisher `scrape/<stage>` for every target of the source.
// Concurrency: Open/Close on the engine thread; Run on the source thread; the fetch threads only
// touch a target while it is in flight (handed over through a mutex-guarded queue).
class PromScrapeSource final : public Source {
 public:
  static constexpr std::string_view kName = "prometheus_scrape";
  static constexpr std::string_view kDescription =
      "Scrapes Prometheus /metrics pages (vLLM, SGLang, TGI, DCGM exporter) into gauge events";

  struct Options {
    std::vector<ScrapeTargetConfig> targets;  // static targets
    std::string file_sd;                      // a file_sd file (path); "" = none
    int64_t file_sd_refresh_ms = 5'000;       // how often its mtime is checked; >= 100
    int64_t interval_ms = 5'000;              // scrape interval; >= 100
    int64_t timeout_ms = 0;                   // whole-response timeout; 0 = min(interval, 10 s)
    double jitter = 1.0;                      // first-scrape offset spread, fraction of interval
    size_t max_response_bytes = 16 << 20;     // >= 1 KiB
    size_t concurrency = 4;                   // fetch threads, 1..64
    size_t max_targets = 10'000;              // targets kept (static + file_sd), >= 1
    size_t max_series_per_target = 10'000;    // counter series remembered per target
    std::vector<std::string> model_labels = {"model_name", "model"};
    PromParserOptions parser;

    Status Validate() const;
    int64_t effective_timeout_ms() const;
  };

  // From a topology's options: targets (list of {url, instance, model, engine} or URL strings),
  // engine (default for the static targets), file_sd, file_sd_refresh, interval, timeout, jitter,
  // max_response_bytes, concurrency, max_targets, max_series_per_target, model_labels,
  // max_line_bytes, max_labels, max_samples. The file_sd path is relative to the topology's folder.
  static Result<std::unique_ptr<PromScrapeSource>> Create(const ConfigNode& options);

  explicit PromScrapeSource(Options options);
  ~PromScrapeSource() override;

  Status Open(const StageContext& ctx) override;
  Status Run(SourceOutput& out, const std::atomic<bool>& stop) override;
  void Close() override;

 private:
  struct Target;
  enum class Failure : uint8_t {
    kNone = 0,
    kConnect,
    kTimeout,
    kHttpStatus,
    kTooLarge,
    kGarbage,
    kIo,
    kCount_
  };
  static std::string_view FailureName(Failure f);

  void FetchLoop();
  void Fetch(Target& target);
  void Dispatch(int64_t now_ms);
  void PushDue(Target* target);
  void Finish(Target& target, SourceOutput& out);
  void ReloadFileSd(int64_t now_ms, bool force);
  void SetTargets(const std::vector<ScrapeTargetConfig>& configs);
  std::shared_ptr<Target> MakeTarget(const ScrapeTargetConfig& config);

  const Options options_;
  StageContext ctx_;
  StringId publisher_ = 0;
  SourceHealth* health_ = nullptr;
  // Source thread (after Open): the targets, those removed while in flight (kept alive until
  // they come back), and the due times of the targets not in flight (a min-heap).
  struct Due {
    int64_t due_ms;
    Target* target;
  };
  std::vector<std::shared_ptr<Target>> targets_;
  std::vector<std::shared_ptr<Target>> retired_;
  std::vector<Due> due_;
  size_t up_count_ = 0;  // targets whose last scrape succeeded
  // Fetch hand-over (mu_): work_ from work_head_ on is a FIFO of due targets; done_ the fetched
  // ones. Both keep their capacity (at most one entry per target).
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  std::vector<Target*> work_;
  size_t work_head_ = 0;
  std::vector<Target*> done_;
  bool stopping_ = false;
  std::vector<std::thread> fetchers_;
  // file_sd.
  int64_t file_sd_mtime_ns_ = -1;
  int64_t next_file_sd_check_ms_ = 0;
  Status file_sd_error_;
  // Metrics.
  std::vector<Counter*> errors_;  // by Failure
  Counter* scrapes_ = nullptr;
  Counter* samples_ = nullptr;
  Counter* skipped_lines_ = nullptr;
  Counter* unmapped_ = nullptr;
  Counter* events_ = nullptr;
  Counter* resets_ = nullptr;
  Counter* histogram_errors_[kNumPromHistogramErrors] = {};
  Counter* targets_dropped_ = nullptr;
  Counter* file_sd_errors_ = nullptr;
  Gauge* targets_gauge_ = nullptr;
  Gauge* up_gauge_ = nullptr;
  StringId up_metric_ = 0;
};

}  // namespace inferscope
