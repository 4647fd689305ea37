#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace inferscope::client {

// Spool is the append-only file in which an AckedPublisher keeps its position (incarnation, next
// sequence number) and every message it has not seen acknowledged, so that a restarted process
// resends those messages with their original incarnation and sequence number and the engine
// deduplicates them exactly (docs/PROTOCOL.md §9 "Restarting publishers").
//
// Format (clients/README.md): the 8 bytes "ISSPOOL1", then records
//   [type u8][body length u32 BE][body][FNV-1a 64 of type and body, u64 BE]
// with bodies (integers big-endian)
//   'I' incarnation u64, next seq u64         the position (first record after a rewrite)
//   'M' incarnation u64, seq u64, events u32, payload   a message, written before it is sent
//   'A' incarnation u64, seq u64              acknowledged up to seq (cumulative)
//   'D' incarnation u64, seq u64              refused for good and dropped (not consumed)
// A torn or corrupt record ends the file (a process killed mid-append never sent that message).
// Open rewrites the file with what is live (as Compact does); Compact writes a temporary file and
// renames it over the spool.
//
// Durability: every record is written with one write(2) before the call returns, so it survives
// the process being killed; with `sync` it is also fdatasync'ed (survives an OS crash, at the cost
// of a disk flush per message).
// Concurrency: not thread-safe; one process per spool file.
class Spool {
 public:
  struct Message {
    uint32_t events = 0;
    std::string payload;
  };
  struct State {
    bool present = false;  // the file held a position
    uint64_t incarnation = 0;
    uint64_t next_seq = 0;
    bool any_acked = false;
    uint64_t acked_seq = 0;
    std::map<uint64_t, Message> unacked;  // by seq
  };

  Spool() = default;
  ~Spool();
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  // Reads `path` (missing: an empty state) into `*state`, then rewrites it with the live part.
  // False with `*error` when the file cannot be read or written.
  bool Open(const std::string& path, bool sync, State* state, std::string* error);
  bool is_open() const { return fd_ >= 0; }

  bool AppendMessage(uint64_t incarnation, uint64_t seq, uint32_t events, std::string_view payload,
                     std::string* error);
  bool AppendAck(uint64_t incarnation, uint64_t seq, std::string* error);
  bool AppendDrop(uint64_t incarnation, uint64_t seq, std::string* error);
  // Replaces the file by the position and `unacked` (in seq order).
  bool Compact(const State& state, std::string* error);

  // Bytes in the file (for deciding when to compact).
  uint64_t bytes() const { return bytes_; }
  void Close();

 private:
  bool Append(char type, std::string_view body, std::string* error);

  std::string path_;
  bool sync_ = false;
  int fd_ = -1;
  uint64_t bytes_ = 0;
};

}  // namespace inferscope::client
