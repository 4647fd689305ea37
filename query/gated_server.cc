#include "query/gated_server.h"

#include "pipeline/thread_name.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <optional>
#include <utility>

namespace inferscope {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

constexpr std::string_view kClosedTotal = "inferscope_http_connections_closed_total";
constexpr std::string_view kClosedHelp =
    "HTTP connections closed by the server's limits, by reason (limit: over max_connections at "
    "accept; address_limit: over max_connections_per_address at accept; header_timeout, "
    "idle_timeout, header_too_large, url_too_long, body_too_large (a Content-Length over "
    "max_body_bytes, or a chunked body or one ending with the connection cut there), bad_length (a "
    "Content-Length that is no decimal number), bad_chunk (a malformed chunked body), "
    "read_timeout (408: a body not complete within read_timeout_ms), body_backlog (503: the "
    "request bodies the gate holds were at max_buffered_body_bytes), write_timeout: a response "
    "made no progress for write_timeout_ms; send_backlog: the responses held for slow readers were "
    "at their limit)";
// Requests of at most this many bytes (header and Content-Length body) are only peeked by the
// gate, and read by their worker from the socket; larger bodies the gate reads into memory.
// Well below the loopback receive buffer.
constexpr size_t kPeekBytes = 16 * 1024;
// The most the gate reads of a body per recv.
constexpr size_t kBodySliceBytes = 64 * 1024;
// The first buffer for a body the gate reads (it doubles as bytes arrive, up to the request's
// most), so that a client trickling a large body holds little of the budget.
constexpr size_t kMinBodyBuffer = 4 * 1024;
// Retry-After of the 503 for a full body budget: bodies are read in milliseconds, or time out.
constexpr int kBacklogRetryAfterS = 1;
constexpr int kSweepIntervalMs = 50;
// Response bytes DeadlineStream gathers before sending (a typical JSON reply and its header fit).
constexpr size_t kWriteBufferBytes = 16 * 1024;
// The most the gate sends on one socket per event (it holds mu_ meanwhile), and the sent prefix
// it keeps before dropping it from the response it holds.
constexpr size_t kSendSliceBytes = 256 * 1024;

int RemainingMs(steady_clock::time_point deadline) {
  // Rounded up: a wait cut to 0 ms in the deadline's last millisecond would spin until it passes.
  auto left = std::chrono::ceil<milliseconds>(deadline - steady_clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, 1'000'000));
}

// Waits until `fd` has `events` or `deadline` passes.
bool WaitFor(int fd, short events, steady_clock::time_point deadline) {
  while (true) {
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, RemainingMs(deadline));
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) return false;
  }
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

// What the gate needs from a complete request header.
struct HeaderInfo {
  bool chunked = false;          // Transfer-Encoding present: length unknown
  bool chunked_coding = false;   // ... and it is "chunked", which the gate decodes (else the
                                 // body ends with the connection)
  bool bad_length = false;       // Content-Length not a decimal number
  bool expect_continue = false;  // the client waits for "100 Continue" before sending the body
  uint64_t content_length = 0;
};

HeaderInfo ParseHeader(std::string_view header) {
  HeaderInfo info;
  size_t pos = header.find("\r\n");  // skip the request line
  while (pos != std::string_view::npos && pos + 2 < header.size()) {
    size_t start = pos + 2;
    size_t end = header.find("\r\n", start);
    std::string_view line = header.substr(start, end == std::string_view::npos ? end : end - start);
    pos = end;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view name = Trim(line.substr(0, colon));
    std::string_view value = Trim(line.substr(colon + 1));
    if (EqualsIgnoreCase(name, "transfer-encoding")) {
      // httplib decodes header values (%xx) and compares the first Transfer-Encoding ignoring
      // case.
      if (!info.chunked) {
        info.chunked_coding =
            EqualsIgnoreCase(httplib::detail::decode_url(std::string(value), false), "chunked");
      }
      info.chunked = true;
    } else if (EqualsIgnoreCase(name, "expect")) {
      info.expect_continue = EqualsIgnoreCase(value, "100-continue");
    } else if (EqualsIgnoreCase(name, "content-length")) {
      uint64_t n = 0;
      auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec != std::errc() || ptr != value.data() + value.size()) {
        info.bad_length = true;
      } else {
        info.content_length = n;
      }
    }
  }
  return info;
}

// What the start of a socket's input says about its next request.
struct Inspection {
  enum Kind {
    kIncomplete,      // wait for more bytes
    kUrlTooLong,      // 414
    kHeaderTooLarge,  // 431
    kBodyTooLarge,    // 413
    kBadLength,       // 400: a Content-Length that is not a decimal number
    kReady,           // the whole request is in the peeked bytes: serve it
    kReadBody,        // the header is; the gate reads the body
  } kind = kIncomplete;
  // kReady: header + body; kReadBody: the header.
  size_t request_bytes = 0;
};

// Inspects the `peeked` bytes at `buf` (the gate's and the workers' peeks alike).
Inspection Inspect(const char* buf, size_t peeked, const GateOptions& options) {
  const std::string_view data(buf, std::min(peeked, options.max_header_bytes));
  // The request target's length, from the request line ("METHOD SP target SP version"), or from
  // how much of a request line has arrived without its end (method and version take < 32 bytes).
  const size_t line_end = data.find("\r\n");
  const std::string_view line = data.substr(0, line_end);
  const size_t target_start = line.find(' ');
  const size_t target_end = line.rfind(' ');
  const size_t target_bytes =
      line_end == std::string_view::npos
          ? (line.size() > options.max_url_bytes + 32 ? line.size() : 0)
          : (target_start != std::string_view::npos && target_end > target_start
                 ? target_end - target_start - 1
                 : 0);
  if (target_bytes > options.max_url_bytes) return {Inspection::kUrlTooLong, 0};
  const size_t end = data.find("\r\n\r\n");
  if (end == std::string_view::npos) {
    return {
        peeked > options.max_header_bytes ? Inspection::kHeaderTooLarge : Inspection::kIncomplete,
        0};
  }
  const size_t header_bytes = end + 4;
  const HeaderInfo info = ParseHeader(data.substr(0, header_bytes));
  if (info.content_length > options.max_body_bytes) return {Inspection::kBodyTooLarge, 0};
  // httplib would read "-1" as 2^64 - 1 (413) and "0x10" as 0.
  if (info.bad_length) return {Inspection::kBadLength, 0};
  // A body of unknown length (Transfer-Encoding) is read by the gate, which finds its end.
  if (info.chunked) return {Inspection::kReadBody, header_bytes};
  const size_t request_bytes = header_bytes + static_cast<size_t>(info.content_length);
  if (peeked >= request_bytes) return {Inspection::kReady, request_bytes};
  // Wait for the rest of a small body in the socket, unless the client waits for "100 Continue"
  // (the gate sends it when it starts reading the body).
  if (!info.expect_continue && request_bytes <= kPeekBytes) return {Inspection::kIncomplete, 0};
  return {Inspection::kReadBody, header_bytes};
}

// Tags of the workers' epoll set's own descriptors (a kept socket's tag holds its fd in the low
// 32 bits and a generation >= 1 in the high ones, so it is never one of these).
constexpr uint64_t kStopTag = 1;
constexpr uint64_t kJobsTag = 2;

