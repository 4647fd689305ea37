#include "cli/recording.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace inferscope {
namespace {

constexpr uint64_t kFnvOffset = 14695981039346656037ull;
constexpr uint64_t kFnvPrime = 1099511628211ull;

uint64_t Fnv1a(uint64_t h, std::string_view bytes) {
  for (const char c : bytes) {
    h ^= static_cast<unsigned char>(c);
    h *= kFnvPrime;
  }
  return h;
}

void PutU32(char* p, uint32_t v) {
  for (int i = 3; i >= 0; --i, v >>= 8) p[i] = static_cast<char>(v & 0xff);
}
void PutU64(char* p, uint64_t v) {
  for (int i = 7; i >= 0; --i, v >>= 8) p[i] = static_cast<char>(v & 0xff);
}
uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
uint64_t GetU64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

std::string Errno() { return std::strerror(errno); }

}  // namespace

bool IsRecordingFile(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return false;
  char magic[kRecordingMagic.size()];
  const bool yes = std::fread(magic, 1, sizeof magic, f) == sizeof magic &&
                   std::string_view(magic, sizeof magic) == kRecordingMagic;
  std::fclose(f);
  return yes;
}

Result<std::unique_ptr<RecordingWriter>> RecordingWriter::Create(const std::string& path,
                                                                 bool overwrite) {
  const int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (overwrite ? O_TRUNC : O_EXCL);
  const int fd = ::open(path.c_str(), flags, 0644);
  if (fd < 0) {
    if (errno == EEXIST) {
      return Status::InvalidArgument(path + ": the file exists (use --force to overwrite it)");
    }
    return Status::IOError(path + ": cannot create: " + Errno());
  }
  std::FILE* file = ::fdopen(fd, "wb");
  if (file == nullptr) {
    ::close(fd);
    return Status::IOError(path + ": " + Errno());
  }
  std::unique_ptr<RecordingWriter> w(new RecordingWriter(path, file));
  char header[kRecordingHeaderBytes];
  std::memcpy(header, kRecordingMagic.data(), kRecordingMagic.size());
  PutU32(header + 8, kRecordingVersion);
  PutU32(header + 12, 0);
  if (std::fwrite(header, 1, sizeof header, file) != sizeof header) {
    return Status::IOError(path + ": write: " + Errno());
  }
  w->bytes_ = sizeof header;
  INFERSCOPE_RETURN_IF_ERROR(w->Flush());
  return w;
}

RecordingWriter::~RecordingWriter() { (void)Close(); }

Status RecordingWriter::Append(int64_t arrival_ns, std::string_view topic,
                               std::string_view payload) {
  if (file_ == nullptr) return Status::FailedPrecondition(path_ + ": closed");
  if (topic.size() > kMaxRecordedTopicBytes || payload.size() > kMaxRecordedPayloadBytes) {
    return Status::InvalidArgument("message over the recording limits (topic " +
                                   std::to_string(topic.size()) + " bytes, payload " +
                                   std::to_string(payload.size()) + " bytes)");
  }
  char head[kRecordHeaderBytes];
  PutU64(head, static_cast<uint64_t>(arrival_ns));
  PutU32(head + 8, static_cast<uint32_t>(topic.size()));
  PutU32(head + 12, static_cast<uint32_t>(payload.size()));
  uint64_t h = Fnv1a(kFnvOffset, std::string_view(head, sizeof head));
  h = Fnv1a(Fnv1a(h, topic), payload);
  char trailer[kRecordTrailerBytes];
  PutU64(trailer, h);
  if (std::fwrite(head, 1, sizeof head, file_) != sizeof head ||
      std::fwrite(topic.data(), 1, topic.size(), file_) != topic.size() ||
      std::fwrite(payload.data(), 1, payload.size(), file_) != payload.size() ||
      std::fwrite(trailer, 1, sizeof trailer, file_) != sizeof trailer) {
    return Status::IOError(path_ + ": write: " + Errno());
  }
  ++records_;
  bytes_ += sizeof head + topic.size() + payload.size() + sizeof trailer;
  return Status::Ok();
}

Status RecordingWriter::Flush() {
  if (file_ != nullptr && std::fflush(file_) != 0) {
    return Status::IOError(path_ + ": write: " + Errno());
  }
  return Status::Ok();
}

