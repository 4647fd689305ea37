#pragma once

#include <cstddef>
#include <cstdint>
#include <istream>
#include <string>
#include <string_view>

namespace inferscope {

// Reads lines of a text input with bounded memory: the line readers of `inferscope detect` and of
// `inferscope replay`'s CSV input. A line longer than kMaxLineBytes is read to its end without
// being kept and reported as kTooLong (so that one huge line, or /dev/zero, cannot grow memory
// without bound), and reading continues with the next line.
//
// Lifecycle: construct over a file descriptor (not owned, not closed) or an std::istream (for the
// fuzzer and tests), then call Next() until it returns kEnd or kError.
// Limitations: memory is kMaxLineBytes plus a 64 KiB buffer; an input without any newline, such as
// /dev/zero, is read forever (like `wc -l /dev/zero`), but memory does not grow.
class LineReader {
 public:
  // The longest line kept, in bytes, without its '\n' (docs/DETECTORS.md, cli/README.md).
  static constexpr size_t kMaxLineBytes = size_t{1} << 20;

  enum class Outcome {
    kLine,     // *line is the next line, without its '\n'
    kTooLong,  // the next line had more than kMaxLineBytes bytes; it was read and dropped
    kEnd,      // end of input
    kError,    // a read failed: error() is the errno (e.g. EISDIR for a directory)
  };

  explicit LineReader(int fd) : fd_(fd) {}
  explicit LineReader(std::istream& in) : in_(&in) {}
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // The next line. *line stays valid until the next call. A last line without '\n' is a line. A
  // UTF-8 byte order mark at the start of the input is not part of the first line (spreadsheets
  // write one before a CSV header).
  Outcome Next(std::string_view* line);

  // 1-based number of the line last returned by Next (kLine or kTooLong).
  int64_t line_number() const { return line_number_; }
  // Bytes read from the input so far (for a progress line).
  uint64_t bytes_read() const { return bytes_read_; }
  // The errno of the failed read after kError.
  int error() const { return error_; }

 private:
  // Refills buf_; false at end of input or on an error (error_ set).
  bool Fill();

  int fd_ = -1;
  std::istream* in_ = nullptr;
  char buf_[64 * 1024];
  size_t begin_ = 0;  // unread bytes are buf_[begin_, end_)
  size_t end_ = 0;
  std::string line_;
  int64_t line_number_ = 0;
  uint64_t bytes_read_ = 0;
  int error_ = 0;
  bool eof_ = false;
};

}  // namespace inferscope
