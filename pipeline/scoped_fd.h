#pragma once

#include <unistd.h>

namespace inferscope {

// Closes a file descriptor when it goes out of scope (every return of a function that opened it).
// Negative descriptors, and the standard streams (0-2: a "-" input or output), are not closed.
// Not copyable.
class ScopedFd {
 public:
  explicit ScopedFd(int fd) : fd_(fd) {}
  ~ScopedFd() {
    if (fd_ > STDERR_FILENO) ::close(fd_);
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;

  int get() const { return fd_; }

 private:
  const int fd_;
};

}  // namespace inferscope
