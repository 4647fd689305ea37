// Scrape cost (issue 14): the CPU of the prometheus_scrape source scraping 1,000 targets every 5 s,
// against a bare cpp-httplib client loop doing the same fetches in the same run.
//
// The serving side is a separate process (this binary forked before any thread starts): `ports`
// cpp-httplib servers on 127.0.0.1 (ephemeral ports, read back), each serving the real vLLM v1
// page of tests/data/prometheus/vllm-metrics.txt at /t/<i>; target i is
// http://127.0.0.1:<port i % ports>/t/<i>. Its CPU (every thread, utime + stime of
// /proc/PID/stat) is reported separately. By default the servers close the connection after each
// response (--keep-alive 1), so every scrape opens a TCP connection, in both phases alike:
// cpp-httplib's server polls every idle keep-alive connection every ~10 ms, which at 1,000 targets
// would load the shared machine more than the scraping does.
//
// Two phases, one after the other, each over `intervals` × `interval`, CPU from getrusage of this
// process (only the phase's threads run in it):
//
//   baseline  one thread, one httplib::Client per target, each target fetched every interval at
//             an even offset (sleep until the next due fetch; no parsing)
//   source    PromScrapeSource (defaults: concurrency 4, jitter 1) with a metrics registry and
//             the health service as the engine gives it, emitting into a pool that counts events
//
// Printed: CPU-s, % of one core, fetches, CPU µs per fetch, the source's samples parsed, and the
// source's CPU as a ratio of the baseline's.
//
// Usage: scrape_cost [--targets N] [--interval-ms MS] [--intervals K] [--ports P]
//                    [--concurrency C] [--keep-alive N]

#include <httplib.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_child.h"
#include "pipeline/clock.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "pipeline/source_health.h"
#include "sources/prom_scrape_source.h"

namespace inferscope {
namespace {

using SteadyClock = std::chrono::steady_clock;

struct Args {
  size_t targets = 1000;
  int64_t interval_ms = 5000;
  int intervals = 4;
  size_t ports = 10;
  size_t concurrency = 4;
  size_t keep_alive = 1;  // requests per server connection
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

double SelfCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto s = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec * 1e-6; };
  return s(u.ru_utime) + s(u.ru_stime);
}

// The serving child: writes its ports (space-separated, one line) to `out_fd`, serves until
// `in_fd` reaches end of file.
[[noreturn]] void ServeChild(const Args& args, const std::string& page, int out_fd, int in_fd) {
  std::vector<std::unique_ptr<httplib::Server>> servers;
  std::vector<std::thread> threads;
  std::string ports;
  for (size_t p = 0; p < args.ports; ++p) {
    auto server = std::make_unique<httplib::Server>();
    server->set_keep_alive_max_count(args.keep_alive);
    server->Get(R"(/t/\d+)", [&page](const httplib::Request&, httplib::Response& res) {
      res.set_content(page, "text/plain; version=0.0.4");
    });
    const int port = server->bind_to_any_port("127.0.0.1");
    if (port <= 0) _exit(2);
    ports += std::to_string(port) + " ";
    servers.push_back(std::move(server));
  }
  for (auto& s : servers) threads.emplace_back([&s] { s->listen_after_bind(); });
  ports += "\n";
  if (write(out_fd, ports.data(), ports.size()) != static_cast<ssize_t>(ports.size())) _exit(3);
  char c;
  while (read(in_fd, &c, 1) > 0) {
  }
  for (auto& s : servers) s->stop();
  for (auto& t : threads) t.join();
  _exit(0);
}

// Counts what the source emits; every batch goes straight back to the pool.
class CountingOutput final : public SourceOutput {
 public:
  EventBatchPtr Acquire() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (pool_.empty()) return std::make_unique<EventBatch>();
    EventBatchPtr b = std::move(pool_.back());
    pool_.pop_back();
    b->events.clear();
    b->histograms.clear();
    return b;
  }
  bool Emit(EventBatchPtr batch) override {
    events += batch->events.size();
    ++batches;
    Release(std::move(batch));
    return true;
  }
  bool TryEmit(EventBatchPtr& batch) override { return Emit(std::move(batch)); }
  void Release(EventBatchPtr batch) override {
    std::lock_guard<std::mutex> lock(mu_);
    pool_.push_back(std::move(batch));
  }
  std::atomic<uint64_t> events{0};
  std::atomic<uint64_t> batches{0};

 private:
  std::mutex mu_;
  std::vector<EventBatchPtr> pool_;
};

struct Phase {
  const char* name;
  double cpu_s = 0;
  double serve_cpu_s = 0;
  double wall_s = 0;
  uint64_t fetches = 0;
  uint64_t failures = 0;
  uint64_t samples = 0;
};

