#pragma once

#include <atomic>
#include <cstdint>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/config.h"
#include "pipeline/source.h"
#include "pipeline/status.h"

namespace inferscope {

// One reading of the host's counters and gauges, parsed from /proc (all cumulative counters as the
// kernel reports them; rates are formed between two readings by HostRates).
struct HostSnapshot {
  int64_t time_ms = 0;
  // /proc/stat, first line (USER_HZ ticks): busy = everything but idle and iowait.
  uint64_t cpu_total_ticks = 0;
  uint64_t cpu_busy_ticks = 0;
  // /proc/meminfo (bytes).
  uint64_t mem_total_bytes = 0;
  uint64_t mem_available_bytes = 0;
  // /proc/loadavg.
  double load1 = 0;
  uint64_t processes = 0;  // scheduling entities (4th field, after the slash)
  // /proc/diskstats, whole disks only (no partitions, loop, ram, dm-, sr devices).
  uint64_t disk_read_bytes = 0;
  uint64_t disk_write_bytes = 0;
  uint64_t disk_io_ms_max = 0;  // the busiest disk's time doing I/O (ms)
  // /proc/net/dev, every interface but lo.
  uint64_t net_rx_bytes = 0;
  uint64_t net_tx_bytes = 0;
  bool ok_stat = false, ok_meminfo = false, ok_loadavg = false, ok_diskstats = false,
       ok_netdev = false;
};

// Parsers of the /proc files' text (pure, allocation-free; false when the expected fields are
// missing).
bool ParseProcStat(std::string_view text, HostSnapshot* out);
bool ParseMeminfo(std::string_view text, HostSnapshot* out);
bool ParseLoadavg(std::string_view text, HostSnapshot* out);
bool ParseDiskstats(std::string_view text, HostSnapshot* out);
bool ParseNetDev(std::string_view text, HostSnapshot* out);

// The gauges of one interval (the names of docs/SOURCES.md, "host").
inline constexpr std::string_view kHostMetrics[] = {
    "cpu_utilization",    "memory_used_bytes",     "memory_used_fraction",   "load1",
    "processes",          "disk_read_bytes_per_s", "disk_write_bytes_per_s", "disk_io_utilization",
    "net_rx_bytes_per_s", "net_tx_bytes_per_s"};
inline constexpr size_t kNumHostMetrics = std::size(kHostMetrics);
struct HostGauge {
  uint8_t metric;  // index in kHostMetrics
  double value;
};
// Gauges from two successive snapshots (`prev` may be null: only the instantaneous gauges).
// Appends to `out` (which keeps its capacity).
void HostGauges(const HostSnapshot* prev, const HostSnapshot& now, std::vector<HostGauge>& out);

// Reads the /proc files under `root` ("/proc", or a fixture directory) into reusable buffers: after
// the first reading nothing is allocated (the buffers keep their capacity).
class HostReader {
 public:
  explicit HostReader(std::string root = "/proc");
  // Reads every file; a file that cannot be read leaves its ok_* flag false.
  HostSnapshot Read(int64_t time_ms);

 private:
  bool ReadFile(const std::string& path, std::string& buf);
  std::string root_;
  std::string stat_path_, meminfo_path_, loadavg_path_, diskstats_path_, netdev_path_;
  std::string buf_;
};

// HostSource: the `host` source. Every `interval` it reads /proc/stat, /proc/meminfo,
// /proc/loadavg, /proc/diskstats and /proc/net/dev and emits the host's gauges (cpu_utilization,
// memory_used_bytes, memory_used_fraction, load1, processes, disk_read_bytes_per_s,
// disk_write_bytes_per_s, disk_io_utilization, net_rx_bytes_per_s, net_tx_bytes_per_s) for the
// configured instance and model, one batch per reading, publisher `host/<stage>`. Rates need two
// readings: the first gives only the instantaneous gauges.
// Concurrency: Open/Close on the engine thread; Run on the source thread.
class HostSource final : public Source {
 public:
  static constexpr std::string_view kName = "host";
  static constexpr std::string_view kDescription =
      "Reads the host's CPU, memory, disk, network and process count from /proc as gauges";

  struct Options {
    std::string instance;     // default: the host name
    std::string model = "_";  // the model the gauges are filed under
    int64_t interval_ms = 5'000;
    std::string proc_root = "/proc";
  };
  // From a topology's options: instance, model, interval (>= 100ms), proc_root.
  static Result<std::unique_ptr<HostSource>> Create(const ConfigNode& options);

  explicit HostSource(Options options)
      : options_(std::move(options)), reader_(options_.proc_root) {}

  Status Open(const StageContext& ctx) override;
  Status Run(SourceOutput& out, const std::atomic<bool>& stop) override;

 private:
  void Emit(SourceOutput& out, int64_t now_ms);

  Options options_;
  StageContext ctx_;
  HostReader reader_;
  HostSnapshot prev_;
  bool have_prev_ = false;
  std::vector<HostGauge> gauges_;
  StringId publisher_ = 0, instance_ = 0, model_ = 0;
  StringId metric_ids_[kNumHostMetrics] = {};
  Counter* readings_ = nullptr;
  Counter* read_errors_ = nullptr;
};

}  // namespace inferscope
