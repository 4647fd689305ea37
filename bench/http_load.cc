// http_load: an open-loop HTTP/1.1 load generator for the query benchmark (bench/query_load.py).
//
// wrk is closed-loop: each connection sends its next request when the last answer arrives, so it
// measures how fast the server goes flat out, and its latencies are those of a saturated machine.
// A latency target "p99 < X at R requests/s" asks something else: requests arrive at rate R
// whatever the server does, and each one's latency counts from when it arrived. http_load does
// that: request k of a thread is due at start + k / rate (evenly spaced, as wrk2 schedules them),
// is sent on an idle keep-alive connection as soon as one is free, and its latency is measured
// from the time it was due — so a stalled answer also charges every request that queued behind
// it (no coordinated omission). It also reports how late requests were sent (the generator's own
// lag, which the latency includes) and its own CPU time.
//
//   http_load --port P --paths FILE --rate 20000 --duration 10 [--warmup 1] [--connections 32]
//             [--threads 1] [--host 127.0.0.1] [--seed 1] [--timeline FILE]
//
// FILE holds one request target per line ("/v1/series?..."); each request takes one at random.
// Prints one line: HTTPLOADJSON {...} with requests due and completed, non-2xx answers, errors
// (and their kinds: send, read, unanswered; idle connections the server closed are not errors),
// the achieved rate, latency percentiles (from due), service-time percentiles (from sent) and
// send-lag percentiles, in microseconds. Requests due in the warm-up are sent but not counted.
// --timeline writes requests, p50 and max latency per 100 ms of due time (to find stalls).
// Exit status 2 on bad arguments or when the server cannot be reached.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

struct Options {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string paths_file;
  double rate = 20000;
  double duration_s = 10;
  double warmup_s = 1;
  int connections = 32;
  int threads = 1;
  uint64_t seed = 1;
  std::string timeline_file;
};

int64_t NowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// What one thread measured; merged at the end.
struct Tally {
  std::vector<int64_t> due_ns;      // due time - start of the measured period
  std::vector<int64_t> latency_ns;  // completion - due
  std::vector<int64_t> service_ns;  // completion - sent
  std::vector<int64_t> lag_ns;      // sent - due
  uint64_t due = 0;                 // requests due in the measured period
  uint64_t non2xx = 0;
  uint64_t errors = 0;       // connections that failed or answered something unreadable: the sum of
  uint64_t send_errors = 0;  // a request that could not be sent (the connection is opened again)
  uint64_t read_errors = 0;  // a connection closed, failed or unreadable with a request out
  uint64_t unanswered = 0;   // requests still out 2 s after the last one was due
  uint64_t idle_closed = 0;  // idle connections the server closed (not errors), opened again
};

class Connection {
 public:
  Connection() = default;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() {
    if (fd_ >= 0) ::close(fd_);
  }

  bool Open(const sockaddr_in& addr, int epoll_fd, uint32_t index) {
    if (fd_ >= 0) ::close(fd_);  // (closing removes it from the epoll set)
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return false;
    const int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) return false;
    ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = index;
    inbox_.clear();
    return ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd_, &ev) == 0;
  }

  int fd() const { return fd_; }
  bool busy() const { return due_ns_ >= 0; }
  int64_t due_ns() const { return due_ns_; }
  int64_t sent_ns() const { return sent_ns_; }

  // Sends `request` (small: one send takes it whole on a connection with nothing in flight).
  bool Send(std::string_view request, int64_t due_ns, int64_t now_ns) {
    const ssize_t n = ::send(fd_, request.data(), request.size(), MSG_NOSIGNAL);
    if (n != static_cast<ssize_t>(request.size())) return false;
    due_ns_ = due_ns;
    sent_ns_ = now_ns;
    return true;
  }

  enum class Read { kPending, kDone, kFailed };
  // Reads what arrived; kDone once the whole answer is in (status in *status, *close when the
  // server closes after it).
  Read Receive(int* status, bool* close) {
    char buf[16384];
    while (true) {
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), MSG_DONTWAIT);
      if (n > 0) {
        inbox_.append(buf, static_cast<size_t>(n));
        // (a whole answer needs no second recv to learn that nothing follows: one at a time)
        const Read read = Parse(status, close, /*eof=*/false);
        if (read != Read::kPending) return read;
        continue;
      }
      if (n == 0) return Parse(status, close, /*eof=*/true);
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Parse(status, close, /*eof=*/false);
      return Read::kFailed;
    }
  }

  void Idle() {
    due_ns_ = -1;
    inbox_.clear();
  }

 private:
  static bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
             return (x | 0x20) == (y | 0x20);
           });
  }

  Read Parse(int* status, bool* close, bool eof) {
    const size_t head_end = inbox_.find("\r\n\r\n");
    if (head_end == std::string::npos) return eof ? Read::kFailed : Read::kPending;
    const std::string_view head(inbox_.data(), head_end + 2);
    if (head.size() < 12 || head.substr(0, 5) != "HTTP/") return Read::kFailed;
    *status = std::atoi(std::string(head.substr(9, 3)).c_str());
    size_t length = 0;
    *close = eof;
    size_t pos = head.find("\r\n") + 2;
    while (pos < head.size()) {
      const size_t end = head.find("\r\n", pos);
      const std::string_view line = head.substr(pos, end - pos);
      const size_t colon = line.find(':');
      if (colon != std::string_view::npos) {
        std::string_view value = line.substr(colon + 1);
        while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
        if (EqualsIgnoreCase(line.substr(0, colon), "content-length")) {
          std::from_chars(value.data(), value.data() + value.size(), length);
        } else if (EqualsIgnoreCase(line.substr(0, colon), "connection") &&
                   EqualsIgnoreCase(value, "close")) {
          *close = true;
        }
      }
      pos = end + 2;
    }
    const size_t total = head_end + 4 + length;
    if (inbox_.size() < total) return eof ? Read::kFailed : Read::kPending;
    if (inbox_.size() > total) return Read::kFailed;  // nothing was asked for beyond one answer
    return Read::kDone;
  }

  int fd_ = -1;
  int64_t due_ns_ = -1;  // the in-flight request's due time; -1 when idle
  int64_t sent_ns_ = 0;
  std::string inbox_;
};

