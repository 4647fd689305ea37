// cpu_stalls: can this machine run a latency benchmark? One thread per CPU (pinned) spins on the
// monotonic clock for --seconds and records every gap longer than --gap-ms: time in which the
// thread did not run although nothing in this process competed for its CPU. On an idle machine the
// gaps are what the guest kernel and the hypervisor take; a virtual machine whose host takes its
// vCPUs away shows gaps of tens of milliseconds (measured here: ~100 ms each, several per second,
// once both vCPUs were busy — bench/README.md, "Fast path and open-loop latency"), and no p99 under
// such a gap can be measured.
//
//   cpu_stalls [--seconds 10] [--gap-ms 1] [--threads N]   (N: default all online CPUs)
//
// Prints, per thread, the CPU share it got, the number of gaps, their total and the longest; then
// the sum. Uses every CPU fully while it runs: run it on an otherwise idle machine.

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string_view>
#include <thread>
#include <vector>

namespace {

int64_t NowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

struct Gaps {
  int64_t count = 0;
  int64_t total_ns = 0;
  int64_t longest_ns = 0;
};

void Spin(int cpu, int64_t seconds, int64_t gap_ns, Gaps* out) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  (void)pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
  const int64_t start = NowNs();
  const int64_t end = start + seconds * 1'000'000'000;
  int64_t last = start;
  while (true) {
    const int64_t now = NowNs();
    if (now >= end) break;
    const int64_t gap = now - last;
    if (gap > gap_ns) {
      ++out->count;
      out->total_ns += gap;
      out->longest_ns = std::max(out->longest_ns, gap);
    }
    last = now;
  }
}

}  // namespace

int main(int argc, char** argv) {
  int64_t seconds = 10;
  int64_t gap_ms = 1;
  int threads = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string_view arg = argv[i];
    if (arg == "--seconds") {
      seconds = std::atoll(argv[i + 1]);
    } else if (arg == "--gap-ms") {
      gap_ms = std::atoll(argv[i + 1]);
    } else if (arg == "--threads") {
      threads = std::atoi(argv[i + 1]);
    } else {
      std::fprintf(stderr, "usage: cpu_stalls [--seconds S] [--gap-ms MS] [--threads N]\n");
      return 2;
    }
  }
  if (seconds <= 0 || gap_ms <= 0 || threads <= 0) {
    std::fprintf(stderr, "cpu_stalls: --seconds, --gap-ms and --threads must be positive\n");
    return 2;
  }
  const int cpus = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  std::vector<Gaps> gaps(static_cast<size_t>(threads));
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back(Spin, t % cpus, seconds, gap_ms * 1'000'000, &gaps[static_cast<size_t>(t)]);
  }
  for (std::thread& t : pool) t.join();
  double cores = 0;
  int64_t count = 0;
  int64_t longest = 0;
  for (int t = 0; t < threads; ++t) {
    const Gaps& g = gaps[static_cast<size_t>(t)];
    const double share =
        1.0 - static_cast<double>(g.total_ns) / (static_cast<double>(seconds) * 1e9);
    cores += share;
    count += g.count;
    longest = std::max(longest, g.longest_ns);
    std::printf(
        "thread %d (cpu %d): got %.3f of the cpu; %lld gaps > %lld ms, %.1f ms in all, longest "
        "%.1f ms\n",
        t, t % cpus, share, static_cast<long long>(g.count), static_cast<long long>(gap_ms),
        static_cast<double>(g.total_ns) / 1e6, static_cast<double>(g.longest_ns) / 1e6);
  }
  std::printf("all: %.3f cores of %d over %lld s; %lld gaps, longest %.1f ms\n", cores, threads,
              static_cast<long long>(seconds), static_cast<long long>(count),
              static_cast<double>(longest) / 1e6);
  return 0;
}
