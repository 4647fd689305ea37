#include "sources/host_source.h"

#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <thread>

namespace inferscope {
namespace {

enum HostMetric : uint8_t {
  kCpu = 0,
  kMemUsed,
  kMemFraction,
  kLoad1,
  kProcesses,
  kDiskRead,
  kDiskWrite,
  kDiskIo,
  kNetRx,
  kNetTx,
};

// Splits `text` into lines and each line into whitespace-separated fields, without allocating.
class Fields {
 public:
  explicit Fields(std::string_view line) : rest_(line) {}
  bool Next(std::string_view* field) {
    size_t i = 0;
    while (i < rest_.size() && (rest_[i] == ' ' || rest_[i] == '\t')) ++i;
    rest_.remove_prefix(i);
    if (rest_.empty()) return false;
    size_t j = 0;
    while (j < rest_.size() && rest_[j] != ' ' && rest_[j] != '\t') ++j;
    *field = rest_.substr(0, j);
    rest_.remove_prefix(j);
    return true;
  }
  bool NextU64(uint64_t* v) {
    std::string_view f;
    if (!Next(&f)) return false;
    auto [p, ec] = std::from_chars(f.data(), f.data() + f.size(), *v);
    return ec == std::errc() && p == f.data() + f.size();
  }
  std::string_view rest() const { return rest_; }