Phase RunBaseline(const Args& args, const std::vector<std::string>& hosts,
                  const std::vector<std::string>& paths, pid_t server) {
  Phase ph{"baseline: bare httplib loop"};
  std::vector<std::unique_ptr<httplib::Client>> clients;
  for (const std::string& h : hosts) {
    auto c = std::make_unique<httplib::Client>(h);
    c->set_keep_alive(true);
    c->set_connection_timeout(std::chrono::seconds(5));
    c->set_read_timeout(std::chrono::seconds(5));
    clients.push_back(std::move(c));
  }
  const double cpu0 = SelfCpuSeconds();
  const double serve0 = bench::ProcessCpuSeconds(server);
  const auto start = SteadyClock::now();
  const auto step =
      std::chrono::microseconds(args.interval_ms * 1000 / static_cast<int64_t>(args.targets));
  const size_t total = args.targets * static_cast<size_t>(args.intervals);
  for (size_t k = 0; k < total; ++k) {
    std::this_thread::sleep_until(start + step * static_cast<int64_t>(k));
    const size_t i = k % args.targets;
    httplib::Result r = clients[i]->Get(paths[i]);
    ++ph.fetches;
    if (!r || r->status != 200 || r->body.empty()) ++ph.failures;
  }
  ph.wall_s = std::chrono::duration<double>(SteadyClock::now() - start).count();
  ph.cpu_s = SelfCpuSeconds() - cpu0;
  ph.serve_cpu_s = bench::ProcessCpuSeconds(server) - serve0;
  return ph;
}

Phase RunSource(const Args& args, const std::vector<std::string>& urls, pid_t server) {
  Phase ph{"prometheus_scrape source"};
  PromScrapeSource::Options o;
  for (size_t i = 0; i < urls.size(); ++i) {
    ScrapeTargetConfig t;
    t.url = urls[i];
    t.instance = "vllm-" + std::to_string(i);
    t.engine = PromEngine::kVllm;
    o.targets.push_back(std::move(t));
  }
  o.interval_ms = args.interval_ms;
  o.concurrency = args.concurrency;
  o.max_targets = std::max<size_t>(o.max_targets, urls.size());
  Interner interner;
  SystemClock clock;
  MetricsRegistry metrics;
  SourceHealth health;
  StageContext ctx;
  ctx.name = "scrape";
  ctx.interner = &interner;
  ctx.clock = &clock;
  ctx.metrics = &metrics;
  ctx.services.Provide(&health);
  PromScrapeSource source(o);
  CountingOutput out;
  std::atomic<bool> stop{false};
  const double cpu0 = SelfCpuSeconds();
  const double serve0 = bench::ProcessCpuSeconds(server);
  const auto start = SteadyClock::now();
  Status opened = source.Open(ctx);
  if (!opened.ok()) {
    std::fprintf(stderr, "scrape_cost: %s\n", opened.message().c_str());
    std::exit(1);
  }
  std::thread run([&] {
    Status s = source.Run(out, stop);
    if (!s.ok()) std::fprintf(stderr, "scrape_cost: Run: %s\n", s.message().c_str());
  });
  // Every target's first scrape falls within the first interval (jitter 1), so K intervals of
  // running scrape each target K times.
  std::this_thread::sleep_until(start +
                                std::chrono::milliseconds(args.interval_ms * args.intervals));
  stop = true;
  run.join();
  source.Close();
  ph.wall_s = std::chrono::duration<double>(SteadyClock::now() - start).count();
  ph.cpu_s = SelfCpuSeconds() - cpu0;
  ph.serve_cpu_s = bench::ProcessCpuSeconds(server) - serve0;
  const Labels stage = {{"stage", "scrape"}};
  ph.fetches = metrics.GetCounter("inferscope_scrapes_total", "", stage)->value();
  ph.samples = metrics.GetCounter("inferscope_scrape_samples_total", "", stage)->value();
  for (const char* reason : {"connect", "timeout", "http_status", "too_large", "garbage", "io"}) {
    ph.failures += metrics
                       .GetCounter("inferscope_scrape_errors_total", "",
                                   {{"stage", "scrape"}, {"reason", reason}})
                       ->value();
  }
  return ph;
}

