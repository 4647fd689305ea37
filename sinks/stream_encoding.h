#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <string_view>

#include <msgpack.hpp>

namespace inferscope {

// Encoding helpers shared by the stream sinks (zmq_pub, zmq_alerts): docs/PROTOCOL.md, "Summary
// stream" and "Alert stream".

// Appends `v` as a msgpack float64 (0xcb and 8 bytes big-endian), or nil when it is not finite.
// Not msgpack-c's pack_double: that writes a whole value as an integer (1.0 as 0x01), which a
// strict reader of a documented float field (Go, Rust, Java decoders) rejects.
inline void PackFloat64OrNil(msgpack::sbuffer& out, double v) {
  if (!std::isfinite(v)) {
    const char nil = static_cast<char>(0xc0);
    out.write(&nil, 1);
    return;
  }
  const uint64_t bits = std::bit_cast<uint64_t>(v);
  char buf[9];
  buf[0] = static_cast<char>(0xcb);
  for (int i = 0; i < 8; ++i) buf[1 + i] = static_cast<char>(bits >> (56 - 8 * i));
  out.write(buf, sizeof(buf));
}

// Appends a msgpack str.
inline void PackStr(msgpack::packer<msgpack::sbuffer>& pk, std::string_view s) {
  pk.pack_str(static_cast<uint32_t>(s.size()));
  pk.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
}

}  // namespace inferscope