 private:
  std::string_view rest_;
};

bool NextLine(std::string_view* text, std::string_view* line) {
  if (text->empty()) return false;
  const size_t nl = text->find('\n');
  *line = text->substr(0, nl);
  text->remove_prefix(nl == std::string_view::npos ? text->size() : nl + 1);
  return true;
}

bool StartsWith(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

double Rate(uint64_t now, uint64_t prev, double seconds) {
  if (now < prev || seconds <= 0) return 0;  // a counter that went back (device removed): no rate
  return static_cast<double>(now - prev) / seconds;
}

}  // namespace

bool ParseProcStat(std::string_view text, HostSnapshot* out) {
  std::string_view line;
  while (NextLine(&text, &line)) {
    if (!StartsWith(line, "cpu ")) continue;
    Fields f(line.substr(4));
    uint64_t v[10] = {};
    size_t n = 0;
    while (n < 10 && f.NextU64(&v[n])) ++n;
    if (n < 4) return false;
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already
    // counted in user and nice.
    uint64_t total = 0;
    for (size_t i = 0; i < std::min<size_t>(n, 8); ++i) total += v[i];
    out->cpu_total_ticks = total;
    out->cpu_busy_ticks = total - v[3] - (n > 4 ? v[4] : 0);
    out->ok_stat = true;
    return true;
  }
  return false;
}

bool ParseMeminfo(std::string_view text, HostSnapshot* out) {
  std::string_view line;
  bool total = false;
  bool available = false;
  while (NextLine(&text, &line)) {
    uint64_t* target = nullptr;
    if (StartsWith(line, "MemTotal:")) {
      target = &out->mem_total_bytes;
      total = true;
    } else if (StartsWith(line, "MemAvailable:")) {
      target = &out->mem_available_bytes;
      available = true;
    } else {
      continue;
    }
    Fields f(line.substr(line.find(':') + 1));
    uint64_t kb = 0;
    if (!f.NextU64(&kb)) return false;
    *target = kb * 1024;
  }
  out->ok_meminfo = total && available && out->mem_total_bytes > 0;
  return out->ok_meminfo;
}

bool ParseLoadavg(std::string_view text, HostSnapshot* out) {
  Fields f(text);
  std::string_view load1;
  std::string_view skip;
  std::string_view tasks;
  if (!f.Next(&load1) || !f.Next(&skip) || !f.Next(&skip) || !f.Next(&tasks)) return false;
  auto [p, ec] = std::from_chars(load1.data(), load1.data() + load1.size(), out->load1);
  if (ec != std::errc()) return false;
  const size_t slash = tasks.find('/');
  if (slash == std::string_view::npos) return false;
  const std::string_view total = tasks.substr(slash + 1);
  auto [p2, ec2] = std::from_chars(total.data(), total.data() + total.size(), out->processes);
  if (ec2 != std::errc()) return false;
  out->ok_loadavg = true;
  return true;
}

bool ParseDiskstats(std::string_view text, HostSnapshot* out) {
  // A partition's name extends its disk's name (sda → sda1, nvme0n1 → nvme0n1p1) and follows it
  // in the file; `last_disk` remembers the last whole disk.
  std::string_view line;
  std::string_view last_disk;
  bool any = false;
  out->disk_read_bytes = out->disk_write_bytes = out->disk_io_ms_max = 0;
  while (NextLine(&text, &line)) {
    Fields f(line);
    uint64_t major = 0;
    uint64_t minor = 0;
    std::string_view name;
    if (!f.NextU64(&major) || !f.NextU64(&minor) || !f.Next(&name)) continue;
    uint64_t v[10] = {};
    size_t n = 0;
    while (n < 10 && f.NextU64(&v[n])) ++n;
    if (n < 10) continue;
    any = true;
    if (StartsWith(name, "loop") || StartsWith(name, "ram") || StartsWith(name, "dm-") ||
        StartsWith(name, "sr") || StartsWith(name, "zram") || StartsWith(name, "md")) {
      continue;
    }
    if (!last_disk.empty() && name.size() > last_disk.size() && StartsWith(name, last_disk)) {
      continue;  // a partition of the last disk
    }
    last_disk = name;
    // reads, reads merged, sectors read, ms reading, writes, merged, sectors written, ms writing,
    // in flight, ms doing I/O (sectors are 512 bytes whatever the device).
    out->disk_read_bytes += v[2] * 512;
    out->disk_write_bytes += v[6] * 512;
    out->disk_io_ms_max = std::max(out->disk_io_ms_max, v[9]);
  }
  out->ok_diskstats = any;
  return any;
}

bool ParseNetDev(std::string_view text, HostSnapshot* out) {
  std::string_view line;
  bool any = false;
  out->net_rx_bytes = out->net_tx_bytes = 0;
  while (NextLine(&text, &line)) {
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;  // the two header lines have '|' instead
    std::string_view iface = line.substr(0, colon);
    while (!iface.empty() && iface.front() == ' ') iface.remove_prefix(1);
    Fields f(line.substr(colon + 1));
    uint64_t v[9] = {};
    size_t n = 0;
    while (n < 9 && f.NextU64(&v[n])) ++n;
    if (n < 9) continue;
    any = true;
    if (iface == "lo") continue;
    out->net_rx_bytes += v[0];
    out->net_tx_bytes += v[8];
  }
  out->ok_netdev = any;
  return any;
}

void HostGauges(const HostSnapshot* prev, const HostSnapshot& now, std::vector<HostGauge>& out) {
  if (now.ok_meminfo) {
    const uint64_t used = now.mem_total_bytes > now.mem_available_bytes
                              ? now.mem_total_bytes - now.mem_available_bytes
                              : 0;
    out.push_back({kMemUsed, static_cast<double>(used)});
    out.push_back(
        {kMemFraction, static_cast<double>(used) / static_cast<double>(now.mem_total_bytes)});
  }
  if (now.ok_loadavg) {
    out.push_back({kLoad1, now.load1});
    out.push_back({kProcesses, static_cast<double>(now.processes)});
  }
  if (prev == nullptr || now.time_ms <= prev->time_ms) return;
  const double seconds = static_cast<double>(now.time_ms - prev->time_ms) / 1000.0;
  if (now.ok_stat && prev->ok_stat && now.cpu_total_ticks > prev->cpu_total_ticks &&
      now.cpu_busy_ticks >= prev->cpu_busy_ticks) {
    out.push_back({kCpu, static_cast<double>(now.cpu_busy_ticks - prev->cpu_busy_ticks) /
                             static_cast<double>(now.cpu_total_ticks - prev->cpu_total_ticks)});
  }
  if (now.ok_diskstats && prev->ok_diskstats) {
    out.push_back({kDiskRead, Rate(now.disk_read_bytes, prev->disk_read_bytes, seconds)});
    out.push_back({kDiskWrite, Rate(now.disk_write_bytes, prev->disk_write_bytes, seconds)});
    out.push_back(
        {kDiskIo, std::min(1.0, Rate(now.disk_io_ms_max, prev->disk_io_ms_max, seconds) / 1000.0)});
  }
  if (now.ok_netdev && prev->ok_netdev) {
    out.push_back({kNetRx, Rate(now.net_rx_bytes, prev->net_rx_bytes, seconds)});
    out.push_back({kNetTx, Rate(now.net_tx_bytes, prev->net_tx_bytes, seconds)});
  }
}

HostReader::HostReader(std::string root) : root_(std::move(root)) {
  stat_path_ = root_ + "/stat";
  meminfo_path_ = root_ + "/meminfo";
  loadavg_path_ = root_ + "/loadavg";
  diskstats_path_ = root_ + "/diskstats";
  netdev_path_ = root_ + "/net/dev";
  buf_.reserve(64 * 1024);
}

bool HostReader::ReadFile(const std::string& path, std::string& buf) {
  buf.clear();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  // /proc files report size 0: read in chunks into the buffer's capacity (grown only when a file
  // is larger than any before).
  size_t used = 0;
  while (true) {
    if (buf.capacity() - used < 4096) buf.reserve(buf.capacity() * 2 + 4096);
    buf.resize(buf.capacity());
    const ssize_t n = ::read(fd, buf.data() + used, buf.size() - used);
    if (n < 0) {
      ::close(fd);
      buf.clear();
      return false;
    }
    if (n == 0) break;
    used += static_cast<size_t>(n);
  }
  ::close(fd);
  buf.resize(used);
  return true;
}

HostSnapshot HostReader::Read(int64_t time_ms) {
  HostSnapshot s;
  s.time_ms = time_ms;
  if (ReadFile(stat_path_, buf_)) ParseProcStat(buf_, &s);
  if (ReadFile(meminfo_path_, buf_)) ParseMeminfo(buf_, &s);
  if (ReadFile(loadavg_path_, buf_)) ParseLoadavg(buf_, &s);
  if (ReadFile(diskstats_path_, buf_)) ParseDiskstats(buf_, &s);
  if (ReadFile(netdev_path_, buf_)) ParseNetDev(buf_, &s);
  return s;
}

Result<std::unique_ptr<HostSource>> HostSource::Create(const ConfigNode& node) {
  INFERSCOPE_RETURN_IF_ERROR(node.CheckKnownFields({"instance", "model", "interval", "proc_root"}));
  Options o;
  Result<std::string> instance = node.GetString("instance", "");
  if (!instance.ok()) return instance.status();
  o.instance = *instance;
  if (o.instance.empty()) {
    char host[256] = {};
    if (::gethostname(host, sizeof(host) - 1) == 0) o.instance = host;
    if (o.instance.empty()) o.instance = "localhost";
  }
  Result<std::string> model = node.GetString("model", "_");
  if (!model.ok()) return model.status();
  o.model = model->empty() ? "_" : *model;
  if (o.instance.size() > 255 || o.model.size() > 255) {
    return node.Error("instance", "instance and model are at most 255 bytes");
  }
  Result<int64_t> interval = node.GetDurationMs("interval", o.interval_ms, 100);
  if (!interval.ok()) return interval.status();
  o.interval_ms = *interval;
  Result<std::string> root = node.GetString("proc_root", o.proc_root);
  if (!root.ok()) return root.status();
  o.proc_root = *root;
  return std::make_unique<HostSource>(std::move(o));
}

Status HostSource::Open(const StageContext& ctx) {
  if (ctx.interner == nullptr || ctx.clock == nullptr) {
    return Status::InvalidArgument("host source: the stage context needs an interner and a clock");
  }
  ctx_ = ctx;
  publisher_ = ctx.interner->Intern("host/" + ctx.name);
  instance_ = ctx.interner->Intern(options_.instance);
  model_ = ctx.interner->Intern(options_.model);
  if (publisher_ == 0 || instance_ == 0 || model_ == 0) {
    return Status::Unavailable("host source: the string table is full");
  }
  for (StringId id : {publisher_, instance_, model_}) ctx.interner->Pin(id);
  for (size_t i = 0; i < kNumHostMetrics; ++i) {
    metric_ids_[i] = ctx.interner->Intern(kHostMetrics[i]);
    if (metric_ids_[i] == 0) return Status::Unavailable("host source: the string table is full");
    ctx.interner->Pin(metric_ids_[i]);
  }
  if (ctx.metrics != nullptr) {
    const Labels stage = {{"stage", ctx.name}};
    readings_ =
        ctx.metrics->GetCounter("inferscope_host_readings_total", "Readings of /proc", stage);
    read_errors_ = ctx.metrics->GetCounter("inferscope_host_read_errors_total",
                                           "/proc files that could not be read or parsed", stage);
  }
  gauges_.reserve(kNumHostMetrics);
  return Status::Ok();
}

void HostSource::Emit(SourceOutput& out, int64_t now_ms) {
  HostSnapshot now = reader_.Read(now_ms);
  if (readings_ != nullptr) {
    readings_->Inc();
    read_errors_->Inc((now.ok_stat ? 0 : 1) + (now.ok_meminfo ? 0 : 1) + (now.ok_loadavg ? 0 : 1) +
                      (now.ok_diskstats ? 0 : 1) + (now.ok_netdev ? 0 : 1));
  }
  gauges_.clear();
  HostGauges(have_prev_ ? &prev_ : nullptr, now, gauges_);
  prev_ = now;
  have_prev_ = true;
  if (gauges_.empty()) return;
  EventBatchPtr batch = out.Acquire();
  if (batch == nullptr) return;
  batch->publisher = publisher_;
  batch->received_ns = ctx_.clock->MonotonicNs();
  for (const HostGauge& g : gauges_) {
    Event& e = batch->events.emplace_back();
    e.time_ms = now_ms;
    e.instance = instance_;
    e.model = model_;
    e.publisher = publisher_;
    e.kind = EventKind::kGauge;
    e.metric = metric_ids_[g.metric];
    e.value = g.value;
  }
  (void)out.Emit(std::move(batch));
}

Status HostSource::Run(SourceOutput& out, const std::atomic<bool>& stop) {
  int64_t next = ctx_.clock->NowMs();
  while (!stop.load(std::memory_order_relaxed)) {
    const int64_t now = ctx_.clock->NowMs();
    if (now >= next) {
      Emit(out, now);
      next += options_.interval_ms;
      if (next <= now) next = now + options_.interval_ms;
    }
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::min<int64_t>(50, next - now > 0 ? next - now : 1)));
  }
  return Status::Ok();
}

}  // namespace inferscope