// Reads (and drops) what the client sent, up to four buffers: a socket closed with unread input
// ends with a reset, which also discards the response bytes still queued for the client.
void DiscardInput(int fd, std::vector<char>* buf) {
  for (int i = 0; i < 4; ++i) {
    if (::recv(fd, buf->data(), buf->size(), MSG_DONTWAIT) <= 0) break;
  }
}

// Sends what the socket takes now, without waiting: the bytes sent, or -1 when the socket failed.
ssize_t SendNow(int fd, const char* ptr, size_t size) {
  size_t off = 0;
  while (off < size) {
    const ssize_t n = ::send(fd, ptr + off, size - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      off += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;
    } else {
      return -1;
    }
  }
  return static_cast<ssize_t>(off);
}

// The request header (request line to the blank line) as httplib is to read it: without the
// headers that httplib acts on but the API does not honour.
//  * Range: httplib would answer a part of any response, or several as multipart/byteranges built
//    in memory (2,700 ranges of "0-" turned the 131 KB OpenAPI document into 355 MB, past the
//    response budget), cut JSON error bodies, and answer 416. The API answers the whole
//    representation (200), as RFC 9110 allows a server that ignores Range.
//  * a '?' within the query: percent-encoded (see below).
//  * a form Content-Type (application/x-www-form-urlencoded, multipart/form-data): httplib would
//    decode the body into query parameters or files; the API reads every body as JSON, so that
//    `curl -d '{...}'` (which sends the form type) works.
//  * "Expect: 100-continue": the gate sent "100 Continue" when it started reading the body (or the
//    body had arrived), so httplib must not send another.
// With `body_length` (a body the gate read, chunked or not, whose data follows the header in
// memory), Content-Length and Transfer-Encoding are replaced by "Content-Length: body_length".
std::string HeaderForHttplib(std::string_view header, std::optional<size_t> body_length) {
  std::string out;
  out.reserve(header.size() + 32);
  size_t pos = 0;
  bool request_line = true;
  while (pos < header.size()) {
    size_t end = header.find("\r\n", pos);
    end = end == std::string_view::npos ? header.size() : end + 2;
    const std::string_view line = header.substr(pos, end - pos);
    pos = end;
    bool keep = true;
    if (request_line) {
      // A '?' inside the query (RFC 3986 allows it: `instance=vllm-?`, a glob) would end httplib's
      // query at it (a wrong answer) or make it refuse the request; percent-encoded, it decodes
      // back to '?' in the parameter's value.
      const size_t query = line.find('?');
      const size_t target_end = line.find(' ', line.find(' ') + 1);
      if (query != std::string_view::npos && query < target_end) {
        out.append(line.substr(0, query + 1));
        for (size_t i = query + 1; i < line.size(); ++i) {
          if (line[i] == '?' && i < target_end) {
            out.append("%3F");
          } else {
            out.push_back(line[i]);
          }
        }
        keep = false;
      }
    } else if (line == "\r\n") {  // the end of the header
      if (body_length) out.append("Content-Length: " + std::to_string(*body_length) + "\r\n");
    } else {
      const size_t colon = line.find(':');
      if (colon != std::string_view::npos) {
        const std::string_view name = Trim(line.substr(0, colon));
        if (EqualsIgnoreCase(name, "range")) {
          keep = false;
        } else if (EqualsIgnoreCase(name, "expect")) {
          std::string_view value = line.substr(colon + 1);
          if (value.ends_with("\r\n")) value.remove_suffix(2);
          keep = !EqualsIgnoreCase(Trim(value), "100-continue");
        } else if (body_length && (EqualsIgnoreCase(name, "content-length") ||
                                   EqualsIgnoreCase(name, "transfer-encoding"))) {
          keep = false;
        } else if (EqualsIgnoreCase(name, "content-type")) {
          // httplib decodes header values (%xx) before it looks at the type.
          std::string type = httplib::detail::decode_url(std::string(Trim(line.substr(colon + 1))),
                                                         /*convert_plus_to_space=*/false);
          std::transform(type.begin(), type.end(), type.begin(),
                         [](unsigned char c) { return std::tolower(c); });
          keep = type.rfind("application/x-www-form-urlencoded", 0) != 0 &&
                 type.rfind("multipart/form-data", 0) != 0;
        }
      }
    }
    request_line = false;
    if (keep) out.append(line);
  }
  return out;
}

// Decodes a chunked request body (RFC 9112 §7.1) as the gate reads it: appends the chunks' data
// to a buffer and finds where the body ends (after the last chunk and the trailer section, whose
// fields are dropped), so that a kept-alive connection's next request stays on the socket. The
// data is refused at the size line of the chunk that takes it over the limit, before that chunk's
// data is read. Strict where httplib 0.11 was lax: a size is hex digits only (no "0x", sign or
// leading blank; an extension after it is skipped) and a chunk's data must be followed by CRLF.
// A bare LF ends a line as CRLF does (RFC 9112 §2.2).
class ChunkedDecoder {
 public:
  explicit ChunkedDecoder(uint64_t max_data) : max_data_(max_data) {}

  // Decodes the `n` bytes at `p`, appending data to `*out`, and returns how many it took: all of
  // them, or those up to the byte at which the body ended (done()), went over the limit
  // (over_limit()) or turned out malformed (malformed()); after that, none.
  size_t Feed(const char* p, size_t n, std::string* out) {
    for (size_t i = 0; i < n; ++i) {
      if (state_ == State::kData) {  // the chunk's data in one step
        const size_t take = static_cast<size_t>(std::min<uint64_t>(remaining_, n - i));
        out->append(p + i, take);
        remaining_ -= take;
        i += take - 1;
        if (remaining_ == 0) state_ = State::kDataEnd;
        continue;
      }
      if (state_ == State::kDone || state_ == State::kOverLimit || state_ == State::kMalformed) {
        return i;
      }
      if (!Step(p[i])) return i + 1;
    }
    return n;
  }
  bool done() const { return state_ == State::kDone; }
  bool over_limit() const { return state_ == State::kOverLimit; }
  bool malformed() const { return state_ == State::kMalformed; }

 private:
  enum class State {
    kSize,      // the size's hex digits
    kSizeRest,  // after them: an extension, up to the end of the line
    kData,      // the chunk's data
    kDataEnd,   // the CRLF after it
    kTrailer,   // trailer field lines, up to an empty one
    kDone,
    kOverLimit,
    kMalformed,
  };
  static constexpr size_t kMaxLineBytes = 4'096;
  static constexpr size_t kMaxTrailerBytes = 16 * 1024;