void RunThread(const Options& options, const std::vector<std::string>& requests, int index,
               int64_t start_ns, Tally* tally) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(options.port));
  ::inet_pton(AF_INET, options.host.c_str(), &addr.sin_addr);
  const int per_thread = std::max(1, options.connections / options.threads);
  const int epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
  std::vector<Connection> conns(static_cast<size_t>(per_thread));
  std::vector<uint32_t> idle;
  for (uint32_t i = 0; i < conns.size(); ++i) {
    if (!conns[i].Open(addr, epoll_fd, i)) {
      std::fprintf(stderr, "http_load: cannot connect to %s:%d: %s\n", options.host.c_str(),
                   options.port, std::strerror(errno));
      std::exit(2);
    }
    idle.push_back(i);
  }
  const double thread_rate = options.rate / options.threads;
  const double interval_ns = 1e9 / thread_rate;
  const int64_t measure_from = start_ns + static_cast<int64_t>(options.warmup_s * 1e9);
  const int64_t end_ns = measure_from + static_cast<int64_t>(options.duration_s * 1e9);
  const int64_t drain_until = end_ns + 2'000'000'000;  // answers still out then are errors
  const size_t expected = static_cast<size_t>(thread_rate * options.duration_s * 1.05) + 16;
  tally->due_ns.reserve(expected);
  tally->latency_ns.reserve(expected);
  tally->service_ns.reserve(expected);
  tally->lag_ns.reserve(expected);
  std::mt19937_64 rng(options.seed * 1000003 + static_cast<uint64_t>(index));
  // Due times of requests not yet sent, oldest first (a ring would do; requests are few).
  std::vector<int64_t> queue;
  size_t queue_head = 0;
  // Thread i's requests are offset by i / threads of an interval, so together they are even.
  double next_due = static_cast<double>(start_ns) + interval_ns * index / options.threads;
  std::vector<epoll_event> events(conns.size());
  while (true) {
    int64_t now = NowNs();
    while (next_due <= static_cast<double>(now) && next_due < static_cast<double>(end_ns)) {
      queue.push_back(static_cast<int64_t>(next_due));
      next_due += interval_ns;
    }
    while (queue_head < queue.size() && !idle.empty()) {
      const uint32_t c = idle.back();
      idle.pop_back();
      const std::string& request = requests[rng() % requests.size()];
      if (!conns[c].Send(request, queue[queue_head], now)) {
        ++tally->errors;
        ++tally->send_errors;
        if (!conns[c].Open(addr, epoll_fd, c)) std::exit(2);
        idle.push_back(c);
        continue;
      }
      ++queue_head;
    }
    if (queue_head == queue.size()) {
      queue.clear();
      queue_head = 0;
    }
    const bool issuing = next_due < static_cast<double>(end_ns);
    if (!issuing && queue.empty() && idle.size() == conns.size()) break;
    if (now >= drain_until) {
      tally->errors += conns.size() - idle.size();
      tally->unanswered += conns.size() - idle.size();
      break;
    }
    // Wait for answers, or until the next request is due.
    int64_t wait_ns = issuing ? static_cast<int64_t>(next_due) - now : drain_until - now;
    if (!queue.empty() && !idle.empty()) wait_ns = 0;
    wait_ns = std::clamp<int64_t>(wait_ns, 0, 100'000'000);
    const timespec timeout{static_cast<time_t>(wait_ns / 1'000'000'000),
                           static_cast<long>(wait_ns % 1'000'000'000)};
    const int n =
        ::epoll_pwait2(epoll_fd, events.data(), static_cast<int>(events.size()), &timeout, nullptr);
    if (n <= 0) continue;
    now = NowNs();
    for (int e = 0; e < n; ++e) {
      const uint32_t c = events[static_cast<size_t>(e)].data.u32;
      Connection& conn = conns[c];
      if (!conn.busy()) {
        // Nothing asked on it: the server closed it after its keep-alive idle timeout (a
        // connection seldom used at a low rate). Opened again quietly; it stays in `idle`.
        ++tally->idle_closed;
        if (!conn.Open(addr, epoll_fd, c)) std::exit(2);
        continue;
      }
      int status = 0;
      bool close = false;
      const Connection::Read read = conn.Receive(&status, &close);
      if (read == Connection::Read::kPending) continue;
      if (read == Connection::Read::kDone && conn.busy()) {
        if (conn.due_ns() >= measure_from) {
          ++tally->due;
          tally->due_ns.push_back(conn.due_ns() - measure_from);
          tally->latency_ns.push_back(now - conn.due_ns());
          tally->service_ns.push_back(now - conn.sent_ns());
          tally->lag_ns.push_back(conn.sent_ns() - conn.due_ns());
          if (status < 200 || status > 299) ++tally->non2xx;
        }
      } else {
        ++tally->errors;
        ++tally->read_errors;
        close = true;
      }
      conn.Idle();
      if (close && !conn.Open(addr, epoll_fd, c)) std::exit(2);
      idle.push_back(c);
    }
  }
  ::close(epoll_fd);
}

int64_t Percentile(std::vector<int64_t>* values, double q) {
  if (values->empty()) return 0;
  const size_t rank = std::min(values->size() - 1, static_cast<size_t>(q * values->size()));
  std::nth_element(values->begin(), values->begin() + static_cast<ptrdiff_t>(rank), values->end());
  return (*values)[rank];
}

// Per 100 ms of due time: requests, p50 and max latency (µs) — where the tail comes from.
void WriteTimeline(const Tally& all, const Options& options, const std::string& path) {
  constexpr int64_t kBucketNs = 100'000'000;
  const size_t buckets = static_cast<size_t>(options.duration_s * 10) + 1;
  std::vector<std::vector<int64_t>> by_bucket(buckets);
  for (size_t i = 0; i < all.due_ns.size(); ++i) {
    by_bucket[std::min(buckets - 1, static_cast<size_t>(all.due_ns[i] / kBucketNs))].push_back(
        all.latency_ns[i]);
  }
  FILE* out = std::fopen(path.c_str(), "w");
  if (out == nullptr) return;
  std::fprintf(out, "t_ms requests p50_us max_us\n");
  for (size_t b = 0; b < buckets; ++b) {
    std::vector<int64_t>& v = by_bucket[b];
    const int64_t max = v.empty() ? 0 : *std::max_element(v.begin(), v.end());
    const int64_t p50 = Percentile(&v, 0.5);
    std::fprintf(out, "%zu %zu %lld %lld\n", b * 100, v.size(), static_cast<long long>(p50 / 1000),
                 static_cast<long long>(max / 1000));
  }
  std::fclose(out);
}

[[noreturn]] void Usage(const char* message) {
  std::fprintf(stderr,
               "http_load: %s\nusage: http_load --port P --paths FILE [--rate R] [--duration S] "
               "[--warmup S] [--connections N] [--threads N] [--host IPV4] [--seed N] "
               "[--timeline FILE]\n",
               message);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (i + 1 >= argc) Usage(("missing value of " + std::string(arg)).c_str());
    const char* value = argv[++i];
    if (arg == "--host") {
      options.host = value;
    } else if (arg == "--port") {
      options.port = std::atoi(value);
    } else if (arg == "--paths") {
      options.paths_file = value;
    } else if (arg == "--rate") {
      options.rate = std::atof(value);
    } else if (arg == "--duration") {
      options.duration_s = std::atof(value);
    } else if (arg == "--warmup") {
      options.warmup_s = std::atof(value);
    } else if (arg == "--connections") {
      options.connections = std::atoi(value);
    } else if (arg == "--threads") {
      options.threads = std::atoi(value);
    } else if (arg == "--timeline") {
      options.timeline_file = value;
    } else if (arg == "--seed") {
      options.seed = std::strtoull(value, nullptr, 10);
    } else {
      Usage(("unknown option " + std::string(arg)).c_str());
    }
  }
  if (options.port <= 0 || options.port > 65535) Usage("--port must be 1..65535");
  if (!(options.rate > 0) || !(options.duration_s > 0) || options.warmup_s < 0) {
    Usage("--rate and --duration must be positive, --warmup not negative");
  }
  if (options.threads < 1 || options.connections < options.threads) {
    Usage("--threads must be at least 1 and at most --connections");
  }
  std::ifstream in(options.paths_file);
  if (!in) Usage(("cannot read --paths file '" + options.paths_file + "'").c_str());
  std::vector<std::string> requests;
  const std::string host = options.host + ":" + std::to_string(options.port);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    requests.push_back("GET " + line + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n");
  }
  if (requests.empty()) Usage("the --paths file holds no request target");

  std::vector<Tally> tallies(static_cast<size_t>(options.threads));
  std::vector<std::thread> threads;
  const int64_t start_ns = NowNs() + 50'000'000;  // every thread connected by then
  for (int t = 0; t < options.threads; ++t) {
    threads.emplace_back(RunThread, std::cref(options), std::cref(requests), t, start_ns,
                         &tallies[static_cast<size_t>(t)]);
  }
  for (std::thread& t : threads) t.join();
  Tally all;
  for (Tally& t : tallies) {
    all.due += t.due;
    all.non2xx += t.non2xx;
    all.errors += t.errors;
    all.send_errors += t.send_errors;
    all.read_errors += t.read_errors;
    all.unanswered += t.unanswered;
    all.idle_closed += t.idle_closed;
    all.due_ns.insert(all.due_ns.end(), t.due_ns.begin(), t.due_ns.end());
    all.latency_ns.insert(all.latency_ns.end(), t.latency_ns.begin(), t.latency_ns.end());
    all.service_ns.insert(all.service_ns.end(), t.service_ns.begin(), t.service_ns.end());
    all.lag_ns.insert(all.lag_ns.end(), t.lag_ns.begin(), t.lag_ns.end());
  }
  if (!options.timeline_file.empty()) WriteTimeline(all, options, options.timeline_file);
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  const double cpu_s = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                       static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  const auto us = [](int64_t ns) { return static_cast<long long>(ns / 1000); };
  std::vector<int64_t>& lat = all.latency_ns;
  const int64_t max_ns = lat.empty() ? 0 : *std::max_element(lat.begin(), lat.end());
  std::printf(
      "HTTPLOADJSON {\"rate\":%.0f,\"duration_s\":%.3f,\"completed\":%llu,\"achieved_rps\":%.1f,"
      "\"non2xx\":%llu,\"errors\":%llu,\"send_errors\":%llu,\"read_errors\":%llu,"
      "\"unanswered\":%llu,\"idle_closed\":%llu,\"p50_us\":%lld,\"p90_us\":%lld,\"p99_us\":%lld,"
      "\"p999_us\":%lld,\"max_us\":%lld,\"service_p50_us\":%lld,\"service_p99_us\":%lld,"
      "\"lag_p50_us\":%lld,\"lag_p99_us\":%lld,\"cpu_s\":%.3f}\n",
      options.rate, options.duration_s, static_cast<unsigned long long>(all.due),
      static_cast<double>(all.due) / options.duration_s,
      static_cast<unsigned long long>(all.non2xx), static_cast<unsigned long long>(all.errors),
      static_cast<unsigned long long>(all.send_errors),
      static_cast<unsigned long long>(all.read_errors),
      static_cast<unsigned long long>(all.unanswered),
      static_cast<unsigned long long>(all.idle_closed), us(Percentile(&lat, 0.50)),
      us(Percentile(&lat, 0.90)), us(Percentile(&lat, 0.99)), us(Percentile(&lat, 0.999)),
      us(max_ns), us(Percentile(&all.service_ns, 0.50)), us(Percentile(&all.service_ns, 0.99)),
      us(Percentile(&all.lag_ns, 0.50)), us(Percentile(&all.lag_ns, 0.99)), cpu_s);
  return 0;
}
