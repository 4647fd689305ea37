// The host source's /proc parsers on fixed copies (tests/data/proc) and on this machine's real
// /proc files, the gauges between two readings, the reader's buffer reuse, and the source in
// process emitting the named gauges.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "pipeline/clock.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "sources/host_source.h"
#include "tests/sources/collecting_output.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

std::string FixtureRoot() { return testing::SourceDir() + "/tests/data/proc"; }

std::map<std::string, double> ByName(const std::vector<HostGauge>& gauges) {
  std::map<std::string, double> out;
  for (const HostGauge& g : gauges) out[std::string(kHostMetrics[g.metric])] = g.value;
  return out;
}

TEST(HostSourceTest, ParsesTheFixtures) {
  HostReader reader(FixtureRoot());
  const HostSnapshot s = reader.Read(10'000);
  ASSERT_TRUE(s.ok_stat && s.ok_meminfo && s.ok_loadavg && s.ok_diskstats && s.ok_netdev);
  EXPECT_EQ(s.cpu_total_ticks, 1000u + 100 + 300 + 8000 + 100 + 0 + 50 + 0);
  EXPECT_EQ(s.cpu_busy_ticks, s.cpu_total_ticks - 8000 - 100);
  EXPECT_EQ(s.mem_total_bytes, 16384000ull * 1024);
  EXPECT_EQ(s.mem_available_bytes, 4096000ull * 1024);
  EXPECT_DOUBLE_EQ(s.load1, 2.5);
  EXPECT_EQ(s.processes, 412u);
  // sda and nvme0n1 only: not their partitions, not loop0 or dm-0.
  EXPECT_EQ(s.disk_read_bytes, (20000ull + 2000) * 512);
  EXPECT_EQ(s.disk_write_bytes, (40000ull + 4000) * 512);
  EXPECT_EQ(s.disk_io_ms_max, 3000u);
  // eth0 + eth1, not lo.
  EXPECT_EQ(s.net_rx_bytes, 6000u);
  EXPECT_EQ(s.net_tx_bytes, 10000u);
}

TEST(HostSourceTest, GaugesBetweenTwoReadings) {
  HostReader reader(FixtureRoot());
  HostSnapshot prev = reader.Read(10'000);
  HostSnapshot now = prev;
  now.time_ms = 12'000;  // 2 s later
  now.cpu_total_ticks += 200;
  now.cpu_busy_ticks += 50;
  now.disk_read_bytes += 4096;
  now.disk_write_bytes += 8192;
  now.disk_io_ms_max += 500;
  now.net_rx_bytes += 2000;
  now.net_tx_bytes += 1000;
  std::vector<HostGauge> gauges;
  HostGauges(nullptr, prev, gauges);
  std::map<std::string, double> first = ByName(gauges);
  EXPECT_EQ(first.size(), 4u);  // no rates from one reading
  EXPECT_DOUBLE_EQ(first["memory_used_bytes"], (16384000.0 - 4096000.0) * 1024);
  EXPECT_DOUBLE_EQ(first["memory_used_fraction"], 0.75);
  EXPECT_DOUBLE_EQ(first["load1"], 2.5);
  EXPECT_DOUBLE_EQ(first["processes"], 412);
  gauges.clear();
  HostGauges(&prev, now, gauges);
  std::map<std::string, double> g = ByName(gauges);
  EXPECT_EQ(g.size(), kNumHostMetrics);
  EXPECT_DOUBLE_EQ(g["cpu_utilization"], 0.25);
  EXPECT_DOUBLE_EQ(g["disk_read_bytes_per_s"], 2048);
  EXPECT_DOUBLE_EQ(g["disk_write_bytes_per_s"], 4096);
  EXPECT_DOUBLE_EQ(g["disk_io_utilization"], 0.25);
  EXPECT_DOUBLE_EQ(g["net_rx_bytes_per_s"], 1000);
  EXPECT_DOUBLE_EQ(g["net_tx_bytes_per_s"], 500);
  // A counter that went back (an interface removed) gives 0, not a negative or huge rate.
  now.net_rx_bytes = 0;
  gauges.clear();
  HostGauges(&prev, now, gauges);
  EXPECT_DOUBLE_EQ(ByName(gauges)["net_rx_bytes_per_s"], 0);
}

TEST(HostSourceTest, MalformedTextIsRefused) {
  HostSnapshot s;
  EXPECT_FALSE(ParseProcStat("intr 1 2 3\n", &s));
  EXPECT_FALSE(ParseProcStat("cpu  1 2\n", &s));
  EXPECT_FALSE(ParseMeminfo("MemTotal: 100 kB\n", &s));  // no MemAvailable
  EXPECT_FALSE(ParseLoadavg("1.0 2.0\n", &s));
  EXPECT_FALSE(ParseLoadavg("x 1 1 1/2 3\n", &s));
  EXPECT_FALSE(ParseDiskstats("garbage\n", &s));
  EXPECT_FALSE(ParseNetDev("Inter-|\n face |\n", &s));
}

TEST(HostSourceTest, ReadsThisMachinesProc) {
  HostReader reader;
  const HostSnapshot a = reader.Read(1'000);
  ASSERT_TRUE(a.ok_stat && a.ok_meminfo && a.ok_loadavg && a.ok_netdev);
  EXPECT_GT(a.cpu_total_ticks, 0u);
  EXPECT_LE(a.cpu_busy_ticks, a.cpu_total_ticks);
  EXPECT_GT(a.mem_total_bytes, a.mem_available_bytes);
  EXPECT_GE(a.processes, 1u);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const HostSnapshot b = reader.Read(1'100);
  std::vector<HostGauge> gauges;
  HostGauges(&a, b, gauges);
  std::map<std::string, double> g = ByName(gauges);
  ASSERT_TRUE(g.count("memory_used_fraction"));
  EXPECT_GT(g["memory_used_fraction"], 0);
  EXPECT_LT(g["memory_used_fraction"], 1);
  if (g.count("cpu_utilization")) {  // the tick counters may not have moved in 100 ms
    EXPECT_GE(g["cpu_utilization"], 0);
    EXPECT_LE(g["cpu_utilization"], 1);
  }
  for (const auto& [name, v] : g) EXPECT_GE(v, 0) << name;
}

using testing::CollectingOutput;

TEST(HostSourceTest, SourceEmitsNamedGaugesOfItsInstance) {
  HostSource::Options o;
  o.instance = "gpu-node-1";
  o.interval_ms = 100;
  HostSource source(o);
  Interner interner;
  MetricsRegistry metrics;
  StageContext ctx;
  ctx.name = "host";
  ctx.interner = &interner;
  ctx.metrics = &metrics;
  ctx.clock = &SystemClock::Instance();
  ASSERT_TRUE(source.Open(ctx).ok());
  CollectingOutput out;
  std::atomic<bool> stop{false};
  std::thread run([&] { EXPECT_TRUE(source.Run(out, stop).ok()); });
  ASSERT_TRUE(testing::WaitFor([&] {
    for (const Event& e : out.events()) {
      if (interner.Name(e.metric) == "cpu_utilization") return true;
    }
    return false;
  }));
  stop = true;
  run.join();
  for (const Event& e : out.events()) {
    EXPECT_EQ(interner.Name(e.instance), "gpu-node-1");
    EXPECT_EQ(interner.Name(e.model), "_");
    EXPECT_EQ(e.kind, EventKind::kGauge);
  }
  EXPECT_GE(metrics.CounterValue("inferscope_host_readings_total", {{"stage", "host"}}), 2u);
}

}  // namespace
}  // namespace inferscope
