// `make demo` as a newcomer runs it: scripts/demo.sh against the built binary, on the default
// topology and its fixed ports.

#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>

#include "tests/test_util.h"

namespace inferscope {
namespace {

using testing::ReadFile;
using testing::Subprocess;
using testing::TempDir;

// The table is printed only once the stored watermark has passed the end of the run, so every
// simulated instance has its whole panes in it (it once printed 4 of 6 instances, with 10 s of a
// 30 s run each). Its last column is each instance's active primary bottleneck: the demo injects
// a KV cache fault on vllm-0 (scripts/demo.sh, FAULT), which shows as MEMORY_PRESSURE.
TEST(DemoTest, TableCoversEveryInstanceOfTheRunAndShowsTheInjectedBottleneck) {
  TempDir dir;
  const std::string build_dir =
      std::filesystem::path(testing::InferscopeBinary()).parent_path().parent_path().string();
  const std::string log = dir.str() + "/demo.log";
  // Right after the table, the README's own example queries must return data (issue 13).
  const std::string check = testing::Python() + " " + testing::SourceDir() +
                            "/tests/integration/readme_queries.py " + testing::SourceDir() +
                            "/README.md";
  Subprocess demo({"/usr/bin/env", "BUILD_DIR=" + build_dir, "DURATION=25", "RATE=30",
                   "DEMO_CHECK=" + check, "bash", testing::SourceDir() + "/scripts/demo.sh"},
                  log);
  ASSERT_EQ(demo.Wait(std::chrono::seconds(120)), 0) << ReadFile(log);
  const std::string out = ReadFile(log);
  std::istringstream lines(out);
  std::string line;
  EXPECT_NE(out.find("== injecting a fault: kv_cache_small:vllm-0:"), std::string::npos) << out;
  int rows = 0;
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    std::string instance;
    int models = 0;
    double span_s = 0;
    if (!(fields >> instance >> models >> span_s)) continue;
    // req/s, p50, p95, p99, out tok/s, err %, then the bottleneck column.
    double number = 0;
    for (int i = 0; i < 6; ++i) fields >> number;
    std::string bottleneck;
    fields >> bottleneck;
    if (instance.rfind("vllm-", 0) != 0 && instance.rfind("tgi-", 0) != 0 &&
        instance.rfind("sglang-", 0) != 0) {
      continue;
    }
    ++rows;
    EXPECT_EQ(models, 2) << line;
    // 25 s of events touch 3 or 4 panes of 10 s; the first and last are partial, so the table
    // covers the whole panes between them: 10 or 20 s, never less.
    EXPECT_GE(span_s, 10) << line;
    if (instance == "vllm-0") {
      EXPECT_EQ(bottleneck.rfind("MEMORY_PRESSURE/", 0), 0u) << out;
    } else if (instance == "vllm-3") {
      // StandardFleet's weak node (1.8x slower, 3 % errors) may be flagged, justly.
      EXPECT_FALSE(bottleneck.empty()) << line;
    } else {
      // Healthy. (A TGI instance was once flagged CACHE_INEFFICIENCY/LOW here: its prefix hit
      // rate over ~75 requests dipped below the level; the cache rule now needs the rate's
      // confidence bound below it too: BottleneckScenarioTest.DemoFleetNoiseIsNoCacheInefficiency.)
      EXPECT_EQ(bottleneck, "-") << out;
    }
  }
  EXPECT_EQ(rows, 6) << out;
  EXPECT_NE(out.find("== checking: "), std::string::npos) << out;
  EXPECT_EQ(out.find("FAIL"), std::string::npos) << out;
}

}  // namespace
}  // namespace inferscope