  static int HexDigit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  // One byte outside a chunk's data; false when it ended the body or the decoding.
  bool Step(char c) {
    switch (state_) {
      case State::kSize: {
        const int digit = HexDigit(c);
        if (digit >= 0) {
          size_ = size_ * 16 + static_cast<uint64_t>(digit);
          ++digits_;
          if (data_ + size_ > max_data_) return End(State::kOverLimit);
          return LineByte();
        }
        if (digits_ == 0) return End(State::kMalformed);
        if (c == '\n') return EndSizeLine();
        if (c != ';' && c != '\r' && c != ' ' && c != '\t') return End(State::kMalformed);
        state_ = State::kSizeRest;
        return LineByte();
      }
      case State::kSizeRest:
        return c == '\n' ? EndSizeLine() : LineByte();
      case State::kDataEnd:
        if (c == '\r' && !cr_) {
          cr_ = true;
          return true;
        }
        if (c != '\n') return End(State::kMalformed);
        cr_ = false;
        state_ = State::kSize;
        return true;
      case State::kTrailer:
        if (c == '\n') {
          if (line_bytes_ == 0) return End(State::kDone);  // the empty line: the body's end
          line_bytes_ = 0;
          return true;
        }
        if (++trailer_bytes_ > kMaxTrailerBytes) return End(State::kMalformed);
        if (c == '\r') return true;
        return LineByte();
      default:
        return false;
    }
  }
  bool LineByte() { return ++line_bytes_ <= kMaxLineBytes || End(State::kMalformed); }
  bool EndSizeLine() {
    line_bytes_ = 0;
    if (size_ == 0) {
      state_ = State::kTrailer;  // the last chunk
    } else {
      data_ += size_;
      remaining_ = size_;
      state_ = State::kData;
    }
    size_ = 0;
    digits_ = 0;
    return true;
  }
  bool End(State state) {
    state_ = state;
    return false;
  }

  const uint64_t max_data_;
  State state_ = State::kSize;
  uint64_t size_ = 0;       // the size line's value so far
  size_t digits_ = 0;       // of the size
  uint64_t data_ = 0;       // data bytes of the chunks so far
  uint64_t remaining_ = 0;  // of the current chunk's data
  bool cr_ = false;         // kDataEnd: its CR seen
  size_t line_bytes_ = 0;
  size_t trailer_bytes_ = 0;
};

// httplib::Stream over a socket with an overall read deadline. httplib reads `head` (the request's
// header, already taken off the socket: `consumed` bytes in all) first, then `body` (a body the
// gate read), then the socket. Reads at most `limit` bytes of the socket in all, so a keep-alive
// connection's next request stays in the socket; the gate saw the whole request arrive, so reads
// do not wait for the client (the deadline is a safety net). Writes are buffered (up to
// kWriteBufferBytes) and sent by Flush, before any read of the socket and when the buffer fills:
// httplib writes a response's header and body separately, and one send of both saves a system call
// and a TCP segment per request. Sends never wait: what the socket does not take is kept, in order,
// for the gate (TakeUnsent).
class DeadlineStream final : public httplib::Stream {
 public:
  DeadlineStream(int fd, steady_clock::time_point read_deadline, std::string head,
                 std::string_view body, size_t consumed, size_t limit, size_t max_unsent)
      : fd_(fd),
        read_deadline_(read_deadline),
        head_(std::move(head)),
        body_(body),
        limit_(limit),
        max_unsent_(max_unsent),
        consumed_(consumed) {}

