#pragma once

#include <cstdint>
#include <string_view>

namespace inferscope {

// The envelope fields of a protocol-v1 payload (docs/PROTOCOL.md): who sent it and its sequence
// number, read without decoding the events (`inferscope bridge` routes whole messages by them).
struct Envelope {
  std::string_view publisher;  // "pub": a view into the payload
  uint64_t incarnation = 0;    // "inc", 0 when absent
  uint64_t seq = 0;            // "seq"
  bool has_seq = false;
};

// Reads the envelope of `payload`; false when it is not a msgpack map with a string "pub" (the
// events are skipped, not checked: the engine's decoder judges them).
bool PeekEnvelope(std::string_view payload, Envelope* out);

}  // namespace inferscope
