#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "pipeline/status.h"

namespace inferscope {

// The recording file of `inferscope record` and `inferscope replay` (docs/PROTOCOL.md,
// "Recordings"): protocol messages as they arrived, each with its arrival time.
//
// Format, integers big-endian:
//   header  "ISRECORD" (8 bytes), version u32 (1), flags u32 (0)
//   record  [arrival u64: ns since the Unix epoch][topic length u32][payload length u32]
//           [topic][payload][FNV-1a 64 of the record's bytes before it, u64]
// A topic is at most kMaxRecordedTopicBytes, a payload at most kMaxRecordedPayloadBytes; a
// longer length is corruption (so a reader never allocates more than that).
inline constexpr std::string_view kRecordingMagic = "ISRECORD";
inline constexpr uint32_t kRecordingVersion = 1;
inline constexpr size_t kRecordingHeaderBytes = 16;
inline constexpr size_t kRecordHeaderBytes = 16;  // arrival, topic length, payload length
inline constexpr size_t kRecordTrailerBytes = 8;  // the checksum
inline constexpr uint32_t kMaxRecordedTopicBytes = 64 * 1024;
inline constexpr uint32_t kMaxRecordedPayloadBytes = 256u << 20;

// True when the file at `path` starts with kRecordingMagic (whatever its version).
bool IsRecordingFile(const std::string& path);

// Appends records to a new recording file.
//
// Lifecycle: Create (writes the header) → Append... → Close. Records are buffered (stdio); Flush
// hands them to the kernel, Close also fsyncs. A process killed between flushes leaves a file
// whose last record may be torn; RecordingReader reports it with its offset.
// Concurrency: not thread-safe.
class RecordingWriter {
 public:
  // Creates `path` (refused when it exists, unless `overwrite`); the error names the path.
  static Result<std::unique_ptr<RecordingWriter>> Create(const std::string& path, bool overwrite);
  ~RecordingWriter();
  RecordingWriter(const RecordingWriter&) = delete;
  RecordingWriter& operator=(const RecordingWriter&) = delete;

  // Appends one message; InvalidArgument when the topic or payload is over the limits (nothing is
  // written), IOError when the write fails.
  [[nodiscard]] Status Append(int64_t arrival_ns, std::string_view topic, std::string_view payload);
  [[nodiscard]] Status Flush();
  // Flushes, fsyncs and closes; later calls return OK and do nothing.
  [[nodiscard]] Status Close();

  uint64_t records() const { return records_; }
  uint64_t bytes() const { return bytes_; }  // including the header

 private:
  RecordingWriter(std::string path, std::FILE* file) : path_(std::move(path)), file_(file) {}
  std::string path_;
  std::FILE* file_;
  uint64_t records_ = 0;
  uint64_t bytes_ = 0;
};

// One record as read: views into the reader's buffers, valid until the next Next().
struct RecordedMessage {
  int64_t arrival_ns = 0;
  std::string_view topic;
  std::string_view payload;
  uint64_t offset = 0;  // of the record in the file
};

// Reads a recording record by record, with memory bounded by the largest record.
//
// Next() returns false at the end of the file or at the first record that is torn or corrupt;
// status() then says which (OK at a clean end; Corruption naming the file, the record's offset and
// what is wrong otherwise). Nothing after a bad record is returned.
// Concurrency: not thread-safe.
class RecordingReader {
 public:
  // Opens `path` and checks the header: IOError when it cannot be read, Corruption (naming the
  // offset) for a missing magic or a version this build does not read.
  static Result<std::unique_ptr<RecordingReader>> Open(const std::string& path);
  ~RecordingReader();
  RecordingReader(const RecordingReader&) = delete;
  RecordingReader& operator=(const RecordingReader&) = delete;

  bool Next(RecordedMessage* out);
  const Status& status() const { return status_; }
  uint64_t offset() const { return offset_; }  // where the next record starts

 private:
  RecordingReader(std::string path, std::FILE* file) : path_(std::move(path)), file_(file) {}
  bool Fail(uint64_t at, const std::string& what);
  std::string path_;
  std::FILE* file_;
  uint64_t offset_ = kRecordingHeaderBytes;
  std::string buffer_;
  Status status_;
};

}  // namespace inferscope