  bool is_readable() const override {
    if (head_pos_ < head_.size() || body_pos_ < body_.size() || pos_ < end_) return true;
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, 0) > 0;
  }
  // Never waits (httplib asks only before writing a content provider's data; none is used).
  bool is_writable() const override {
    pollfd p{fd_, POLLOUT, 0};
    return ::poll(&p, 1, 0) > 0;
  }

  ssize_t read(char* ptr, size_t size) override {
    if (head_pos_ < head_.size()) {
      const size_t n = std::min(size, head_.size() - head_pos_);
      std::memcpy(ptr, head_.data() + head_pos_, n);
      head_pos_ += n;
      return static_cast<ssize_t>(n);
    }
    if (body_pos_ < body_.size()) {
      const size_t n = std::min(size, body_.size() - body_pos_);
      std::memcpy(ptr, body_.data() + body_pos_, n);
      body_pos_ += n;
      return static_cast<ssize_t>(n);
    }
    if (pos_ == end_) {
      ssize_t n = Fill();
      if (n <= 0) return n;
    }
    const size_t n = std::min(size, end_ - pos_);
    std::memcpy(ptr, buf_.data() + pos_, n);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (out_len_ + size > out_.size()) {
      if (!Flush()) return -1;
      if (size > out_.size()) return Send(ptr, size) ? static_cast<ssize_t>(size) : -1;
    }
    std::memcpy(out_.data() + out_len_, ptr, size);
    out_len_ += size;
    return static_cast<ssize_t>(size);
  }

  // Sends what write() buffered; false when the socket failed or the response is over
  // max_pending_response_bytes unsent.
  bool Flush() {
    if (out_len_ == 0) return true;
    const bool sent = Send(out_.data(), out_len_);
    out_len_ = 0;
    return sent;
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    Address(&::getpeername, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    Address(&::getsockname, ip, port);
  }
  socket_t socket() const override { return fd_; }

  // Whether exactly the `limit` bytes of the request were read (so the next byte on the socket
  // starts the next request).
  bool read_whole_request() const {
    return consumed_ == limit_ && pos_ == end_ && head_pos_ == head_.size() &&
           body_pos_ == body_.size();
  }
  bool timed_out() const { return timed_out_; }
  // Whether a send failed because the unsent response grew over max_pending_response_bytes.
  bool too_large() const { return too_large_; }
  // The response bytes the socket did not take (after Flush), moved out.
  std::string TakeUnsent() { return std::move(unsent_); }

 private:
  bool Send(const char* ptr, size_t size) {
    if (unsent_.empty()) {
      const ssize_t n = SendNow(fd_, ptr, size);
      if (n < 0) return false;
      ptr += n;
      size -= static_cast<size_t>(n);
      if (size == 0) return true;
    }
    if (unsent_.size() + size > max_unsent_) {
      too_large_ = true;
      return false;
    }
    unsent_.append(ptr, size);
    return true;
  }

  ssize_t Fill() {
    // A reply written so far must reach the client before the stream reads on. A socket that
    // does not take it at once is full of an earlier response the client has not read: the
    // request fails rather than hold this worker until the client reads.
    if (!Flush() || !unsent_.empty()) return -1;
    if (consumed_ >= limit_) return 0;
    const size_t want = std::min(buf_.size(), limit_ - consumed_);
    while (true) {
      ssize_t n = ::recv(fd_, buf_.data(), want, MSG_DONTWAIT);
      if (n >= 0) {
        pos_ = 0;
        end_ = static_cast<size_t>(n);
        consumed_ += static_cast<size_t>(n);
        return n;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
      if (!WaitFor(fd_, POLLIN, read_deadline_)) {
        timed_out_ = true;
        return -1;
      }
    }
  }

  template <typename Fn>
  void Address(Fn fn, std::string& ip, int& port) const {
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    ip.clear();
    port = 0;
    if (fn(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return;
    char text[INET6_ADDRSTRLEN] = {};
    if (addr.ss_family == AF_INET) {
      auto* in = reinterpret_cast<sockaddr_in*>(&addr);
      ::inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
      port = ntohs(in->sin_port);
    } else if (addr.ss_family == AF_INET6) {
      auto* in = reinterpret_cast<sockaddr_in6*>(&addr);
      ::inet_ntop(AF_INET6, &in->sin6_addr, text, sizeof(text));
      port = ntohs(in->sin6_port);
    }
    ip = text;
  }

  const int fd_;
  const steady_clock::time_point read_deadline_;
  const std::string head_;
  size_t head_pos_ = 0;
  const std::string_view body_;
  size_t body_pos_ = 0;
  const size_t limit_;
  const size_t max_unsent_;
  size_t consumed_;
  std::array<char, 4096> buf_;
  size_t pos_ = 0, end_ = 0;
  std::array<char, kWriteBufferBytes> out_;
  size_t out_len_ = 0;
  std::string unsent_;
  bool timed_out_ = false;
  bool too_large_ = false;
};

// The client address of a connection, as the key of its per-address count: the IPv4 or IPv6
// address's bytes, an IPv4-mapped IPv6 address as IPv4; empty when unknown.
std::string PeerAddress(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return {};
  if (addr.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&addr);
    return std::string(reinterpret_cast<const char*>(&in->sin_addr), 4);
  }
  if (addr.ss_family == AF_INET6) {
    const auto* in = reinterpret_cast<const sockaddr_in6*>(&addr);
    const char* bytes = reinterpret_cast<const char*>(in->sin6_addr.s6_addr);
    return IN6_IS_ADDR_V4MAPPED(&in->sin6_addr) ? std::string(bytes + 12, 4)
                                                : std::string(bytes, 16);
  }
  return {};
}

// Runs httplib's per-connection task on the accept thread: our process_and_close_socket only
// parks the socket, which is quick.
class InlineQueue final : public httplib::TaskQueue {
 public:
  void enqueue(std::function<void()> fn) override { fn(); }
  void shutdown() override {}
};

}  // namespace

// A request body the gate reads (gate thread, under mu_): the header as received, then the body's
// data (a chunked body decoded), in a buffer that grows as bytes arrive, counted in body_bytes_.
struct GatedServer::BodyRead {
  enum class Framing {
    kLength,      // Content-Length
    kChunked,     // Transfer-Encoding: chunked
    kUntilClose,  // another transfer coding: the body ends with the connection
  };
  explicit BodyRead(size_t max_body) : decoder(max_body) {}

  Framing framing = Framing::kLength;
  std::string request;
  size_t header_bytes = 0;
  size_t limit = 0;        // the most `request` may hold
  uint64_t remaining = 0;  // kLength: body bytes still to come
  size_t held = 0;         // request.capacity(), as counted in body_bytes_
  bool close = false;      // kUntilClose: the body ended, and the connection with it
  ChunkedDecoder decoder;  // kChunked
};

GatedServer::GatedServer(GateOptions options, MetricsRegistry* metrics, ErrorBody error_body)
    : options_(options), metrics_(metrics), error_body_(std::move(error_body)) {
  new_task_queue = [] { return new InlineQueue(); };
  set_payload_max_length(options_.max_body_bytes);  // the gate refuses larger bodies first
  peek_.resize(std::max(kPeekBytes, options_.max_header_bytes + 1));
  body_scratch_.resize(kBodySliceBytes);
  accepted_ = metrics_->GetCounter("inferscope_http_connections_accepted_total",
                                   "HTTP connections accepted");
  metrics_->AddCallbackGauge(
      "inferscope_http_connections_open", "HTTP connections open (parked or being served)", {},
      [this] { return static_cast<double>(open_connections()); }, this);
  deferred_ = metrics_->GetCounter(
      "inferscope_http_responses_deferred_total",
      "HTTP responses the client's socket did not take at once, finished by the gate as it reads");
  metrics_->AddCallbackGauge(
      "inferscope_http_response_bytes_pending",
      "Response bytes the gate holds for clients slow to read them (at most "
      "max_pending_response_bytes)",
      {}, [this] { return static_cast<double>(sending_bytes_.load(std::memory_order_relaxed)); },
      this);
  bodies_read_ = metrics_->GetCounter(
      "inferscope_http_request_bodies_read_total",
      "HTTP request bodies the gate read before a worker took the request (a body beyond the "
      "16 KiB peek window, a chunked one, one ending with the connection, or one sent after "
      "\"100 Continue\")");
  metrics_->AddCallbackGauge(
      "inferscope_http_request_body_bytes_buffered",
      "Bytes of request bodies (with their headers) the gate read and holds until their request "
      "is served, as allocated (at most max_buffered_body_bytes, or one body alone)",
      {}, [this] { return static_cast<double>(body_bytes_.load(std::memory_order_relaxed)); },
      this);
  for (std::string_view reason :
       {"limit", "address_limit", "header_timeout", "idle_timeout", "header_too_large",
        "url_too_long", "body_too_large", "bad_length", "bad_chunk", "read_timeout", "body_backlog",
        "write_timeout", "send_backlog"}) {
    Closed(reason);  // so every reason is exported from the start
  }
}

GatedServer::~GatedServer() {
  StopGate();
  metrics_->RemoveCallbacks(this);
}

Counter* GatedServer::Closed(std::string_view reason) {
  return metrics_->GetCounter(kClosedTotal, kClosedHelp, {{"reason", std::string(reason)}});
}

Status GatedServer::StartGate() {
  if (started_) return Status::Internal("query server: gate already started");
  if (svr_sock_ == INVALID_SOCKET) return Status::Internal("query server: not bound");
  // httplib listens with a backlog of 5; listen() again on a listening socket changes it.
  if (::listen(svr_sock_, options_.listen_backlog) != 0) {
    return Status::IOError(std::string("query server: listen: ") + std::strerror(errno));
  }
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (epoll_fd_ < 0 || wake_fd_ < 0) {
    return Status::IOError(std::string("query server: epoll: ") + std::strerror(errno));
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = wake_fd_;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev) != 0) {
    return Status::IOError(std::string("query server: epoll_ctl: ") + std::strerror(errno));
  }
  keep_epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  stop_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  jobs_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC | EFD_SEMAPHORE);
  if (keep_epoll_fd_ < 0 || stop_fd_ < 0 || jobs_fd_ < 0) {
    return Status::IOError(std::string("query server: epoll: ") + std::strerror(errno));
  }
  for (const auto& [fd, tag] : {std::pair{stop_fd_, kStopTag}, std::pair{jobs_fd_, kJobsTag}}) {
    epoll_event worker_ev{};
    worker_ev.events = EPOLLIN;
    worker_ev.data.u64 = tag;
    if (::epoll_ctl(keep_epoll_fd_, EPOLL_CTL_ADD, fd, &worker_ev) != 0) {
      return Status::IOError(std::string("query server: epoll_ctl: ") + std::strerror(errno));
    }
  }
  started_ = true;
  gate_ = std::thread([this] { GateLoop(); });
  for (int i = 0; i < options_.threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
  return Status::Ok();
}

