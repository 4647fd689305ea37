#pragma once

// Internal to query/: the connection handling behind QueryServer.

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "pipeline/metrics.h"
#include "pipeline/status.h"

namespace inferscope {

// Limits of GatedServer; QueryServer::Options carries them (see there for the defaults).
struct GateOptions {
  int threads = 8;
  int64_t header_timeout_ms = 10'000;
  int64_t idle_timeout_ms = 5'000;
  int64_t read_timeout_ms = 10'000;
  int64_t write_timeout_ms = 10'000;
  size_t max_connections = 4'096;
  size_t max_header_bytes = 16 * 1024;
  size_t max_body_bytes = 1024 * 1024;
  size_t max_url_bytes = 8'192;
  int listen_backlog = 1'024;
};

// GatedServer is an httplib::Server whose connections do not each hold a thread.
//
// cpp-httplib 0.11 serves a connection on one pool thread from accept to close, and waits for a
// request header (and between keep-alive requests) on that thread, polling every 10 ms; so N slow
// or idle sockets block N threads and a thread per connection would cost ~100 wakeups per second
// per idle socket. GatedServer keeps httplib's accept loop, routing and request parsing, and
// overrides only what happens to an accepted socket (Server::process_and_close_socket is virtual):
//
//  * the socket is parked in an epoll set (one "gate" thread) until a whole request header, and a
//    body of known length that fits the peek window, has arrived: slow and idle sockets cost no
//    thread and no polling;
//  * a request whose header is complete goes to a fixed pool of `threads` workers, which run
//    httplib's Server::process_request on a stream with a read deadline, then park the socket
//    again for the next keep-alive request;
//  * a header not complete within header_timeout_ms, or a kept-alive connection idle for
//    idle_timeout_ms, is closed; connections beyond max_connections are closed at accept; a header
//    over max_header_bytes gets 431, a request target over max_url_bytes gets 414 (as soon as the
//    request line shows it), a Content-Length over max_body_bytes gets 413 before any body byte is
//    read; all counted in inferscope_http_connections_closed_total{reason}.
//
// Lifecycle: construct → bind (httplib) → StartGate → listen_after_bind (httplib, own thread) →
// stop (httplib) → join that thread → StopGate (the destructor calls it).
// Concurrency: the accept thread parks sockets, the gate thread watches them, workers serve them;
// the socket table is guarded by one mutex.
class GatedServer : public httplib::Server {
 public:
  // `error_body(status, code, message)` renders the JSON error body for the replies the gate sends
  // itself (413, 414, 431).
  using ErrorBody = std::function<std::string(int, std::string_view, std::string)>;

  GatedServer(GateOptions options, MetricsRegistry* metrics, ErrorBody error_body);
  ~GatedServer() override;

  // Sets the listen backlog of the bound socket (httplib listens with 5), starts the gate and
  // worker threads. Call after bind_to_port and before listen_after_bind.
  Status StartGate();
  // Closes every parked socket and joins the gate and workers; in-flight requests finish first.
  void StopGate();

  // Connections accepted and not yet closed.
  size_t open_connections() const { return open_.load(std::memory_order_relaxed); }

 private:
  using SteadyTime = std::chrono::steady_clock::time_point;
  struct Parked {
    SteadyTime deadline;
    bool idle;  // between requests (idle timeout) rather than inside a header (header timeout)
  };
  struct Job {
    int fd;
    size_t request_bytes;  // header + body when known, else 0 (the connection closes after it)
  };

  bool process_and_close_socket(socket_t sock) override;

  void Park(int fd, bool idle);
  void GateLoop();
  void OnReadable(int fd);
  void Sweep(SteadyTime now);
  void WorkerLoop();
  void Serve(const Job& job);
  // Consumes what the client sent, writes a canned error response and closes.
  void RefuseLocked(int fd, size_t peeked, int status, std::string_view reason_phrase,
                    std::string_view code, std::string message, std::string_view counter_reason);
  void CloseLocked(int fd, std::string_view counter_reason);
  void CloseSocket(int fd);
  Counter* Closed(std::string_view reason);

  const GateOptions options_;
  MetricsRegistry* metrics_;
  ErrorBody error_body_;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  std::atomic<size_t> open_{0};
  Counter* accepted_ = nullptr;

  std::mutex mu_;  // guards parked_, stopping_, and every epoll_ctl on a parked socket
  std::unordered_map<int, Parked> parked_;
  bool stopping_ = false;
  std::vector<char> peek_;  // gate thread only

  std::mutex jobs_mu_;
  std::condition_variable jobs_cv_;
  std::deque<Job> jobs_;
  bool jobs_stop_ = false;

  std::thread gate_;
  std::vector<std::thread> workers_;
  bool started_ = false;
};

}  // namespace inferscope
