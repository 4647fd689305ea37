// `inferscope detect` run as a subprocess on CSV files.

#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace inferscope {
namespace {

using testing::Subprocess;
using testing::TempDir;

std::vector<std::vector<std::string>> ReadCsv(const std::string& path) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream in(testing::ReadFile(path));
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> fields;
    std::stringstream ss(line);
    std::string f;
    while (std::getline(ss, f, ',')) fields.push_back(f);
    rows.push_back(fields);
  }
  return rows;
}

// Runs `inferscope detect` with stdout to `out` via --output and stderr to `log`.
int RunDetect(const std::vector<std::string>& extra, const std::string& log) {
  std::vector<std::string> argv = {testing::InferscopeBinary(), "detect"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  Subprocess p(argv, log);
  return p.Wait();
}

TEST(DetectCliTest, FlagsAnInjectedSpikeAndEchoesEveryRow) {
  TempDir dir;
  const std::string input = dir.str() + "/series.csv";
  const std::string output = dir.str() + "/out.csv";
  std::vector<std::string> timestamps;
  {
    std::ofstream f(input);
    f << "timestamp,value\n";
    std::mt19937_64 rng(1);
    std::normal_distribution<double> noise(100, 1);
    for (int i = 0; i < 400; ++i) {
      // Mixed timestamp formats: ISO-8601 with Z, with offset and fraction, space form, epoch.
      char ts[64];
      const int h = i / 60, m = i % 60;
      if (i % 4 == 0) {
        std::snprintf(ts, sizeof ts, "2024-03-01T%02d:%02d:00Z", h, m);
      } else if (i % 4 == 1) {
        std::snprintf(ts, sizeof ts, "2024-03-01T%02d:%02d:00.000+00:00", h, m);
      } else if (i % 4 == 2) {
        std::snprintf(ts, sizeof ts, "2024-03-01 %02d:%02d:00", h, m);
      } else {
        std::snprintf(ts, sizeof ts, "%lld", 1709251200LL + i * 60);
      }
      timestamps.push_back(ts);
      f << ts << "," << (noise(rng) + (i == 300 ? 15 : 0)) << "\n";
    }
  }
  ASSERT_EQ(RunDetect({"--input", input, "--output", output}, dir.str() + "/log"), 0)
      << testing::ReadFile(dir.str() + "/log");
  std::vector<std::vector<std::string>> rows = ReadCsv(output);
  ASSERT_EQ(rows.size(), 401u);
  EXPECT_EQ(rows[0],
            (std::vector<std::string>{"timestamp", "value", "anomaly_score", "type", "severity"}));
  int flagged = 0;
  for (size_t i = 1; i < rows.size(); ++i) {
    ASSERT_EQ(rows[i].size(), 5u) << i;
    EXPECT_EQ(rows[i][0], timestamps[i - 1]);
    const double score = std::stod(rows[i][2]);
    EXPECT_GE(score, 0);
    EXPECT_LE(score, 1);
    const bool alert =
        rows[i][4] == "warning" || rows[i][4] == "critical" || rows[i][4] == "emergency";
    if (i - 1 == 300) {
      EXPECT_TRUE(alert) << rows[i][4];
      EXPECT_EQ(rows[i][3], "spike");
    } else {
      flagged += alert;
    }
  }
  EXPECT_EQ(flagged, 0);
}

// --warmup N (issue 10): no verdict before N points, a verdict from then on; one row per input row
// in order with the timestamp echoed; the same input gives the same output (deterministic).
TEST(DetectCliTest, WarmupFlagSetsTheWarmUpLengthAndOutputIsDeterministic) {
  TempDir dir;
  const std::string input = dir.str() + "/series.csv";
  {
    std::ofstream f(input);
    f << "timestamp,value\n";
    std::mt19937_64 rng(2);
    std::normal_distribution<double> noise(100, 1);
    for (int i = 0; i < 60; ++i)
      f << 1709251200 + i * 60 << "," << noise(rng) + (i == 20 ? 30 : 0) << "\n";
  }
  const std::string log = dir.str() + "/log";
  const std::string out30 = dir.str() + "/out30.csv", out10 = dir.str() + "/out10.csv",
                    again = dir.str() + "/again.csv";
  ASSERT_EQ(RunDetect({"--input", input, "--output", out30}, log), 0) << testing::ReadFile(log);
  ASSERT_EQ(RunDetect({"--input", input, "--output", out10, "--warmup", "10"}, log), 0)
      << testing::ReadFile(log);
  ASSERT_EQ(RunDetect({"--input", input, "--output", again, "--warmup", "10"}, log), 0);
  EXPECT_EQ(testing::ReadFile(out10), testing::ReadFile(again));
  const auto rows30 = ReadCsv(out30), rows10 = ReadCsv(out10);
  ASSERT_EQ(rows30.size(), 61u);
  ASSERT_EQ(rows10.size(), 61u);
  for (size_t i = 1; i < rows10.size(); ++i) {
    EXPECT_EQ(rows10[i][0], std::to_string(1709251200 + (i - 1) * 60));
    EXPECT_EQ(rows10[i][0], rows30[i][0]);
  }
  EXPECT_EQ(rows30[21][4], "none");  // point 20 is still in the default warm-up of 30 points
  EXPECT_EQ(rows10[21][3], "spike");
  EXPECT_NE(rows10[21][4], "none");
  // A warm-up shorter than 2 points is an option error.
  EXPECT_EQ(RunDetect({"--input", input, "--output", out10, "--warmup", "1"}, log), 2);
}

TEST(DetectCliTest, BadLinesAreReportedWithLineNumbersAndSkipped) {
  TempDir dir;
  const std::string input = dir.str() + "/series.csv";
  const std::string output = dir.str() + "/out.csv";
  {
    std::ofstream f(input);
    f << "1700000000,1\n1700000060,2\nnot-a-time,3\n1700000120,abc\n1700000180,4\n";
  }
  const std::string log = dir.str() + "/log";
  EXPECT_EQ(RunDetect({"--input", input, "--output", output}, log), 1);
  const std::string errors = testing::ReadFile(log);
  EXPECT_NE(errors.find("line 3"), std::string::npos) << errors;
  EXPECT_NE(errors.find("line 4"), std::string::npos) << errors;
  EXPECT_EQ(ReadCsv(output).size(), 4u);  // header + 3 good rows
}

TEST(DetectCliTest, ConfigErrorsNameTheField) {
  TempDir dir;
  const std::string config = dir.str() + "/detector.yaml";
  {
    std::ofstream f(config);
    f << "warmup_points: 10\nspike_zz: 3\n";
  }
  const std::string input = dir.str() + "/series.csv";
  {
    std::ofstream f(input);
    f << "1700000000,1\n";
  }
  const std::string log = dir.str() + "/log";
  EXPECT_EQ(RunDetect({"--input", input, "--config", config}, log), 2);
  EXPECT_NE(testing::ReadFile(log).find("spike_zz"), std::string::npos);
}

}  // namespace
}  // namespace inferscope
