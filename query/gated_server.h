#pragma once

// Internal to query/: the connection handling behind QueryServer.

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
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
  size_t max_connections_per_address = 256;
  size_t max_header_bytes = 16 * 1024;
  size_t max_body_bytes = 1024 * 1024;
  size_t max_url_bytes = 8'192;
  size_t max_pending_response_bytes = 64 * 1024 * 1024;
  size_t max_buffered_body_bytes = 64 * 1024 * 1024;
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
//  * the socket is parked in an epoll set (one "gate" thread) until a whole request — header and
//    body — has arrived: slow and idle sockets cost no thread and no polling, and a worker never
//    waits for a client's bytes. A request that fits the 16 KiB peek window (a header, and a
//    Content-Length body within it) is only peeked, and stays in the socket for the worker; a
//    larger body, a chunked one and one that ends with the connection are read by the gate into
//    memory (a chunked body decoded: the worker gets it with a Content-Length) within
//    read_timeout_ms of the header (else 408 REQUEST_TIMEOUT, reason read_timeout). A client that
//    sent "Expect: 100-continue" gets "100 Continue" from the gate when it starts reading the body;
//  * the bodies the gate holds (from the first byte read to the end of the worker's request) count
//    against max_buffered_body_bytes, as allocated; a body that would take the total over it is
//    answered 503 UNAVAILABLE with Retry-After (reason body_backlog) and its connection closed:
//    a Content-Length body before any of it is read when the budget has no room for its declared
//    size now, else (a chunked body, or others took the room meanwhile) when its buffer would
//    grow past it. A body is never refused while it is the only one held, so one body of
//    max_body_bytes always fits;
//  * a complete request goes to a fixed pool of `threads` workers (through a queue counted by an
//    eventfd in the workers' epoll set), which run httplib's Server::process_request on a stream
//    that reads the request from memory or from the socket (it is all there);
//  * a kept-alive connection then waits in the workers' own epoll set (EPOLLONESHOT, one MOD to
//    re-arm): whichever worker sees its next request complete within the peek window serves it on
//    the spot, with no hand-off to another thread; any other next request (incomplete, with a
//    body to read, or over a limit) goes back to the gate, so slow clients still cost the workers
//    nothing;
//  * a header not complete within header_timeout_ms, or a kept-alive connection idle for
//    idle_timeout_ms, is closed; connections beyond max_connections, or beyond
//    max_connections_per_address from one client address, are closed at accept (limit,
//    address_limit); a header over max_header_bytes gets 431, a request target over max_url_bytes
//    gets 414 (as soon as the request line shows it), a Content-Length over max_body_bytes gets
//    413 before any body byte is read, one that is not a decimal number 400; a chunked body gets
//    413 at the size line that takes its data over max_body_bytes, before that chunk is read, and
//    400 (bad_chunk) when its framing is malformed; a body that ends with the connection is cut,
//    413, once it is over max_body_bytes; all counted in
//    inferscope_http_connections_closed_total{reason};
//  * the header goes to httplib without Range, without a form Content-Type and without
//    "Expect: 100-continue" (HeaderForHttplib in gated_server.cc): the API ignores Range and
//    reads every body as JSON, and the gate answered the Expect;
//  * responses are written without waiting: what the socket does not take at once goes to the gate
//    with the connection, and the gate sends it as the client reads (EPOLLOUT), so a client that
//    reads slowly or not at all holds no worker (the slow-read attack). A response that makes no
//    progress for write_timeout_ms closes the connection (reason write_timeout); the gate holds at
//    most max_pending_response_bytes in all (what it holds, counted as allocated), and a response
//    beyond that closes its connection at once (reason send_backlog). StopGate lets the workers
//    finish, then the gate send what it holds for at most write_timeout_ms.
//    Limitation: both budgets are shared. Clients that keep sending (or reading) just enough to
//    make progress can hold them, up to max_connections_per_address connections per address;
//    then large requests or responses of others are refused (counted) rather than memory growing.
//    The per-address cap counts an IPv6 client's every address apart (a /64 has many).
//
// Lifecycle: construct → bind (httplib) → StartGate → listen_after_bind (httplib, own thread) →
// stop (httplib) → join that thread → StopGate (the destructor calls it).
// Concurrency: the accept thread parks sockets, the gate thread watches them, reads bodies and
// sweeps every deadline, workers serve them; the gate's socket table, the kept-alive table and the
// per-address counts each have a mutex. A kept-alive socket belongs to the one worker whose event
// fired until it re-arms it; its epoll tag carries a generation, so an event for a socket the
// sweep closed (its number since reused) is ignored.
class GatedServer : public httplib::Server {
 public:
  // `error_body(status, code, message, reason, retry_after_s)` renders the JSON error body for the
  // replies the gate sends itself (400, 408, 413, 414, 431, 503): `reason` is the reason the close
  // is counted under, `retry_after_s` > 0 the Retry-After the reply carries (else 0).
  using ErrorBody =
      std::function<std::string(int status, std::string_view code, std::string message,
                                std::string_view reason, int retry_after_s)>;

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

