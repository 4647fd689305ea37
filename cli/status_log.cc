#include "cli/status_log.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "cli/logging.h"
#include "pipeline/thread_name.h"

namespace inferscope {
namespace {

using nlohmann::json;

std::string Label(const Labels& labels, std::string_view key) {
  for (const auto& [k, v] : labels) {
    if (k == key) return v;
  }
  return {};
}

double Sum(const MetricsRegistry& m, std::string_view name) {
  double total = 0;
  for (const auto& [labels, value] : m.Values(name)) total += value;
  return total;
}

// Values of one family by the value of one label.
std::map<std::string, double> ByLabel(const MetricsRegistry& m, std::string_view name,
                                      std::string_view key) {
  std::map<std::string, double> out;
  for (const auto& [labels, value] : m.Values(name)) out[Label(labels, key)] += value;
  return out;
}

}  // namespace

Status StatusLogOptions::Validate() const {
  if (interval_ms < 0) return Status::InvalidArgument("status interval: must be >= 0");
  if (check_ms < 10) return Status::InvalidArgument("status check interval: must be >= 10 ms");
  if (publisher_idle_ms <= 0) return Status::InvalidArgument("publisher idle time: must be > 0");
  if (!(sink_behind_fraction > 0 && sink_behind_fraction <= 1)) {
    return Status::InvalidArgument("sink behind fraction: must be in (0, 1]");
  }
  return Status::Ok();
}

StatusLog::StatusLog(StatusLogOptions options, const MetricsRegistry* metrics, const Clock* clock,
                     std::function<int64_t()> watermark_ms)
    : options_(options), metrics_(metrics), clock_(clock), watermark_ms_(std::move(watermark_ms)) {
  last_status_ms_ = clock_->NowMs();
  last_events_in_ = Sum(*metrics_, "inferscope_source_events_total") +
                    Sum(*metrics_, "inferscope_scrape_events_total");
  last_results_out_ = Sum(*metrics_, "inferscope_sink_results_total");
  last_rejected_ = Sum(*metrics_, "inferscope_source_rejected_total");
  checkpoint_failures_ = Sum(*metrics_, "inferscope_checkpoints_failed_total");
  stage_errors_ = Sum(*metrics_, "inferscope_stage_errors_total");
}

StatusLog::~StatusLog() { Stop(); }

void StatusLog::Start() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = false;
  }
  thread_ = std::thread([this] { Loop(); });
}

void StatusLog::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void StatusLog::Loop() {
  SetThreadName("status-log");
  using std::chrono::milliseconds;
  auto next_status = std::chrono::steady_clock::now() + milliseconds(options_.interval_ms);
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    auto wake = std::chrono::steady_clock::now() + milliseconds(options_.check_ms);
    if (options_.interval_ms > 0 && next_status < wake) wake = next_status;
    if (cv_.wait_until(lock, wake, [this] { return stop_; })) return;
    lock.unlock();
    const bool status = options_.interval_ms > 0 && std::chrono::steady_clock::now() >= next_status;
    if (status) next_status += milliseconds(options_.interval_ms);
    Step(status);
    lock.lock();
  }
}

json StatusLog::Step(bool status) {
  const int64_t now_ms = clock_->NowMs();
  CheckPublishers(now_ms);
  CheckSinks();
  CheckFailures();
  if (!status) return json();
  json fields = StatusFields(now_ms);
  const auto num = [&](const char* key) {
    return fields[key].is_number() ? fields[key].get<double>() : std::nan("");
  };
  std::string queues;
  for (const auto& [queue, depth] : fields["queues"].items()) {
    queues += fmt::format("{}{}={}", queues.empty() ? "" : " ", queue, depth.get<double>());
  }
  const std::string text = fmt::format(
      "status: in {:.1f} events/s, out {:.1f} results/s, {} rejected, watermark lag {}, queues "
      "[{}], last checkpoint {}, {} publishers",
      num("events_in_per_s"), num("results_out_per_s"), fields["rejected"].get<double>(),
      fields["watermark_lag_s"].is_number() ? fmt::format("{:.1f} s", num("watermark_lag_s"))
                                            : std::string("- (no watermark yet)"),
      queues,
      fields["checkpoint_age_s"].is_number() ? fmt::format("{:.1f} s ago", num("checkpoint_age_s"))
                                             : std::string("- (none yet)"),
      fields["publishers"].get<size_t>());
  LogFields(spdlog::level::info, text, fields);
  return fields;
}

