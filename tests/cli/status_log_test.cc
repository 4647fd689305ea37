// The status log's state-change records that an engine run cannot produce on demand: a sink
// falling behind and catching up, a failed checkpoint, stage errors (cli/status_log.h). The
// records are read from a real metrics registry, as in `inferscope run`, and written through the
// process's logger in JSON format, captured here.

#include "cli/status_log.h"

#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "cli/logging.h"
#include "pipeline/clock.h"
#include "pipeline/metrics.h"

namespace inferscope {
namespace {

using nlohmann::json;

class StatusLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    previous_ = spdlog::default_logger();
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("status-log-test", sink));
    ASSERT_TRUE(ConfigureLogging("info", "json").ok());
  }
  void TearDown() override {
    ASSERT_TRUE(ConfigureLogging("info", "text").ok());
    spdlog::set_default_logger(previous_);
  }

  // The records logged since the previous call, by their "event" field.
  std::vector<json> Records() {
    spdlog::default_logger()->flush();
    std::vector<json> records;
    std::string line;
    std::istringstream in(out_.str());
    while (std::getline(in, line)) records.push_back(json::parse(line));
    out_.str("");
    return records;
  }

  std::ostringstream out_;
  std::shared_ptr<spdlog::logger> previous_;
};

// The lag was measured from the stored watermark, which waits for the next pane written: an idle
// engine logged an ever-growing lag while its window operators' watermarks kept pace with the
// clock. It is now the slowest window operator's watermark; the stored one only without any.
TEST_F(StatusLogTest, WatermarkLagIsTheSlowestWindowOperators) {
  MetricsRegistry metrics;
  ManualClock clock(1'000'000);
  StatusLog log({}, &metrics, &clock, [] { return int64_t{900'000}; });
  log.Step(true);
  std::vector<json> r = Records();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_DOUBLE_EQ(r[0]["watermark_lag_s"].get<double>(), 100.0);  // the fallback

  metrics.GetGauge("inferscope_window_watermark_seconds", "", {{"stage", "windows"}})->Set(995);
  metrics.GetGauge("inferscope_window_watermark_seconds", "", {{"stage", "sliding"}})->Set(990);
  clock.Advance(1000);
  log.Step(true);
  r = Records();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_DOUBLE_EQ(r[0]["watermark_lag_s"].get<double>(), 11.0);
}

TEST_F(StatusLogTest, SinkBehindAndCaughtUpAreLoggedOnceEach) {
  MetricsRegistry metrics;
  ManualClock clock(1'000'000);
  Gauge* depth = metrics.GetGauge("inferscope_queue_depth", "", {{"queue", "rocksdb"}});
  metrics.GetGauge("inferscope_queue_capacity", "", {{"queue", "rocksdb"}})->Set(64);
  // The operators' own queue is not a sink: never reported.
  metrics.GetGauge("inferscope_queue_depth", "", {{"queue", "operators"}})->Set(64);
  metrics.GetGauge("inferscope_queue_capacity", "", {{"queue", "operators"}})->Set(64);
  StatusLog log({}, &metrics, &clock, [] { return int64_t{0}; });

  depth->Set(31);  // below half of the capacity
  log.Step(false);
  EXPECT_TRUE(Records().empty());

  depth->Set(40);
  log.Step(false);
  std::vector<json> r = Records();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0]["event"], "sink_behind");
  EXPECT_EQ(r[0]["stage"], "rocksdb");
  EXPECT_EQ(r[0]["queued"], 40);
  EXPECT_EQ(r[0]["capacity"], 64);
  EXPECT_EQ(r[0]["level"], "warning");

  depth->Set(20);  // still above a quarter: no flapping record
  log.Step(false);
  EXPECT_TRUE(Records().empty());

  depth->Set(10);
  log.Step(false);
  r = Records();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0]["event"], "sink_caught_up");
  EXPECT_EQ(r[0]["queued"], 10);
}

TEST_F(StatusLogTest, FailedCheckpointsAndStageErrorsAreLoggedWithTheirCountSinceTheLastRecord) {
  MetricsRegistry metrics;
  ManualClock clock(1'000'000);
  Counter* failed = metrics.GetCounter("inferscope_checkpoints_failed_total", "");
  Counter* errors = metrics.GetCounter("inferscope_stage_errors_total", "", {{"stage", "w"}});
  StatusLog log({}, &metrics, &clock, [] { return int64_t{0}; });
  log.Step(false);
  EXPECT_TRUE(Records().empty());

  failed->Inc(2);
  log.Step(false);
  std::vector<json> r = Records();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0]["event"], "checkpoint_failed");
  EXPECT_EQ(r[0]["count"], 2);

  log.Step(false);  // nothing new
  EXPECT_TRUE(Records().empty());

  failed->Inc();
  errors->Inc(5);
  log.Step(false);
  r = Records();
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0]["event"], "checkpoint_failed");
  EXPECT_EQ(r[0]["count"], 1);
  EXPECT_EQ(r[1]["event"], "stage_errors");
  EXPECT_EQ(r[1]["count"], 5);
}

}  // namespace
}  // namespace inferscope
