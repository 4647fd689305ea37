#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "pipeline/clock.h"
#include "pipeline/metrics.h"
#include "pipeline/status.h"

namespace inferscope {

struct StatusLogOptions {
  // One status line every this often (wall clock); 0 turns the status line off (state changes are
  // still logged). Default 60 s; `run --status-interval`.
  int64_t interval_ms = 60'000;
  // State changes are looked for this often (>= 10 ms, default 5 s: each look wakes the thread,
  // which is most of what an idle `inferscope run` costs; `run` looks at least every
  // publisher_idle_ms).
  int64_t check_ms = 5'000;
  // A publisher that sent nothing for this long is logged as idle (> 0, default 60 s).
  int64_t publisher_idle_ms = 60'000;
  // A sink whose queue holds at least this fraction of its capacity is logged as falling behind;
  // it is logged as caught up below half of that (0 < x <= 1, default 0.5).
  double sink_behind_fraction = 0.5;

  Status Validate() const;
};

// The engine's log between "started" and "stopping" (`inferscope run`): one status line every
// `interval_ms` — events/s in (accepted by sources) and out (results reaching sinks), rejections,
// watermark lag, queue depths, checkpoint age — and a record for every state change: a publisher
// appears, goes idle or is active again, a sink falls behind or catches up, a checkpoint fails, a
// stage returns errors. Records go through LogFields (cli/logging.h): text, or one JSON object
// with the numbers as fields under --log-format json.
//
// Everything is read from the metrics registry (inferscope_source_events_total, ...), so nothing
// is added to the hot paths. Memory: one entry per publisher label value the registry keeps
// (bounded by MetricsRegistry's publisher bound) and per sink.
// Concurrency: Start/Stop from one thread; the records are written by the log's own thread.
// Step() is for tests and runs on the caller's thread (not while started).
class StatusLog {
 public:
  // The lag is measured from the window operators' watermark gauge
  // (inferscope_window_watermark_seconds, the slowest); `watermark_ms` is the fallback when there
  // is none (0: none yet).
  StatusLog(StatusLogOptions options, const MetricsRegistry* metrics, const Clock* clock,
            std::function<int64_t()> watermark_ms);
  ~StatusLog();
  StatusLog(const StatusLog&) = delete;
  StatusLog& operator=(const StatusLog&) = delete;

  void Start();
  void Stop();

  // Looks for state changes, logging each; with `status` also logs (and returns) the status
  // line's fields since the previous status line.
  nlohmann::json Step(bool status);

 private:
  struct Publisher {
    double messages = 0;
    int64_t last_change_ms = 0;
    bool idle = false;
  };
  void Loop();
  void CheckPublishers(int64_t now_ms);
  void CheckSinks();
  void CheckFailures();
  nlohmann::json StatusFields(int64_t now_ms);

  const StatusLogOptions options_;
  const MetricsRegistry* metrics_;
  const Clock* clock_;
  std::function<int64_t()> watermark_ms_;

  // Used by the log's thread only (or Step's caller).
  std::map<std::string, Publisher> publishers_;  // "stage/publisher"
  std::map<std::string, bool> sink_behind_;      // by sink
  double checkpoint_failures_ = 0;
  double stage_errors_ = 0;
  int64_t last_status_ms_ = 0;
  double last_events_in_ = 0, last_results_out_ = 0, last_rejected_ = 0;

  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
};

}  // namespace inferscope
