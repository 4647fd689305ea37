#include "sources/envelope.h"

#include "sources/msgpack_cursor.h"

namespace inferscope {

using wire::MsgpackCursor;
using wire::Value;

bool PeekEnvelope(std::string_view payload, Envelope* out) {
  *out = Envelope{};
  MsgpackCursor c(payload);
  uint32_t n = 0;
  if (c.MapHeader(n) != MsgpackCursor::kYes) return false;
  for (uint32_t i = 0; i < n; ++i) {
    const uint8_t* key = nullptr;
    uint32_t key_len = 0;
    const MsgpackCursor::Got got = c.Str(key, key_len);
    if (got == MsgpackCursor::kFailed) return false;
    if (got == MsgpackCursor::kNo && !c.Skip(1)) return false;  // a key that is not a string
    Value v;
    if (!c.ReadValue(v, 1)) return false;
    if (got != MsgpackCursor::kYes) continue;
    const std::string_view k(reinterpret_cast<const char*>(key), key_len);
    if (k == "pub" && v.type == Value::kStr) {
      out->publisher = std::string_view(v.s, v.len);
    } else if (k == "seq" && v.type == Value::kUint) {
      out->seq = v.u;
      out->has_seq = true;
    } else if (k == "inc" && v.type == Value::kUint) {
      out->incarnation = v.u;
    }
  }
  return !out->publisher.empty();
}

}  // namespace inferscope