  // Connections accepted and not yet closed.
  size_t open_connections() const { return open_.load(std::memory_order_relaxed); }

 private:
  using SteadyTime = std::chrono::steady_clock::time_point;
  // A request body the gate reads (gated_server.cc).
  struct BodyRead;
  struct Parked {
    SteadyTime deadline;  // header, idle or body deadline
    bool idle;  // between requests (idle timeout) rather than inside a header (header timeout)
    std::unique_ptr<BodyRead> body;  // set while the gate reads the request's body
  };
  // A complete request for a worker: on the socket (`request_bytes`), or read by the gate.
  struct Job {
    int fd = -1;
    size_t request_bytes = 0;  // on the socket: header + body (0: the request is in `request`)
    std::string request;       // read by the gate: the header as received, then the body's data
    size_t header_bytes = 0;   // of `request`
    size_t held = 0;           // `request`'s allocation, counted in body_bytes_ until served
    bool close = false;        // close after the response (the body ended with the connection)
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
  // The gate starts reading the body of the request whose `header_bytes` header it peeked
  // (`peeked` bytes in peek_): takes the header off the socket, answers an Expect, reads.
  void StartBodyLocked(std::unordered_map<int, Parked>::iterator it, size_t peeked,
                       size_t header_bytes);
  // Reads what has arrived of the body; hands the request to a worker once it is complete.
  void ReadBodyLocked(std::unordered_map<int, Parked>::iterator it);
  // Makes room in `body`'s buffer for `needed` bytes in all, within the budget; false when the
  // budget has none.
  bool GrowLocked(BodyRead* body, size_t needed);
  // Answers 503 (reason body_backlog) and closes.
  void RefuseBacklogLocked(int fd, size_t peeked);
  // Takes a parked connection out of the gate's epoll set and queues `job` for the workers.
  void DispatchLocked(std::unordered_map<int, Parked>::iterator it, Job job);
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
  void Serve(Job job, bool kept, std::vector<char>* buffer, size_t peeked);
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
  // Consumes what the client sent (the `peeked` bytes), writes a canned error response (with
  // Retry-After when `retry_after_s` > 0) and closes.
  void RefuseLocked(int fd, size_t peeked, int status, std::string_view reason_phrase,
                    std::string_view code, std::string message, std::string_view counter_reason,
                    int retry_after_s = 0);
  // Closes a parked (or sending) connection; releases the body the gate read for it.
  void CloseLocked(int fd, std::string_view counter_reason);
  // Counts `fd`'s client address; false when that address is at max_connections_per_address.
  bool AdmitAddress(int fd);
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
  // Bytes of request bodies (and their headers) the gate read, held until a worker served them:
  // grown by the gate under mu_, released by the gate or a worker.
  std::atomic<size_t> body_bytes_{0};
  Counter* bodies_read_ = nullptr;
  bool stopping_ = false;
  bool workers_done_ = false;  // StopGate joined the workers; the gate drains sending_ and ends
  SteadyTime drain_deadline_;
  std::vector<char> peek_;          // gate thread only
  std::vector<char> body_scratch_;  // gate thread only: body bytes on their way to a BodyRead

  // Open connections by client address (the address's bytes; an IPv4-mapped IPv6 one as IPv4).
  std::mutex addresses_mu_;  // guards both; taken last (no other lock while it is held)
  std::unordered_map<std::string, size_t> per_address_;
  std::unordered_map<int, std::string> address_of_;

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
