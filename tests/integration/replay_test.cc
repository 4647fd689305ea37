// `inferscope replay` end to end: a CSV of request outcomes (with a malformed row) replayed at 20x
// into `inferscope run` (zmq source on a read-back port); the stored windows hold every row.

#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "tests/integration/engine_fixture.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using nlohmann::json;
using testing::EngineProcess;
using testing::GetJson;
using testing::ReadFile;
using testing::Subprocess;
using testing::Substitute;
using testing::TempDir;
using testing::WaitFor;

constexpr char kTopology[] = R"(name: replay
state:
  path: STATE
query:
  listen: 127.0.0.1:0
sources:
  - name: ingest
    type: zmq
    options:
      endpoint: tcp://127.0.0.1:*
operators:
  - name: windows
    type: window_aggregate
    inputs: [ingest]
    options:
      pane: 10s
      out_of_orderness: 2s
      idle_timeout: 0
sinks:
  - name: state
    type: rocksdb_state
    inputs: [windows]
)";

TEST(ReplayTest, CsvIntoARealEngineKeepsEveryRow) {
  TempDir dir;
  EngineProcess engine(dir, Substitute(kTopology, {{"STATE", dir.str() + "/state"}}));
  ASSERT_TRUE(engine.WaitReady()) << engine.Log();

  // One pane in the recent past: node-a 100 requests (10 failed), node-b 20; every 100 ms of
  // recorded time (10 s, replayed in 0.5 s at --speed 20), columns in a different order than the
  // documentation's, one malformed row.
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  const int64_t start = (now_ms - 60'000) / 10'000 * 10'000;
  const std::string csv = dir.str() + "/outcomes.csv";
  {
    std::ofstream f(csv);
    f << "instance,model,time,e2e_ms,ttft_ms,output_tokens,error\n";
    for (int i = 0; i < 100; ++i) {
      const int64_t t = start + i * 100;
      char row[256];
      std::snprintf(row, sizeof(row), "node-a,m1,%lld.%03lld,%d,%d,%d,%s\n",
                    static_cast<long long>(t / 1000), static_cast<long long>(t % 1000), 1000 + i,
                    i + 1, 50, i % 10 == 0 ? "timeout" : "");
      f << row;
      if (i % 5 == 0) {
        // node-b's rows have an empty e2e_ms (logged at first-token time): they count, feed
        // ttft, and give e2e no value.
        std::snprintf(row, sizeof(row), "node-b,m1,%lld.%03lld,,20,,\n",
                      static_cast<long long>(t / 1000), static_cast<long long>(t % 1000));
        f << row;
      }
      if (i == 50) f << "node-a,m1,not-a-time,1,1,1,\n";
    }
    // A later row on another instance moves the watermark past the pane, which then closes.
    const int64_t later = start + 15'000;
    f << "node-c,m1," << later / 1000 << "," << 1 << ",,,\n";
  }
  const std::string log = dir.str() + "/replay.log";
  Subprocess replay({testing::InferscopeBinary(), "replay", "--input", csv, "--endpoint",
                     engine.Endpoint("ingest"), "--speed", "20", "--keep-times"},
                    log);
  ASSERT_EQ(replay.Wait(), 0) << ReadFile(log);
  EXPECT_NE(ReadFile(log).find(":64: time: expected"), std::string::npos) << ReadFile(log);
  EXPECT_NE(ReadFile(log).find("121 requests queued"), std::string::npos) << ReadFile(log);

  httplib::Client http(engine.HttpUrl());
  auto query = [&](const std::string& instance, const std::string& metric) {
    return "/v1/instances/" + instance + "/summary?model=m1&metric=" + metric +
           "&window=10s&from=" + std::to_string(start) + "&to=" + std::to_string(start + 10'000);
  };
  json a;
  ASSERT_TRUE(WaitFor([&] {
    a = GetJson(http, query("node-a", "e2e_ms"));
    return a.is_object() && a.contains("windows") && a["windows"].size() == 1 &&
           a["windows"][0]["events"] == 100;
  })) << a.dump()
      << "\n"
      << engine.Log();
  EXPECT_EQ(a["windows"][0]["errors"], 10);
  EXPECT_DOUBLE_EQ(a["windows"][0]["max"].get<double>(), 1099);
  json b = GetJson(http, query("node-b", "e2e_ms"));
  ASSERT_EQ(b["windows"].size(), 1u) << b.dump();
  EXPECT_EQ(b["windows"][0]["events"], 20);
  EXPECT_EQ(b["windows"][0]["errors"], 0);
  EXPECT_EQ(b["windows"][0]["count"], 0);
  json b_ttft = GetJson(http, query("node-b", "ttft_ms"));
  ASSERT_EQ(b_ttft["windows"].size(), 1u) << b_ttft.dump();
  EXPECT_EQ(b_ttft["windows"][0]["count"], 20);
  json ttft = GetJson(http, query("node-a", "ttft_ms"));
  ASSERT_EQ(ttft["windows"].size(), 1u) << ttft.dump();
  EXPECT_DOUBLE_EQ(ttft["windows"][0]["min"].get<double>(), 1);

  // A missing column is a usage error naming it.
  const std::string bad = dir.str() + "/bad.csv";
  {
    std::ofstream f(bad);
    f << "time,instance,e2e_ms\n1718000000,a,1\n";
  }
  Subprocess bad_replay({testing::InferscopeBinary(), "replay", "--input", bad, "--endpoint",
                         engine.Endpoint("ingest")},
                        dir.str() + "/bad.log");
  EXPECT_EQ(bad_replay.Wait(), 2);
  EXPECT_NE(ReadFile(dir.str() + "/bad.log").find("no 'model' column"), std::string::npos);
  EXPECT_EQ(engine.Stop(), 0) << engine.Log();
}

}  // namespace
}  // namespace inferscope
