#include "cli/line_reader.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace inferscope {

bool LineReader::Fill() {
  if (eof_ || error_ != 0) return false;
  begin_ = 0;
  end_ = 0;
  if (in_ != nullptr) {
    const std::streamsize n = in_->rdbuf()->sgetn(buf_, sizeof buf_);
    if (n <= 0) {
      eof_ = true;
      return false;
    }
    end_ = static_cast<size_t>(n);
  } else {
    ssize_t n;
    do {
      n = ::read(fd_, buf_, sizeof buf_);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      error_ = errno;
      return false;
    }
    if (n == 0) {
      eof_ = true;
      return false;
    }
    end_ = static_cast<size_t>(n);
  }
  bytes_read_ += end_;
  return true;
}

LineReader::Outcome LineReader::Next(std::string_view* line) {
  line_.clear();
  bool too_long = false;
  bool any = false;  // some byte of this line (or its '\n') was read
  while (true) {
    if (begin_ == end_ && !Fill()) {
      if (error_ != 0) return Outcome::kError;
      if (!any) return Outcome::kEnd;
      break;  // a last line without '\n'
    }
    any = true;
    const char* start = buf_ + begin_;
    const void* nl = std::memchr(start, '\n', end_ - begin_);
    const size_t n =
        nl != nullptr ? static_cast<size_t>(static_cast<const char*>(nl) - start) : end_ - begin_;
    // Keep at most kMaxLineBytes; the rest of a longer line is consumed and dropped.
    if (!too_long) {
      if (line_.size() + n > kMaxLineBytes) {
        too_long = true;
        line_.clear();
      } else {
        line_.append(start, n);
      }
    }
    begin_ += n;
    if (nl != nullptr) {
      ++begin_;  // the '\n'
      break;
    }
  }
  ++line_number_;
  if (too_long) return Outcome::kTooLong;
  if (line_number_ == 1 && line_.rfind("\xEF\xBB\xBF", 0) == 0) line_.erase(0, 3);
  *line = line_;
  return Outcome::kLine;
}

}  // namespace inferscope
