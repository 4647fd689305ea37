#pragma once

// Internal to query/: the connection handling behind QueryServer.

#include <httplib.h>

#include <atomic>
#include <chrono>
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
  size_t max_pending_response_bytes = 64 * 1024 * 1024;
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
//  * a request whose header is complete goes to a fixed pool of `threads` workers (through a
//    queue counted by an eventfd in the workers' epoll set), which run httplib's
//    Server::process_request on a stream with a read deadline;
//  * a kept-alive connection then waits in the workers' own epoll set (EPOLLONESHOT, one MOD to
//    re-arm): whichever worker sees its next request complete serves it on the spot, with no
//    hand-off to another thread; a next request that is not complete yet (or is over a limit) goes
//    back to the gate, so slow clients still cost the workers nothing;
//  * a header not complete within header_timeout_ms, or a kept-alive connection idle for
//    idle_timeout_ms, is closed; connections beyond max_connections are closed at accept; a header
//    over max_header_bytes gets 431, a request target over max_url_bytes gets 414 (as soon as the
//    request line shows it), a Content-Length over max_body_bytes gets 413 before any body byte is
//    read, one that is not a decimal number 400; a body of unknown length (Transfer-Encoding) is
//    cut once it is over max_body_bytes (a chunked body's data, counted as httplib reads it;
//    httplib 0.11 does not limit it) and answered 413 (BodyCutAtLimit); all counted in
//    inferscope_http_connections_closed_total{reason};
//  * the header goes to httplib without Range and without a form Content-Type
//    (HeaderForHttplib in gated_server.cc): the API ignores Range and reads every body as JSON;
//  * responses are written without waiting: what the socket does not take at once goes to the gate
//    with the connection, and the gate sends it as the client reads (EPOLLOUT), so a client that
//    reads slowly or not at all holds no worker (the slow-read attack). A response that makes no
//    progress for write_timeout_ms closes the connection (reason write_timeout); the gate holds at
//    most max_pending_response_bytes in all (what it holds, counted as allocated), and a response
//    beyond that closes its connection at once (reason send_backlog). StopGate lets the workers
//    finish, then the gate send what it holds for at most write_timeout_ms.
//    Limitation: the budget is shared. Clients that keep reading just enough to make progress
//    every write_timeout_ms (or reconnect and ask again) can hold it; then large responses to
//    others are refused (counted) rather than memory growing. Per-client limits belong in a proxy.
//
// Lifecycle: construct → bind (httplib) → StartGate → listen_after_bind (httplib, own thread) →
// stop (httplib) → join that thread → StopGate (the destructor calls it).
// Concurrency: the accept thread parks sockets, the gate thread watches them and sweeps every
// deadline, workers serve them; the gate's socket table and the kept-alive table each have a mutex.
// A kept-alive socket belongs to the one worker whose event fired until it re-arms it; its epoll
// tag carries a generation, so an event for a socket the sweep closed (its number since reused) is
// ignored.
class GatedServer : public httplib::Server {
 public:
  // `error_body(status, code, message)` renders the JSON error body for the replies the gate sends
  // itself (413, 414, 431).
  using ErrorBody = std::function<std::string(int, std::string_view, std::string)>;

  // A server's own answer to a whole request, bypassing httplib: given the request's bytes (a
  // head with no body), the socket and `*close` (true when the server is stopping), it returns
  // false to leave the request to httplib, or writes the whole HTTP response to `*response`, sets
  // `*close` when the connection must close after it, and returns true. Called on worker threads.
  using FastPath =
      std::function<bool(std::string_view request, int fd, std::string* response, bool* close)>;

  GatedServer(GateOptions options, MetricsRegistry* metrics, ErrorBody error_body);
  ~GatedServer() override;

  // Installs the fast path; call before StartGate.
  void SetFastPath(FastPath fast_path) { fast_path_ = std::move(fast_path); }

  // Sets the listen backlog of the bound socket (httplib listens with 5), starts the gate and
  // worker threads. Call after bind_to_port and before listen_after_bind.
  Status StartGate();
  // Closes every parked socket and joins the gate and workers; in-flight requests finish first.
  void StopGate();