json StatusLog::StatusFields(int64_t now_ms) {
  const double events_in = Sum(*metrics_, "inferscope_source_events_total") +
                           Sum(*metrics_, "inferscope_scrape_events_total");
  const double results_out = Sum(*metrics_, "inferscope_sink_results_total");
  const double rejected = Sum(*metrics_, "inferscope_source_rejected_total");
  const double seconds = std::max(1e-3, static_cast<double>(now_ms - last_status_ms_) / 1000.0);
  json queues = json::object();
  for (const auto& [queue, depth] : ByLabel(*metrics_, "inferscope_queue_depth", "queue")) {
    queues[queue] = depth;
  }
  // The window operators' watermark (the slowest of them): it advances with processing time while
  // every publisher is idle, where the stored one waits for the next pane written, so an idle
  // engine's lag read as ever growing.
  int64_t watermark = 0;
  for (const auto& [stage, seconds] :
       ByLabel(*metrics_, "inferscope_window_watermark_seconds", "stage")) {
    const auto ms = static_cast<int64_t>(seconds * 1000.0);
    if (ms > 0 && (watermark == 0 || ms < watermark)) watermark = ms;
  }
  if (watermark == 0 && watermark_ms_) watermark = watermark_ms_();
  double last_checkpoint = Sum(*metrics_, "inferscope_checkpoint_last_durable_timestamp_seconds");
  size_t active = 0;
  for (const auto& [name, p] : publishers_) active += p.idle ? 0 : 1;
  json fields = {
      {"event", "status"},
      {"interval_s", seconds},
      {"events_in", events_in - last_events_in_},
      {"events_in_per_s", (events_in - last_events_in_) / seconds},
      {"results_out", results_out - last_results_out_},
      {"results_out_per_s", (results_out - last_results_out_) / seconds},
      {"rejected", rejected - last_rejected_},
      {"watermark_lag_s",
       watermark > 0 ? json(static_cast<double>(now_ms - watermark) / 1000.0) : json()},
      {"queues", std::move(queues)},
      {"checkpoint_age_s",
       last_checkpoint > 0 ? json(static_cast<double>(now_ms) / 1000.0 - last_checkpoint) : json()},
      {"publishers", active}};
  last_status_ms_ = now_ms;
  last_events_in_ = events_in;
  last_results_out_ = results_out;
  last_rejected_ = rejected;
  return fields;
}

void StatusLog::CheckPublishers(int64_t now_ms) {
  for (const auto& [labels, messages] :
       metrics_->Values("inferscope_source_publisher_messages_total")) {
    const std::string stage = Label(labels, "stage");
    const std::string name = Label(labels, "publisher");
    auto [it, inserted] = publishers_.try_emplace(stage + "/" + name);
    Publisher& p = it->second;
    if (messages == p.messages) {
      if (!p.idle && p.messages > 0 && now_ms - p.last_change_ms >= options_.publisher_idle_ms) {
        p.idle = true;
        LogFields(spdlog::level::warn,
                  fmt::format("publisher '{}' on {} is idle: nothing for {:.0f} s", name, stage,
                              static_cast<double>(now_ms - p.last_change_ms) / 1000.0),
                  {{"event", "publisher_idle"}, {"stage", stage}, {"publisher", name}});
      }
      continue;
    }
    if (p.messages == 0) {
      LogFields(spdlog::level::info, fmt::format("publisher '{}' appeared on {}", name, stage),
                {{"event", "publisher_appeared"}, {"stage", stage}, {"publisher", name}});
    } else if (p.idle) {
      LogFields(spdlog::level::info,
                fmt::format("publisher '{}' on {} is active again", name, stage),
                {{"event", "publisher_active"}, {"stage", stage}, {"publisher", name}});
    }
    p.idle = false;
    p.messages = messages;
    p.last_change_ms = now_ms;
  }
}

void StatusLog::CheckSinks() {
  const std::map<std::string, double> capacity =
      ByLabel(*metrics_, "inferscope_queue_capacity", "queue");
  for (const auto& [queue, depth] : ByLabel(*metrics_, "inferscope_queue_depth", "queue")) {
    auto cap = capacity.find(queue);
    if (queue == "operators" || cap == capacity.end() || cap->second <= 0) continue;
    bool& behind = sink_behind_[queue];
    const double full = depth / cap->second;
    if (!behind && full >= options_.sink_behind_fraction) {
      behind = true;
      LogFields(spdlog::level::warn,
                fmt::format("sink {} falls behind: {} of {} result batches queued", queue, depth,
                            cap->second),
                {{"event", "sink_behind"},
                 {"stage", queue},
                 {"queued", depth},
                 {"capacity", cap->second}});
    } else if (behind && full < options_.sink_behind_fraction / 2) {
      behind = false;
      LogFields(spdlog::level::info, fmt::format("sink {} caught up: {} queued", queue, depth),
                {{"event", "sink_caught_up"}, {"stage", queue}, {"queued", depth}});
    }
  }
}

void StatusLog::CheckFailures() {
  const double failures = Sum(*metrics_, "inferscope_checkpoints_failed_total");
  if (failures > checkpoint_failures_) {
    LogFields(spdlog::level::warn,
              fmt::format("checkpoint failed ({} since the last report); its content goes into "
                          "the next one",
                          failures - checkpoint_failures_),
              {{"event", "checkpoint_failed"}, {"count", failures - checkpoint_failures_}});
    checkpoint_failures_ = failures;
  }
  std::map<std::string, double> errors =
      ByLabel(*metrics_, "inferscope_stage_errors_total", "stage");
  double total = 0;
  for (const auto& [stage, n] : errors) total += n;
  if (total > stage_errors_) {
    LogFields(spdlog::level::warn,
              fmt::format("stages returned {} errors since the last report (see "
                          "inferscope_stage_errors_total)",
                          total - stage_errors_),
              {{"event", "stage_errors"}, {"count", total - stage_errors_}});
    stage_errors_ = total;
  }
}

}  // namespace inferscope
