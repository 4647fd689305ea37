#include "clients/cpp/spool.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace inferscope::client {
namespace {

constexpr std::string_view kMagic = "ISSPOOL1";

void PutBe(std::string* out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t GetBe(std::string_view in, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<unsigned char>(in[at + i]);
  return v;
}

uint64_t Fnv1a64(char type, std::string_view body) {
  uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&](unsigned char c) { h = (h ^ c) * 0x100000001b3ull; };
  mix(static_cast<unsigned char>(type));
  for (char c : body) mix(static_cast<unsigned char>(c));
  return h;
}

std::string Record(char type, std::string_view body) {
  std::string r;
  r.reserve(body.size() + 13);
  r.push_back(type);
  PutBe(&r, body.size(), 4);
  r.append(body);
  PutBe(&r, Fnv1a64(type, body), 8);
  return r;
}

std::string TwoU64(uint64_t a, uint64_t b) {
  std::string body;
  PutBe(&body, a, 8);
  PutBe(&body, b, 8);
  return body;
}

bool WriteAll(int fd, std::string_view bytes, std::string* error) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      *error = std::string("spool write: ") + std::strerror(errno);
      return false;
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Applies the records of `file` to `state`; stops at the first torn or corrupt one.
void Replay(std::string_view file, Spool::State* state) {
  if (file.substr(0, kMagic.size()) != kMagic) return;
  size_t at = kMagic.size();
  while (at + 5 <= file.size()) {
    const char type = file[at];
    const uint64_t len = GetBe(file, at + 1, 4);
    if (at + 5 + len + 8 > file.size()) return;
    const std::string_view body = file.substr(at + 5, len);
    if (GetBe(file, at + 5 + len, 8) != Fnv1a64(type, body)) return;
    at += 5 + len + 8;
    if (len < 16) return;
    const uint64_t inc = GetBe(body, 0, 8);
    const uint64_t seq = GetBe(body, 8, 8);
    if (!state->present || inc != state->incarnation) {
      // A new incarnation (only the first record after a rewrite changes it).
      state->present = true;
      state->incarnation = inc;
      state->next_seq = 0;
      state->any_acked = false;
      state->acked_seq = 0;
      state->unacked.clear();
    }
    switch (type) {
      case 'I':
        state->next_seq = std::max(state->next_seq, seq);
        break;
      case 'M': {
        if (len < 20) return;
        if (state->any_acked && seq <= state->acked_seq) break;
        Spool::Message& m = state->unacked[seq];
        m.events = static_cast<uint32_t>(GetBe(body, 16, 4));
        m.payload.assign(body.substr(20));
        state->next_seq = std::max(state->next_seq, seq + 1);
        break;
      }
      case 'A':
        if (!state->any_acked || seq > state->acked_seq) {
          state->any_acked = true;
          state->acked_seq = seq;
        }
        state->unacked.erase(state->unacked.begin(), state->unacked.upper_bound(seq));
        break;
      case 'D':
        state->unacked.erase(seq);
        break;
      default:
        return;
    }
  }
}

}  // namespace

Spool::~Spool() { Close(); }

void Spool::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool Spool::Open(const std::string& path, bool sync, State* state, std::string* error) {
  Close();
  path_ = path;
  sync_ = sync;
  *state = State();
  std::ifstream in(path, std::ios::binary);
  if (in) {
    std::stringstream buf;
    buf << in.rdbuf();
    Replay(buf.str(), state);
  } else if (::access(path.c_str(), F_OK) == 0) {
    *error = "spool " + path + ": cannot be read";
    return false;
  }
  return Compact(*state, error);
}

bool Spool::Compact(const State& state, std::string* error) {
  std::string bytes(kMagic);
  if (state.present) {
    bytes += Record('I', TwoU64(state.incarnation, state.next_seq));
    if (state.any_acked) bytes += Record('A', TwoU64(state.incarnation, state.acked_seq));
    for (const auto& [seq, m] : state.unacked) {
      std::string body = TwoU64(state.incarnation, seq);
      PutBe(&body, m.events, 4);
      body += m.payload;
      bytes += Record('M', body);
    }
  }
  const std::string tmp = path_ + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    *error = "spool " + tmp + ": " + std::strerror(errno);
    return false;
  }
  bool ok = WriteAll(fd, bytes, error);
  if (ok && ::fsync(fd) != 0) {  // a rename must never expose an unwritten file
    *error = std::string("spool fsync: ") + std::strerror(errno);
    ok = false;
  }
  ::close(fd);
  if (ok && ::rename(tmp.c_str(), path_.c_str()) != 0) {
    *error = "spool rename to " + path_ + ": " + std::strerror(errno);
    ok = false;
  }
  if (!ok) {
    ::unlink(tmp.c_str());
    return false;
  }
  Close();
  fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd_ < 0) {
    *error = "spool " + path_ + ": " + std::strerror(errno);
    return false;
  }
  bytes_ = bytes.size();
  return true;
}

bool Spool::Append(char type, std::string_view body, std::string* error) {
  if (fd_ < 0) {
    *error = "spool is not open";
    return false;
  }
  const std::string record = Record(type, body);
  if (!WriteAll(fd_, record, error)) {
    // Cut a partial record off, or the records appended after it would not be read back.
    if (::ftruncate(fd_, static_cast<off_t>(bytes_)) != 0) Close();
    return false;
  }
  if (sync_ && ::fdatasync(fd_) != 0) {
    *error = std::string("spool fdatasync: ") + std::strerror(errno);
    return false;
  }
  bytes_ += record.size();
  return true;
}

bool Spool::AppendMessage(uint64_t incarnation, uint64_t seq, uint32_t events,
                          std::string_view payload, std::string* error) {
  std::string body = TwoU64(incarnation, seq);
  PutBe(&body, events, 4);
  body.append(payload);
  return Append('M', body, error);
}

bool Spool::AppendAck(uint64_t incarnation, uint64_t seq, std::string* error) {
  return Append('A', TwoU64(incarnation, seq), error);
}

bool Spool::AppendDrop(uint64_t incarnation, uint64_t seq, std::string* error) {
  return Append('D', TwoU64(incarnation, seq), error);
}

}  // namespace inferscope::client