void GatedServer::StopGate() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;  // the gate takes no new request; parked connections wait to be closed
  }
  // Workers finish the request they serve (what its socket does not take goes to the gate, to
  // close after it), then see the stop descriptor.
  if (stop_fd_ >= 0) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(stop_fd_, &one, sizeof(one));
  }
  for (std::thread& t : workers_) t.join();
  workers_.clear();
  // The gate sends what it holds, for at most write_timeout_ms, then ends.
  {
    std::lock_guard<std::mutex> lock(mu_);
    workers_done_ = true;
    drain_deadline_ = steady_clock::now() + milliseconds(options_.write_timeout_ms);
  }
  if (wake_fd_ >= 0) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof(one));
  }
  if (gate_.joinable()) gate_.join();
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [fd, parked] : parked_) CloseSocket(fd);
  parked_.clear();
  for (const auto& [fd, sending] : sending_) CloseSocket(fd);
  sending_.clear();
  sending_bytes_ = 0;
  {
    std::lock_guard<std::mutex> jobs_lock(jobs_mu_);
    for (const Job& job : jobs_) CloseSocket(job.fd);
    jobs_.clear();
  }
  body_bytes_ = 0;  // the bodies of the parked connections and the queued jobs are gone
  {
    // Their last responses may still be queued in the kernel for a slow reader: consume what the
    // client sent (pipelined requests) so that close() ends with a FIN after them, not a reset
    // that discards them.
    std::lock_guard<std::mutex> kept_lock(kept_mu_);
    for (const auto& [fd, kept] : kept_) {
      DiscardInput(fd, &peek_);
      CloseSocket(fd);
    }
    kept_.clear();
  }
  for (int* fd : {&epoll_fd_, &wake_fd_, &keep_epoll_fd_, &stop_fd_, &jobs_fd_}) {
    if (*fd >= 0) ::close(*fd);
    *fd = -1;
  }
}

bool GatedServer::process_and_close_socket(socket_t sock) {
  accepted_->Inc();
  open_.fetch_add(1, std::memory_order_relaxed);
  // Only this (accept) thread adds connections, so the count cannot overshoot the cap.
  if (open_connections() > options_.max_connections) {
    Closed("limit")->Inc();
    CloseSocket(sock);
    return false;
  }
  if (!AdmitAddress(sock)) {
    Closed("address_limit")->Inc();
    CloseSocket(sock);
    return false;
  }
  int one = 1;
  ::setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  Park(sock, /*idle=*/false);
  return true;
}

void GatedServer::Park(int fd, bool idle) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_ || epoll_fd_ < 0) {
    CloseSocket(fd);
    return;
  }
  const int64_t timeout = idle ? options_.idle_timeout_ms : options_.header_timeout_ms;
  const bool first = parked_.empty();
  parked_[fd] = Parked{steady_clock::now() + milliseconds(timeout), idle, nullptr};
  // The gate sleeps without a timeout while nothing is parked: wake it so that it sweeps this
  // connection's deadline (the fd's readiness alone would not end an idle wait).
  if (first) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof(one));
  }
  // Edge-triggered: an incomplete header already in the buffer does not wake the gate again until
  // more bytes arrive. Adding reports data that is already there.
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
  ev.data.fd = fd;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    parked_.erase(fd);
    CloseSocket(fd);
  }
}

void GatedServer::GateLoop() {
  SetThreadName("http-gate");
  std::array<epoll_event, 256> events;
  SteadyTime next_sweep = steady_clock::now() + milliseconds(kSweepIntervalMs);
  while (true) {
    // Deadlines to sweep only while connections are parked; otherwise sleep until one is (Park
    // writes wake_fd_) or Stop: an idle query server does not wake up.
    bool any_parked;
    bool stopping;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping = stopping_;
      // Stopping: responses still held are sent until the workers are gone and either nothing is
      // left or the drain deadline passed; no new request is taken.
      if (stopping && workers_done_ &&
          (sending_.empty() || steady_clock::now() >= drain_deadline_)) {
        return;
      }
      any_parked = stopping || !parked_.empty() || !sending_.empty();
    }
    if (!any_parked) {
      std::lock_guard<std::mutex> lock(kept_mu_);
      any_parked = !kept_.empty();
    }
    int n = ::epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()),
                         any_parked ? RemainingMs(next_sweep) : -1);
    for (int i = 0; i < n; ++i) {
      if (events[i].data.fd == wake_fd_) {
        uint64_t count;
        [[maybe_unused]] ssize_t r = ::read(wake_fd_, &count, sizeof(count));
        continue;
      }
      if (!OnWritable(events[i].data.fd) && !stopping) OnReadable(events[i].data.fd);
    }
    const SteadyTime now = steady_clock::now();
    if (now >= next_sweep) {
      Sweep(now);
      next_sweep = now + milliseconds(kSweepIntervalMs);
    }
  }
}

void GatedServer::OnReadable(int fd) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = parked_.find(fd);
  if (it == parked_.end()) return;
  if (it->second.body) {
    ReadBodyLocked(it);
    return;
  }
  ssize_t n = ::recv(fd, peek_.data(), peek_.size(), MSG_PEEK | MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
  if (n <= 0) {  // the client closed (or reset) the connection
    CloseLocked(fd, {});
    return;
  }
  if (it->second.idle) {  // a kept-alive connection starts its next request
    it->second.idle = false;
    it->second.deadline = steady_clock::now() + milliseconds(options_.header_timeout_ms);
  }
  const size_t peeked = static_cast<size_t>(n);
  const Inspection inspected = Inspect(peek_.data(), peeked, options_);
  switch (inspected.kind) {
    case Inspection::kUrlTooLong:
      RefuseLocked(fd, peeked, 414, "URI Too Long", "URI_TOO_LONG",
                   "the request target (path and query) is longer than " +
                       std::to_string(options_.max_url_bytes) + " bytes",
                   "url_too_long");
      return;
    case Inspection::kHeaderTooLarge:
      RefuseLocked(fd, peeked, 431, "Request Header Fields Too Large", "VALIDATION_ERROR",
                   "the request header is larger than " +
                       std::to_string(options_.max_header_bytes) + " bytes",
                   "header_too_large");
      return;
    case Inspection::kBodyTooLarge:
      RefuseLocked(
          fd, peeked, 413, "Payload Too Large", "PAYLOAD_TOO_LARGE",
          "the request body is larger than " + std::to_string(options_.max_body_bytes) + " bytes",
          "body_too_large");
      return;
    case Inspection::kBadLength:
      RefuseLocked(fd, peeked, 400, "Bad Request", "VALIDATION_ERROR",
                   "the Content-Length header must be a decimal number of bytes", "bad_length");
      return;
    case Inspection::kIncomplete:
      return;  // wait for the rest
    case Inspection::kReadBody:
      StartBodyLocked(it, peeked, inspected.request_bytes);
      return;
    case Inspection::kReady:
      break;
  }
  Job job;
  job.fd = fd;
  job.request_bytes = inspected.request_bytes;
  DispatchLocked(it, std::move(job));
}

void GatedServer::DispatchLocked(std::unordered_map<int, Parked>::iterator it, Job job) {
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, it->first, nullptr);
  parked_.erase(it);
  {
    std::lock_guard<std::mutex> jobs_lock(jobs_mu_);
    jobs_.push_back(std::move(job));
  }
  uint64_t one = 1;  // a semaphore count: one worker takes the job
  [[maybe_unused]] ssize_t w = ::write(jobs_fd_, &one, sizeof(one));
}

