#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "pipeline/status.h"

namespace inferscope {

// The control messages of acknowledged mode (docs/PROTOCOL.md §9), second frame of
// ["hello" | "ack" | "nack", payload]: one msgpack map each. Parsing takes bytes and no socket, so
// it can be tested and fuzzed on its own; it never throws and bounds what it allocates (the maps
// are small: at most 64 entries, strings of at most 1024 bytes, nesting 8).

// Publisher → engine: {"v": 1, "pub": <str 1..kMaxNameBytes>, "inc": <uint, optional>}.
struct HelloMessage {
  std::string publisher;
  uint64_t incarnation = 0;  // 0 when absent (a legacy publisher)
};

// Engine → publisher: where one incarnation of a publisher stands.
// {"v": 1, "pub", "inc", "ack": <uint|nil>, "next": <uint|nil>, "latest": <uint|nil>}.
struct AckMessage {
  std::string publisher;
  uint64_t incarnation = 0;        // the incarnation `ack` and `next` are about
  std::optional<uint64_t> ack;     // highest durable seq of that incarnation (cumulative)
  std::optional<uint64_t> next;    // seq expected next in that incarnation (nil: closed or unknown)
  std::optional<uint64_t> latest;  // the publisher's current incarnation at the engine
};

// Engine → publisher: one message is refused for good.
// {"v": 1, "pub", "inc", "seq", "reason": <str>, "consumed": <bool>, "latest": <uint|nil>}.
struct NackMessage {
  std::string publisher;
  uint64_t incarnation = 0;
  uint64_t seq = 0;
  std::string reason;  // a reject reason (batch_too_large, ...) or "stale_incarnation"
  // The engine moved past the message: its sequence number counts as done and a later ack covers
  // it. False for stale_incarnation (nothing of that incarnation is applied any more).
  bool consumed = false;
  std::optional<uint64_t> latest;
};

// InvalidArgument with a reason when `payload` is not a valid message of that kind. Unknown keys
// are ignored.
Result<HelloMessage> ParseHello(std::string_view payload);
Result<AckMessage> ParseAck(std::string_view payload);
Result<NackMessage> ParseNack(std::string_view payload);

std::string EncodeHello(const HelloMessage& hello);
std::string EncodeAck(const AckMessage& ack);
std::string EncodeNack(const NackMessage& nack);

}  // namespace inferscope
