#pragma once

// A raw TCP client for the query server's tests: bytes exactly as written, responses exactly as
// sent (no HTTP library in between).

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace inferscope {

// A connected client socket, closed on destruction.
class RawSocket {
 public:
  // `receive_buffer` > 0 sets SO_RCVBUF before connecting (the kernel's minimum is ~2 KiB): a
  // client that advertises a small window and reads slowly, or never. `source_address` (an IPv4
  // loopback address such as "127.0.0.2") binds the client's end first: another client address.
  explicit RawSocket(int port, int receive_buffer = 0, const char* source_address = nullptr) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) return;
    if (receive_buffer > 0) {
      ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof(receive_buffer));
    }
    if (source_address != nullptr) {
      sockaddr_in source{};
      source.sin_family = AF_INET;
      if (::inet_pton(AF_INET, source_address, &source.sin_addr) != 1 ||
          ::bind(fd_, reinterpret_cast<sockaddr*>(&source), sizeof(source)) != 0) {
        ::close(fd_);
        fd_ = -1;
        return;
      }
    }
    timeval tv{10, 0};  // no read in these tests may hang the suite
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~RawSocket() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawSocket(const RawSocket&) = delete;
  RawSocket& operator=(const RawSocket&) = delete;

  bool ok() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  bool Send(std::string_view data) {
    return ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(data.size());
  }
  // Everything until the server closes (or 10 s pass), after what ReadResponse read ahead.
  std::string ReadToEnd() {
    std::string out = std::move(pending_);
    pending_.clear();
    char buf[4096];
    while (true) {
      ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) {
        closed_by_server_ = n == 0;
        break;
      }
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }
  // Whether the server sent anything not read yet, or closed, without waiting.
  bool HasInput() {
    char c;
    return !pending_.empty() || ::recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT) >= 0;
  }
  // Whether the last ReadToEnd ended because the server closed (not the 10 s receive timeout).
  bool closed_by_server() const { return closed_by_server_; }
  // One response of a keep-alive exchange: the head and Content-Length bytes of body. Bytes of a
  // next (pipelined) response read with it are kept for the next call.
  std::string ReadResponse() {
    char buf[4096];
    while (true) {
      const size_t end = pending_.find("\r\n\r\n");
      if (end != std::string::npos) {
        const size_t cl = pending_.find("Content-Length: ");
        const size_t len =
            cl == std::string::npos || cl > end ? 0 : std::stoul(pending_.substr(cl + 16));
        if (pending_.size() >= end + 4 + len) {
          std::string out = pending_.substr(0, end + 4 + len);
          pending_.erase(0, end + 4 + len);
          return out;
        }
      }
      ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) return std::exchange(pending_, std::string());
      pending_.append(buf, static_cast<size_t>(n));
    }
  }

 private:
  int fd_ = -1;
  bool closed_by_server_ = false;
  std::string pending_;  // read from the socket, not yet returned
};

}  // namespace inferscope