void GatedServer::StartBodyLocked(std::unordered_map<int, Parked>::iterator it, size_t peeked,
                                  size_t header_bytes) {
  const int fd = it->first;
  const HeaderInfo info = ParseHeader(std::string_view(peek_.data(), header_bytes));
  auto body = std::make_unique<BodyRead>(options_.max_body_bytes);
  body->header_bytes = header_bytes;
  if (!info.chunked) {
    body->framing = BodyRead::Framing::kLength;
    body->remaining = info.content_length;
    body->limit = header_bytes + static_cast<size_t>(info.content_length);
    // A declared body the budget has no room for now is refused before any of it is read (and,
    // with "Expect: 100-continue", before the client sends it).
    const size_t held = body_bytes_.load();
    if (held > 0 && held + body->limit > options_.max_buffered_body_bytes) {
      RefuseBacklogLocked(fd, peeked);
      return;
    }
  } else if (info.chunked_coding) {
    body->framing = BodyRead::Framing::kChunked;
    body->limit = header_bytes + options_.max_body_bytes;
  } else {
    body->framing = BodyRead::Framing::kUntilClose;
    body->limit = header_bytes + options_.max_body_bytes + 1;  // one byte over: 413
  }
  if (!GrowLocked(body.get(), header_bytes)) {
    RefuseBacklogLocked(fd, peeked);
    return;
  }
  body->request.assign(peek_.data(), header_bytes);
  it->second.body = std::move(body);
  it->second.deadline = steady_clock::now() + milliseconds(options_.read_timeout_ms);
  // Take the header off the socket (it was peeked).
  if (::recv(fd, peek_.data(), header_bytes, MSG_DONTWAIT) != static_cast<ssize_t>(header_bytes)) {
    CloseLocked(fd, {});
    return;
  }
  if (info.expect_continue) {
    constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    if (SendNow(fd, kContinue.data(), kContinue.size()) != static_cast<ssize_t>(kContinue.size())) {
      CloseLocked(fd, {});
      return;
    }
  }
  ReadBodyLocked(it);
}

void GatedServer::ReadBodyLocked(std::unordered_map<int, Parked>::iterator it) {
  const int fd = it->first;
  BodyRead& body = *it->second.body;
  const bool chunked = body.framing == BodyRead::Framing::kChunked;
  // Edge-triggered: read until the socket has nothing more, or the body is complete.
  while (!(body.framing == BodyRead::Framing::kLength && body.remaining == 0) &&
         !(chunked && body.decoder.done()) && !body.close) {
    size_t want = body_scratch_.size();
    if (body.framing == BodyRead::Framing::kLength) {
      want = static_cast<size_t>(std::min<uint64_t>(want, body.remaining));
    } else if (body.framing == BodyRead::Framing::kUntilClose) {
      want = std::min(want, body.limit - body.request.size());
    }
    // A chunked body is peeked, and only what the decoder took is consumed: the bytes after its
    // end belong to the connection's next request.
    const ssize_t n =
        ::recv(fd, body_scratch_.data(), want, chunked ? MSG_PEEK | MSG_DONTWAIT : MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;  // wait for more
    if (n == 0 && body.framing == BodyRead::Framing::kUntilClose) {
      body.close = true;  // the body ends with the connection
      break;
    }
    if (n <= 0) {  // the client went away (or reset) before its body was complete
      CloseLocked(fd, {});
      return;
    }
    const size_t got = static_cast<size_t>(n);
    if (!GrowLocked(&body, std::min(body.request.size() + got, body.limit))) {
      RefuseBacklogLocked(fd, chunked ? got : 0);
      return;
    }
    if (!chunked) {
      body.request.append(body_scratch_.data(), got);
      if (body.framing == BodyRead::Framing::kLength) {
        body.remaining -= got;
      } else if (body.request.size() - body.header_bytes > options_.max_body_bytes) {
        RefuseLocked(
            fd, 0, 413, "Payload Too Large", "PAYLOAD_TOO_LARGE",
            "the request body is larger than " + std::to_string(options_.max_body_bytes) + " bytes",
            "body_too_large");
        return;
      }
      continue;
    }
    const size_t taken = body.decoder.Feed(body_scratch_.data(), got, &body.request);
    if (body.decoder.over_limit()) {
      RefuseLocked(
          fd, got, 413, "Payload Too Large", "PAYLOAD_TOO_LARGE",
          "the request body is larger than " + std::to_string(options_.max_body_bytes) + " bytes",
          "body_too_large");
      return;
    }
    if (body.decoder.malformed()) {
      RefuseLocked(fd, got, 400, "Bad Request", "VALIDATION_ERROR",
                   "the chunked request body is malformed (RFC 9112 section 7.1: hex chunk sizes, "
                   "CRLF after each chunk's data, a last chunk of size 0)",
                   "bad_chunk");
      return;
    }
    if (::recv(fd, body_scratch_.data(), taken, MSG_DONTWAIT) != static_cast<ssize_t>(taken)) {
      CloseLocked(fd, {});
      return;
    }
  }
  // Complete: the request, and its share of the budget, go to a worker.
  Job job;
  job.fd = fd;
  job.request = std::move(body.request);
  job.header_bytes = body.header_bytes;
  job.held = body.held;
  job.close = body.close;
  body.held = 0;
  bodies_read_->Inc();
  DispatchLocked(it, std::move(job));
}

bool GatedServer::GrowLocked(BodyRead* body, size_t needed) {
  std::string& buffer = body->request;
  if (needed <= buffer.capacity()) return true;
  // Doubling, so that a trickled body holds at most twice what arrived, up to the request's most.
  const size_t want =
      std::min(body->limit, std::max({needed, 2 * buffer.capacity(), kMinBodyBuffer}));
  const size_t held = body_bytes_.load();
  // The others' share; a body alone is never refused, so that one of max_body_bytes always fits.
  const size_t others = held - body->held;
  if (others > 0 && others + want > options_.max_buffered_body_bytes) return false;
  std::string bigger;
  bigger.reserve(want);
  bigger.append(buffer);
  buffer.swap(bigger);
  body_bytes_ += buffer.capacity() - body->held;
  body->held = buffer.capacity();
  return true;
}

void GatedServer::RefuseBacklogLocked(int fd, size_t peeked) {
  RefuseLocked(fd, peeked, 503, "Service Unavailable", "UNAVAILABLE",
               "the server is reading as many request bodies as it may hold "
               "(max_buffered_body_bytes); retry after " +
                   std::to_string(kBacklogRetryAfterS) + " s",
               "body_backlog", kBacklogRetryAfterS);
}

bool GatedServer::OnWritable(int fd) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sending_.find(fd);
  if (it == sending_.end()) return false;
  Sending& s = it->second;
  const ssize_t n =
      SendNow(fd, s.data.data() + s.sent, std::min(s.data.size() - s.sent, kSendSliceBytes));
  if (n > 0) {
    s.sent += static_cast<size_t>(n);
    s.deadline = steady_clock::now() + milliseconds(options_.write_timeout_ms);
  }
  if (n >= 0 && s.sent < s.data.size()) {
    // Hold only what is left (a client that stops near the end keeps little of the budget).
    if (s.sent >= kSendSliceBytes && s.sent >= s.data.size() / 2) {
      s.data.erase(0, s.sent);
      s.data.shrink_to_fit();
      s.sent = 0;
      sending_bytes_ -= s.held - s.data.capacity();
      s.held = s.data.capacity();
    }
    return true;  // wait for room (level-triggered EPOLLOUT comes again)
  }
  EndSendingLocked(it, /*failed=*/n < 0, {});
  return true;
}

void GatedServer::EndSendingLocked(std::unordered_map<int, Sending>::iterator it, bool failed,
                                   std::string_view counter_reason) {
  const int fd = it->first;
  const bool close = failed || it->second.close || stopping_;
  sending_bytes_ -= it->second.held;
  sending_.erase(it);
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  if (close) {
    CloseLocked(fd, counter_reason);
  } else {
    Keep(fd, /*registered=*/false);  // the next request, as after any response
  }
}