Args ParseArgs(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
    auto need = [&]() -> const char* {
      if (v == nullptr) {
        std::fprintf(stderr, "scrape_cost: %s needs a value\n", arg.c_str());
        std::exit(2);
      }
      ++i;
      return v;
    };
    if (arg == "--targets") {
      a.targets = std::strtoull(need(), nullptr, 10);
    } else if (arg == "--interval-ms") {
      a.interval_ms = std::strtoll(need(), nullptr, 10);
    } else if (arg == "--intervals") {
      a.intervals = std::atoi(need());
    } else if (arg == "--ports") {
      a.ports = std::strtoull(need(), nullptr, 10);
    } else if (arg == "--concurrency") {
      a.concurrency = std::strtoull(need(), nullptr, 10);
    } else if (arg == "--keep-alive") {
      a.keep_alive = std::strtoull(need(), nullptr, 10);
    } else {
      std::fprintf(stderr,
                   "usage: scrape_cost [--targets N] [--interval-ms MS] [--intervals K] "
                   "[--ports P] [--concurrency C] [--keep-alive N]\n");
      std::exit(2);
    }
  }
  if (a.targets < 1 || a.interval_ms < 100 || a.intervals < 1 || a.ports < 1 || a.keep_alive < 1) {
    std::fprintf(stderr,
                 "scrape_cost: targets, intervals, ports, keep-alive >= 1; interval >= 100\n");
    std::exit(2);
  }
  return a;
}

int Main(int argc, char** argv) {
  const Args args = ParseArgs(argc, argv);
  const std::string page =
      ReadFile(std::string(INFERSCOPE_SOURCE_DIR) + "/tests/data/prometheus/vllm-metrics.txt");
  if (page.empty()) {
    std::fprintf(stderr, "scrape_cost: cannot read the fixture page\n");
    return 1;
  }
  // The serving process, forked before this process starts any thread.
  int to_parent[2], to_child[2];
  if (pipe(to_parent) != 0 || pipe(to_child) != 0) return 1;
  const pid_t server = fork();
  if (server < 0) return 1;
  if (server == 0) {
    close(to_parent[0]);
    close(to_child[1]);
    ServeChild(args, page, to_parent[1], to_child[0]);
  }
  close(to_parent[1]);
  close(to_child[0]);
  std::string line;
  char c;
  while (read(to_parent[0], &c, 1) == 1 && c != '\n') line += c;
  std::vector<int> ports;
  std::istringstream ps(line);
  for (int p; ps >> p;) ports.push_back(p);
  if (ports.size() != args.ports) {
    std::fprintf(stderr, "scrape_cost: the serving process did not start\n");
    return 1;
  }
  std::vector<std::string> hosts, paths, urls;
  for (size_t i = 0; i < args.targets; ++i) {
    hosts.push_back("http://127.0.0.1:" + std::to_string(ports[i % ports.size()]));
    paths.push_back("/t/" + std::to_string(i));
    urls.push_back(hosts.back() + paths.back());
  }

  std::printf(
      "# Scrape cost: %zu targets every %lld ms, %d intervals per phase, %zu server ports, "
      "page %zu bytes (vllm-metrics.txt), server closes after %zu request(s) per connection\n\n",
      args.targets, static_cast<long long>(args.interval_ms), args.intervals, args.ports,
      page.size(), args.keep_alive);
  std::fflush(stdout);
  const Phase baseline = RunBaseline(args, hosts, paths, server);
  const Phase source = RunSource(args, urls, server);

  close(to_child[1]);  // the server stops
  int status = 0;
  waitpid(server, &status, 0);

  std::printf(
      "| phase | wall s | CPU s | %% of one core | fetches | failed | CPU µs/fetch | "
      "samples | serving CPU %% of one core |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const Phase* p : {&baseline, &source}) {
    std::printf("| %s | %.1f | %.3f | %.2f | %llu | %llu | %.0f | %llu | %.2f |\n", p->name,
                p->wall_s, p->cpu_s, 100 * p->cpu_s / p->wall_s,
                static_cast<unsigned long long>(p->fetches),
                static_cast<unsigned long long>(p->failures),
                p->fetches > 0 ? 1e6 * p->cpu_s / static_cast<double>(p->fetches) : 0.0,
                static_cast<unsigned long long>(p->samples), 100 * p->serve_cpu_s / p->wall_s);
  }
  const double base_pct = baseline.cpu_s / baseline.wall_s;
  const double src_pct = source.cpu_s / source.wall_s;
  std::printf(
      "\nsource / baseline CPU (%% of one core): x%.2f; source per fetch / baseline per "
      "fetch: x%.2f\n",
      base_pct > 0 ? src_pct / base_pct : 0.0,
      baseline.fetches > 0 && source.fetches > 0 && baseline.cpu_s > 0
          ? (source.cpu_s / static_cast<double>(source.fetches)) /
                (baseline.cpu_s / static_cast<double>(baseline.fetches))
          : 0.0);
  std::printf("source: %.1f %% of one core for %zu targets every %lld ms (target < 10 %%)\n",
              100 * src_pct, args.targets, static_cast<long long>(args.interval_ms));
  return 0;
}

}  // namespace
}  // namespace inferscope

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  return inferscope::Main(argc, argv);
}