  // Whether the request the calling worker thread serves had a body of unknown length
  // (Transfer-Encoding) that was cut at max_body_bytes; httplib then fails the request with 400,
  // and the error handler should answer 413 instead. Meaningful in httplib's handlers only.
  static bool BodyCutAtLimit();

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
  // A kept-alive connection in the workers' epoll set.
  struct Kept {
    SteadyTime deadline;      // idle timeout
    uint32_t generation = 0;  // in its epoll tag, so that a stale event for a reused fd is ignored
    bool armed = false;       // waiting for its next request (false: a worker holds it)
  };
  // A response the client has not taken yet, in the gate's epoll set (EPOLLOUT).
  struct Sending {
    std::string data;
    size_t sent = 0;
    size_t held = 0;      // data's capacity, as counted in sending_bytes_
    SteadyTime deadline;  // write_timeout_ms after the last progress
    bool close = false;   // close after it, else keep the connection for its next request
  };

  bool process_and_close_socket(socket_t sock) override;

  void Park(int fd, bool idle);
  void GateLoop();
  void OnReadable(int fd);
  // The gate's turn on a socket with a pending response; false when `fd` has none.
  bool OnWritable(int fd);
  // Ends a pending response: keeps the connection for its next request, or closes it (counted
  // under `counter_reason` when not empty) when it failed or was to close.
  void EndSendingLocked(std::unordered_map<int, Sending>::iterator it, bool failed,
                        std::string_view counter_reason);
  void Sweep(SteadyTime now);
  void WorkerLoop();
  // A worker's turn on a kept-alive socket whose epoll event carried `tag`: serves its next
  // request when it is complete, else moves the socket to the gate.
  void ServeKept(uint64_t tag, std::vector<char>* peek);
  // Puts a kept-alive socket (back) into the workers' epoll set; `registered`: it is there already
  // (held by this worker), else it came from the gate.
  void Keep(int fd, bool registered);
  // Takes a socket this worker holds out of the workers' set.
  void Unkeep(int fd);
  // `kept`: the socket is in the workers' set (held by this worker), else it came from the gate.
  // `peeked`: the socket's input as this worker peeked it (empty when it did not).
  void Serve(const Job& job, bool kept, std::vector<char>* buffer, size_t peeked);
  // The fast path's turn (see FastPath); false when it left the request to httplib.
  // `*peeked` is updated when it peeks.
  bool ServeFast(const Job& job, bool kept, bool stopping, std::vector<char>* buffer,
                 size_t* peeked);
  // Keeps the connection for its next request or closes it.
  void Finish(int fd, bool kept, bool close);
  // Sends `response` without waiting; what the socket does not take goes to the gate (Defer).
  void Respond(int fd, bool kept, std::string_view response, bool close);
  // Hands the connection and the unsent `rest` of its response to the gate, which sends it and
  // then does what Finish would.
  void Defer(int fd, bool kept, std::string rest, bool close);
  // Consumes what the client sent, writes a canned error response and closes.
  void RefuseLocked(int fd, size_t peeked, int status, std::string_view reason_phrase,
                    std::string_view code, std::string message, std::string_view counter_reason);
  void CloseLocked(int fd, std::string_view counter_reason);
  void CloseSocket(int fd);
  Counter* Closed(std::string_view reason);

  const GateOptions options_;
  MetricsRegistry* metrics_;
  ErrorBody error_body_;
  FastPath fast_path_;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  std::atomic<size_t> open_{0};
  Counter* accepted_ = nullptr;

  std::mutex mu_;  // guards parked_, stopping_, and every epoll_ctl on a parked socket
  std::unordered_map<int, Parked> parked_;
  std::unordered_map<int, Sending> sending_;
  std::atomic<size_t> sending_bytes_{0};  // bytes held in sending_ (written under mu_)
  Counter* deferred_ = nullptr;
  bool stopping_ = false;
  bool workers_done_ = false;  // StopGate joined the workers; the gate drains sending_ and ends
  SteadyTime drain_deadline_;
  std::vector<char> peek_;  // gate thread only

  // Requests the gate found complete, for the workers; jobs_fd_ (an EFD_SEMAPHORE eventfd in the
  // workers' epoll set) counts them.
  std::mutex jobs_mu_;
  std::deque<Job> jobs_;
  int jobs_fd_ = -1;

  // The workers' epoll set: kept-alive sockets (EPOLLONESHOT), jobs_fd_, and stop_fd_ (written
  // once at StopGate).
  int keep_epoll_fd_ = -1;
  int stop_fd_ = -1;
  std::mutex kept_mu_;  // guards kept_, next_generation_, every epoll_ctl on a kept socket
  std::unordered_map<int, Kept> kept_;
  uint32_t next_generation_ = 1;  // never 0 (tags 1 and 2 are the workers' own descriptors)

  std::thread gate_;
  std::vector<std::thread> workers_;
  bool started_ = false;
};

}  // namespace inferscope