void GatedServer::Sweep(SteadyTime now) {
  std::lock_guard<std::mutex> lock(mu_);
  enum class Wait { kHeader, kIdle, kBody };
  std::vector<std::pair<int, Wait>> expired;
  for (const auto& [fd, parked] : parked_) {
    if (parked.deadline > now) continue;
    expired.emplace_back(fd, parked.body ? Wait::kBody : parked.idle ? Wait::kIdle : Wait::kHeader);
  }
  for (const auto& [fd, wait] : expired) {
    if (wait == Wait::kBody) {
      RefuseLocked(fd, 0, 408, "Request Timeout", "REQUEST_TIMEOUT",
                   "the request body did not arrive within " +
                       std::to_string(options_.read_timeout_ms) + " ms",
                   "read_timeout");
    } else {
      CloseLocked(fd, wait == Wait::kIdle ? "idle_timeout" : "header_timeout");
    }
  }
  std::vector<std::pair<int, bool>> unsent;
  for (const auto& [fd, sending] : sending_) {
    if (sending.deadline <= now) unsent.emplace_back(fd, false);
  }
  for (const auto& [fd, unused] : unsent) {
    EndSendingLocked(sending_.find(fd), /*failed=*/true, "write_timeout");
  }
  // Kept-alive sockets idle past their deadline (one a worker holds is not armed, so not closed
  // here).
  std::lock_guard<std::mutex> kept_lock(kept_mu_);
  for (auto it = kept_.begin(); it != kept_.end();) {
    if (!it->second.armed || it->second.deadline > now) {
      ++it;
      continue;
    }
    const int fd = it->first;
    it = kept_.erase(it);
    ::epoll_ctl(keep_epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
    Closed("idle_timeout")->Inc();
    CloseSocket(fd);
  }
}

void GatedServer::WorkerLoop() {
  SetThreadName("http-worker");
  std::vector<char> peek(peek_.size());
  while (true) {
    epoll_event ev{};
    const int n = ::epoll_wait(keep_epoll_fd_, &ev, 1, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return;
    if (n == 0) continue;
    const uint64_t tag = ev.data.u64;
    if (tag == kStopTag) return;  // level-triggered and never read: every worker sees it
    if (tag == kJobsTag) {
      uint64_t count = 0;  // EFD_SEMAPHORE: takes one job's count, or EAGAIN when another did
      if (::read(jobs_fd_, &count, sizeof(count)) != sizeof(count)) continue;
      Job job;
      {
        std::lock_guard<std::mutex> lock(jobs_mu_);
        if (jobs_.empty()) continue;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      Serve(std::move(job), /*kept=*/false, &peek, /*peeked=*/0);
      continue;
    }
    ServeKept(tag, &peek);
  }
}

void GatedServer::ServeKept(uint64_t tag, std::vector<char>* peek) {
  const int fd = static_cast<int>(tag & 0xffffffffu);
  {
    std::lock_guard<std::mutex> lock(kept_mu_);
    auto it = kept_.find(fd);
    // Closed by the sweep since (and perhaps the number reused): not ours.
    if (it == kept_.end() || it->second.generation != (tag >> 32) || !it->second.armed) return;
    it->second.armed = false;  // this worker holds it (EPOLLONESHOT: no other event until re-armed)
  }
  ssize_t n = ::recv(fd, peek->data(), peek->size(), MSG_PEEK | MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
    Keep(fd, /*registered=*/true);  // nothing to read after all
    return;
  }
  if (n <= 0) {  // the client closed (or reset) the connection
    Unkeep(fd);
    CloseSocket(fd);
    return;
  }
  const Inspection inspected = Inspect(peek->data(), static_cast<size_t>(n), options_);
  if (inspected.kind != Inspection::kReady) {
    // An incomplete (or refused) request, or one whose body the gate is to read, waits in the
    // gate, as a new connection's does, so slow clients cost the workers nothing; the gate
    // refuses what is over the limits.
    Unkeep(fd);
    Park(fd, /*idle=*/false);
    return;
  }
  Job job;
  job.fd = fd;
  job.request_bytes = inspected.request_bytes;
  Serve(std::move(job), /*kept=*/true, peek, static_cast<size_t>(n));
}

void GatedServer::Keep(int fd, bool registered) {
  std::lock_guard<std::mutex> lock(kept_mu_);
  const bool first = kept_.empty();
  Kept& k = kept_[fd];
  if (!registered) {
    k.generation = next_generation_;
    if (++next_generation_ == 0) next_generation_ = 1;
  }
  k.deadline = steady_clock::now() + milliseconds(options_.idle_timeout_ms);
  k.armed = true;
  epoll_event ev{};
  // Level-triggered, one event until re-armed: a pipelined request already buffered fires at once.
  ev.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT;
  ev.data.u64 = (uint64_t{k.generation} << 32) | static_cast<uint32_t>(fd);
  if (::epoll_ctl(keep_epoll_fd_, registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) != 0) {
    kept_.erase(fd);
    if (registered) ::epoll_ctl(keep_epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
    CloseSocket(fd);
    return;
  }
  // The gate sweeps idle deadlines only while it has something to sweep.
  if (first) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t w = ::write(wake_fd_, &one, sizeof(one));
  }
}

void GatedServer::Unkeep(int fd) {
  std::lock_guard<std::mutex> lock(kept_mu_);
  kept_.erase(fd);
  ::epoll_ctl(keep_epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
}

void GatedServer::Serve(Job job, bool kept, std::vector<char>* buffer, size_t peeked) {
  bool stopping;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping = stopping_;
  }
  const bool read_by_gate = !job.request.empty();
  if (!read_by_gate && fast_path_ && ServeFast(job, kept, stopping, buffer, &peeked)) return;
  // httplib gets the header rewritten (HeaderForHttplib), then the body.
  std::string head;
  std::string_view body;
  size_t consumed = 0;  // bytes of the request taken off the socket
  if (read_by_gate) {
    const std::string_view request(job.request);
    body = request.substr(job.header_bytes);
    head = HeaderForHttplib(request.substr(0, job.header_bytes), body.size());
    consumed = job.request_bytes = request.size();  // nothing more of it on the socket
  } else {
    // The whole request is on the socket (the gate or ServeKept saw it): take the header off it.
    if (peeked == 0) {
      const ssize_t n = ::recv(job.fd, buffer->data(), buffer->size(), MSG_PEEK | MSG_DONTWAIT);
      peeked = n > 0 ? static_cast<size_t>(n) : 0;
    }
    const std::string_view input(buffer->data(), std::min(peeked, options_.max_header_bytes));
    const size_t header_end = input.find("\r\n\r\n");
    if (header_end == std::string_view::npos) {  // not as inspected (the client reset?)
      Finish(job.fd, kept, /*close=*/true);
      return;
    }
    consumed = header_end + 4;
    head = HeaderForHttplib(input.substr(0, consumed), std::nullopt);
    if (::recv(job.fd, buffer->data(), consumed, MSG_DONTWAIT) != static_cast<ssize_t>(consumed)) {
      Finish(job.fd, kept, /*close=*/true);
      return;
    }
  }
  // What the socket does not take may be held up to what is left of the gate's budget.
  const size_t held = std::min(sending_bytes_.load(), options_.max_pending_response_bytes);
  DeadlineStream stream(job.fd, steady_clock::now() + milliseconds(options_.read_timeout_ms),
                        std::move(head), body, consumed, job.request_bytes,
                        options_.max_pending_response_bytes - held);
  bool connection_closed = false;
  const bool ok =
      process_request(stream, /*close_connection=*/stopping, connection_closed, nullptr);
  if (job.held > 0) {  // the body the gate read is no longer needed
    std::string().swap(job.request);
    body_bytes_ -= job.held;
    job.held = 0;
  }
  // Send the reply even when httplib gives up on the connection (its 400s and the like).
  const bool flushed = stream.Flush();
  if (stream.timed_out()) Closed("read_timeout")->Inc();
  if (stream.too_large()) Closed("send_backlog")->Inc();
  // Keep the connection only when the request was consumed exactly (not cut by the read timeout,
  // no unread body, nothing of a pipelined next request buffered here).
  const bool close = !ok || !flushed || connection_closed || stopping || job.close ||
                     stream.timed_out() || !stream.read_whole_request();
  std::string unsent = stream.TakeUnsent();
  if (flushed && !stream.too_large() && !unsent.empty()) {
    Defer(job.fd, kept, std::move(unsent), close);
  } else {
    Finish(job.fd, kept, close);
  }
}

bool GatedServer::ServeFast(const Job& job, bool kept, bool stopping, std::vector<char>* buffer,
                            size_t* peeked) {
  // Only a request whose bytes are all known (a head with no body, as Inspect measured it).
  if (job.request_bytes == 0 || job.request_bytes > buffer->size()) return false;
  if (*peeked < job.request_bytes) {  // a job from the gate: this worker has not looked yet
    const ssize_t n = ::recv(job.fd, buffer->data(), buffer->size(), MSG_PEEK | MSG_DONTWAIT);
    *peeked = n > 0 ? static_cast<size_t>(n) : 0;
    if (n < static_cast<ssize_t>(job.request_bytes)) return false;
  }
  thread_local std::string response;
  bool close = stopping;
  if (!fast_path_(std::string_view(buffer->data(), job.request_bytes), job.fd, &response, &close)) {
    return false;
  }
  // Take the request off the socket (it is there: it was peeked), then answer in one send.
  const ssize_t taken = ::recv(job.fd, buffer->data(), job.request_bytes, MSG_DONTWAIT);
  if (taken != static_cast<ssize_t>(job.request_bytes)) {
    Finish(job.fd, kept, /*close=*/true);
    return true;
  }
  Respond(job.fd, kept, response, close);
  return true;
}

void GatedServer::Respond(int fd, bool kept, std::string_view response, bool close) {
  const ssize_t n = SendNow(fd, response.data(), response.size());
  if (n < 0 || static_cast<size_t>(n) == response.size()) {
    Finish(fd, kept, n < 0 || close);
    return;
  }
  Defer(fd, kept, std::string(response.substr(static_cast<size_t>(n))), close);
}

void GatedServer::Defer(int fd, bool kept, std::string rest, bool close) {
  if (kept) Unkeep(fd);
  rest.shrink_to_fit();  // the budget counts what is held
  std::lock_guard<std::mutex> lock(mu_);
  if (epoll_fd_ < 0) {
    CloseSocket(fd);
    return;
  }
  if (sending_bytes_ + rest.capacity() > options_.max_pending_response_bytes) {
    Closed("send_backlog")->Inc();
    CloseSocket(fd);
    return;
  }
  deferred_->Inc();
  // The gate sleeps without a timeout while it holds nothing: wake it to sweep this deadline.
  if (parked_.empty() && sending_.empty()) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof(one));
  }
  const SteadyTime now = steady_clock::now();
  Sending& s = sending_[fd];
  s.data = std::move(rest);
  s.sent = 0;
  s.held = s.data.capacity();
  sending_bytes_ += s.held;
  s.deadline = now + milliseconds(options_.write_timeout_ms);
  s.close = close || stopping_;  // a stopping server sends what a worker answered, then closes
  // Level-triggered EPOLLOUT (EPOLLERR and EPOLLHUP come unasked): no EPOLLRDHUP, since a client
  // that shut its side down still reads, and the event would repeat while it does.
  epoll_event ev{};
  ev.events = EPOLLOUT;
  ev.data.fd = fd;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    sending_bytes_ -= s.held;
    sending_.erase(fd);
    CloseSocket(fd);
  }
}