Status RecordingWriter::Close() {
  if (file_ == nullptr) return Status::Ok();
  Status st = Flush();
  if (st.ok() && ::fsync(::fileno(file_)) != 0) st = Status::IOError(path_ + ": fsync: " + Errno());
  if (std::fclose(file_) != 0 && st.ok()) st = Status::IOError(path_ + ": close: " + Errno());
  file_ = nullptr;
  return st;
}

Result<std::unique_ptr<RecordingReader>> RecordingReader::Open(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) return Status::IOError(path + ": cannot read: " + Errno());
  std::unique_ptr<RecordingReader> r(new RecordingReader(path, file));
  char header[kRecordingHeaderBytes];
  const size_t got = std::fread(header, 1, sizeof header, file);
  if (got < kRecordingMagic.size() ||
      std::string_view(header, kRecordingMagic.size()) != kRecordingMagic) {
    return Status::Corruption(path + ": offset 0: not a recording (expected the magic \"" +
                              std::string(kRecordingMagic) + "\")");
  }
  if (got < sizeof header) {
    return Status::Corruption(path + ": offset " + std::to_string(got) +
                              ": truncated header (16 bytes expected)");
  }
  const uint32_t version = GetU32(header + 8);
  if (version != kRecordingVersion) {
    return Status::Corruption(path + ": offset 8: recording version " + std::to_string(version) +
                              " (this build reads version " + std::to_string(kRecordingVersion) +
                              ")");
  }
  return r;
}

RecordingReader::~RecordingReader() {
  if (file_ != nullptr) std::fclose(file_);
}

bool RecordingReader::Fail(uint64_t at, const std::string& what) {
  status_ = Status::Corruption(path_ + ": offset " + std::to_string(at) + ": " + what);
  return false;
}

bool RecordingReader::Next(RecordedMessage* out) {
  if (!status_.ok() || file_ == nullptr) return false;
  const uint64_t at = offset_;
  char head[kRecordHeaderBytes];
  const size_t got = std::fread(head, 1, sizeof head, file_);
  if (got == 0 && std::feof(file_)) return false;  // a clean end
  if (got < sizeof head) {
    if (std::ferror(file_)) return Fail(at, "read error: " + Errno());
    return Fail(at, "truncated record (" + std::to_string(got) + " of its 16 header bytes)");
  }
  const uint32_t topic_len = GetU32(head + 8);
  const uint32_t payload_len = GetU32(head + 12);
  if (topic_len > kMaxRecordedTopicBytes || payload_len > kMaxRecordedPayloadBytes) {
    return Fail(at, "corrupt record: topic length " + std::to_string(topic_len) +
                        ", payload length " + std::to_string(payload_len) + " (limits " +
                        std::to_string(kMaxRecordedTopicBytes) + " and " +
                        std::to_string(kMaxRecordedPayloadBytes) + ")");
  }
  const size_t body = size_t{topic_len} + payload_len + kRecordTrailerBytes;
  // A large record the file cannot hold is truncated: say so before allocating for it (a 16-byte
  // file must not cost 256 MiB).
  if (struct stat st; body > (size_t{1} << 20) && ::fstat(::fileno(file_), &st) == 0 &&
                      static_cast<uint64_t>(st.st_size) < at + sizeof head + body) {
    return Fail(at, "truncated record (" + std::to_string(static_cast<uint64_t>(st.st_size) - at) +
                        " of " + std::to_string(sizeof head + body) + " bytes)");
  }
  buffer_.resize(body);
  const size_t read = std::fread(buffer_.data(), 1, body, file_);
  if (read < body) {
    if (std::ferror(file_)) return Fail(at, "read error: " + Errno());
    return Fail(at, "truncated record (" + std::to_string(sizeof head + read) + " of " +
                        std::to_string(sizeof head + body) + " bytes)");
  }
  const std::string_view topic(buffer_.data(), topic_len);
  const std::string_view payload(buffer_.data() + topic_len, payload_len);
  uint64_t h = Fnv1a(kFnvOffset, std::string_view(head, sizeof head));
  h = Fnv1a(Fnv1a(h, topic), payload);
  if (h != GetU64(buffer_.data() + topic_len + payload_len)) {
    return Fail(at, "corrupt record (checksum mismatch)");
  }
  out->arrival_ns = static_cast<int64_t>(GetU64(head));
  out->topic = topic;
  out->payload = payload;
  out->offset = at;
  offset_ = at + sizeof head + body;
  return true;
}

}  // namespace inferscope