void GatedServer::Finish(int fd, bool kept, bool close) {
  if (close) {
    if (kept) Unkeep(fd);
    CloseSocket(fd);
    return;
  }
  // The next request on this connection is served by whichever worker sees it complete.
  Keep(fd, kept);
}

void GatedServer::RefuseLocked(int fd, size_t peeked, int status, std::string_view reason_phrase,
                               std::string_view code, std::string message,
                               std::string_view counter_reason, int retry_after_s) {
  // Consume what was peeked, so that closing with unread data does not reset the connection
  // before the client reads the reply.
  while (peeked > 0) {
    const ssize_t n = ::recv(fd, peek_.data(), std::min(peeked, peek_.size()), MSG_DONTWAIT);
    if (n <= 0) break;
    peeked -= static_cast<size_t>(n);
  }
  Closed(counter_reason)->Inc();  // before the reply: the client may look as soon as it reads it
  const std::string body =
      error_body_(status, code, std::move(message), counter_reason, retry_after_s);
  std::string reply =
      "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason_phrase) +
      "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
      (retry_after_s > 0 ? "\r\nRetry-After: " + std::to_string(retry_after_s) : std::string()) +
      "\r\nConnection: close\r\n\r\n" + body;
  [[maybe_unused]] ssize_t sent =
      ::send(fd, reply.data(), reply.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  ::shutdown(fd, SHUT_WR);
  CloseLocked(fd, {});
}

void GatedServer::CloseLocked(int fd, std::string_view counter_reason) {
  // Consume what the client sent and the gate only peeked, so that close() ends the connection
  // with a FIN the client reads as end of stream, not a reset. (Gate thread only: uses peek_.)
  DiscardInput(fd, &peek_);
  if (auto it = parked_.find(fd); it != parked_.end()) {
    if (it->second.body) body_bytes_ -= it->second.body->held;
    parked_.erase(it);
  }
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  if (!counter_reason.empty()) Closed(counter_reason)->Inc();
  CloseSocket(fd);
}

bool GatedServer::AdmitAddress(int fd) {
  std::string address = PeerAddress(fd);
  std::lock_guard<std::mutex> lock(addresses_mu_);
  size_t& count = per_address_[address];
  if (count >= options_.max_connections_per_address) return false;
  ++count;
  address_of_[fd] = std::move(address);
  return true;
}

void GatedServer::CloseSocket(int fd) {
  {
    // Before close(): the number may be reused by the next accept as soon as it is closed.
    std::lock_guard<std::mutex> lock(addresses_mu_);
    if (auto it = address_of_.find(fd); it != address_of_.end()) {
      auto count = per_address_.find(it->second);
      if (count != per_address_.end() && --count->second == 0) per_address_.erase(count);
      address_of_.erase(it);
    }
  }
  ::close(fd);
  open_.fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace inferscope
